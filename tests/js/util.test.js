// static/js/util.js: "time ago" labels, socket and login URLs, number checks, and building
// elements whose text is never parsed as HTML (against a small fake document).

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { el, isNumber, loginUrl, socketUrl, timeAgo } from "../../static/js/util.js";

describe("timeAgo", () => {
  const now = 1_764_150_000;

  it("says so when there is no position", () => {
    assert.equal(timeAgo(null, now), "no position yet");
    assert.equal(timeAgo(undefined, now), "no position yet");
  });

  it("counts whole seconds, minutes, hours and days", () => {
    const cases = [
      [0, "0s ago"], [0.9, "0s ago"], [59.9, "59s ago"],
      [60, "1m ago"], [3599, "59m ago"],
      [3600, "1h ago"], [86399, "23h ago"],
      [86400, "1d ago"], [10 * 86400 + 5, "10d ago"],
    ];
    for (const [age, label] of cases) assert.equal(timeAgo(now - age, now), label, `${age} s`);
  });

  it("never shows a negative age for a device clock ahead of the browser's", () => {
    assert.equal(timeAgo(now + 42, now), "0s ago");
  });

  it("measures from the current time by default", () => {
    assert.equal(timeAgo(Date.now() / 1000 - 125), "2m ago");
  });
});

describe("socketUrl", () => {
  it("uses ws: on an http page and wss: on an https page, with the page's host and port", () => {
    assert.equal(socketUrl("/ws/teams/demo/", { protocol: "http:", host: "127.0.0.1:8000" }),
      "ws://127.0.0.1:8000/ws/teams/demo/");
    assert.equal(socketUrl("/ws/teams/demo/", { protocol: "https:", host: "track.example.com" }),
      "wss://track.example.com/ws/teams/demo/");
  });
});

describe("loginUrl", () => {
  it("sends the user back to the page, slashes kept readable and the rest encoded", () => {
    assert.equal(loginUrl("/accounts/login/", "/teams/demo/"), "/accounts/login/?next=/teams/demo/");
    assert.equal(loginUrl("/accounts/login/", "/teams/a b/?x=1&y=é"),
      "/accounts/login/?next=/teams/a%20b/%3Fx%3D1%26y%3D%C3%A9");
  });
});

describe("isNumber", () => {
  it("takes finite numbers only", () => {
    for (const value of [0, -90, 41.39, 1764150000.25]) assert.equal(isNumber(value), true, String(value));
    for (const value of [null, undefined, "41.39", Number.NaN, Infinity, -Infinity, true, [1], {}]) {
      assert.equal(isNumber(value), false, String(value));
    }
  });
});

describe("el", () => {
  // Just enough of a DOM: an element that records what was set, and refuses markup outright.
  class FakeElement {
    constructor(tag) {
      this.tagName = tag.toUpperCase();
      this.className = "";
      this.textContent = "";
      this.attributes = {};
      this.children = [];
    }

    set innerHTML(_html) {
      throw new Error("el must never parse markup");
    }

    setAttribute(name, value) {
      this.attributes[name] = value;
    }

    append(child) {
      this.children.push(child);
    }
  }

  let previous;
  before(() => {
    previous = globalThis.document;
    globalThis.document = { createElement: (tag) => new FakeElement(tag) };
  });
  after(() => {
    globalThis.document = previous;
  });

  it("sets text as text, so that markup in a name stays literal", () => {
    const name = "<img src=x onerror=alert(1)>";
    const node = el("span", { className: "worker-name", text: name });
    assert.equal(node.tagName, "SPAN");
    assert.equal(node.className, "worker-name");
    assert.equal(node.textContent, name);
  });

  it("turns text and attribute values into strings, and leaves out missing text", () => {
    assert.equal(el("span", { text: 0 }).textContent, "0");
    assert.equal(el("span", { text: null }).textContent, "");
    assert.equal(el("span").textContent, "");
    const li = el("li", { attrs: { "data-worker-id": 7, "aria-pressed": false } });
    assert.deepEqual(li.attributes, { "data-worker-id": "7", "aria-pressed": "false" });
  });

  it("appends the children in order", () => {
    const first = el("span", { text: "a" });
    const second = el("span", { text: "b" });
    const button = el("button", {}, [first, second, "c"]);
    assert.deepEqual(button.children, [first, second, "c"]);
  });
});
