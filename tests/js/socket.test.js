// static/js/socket.js against a fake WebSocket and a fake clock: connecting, parsing and
// dispatching frames on `type`, backoff with full jitter, and which close codes reconnect.

import assert from "node:assert/strict";
import { describe, it, mock } from "node:test";

import { backoffDelay, TeamSocket } from "../../static/js/socket.js";

const SOCKET_URL = "ws://example.test/ws/teams/demo/";
const T0 = 1_764_150_000_000;

/** A clock whose timers run only when the test moves time on. */
function fakeClock() {
  let now = T0;
  let nextId = 1;
  const timers = new Map(); // id -> {at, callback}
  return {
    now: () => now,
    setTimeout(callback, ms) {
      const id = nextId++;
      timers.set(id, { at: now + ms, callback });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** The delays (from now) of the timers still pending. */
    pending: () => [...timers.values()].map((timer) => timer.at - now),
    advance(ms) {
      now += ms;
      for (const [id, timer] of [...timers].sort((a, b) => a[1].at - b[1].at)) {
        if (timer.at > now) break;
        timers.delete(id);
        timer.callback();
      }
    },
  };
}

/** A WebSocket class that records its instances; the test plays the server. */
function fakeWebSocketClass() {
  const FakeWebSocket = class {
    constructor(url) {
      this.url = url;
      this.closedWith = null;
      FakeWebSocket.instances.push(this);
    }

    close(code) {
      this.closedWith = code;
    }

    receive(data) {
      this.onmessage({ data: typeof data === "string" ? data : JSON.stringify(data) });
    }

    serverCloses(code) {
      this.onclose({ code });
    }
  };
  FakeWebSocket.instances = [];
  return FakeWebSocket;
}

const SNAPSHOT = { type: "snapshot", team: "demo", workers: [] };

/** Count the socket's console warnings and errors (about frames it ignores) instead of printing them. */
function quiet() {
  mock.restoreAll();
  mock.method(console, "warn", () => {});
  mock.method(console, "error", () => {});
}

function setup({ handlers = {}, random = () => 0.5, backoffStartMs = 1000, backoffCapMs = 8000 } = {}) {
  quiet();
  const clock = fakeClock();
  const WebSocketClass = fakeWebSocketClass();
  const states = [];
  const socket = new TeamSocket(SOCKET_URL, {
    handlers,
    onState: (state) => states.push(state),
    backoffStartMs,
    backoffCapMs,
    WebSocketClass,
    random,
    clock,
  });
  const last = () => WebSocketClass.instances.at(-1);
  return { socket, clock, sockets: WebSocketClass.instances, last, states };
}


describe("backoffDelay", () => {
  it("draws uniformly below a ceiling that doubles from startMs up to capMs", () => {
    const almostOne = () => 0.999999;
    const ceilings = [0, 1, 2, 3, 4, 5, 10, 60].map((attempt) =>
      backoffDelay(attempt, { startMs: 500, capMs: 30000, random: almostOne }));
    assert.deepEqual(ceilings, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
  });

  it("is full jitter: any wait from 0 up to the ceiling, as random says", () => {
    const backoff = { startMs: 500, capMs: 30000 };
    assert.equal(backoffDelay(3, { ...backoff, random: () => 0 }), 0);
    assert.equal(backoffDelay(3, { ...backoff, random: () => 0.25 }), 1000);
    assert.equal(backoffDelay(3, { ...backoff, random: () => 0.5 }), 2000);
  });

  it("uses Math.random when no random is given", () => {
    const delays = new Set();
    for (let i = 0; i < 50; i += 1) delays.add(backoffDelay(4, { startMs: 500, capMs: 30000 }));
    for (const delay of delays) assert.ok(delay >= 0 && delay < 8000 && Number.isInteger(delay));
    assert.ok(delays.size > 1, "50 draws gave the same wait");
  });
});

describe("TeamSocket connecting", () => {
  it("opens one socket to the URL on start and says it is connecting", () => {
    const { socket, sockets, states } = setup();
    socket.start();
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0].url, SOCKET_URL);
    assert.deepEqual(states, [{ state: "connecting" }]);
  });

  it("is live only once the snapshot arrived, after its handler ran", () => {
    const seen = [];
    const { socket, last, states } = setup({
      handlers: { snapshot: (frame) => seen.push([frame, socket.state]) },
    });
    socket.start();
    last().receive({ type: "positions", positions: [] });
    assert.deepEqual(states, [{ state: "connecting" }]);
    last().receive(SNAPSHOT);
    assert.deepEqual(seen, [[SNAPSHOT, { state: "connecting" }]]);
    assert.deepEqual(states.at(-1), { state: "live" });
    assert.deepEqual(socket.state, { state: "live" });
  });
});

