// static/js/track/wakelock.js: the screen wake lock is asked for while tracking, asked for again
// when the page is visible after the browser released it, and let go on stop.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ScreenWakeLock } from "../../static/js/track/wakelock.js";

const settle = () => new Promise((resolve) => setImmediate(resolve));

function fakes({ refuse = false } = {}) {
  const listeners = {};
  const doc = {
    visibilityState: "visible",
    addEventListener: (type, listener) => { listeners[type] = listener; },
    show(state) {
      this.visibilityState = state;
      listeners.visibilitychange();
    },
  };
  const sentinels = [];
  const wakeLock = {
    async request(type) {
      assert.equal(type, "screen");
      if (refuse) throw new DOMException("not allowed", "NotAllowedError");
      const handlers = [];
      const sentinel = {
        released: false,
        addEventListener: (event, handler) => handlers.push(handler),
        async release() {
          this.released = true;
        },
        browserReleases() {
          this.released = true;
          for (const handler of handlers) handler();
        },
      };
      sentinels.push(sentinel);
      return sentinel;
    },
  };
  return { doc, wakeLock, sentinels };
}

describe("ScreenWakeLock", () => {
  it("holds the lock while tracking and asks again when the page is visible again", async () => {
    const { doc, wakeLock, sentinels } = fakes();
    const states = [];
    const lock = new ScreenWakeLock({ wakeLock, doc, onChange: (state) => states.push(state) });
    await lock.acquire();
    assert.equal(lock.state, "on");
    doc.visibilityState = "hidden";
    sentinels[0].browserReleases(); // what browsers do when the page is hidden
    assert.equal(lock.state, "paused");
    doc.show("visible");
    await settle();
    assert.equal(sentinels.length, 2);
    assert.equal(lock.state, "on");
    lock.release();
    assert.ok(sentinels[1].released);
    assert.equal(lock.state, "off");
    doc.show("visible");
    await settle();
    assert.equal(sentinels.length, 2, "not asked for again after release()");
    assert.deepEqual(states, ["on", "paused", "on", "off"]);
  });

  it("does not ask while the page is hidden", async () => {
    const { doc, wakeLock, sentinels } = fakes();
    doc.visibilityState = "hidden";
    const lock = new ScreenWakeLock({ wakeLock, doc });
    await lock.acquire();
    assert.equal(sentinels.length, 0);
    doc.show("visible");
    await settle();
    assert.equal(sentinels.length, 1);
  });

  it("says when the browser refuses or has no wake lock", async () => {
    const refused = new ScreenWakeLock({ ...fakes({ refuse: true }) });
    await refused.acquire();
    assert.equal(refused.state, "refused");
    const missing = new ScreenWakeLock({ wakeLock: undefined, doc: fakes().doc });
    await missing.acquire();
    assert.equal(missing.state, "unsupported");
  });
});
