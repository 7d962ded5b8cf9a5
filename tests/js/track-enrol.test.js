// static/js/track/enrol.js: reading the code from the link's fragment, and what each answer of
// /track/enrol means to the page.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { enrolCode, hasEnrolFragment, redeem } from "../../static/js/track/enrol.js";

const CODE = "kH3v_9-xQzL0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0u";

/** A fetch that answers once with `status` and `body`, and records the request. */
function fakeFetch(status, body) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    return {
      status,
      json: async () => (typeof body === "string" ? JSON.parse(body) : body),
    };
  };
  return { fetch, calls };
}

describe("enrolCode", () => {
  it("reads the code of #enrol=<code>, with or without the #", () => {
    assert.equal(enrolCode(`#enrol=${CODE}`), CODE);
    assert.equal(enrolCode(`enrol=${CODE}`), CODE);
    assert.equal(enrolCode(`#x=1&enrol=${CODE}`), CODE);
  });

  it("refuses anything that is not one of the server's codes", () => {
    for (const hash of ["", "#", "#enrol=", "#enrol=short", "#enrol=<script>alert(1)</script>", `#code=${CODE}`, `#enrol=${"a".repeat(257)}`]) {
      assert.equal(enrolCode(hash), null, hash);
    }
  });

  it("tells a fragment that mentions an enrolment, valid or not, from others", () => {
    assert.ok(hasEnrolFragment("#enrol=nonsense"));
    assert.ok(hasEnrolFragment(`#enrol=${CODE}`));
    assert.ok(!hasEnrolFragment("#section-2"));
    assert.ok(!hasEnrolFragment(""));
  });
});

describe("redeem", () => {
  it("posts the code as JSON without cookies and returns the enrolment", async () => {
    const answer = { token: "tt_abc", worker: { id: 7, name: "Courier 07" }, team: { slug: "demo", name: "Demo" } };
    const { fetch, calls } = fakeFetch(200, answer);
    const result = await redeem(CODE, { path: "/track/enrol", fetch });
    assert.deepEqual(result, { ok: true, enrolment: answer });
    assert.equal(calls.length, 1);
    assert.equal(calls[0].url, "/track/enrol");
    assert.equal(calls[0].init.method, "POST");
    assert.equal(calls[0].init.credentials, "omit");
    assert.equal(calls[0].init.headers["Content-Type"], "application/json");
    assert.deepEqual(JSON.parse(calls[0].init.body), { code: CODE });
  });

  it("says a used, expired or withdrawn link is used up (410)", async () => {
    const result = await redeem(CODE, { path: "/track/enrol", fetch: fakeFetch(410, "").fetch });
    assert.equal(result.ok, false);
    assert.equal(result.reason, "used");
    assert.match(result.message, /already used.*new one/);
  });

  it("maps the other answers to reasons", async () => {
    const reasons = { 400: "invalid", 429: "blocked", 500: "server", 502: "server" };
    for (const [status, reason] of Object.entries(reasons)) {
      const result = await redeem(CODE, { path: "/p", fetch: fakeFetch(Number(status), "").fetch });
      assert.equal(result.reason, reason, status);
      assert.ok(result.message.length > 10);
    }
  });

  it("says so when the server cannot be reached, or answers 200 without a token", async () => {
    const offline = await redeem(CODE, { path: "/p", fetch: async () => { throw new TypeError("Failed to fetch"); } });
    assert.equal(offline.reason, "network");
    const odd = await redeem(CODE, { path: "/p", fetch: fakeFetch(200, { worker: {} }).fetch });
    assert.equal(odd.reason, "server");
    const html = await redeem(CODE, { path: "/p", fetch: fakeFetch(200, "<html>").fetch });
    assert.equal(html.reason, "server");
  });
});
