// static/js/config.js: the page's settings are the defaults, then the template's json_script,
// then #map-page's data attributes, read from a fake document.

import assert from "node:assert/strict";
import { describe, it, mock } from "node:test";

import { readConfig } from "../../static/js/config.js";

/** A document with a json_script element holding `json` and a #map-page with `dataset`. */
function page(json, dataset = {}) {
  const nodes = {
    "map-config": json === undefined ? null : { textContent: json },
    "map-page": { dataset },
  };
  return { getElementById: (id) => nodes[id] ?? null };
}

describe("readConfig", () => {
  it("merges the json_script over the defaults, and the page's login path over both", () => {
    const config = readConfig(page(
      JSON.stringify({ team: "demo", socketPath: "/ws/teams/demo/", staleAfter: 2, loginPath: "/x/" }),
      { loginPath: "/accounts/login/?lang=ca" },
    ));
    assert.equal(config.team, "demo");
    assert.equal(config.socketPath, "/ws/teams/demo/");
    assert.equal(config.staleAfter, 2);
    assert.equal(config.loginPath, "/accounts/login/?lang=ca");
    assert.equal(config.backoffStartMs, 500);
    assert.equal(config.backoffCapMs, 30000);
    assert.deepEqual(config.defaultCenter, [20, 0]);
    assert.ok(Object.isFrozen(config));
  });

  it("falls back to the defaults without a json_script, or with one that is not JSON", () => {
    mock.method(console, "error", () => {});
    try {
      for (const json of [undefined, "{oops", "null", "42"]) {
        const config = readConfig(page(json));
        assert.equal(config.team, "", String(json));
        assert.equal(config.loginPath, "/accounts/login/");
        assert.equal(config.staleAfter, 30);
      }
      assert.equal(console.error.mock.callCount(), 1);
    } finally {
      mock.restoreAll();
    }
  });

  it("keeps the default staleAfter unless the page gives a positive number", () => {
    for (const staleAfter of [0, -5, "soon", null]) {
      assert.equal(readConfig(page(JSON.stringify({ staleAfter }))).staleAfter, 30, String(staleAfter));
    }
    assert.equal(readConfig(page(JSON.stringify({ staleAfter: "45" }))).staleAfter, 45);
  });
});