describe("TeamSocket frames", () => {
  it("parses each frame and hands it to the handler named by its type", () => {
    const calls = [];
    const handlers = {
      snapshot: (frame) => calls.push(["snapshot", frame]),
      positions: (frame) => calls.push(["positions", frame]),
      presence: (frame) => calls.push(["presence", frame]),
      error: (frame) => calls.push(["error", frame]),
    };
    const { socket, last } = setup({ handlers });
    socket.start();
    const frames = [
      SNAPSHOT,
      { type: "positions", positions: [{ id: 7, lat: 41.39, lng: 2.16, ts: 1764150001.3 }] },
      { type: "presence", id: 7, name: "Courier 07", online: false },
      { type: "error", code: "invalid_frame", detail: "the manager socket only sends" },
    ];
    for (const frame of frames) last().receive(JSON.stringify(frame));
    assert.deepEqual(calls, frames.map((frame) => [frame.type, frame]));
  });

  it("ignores frames that are not JSON, have no type, or a type with no handler", () => {
    const calls = [];
    const { socket, last, states } = setup({ handlers: { positions: (frame) => calls.push(frame) } });
    socket.start();
    const ignored = ["{not json", "null", "[]", '{"positions": []}', '{"type": 7}', '{"type": "ack", "seq": 1}'];
    for (const data of ignored) assert.doesNotThrow(() => last().receive(data), data);
    assert.deepEqual(calls, []);
    assert.deepEqual(states, [{ state: "connecting" }]);
    assert.equal(console.warn.mock.callCount(), 6);
  });

  it("dispatches only to the handlers' own properties, never to Object's", () => {
    const { socket, last } = setup({ handlers: {} });
    socket.start();
    for (const type of ["__proto__", "constructor", "toString", "hasOwnProperty"]) {
      assert.doesNotThrow(() => last().receive({ type }), type);
    }
    assert.equal(console.warn.mock.callCount(), 4);
  });

  it("ignores frames and closes from a socket it no longer uses", () => {
    const calls = [];
    const { socket, clock, sockets, states } = setup({ handlers: { snapshot: (frame) => calls.push(frame) } });
    socket.start();
    const first = sockets[0];
    first.serverCloses(1006);
    clock.advance(10_000);
    assert.equal(sockets.length, 2);
    const count = states.length;
    first.receive(SNAPSHOT);
    first.serverCloses(4401);
    assert.deepEqual(calls, []);
    assert.equal(states.length, count);
    assert.equal(clock.pending().length, 0);
  });
});

describe("TeamSocket close codes", () => {
  for (const code of [4401, 4403, 4404]) {
    it(`stops for good after ${code}, reporting it`, () => {
      const { socket, clock, sockets, last, states } = setup();
      socket.start();
      last().receive(SNAPSHOT);
      last().serverCloses(code);
      assert.deepEqual(states.at(-1), { state: "lost", code });
      assert.deepEqual(clock.pending(), []);
      clock.advance(60_000);
      assert.equal(sockets.length, 1);
      socket.retryNow(); // not waiting for anything: nothing to hurry
      assert.equal(sockets.length, 1);
    });
  }

  for (const code of [4408, 4429, 4503, 4012, 1000, 1001, 1006, 1011]) {
    it(`reconnects with backoff after ${code}`, () => {
      const { socket, clock, sockets, last, states } = setup({ random: () => 0.5, backoffStartMs: 1000 });
      socket.start();
      last().receive(SNAPSHOT);
      last().serverCloses(code);
      assert.deepEqual(states.at(-1), { state: "reconnecting", retryAt: T0 + 500, attempt: 1 });
      assert.deepEqual(clock.pending(), [500]);
      clock.advance(499);
      assert.equal(sockets.length, 1);
      clock.advance(1);
      assert.equal(sockets.length, 2);
      assert.deepEqual(states.at(-1), { state: "connecting" });
    });
  }

  it("waits longer after each attempt that brought no snapshot, up to the cap", () => {
    const { socket, clock, last, states } = setup({ random: () => 0.5, backoffStartMs: 1000, backoffCapMs: 8000 });
    socket.start();
    const waits = [];
    for (let i = 0; i < 6; i += 1) {
      last().serverCloses(4503); // the relay is down: refused before any snapshot
      const [wait] = clock.pending();
      waits.push(wait);
      assert.equal(states.at(-1).attempt, i + 1);
      clock.advance(wait);
    }
    assert.deepEqual(waits, [500, 1000, 2000, 4000, 4000, 4000]);
  });

  it("starts the backoff over once a snapshot arrives", () => {
    const { socket, clock, last } = setup({ random: () => 0.5, backoffStartMs: 1000 });
    socket.start();
    for (let i = 0; i < 3; i += 1) {
      last().serverCloses(1006);
      clock.advance(clock.pending()[0]);
    }
    last().receive(SNAPSHOT);
    last().serverCloses(4012); // the replica is stopping: back at once, a little jitter
    assert.deepEqual(clock.pending(), [500]);
  });

  it("does not start over on an open that is closed before the snapshot", () => {
    const { socket, clock, last } = setup({ random: () => 0.5, backoffStartMs: 1000 });
    socket.start();
    last().serverCloses(1006);
    clock.advance(500);
    last().receive({ type: "error", code: "invalid_frame", detail: "x" });
    last().serverCloses(4503);
    assert.deepEqual(clock.pending(), [1000]);
  });

  it("retries later when the socket cannot even be created", () => {
    quiet();
    const clock = fakeClock();
    const states = [];
    let tries = 0;
    const socket = new TeamSocket(SOCKET_URL, {
      onState: (state) => states.push(state),
      WebSocketClass: class {
        constructor() {
          tries += 1;
          throw new Error("SecurityError");
        }
      },
      random: () => 0.5,
      backoffStartMs: 1000,
      clock,
    });
    socket.start();
    assert.equal(tries, 1);
    assert.deepEqual(states, [
      { state: "connecting" },
      { state: "reconnecting", retryAt: T0 + 500, attempt: 1 },
    ]);
    clock.advance(500);
    assert.equal(tries, 2);
    assert.equal(console.error.mock.callCount(), 2);
  });
});

describe("TeamSocket retryNow and stop", () => {
  it("retryNow skips the rest of the wait, once", () => {
    const { socket, clock, sockets, last } = setup();
    socket.start();
    last().serverCloses(1006);
    socket.retryNow();
    assert.equal(sockets.length, 2);
    assert.deepEqual(clock.pending(), []);
    socket.retryNow(); // connecting, not waiting: nothing to skip
    assert.equal(sockets.length, 2);
  });

  it("stop closes the socket normally and never reconnects", () => {
    const { socket, clock, sockets, last, states } = setup();
    socket.start();
    last().receive(SNAPSHOT);
    const ws = last();
    socket.stop();
    assert.equal(ws.closedWith, 1000);
    ws.serverCloses(1000);
    clock.advance(60_000);
    assert.equal(sockets.length, 1);
    assert.deepEqual(states.at(-1), { state: "live" });
  });

  it("stop during the wait cancels the retry", () => {
    const { socket, clock, sockets, last } = setup();
    socket.start();
    last().serverCloses(1006);
    socket.stop();
    assert.deepEqual(clock.pending(), []);
    socket.retryNow();
    clock.advance(60_000);
    assert.equal(sockets.length, 1);
  });
});
