// static/js/track/tracker.js against a fake WebSocket and a fake clock: the auth frame first,
// batches sent without waiting for the acks of earlier ones (within a window), positions
// forgotten only when a (cumulative, per socket) ack covers them, the backlog resent oldest first
// after a reconnect, a dead socket found by its missing acks, a new socket after an error frame
// (the old one acknowledges nothing more), quiet while offline, a stop for good on 4401, and a
// stop until started again on 4409.

import assert from "node:assert/strict";
import { describe, it, mock } from "node:test";

import { MemoryStorage, PositionQueue } from "../../static/js/track/queue.js";
import { MAX_FRAMES_IN_FLIGHT, MAX_POSITIONS_IN_FLIGHT, Tracker } from "../../static/js/track/tracker.js";

const URL = "ws://example.test/ws/worker/";
const TOKEN = "tt_secret";
const T0 = 1_764_150_000_000;

/** A clock whose timers run only when the test moves time on. */
function fakeClock() {
  let now = T0;
  let nextId = 1;
  const timers = new Map();
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
    pending: () => [...timers.values()].map((timer) => timer.at - now),
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers].filter(([, timer]) => timer.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].callback();
      }
      now = until;
    },
  };
}

/** A WebSocket class that records its instances and what they sent; the test plays the server. */
function fakeWebSocketClass() {
  const FakeWebSocket = class {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closedWith = null;
      FakeWebSocket.instances.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code) {
      this.closedWith = code;
    }
    serverOpens() {
      this.onopen();
    }
    receive(frame) {
      this.onmessage({ data: JSON.stringify(frame) });
    }
    serverCloses(code) {
      this.onclose({ code });
    }
    /** The batch frames sent, as lists of seqs. */
    batches() {
      return this.sent.filter((frame) => frame.type === "batch").map((frame) => frame.positions.map((p) => p.seq));
    }
  };
  FakeWebSocket.instances = [];
  return FakeWebSocket;
}

/** Let pending promise callbacks (storage, pump) run. */
const settle = async () => {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

const at = (n) => ({ lat: 41.39, lng: 2.16 + n / 1000, ts: T0 / 1000 + n });

async function setup({ online = true, firstSeq = 100, ...options } = {}) {
  mock.restoreAll();
  mock.method(console, "warn", () => {});
  mock.method(console, "error", () => {});
  const clock = fakeClock();
  const WebSocketClass = fakeWebSocketClass();
  const queue = await new PositionQueue(new MemoryStorage(), { now: () => firstSeq }).load();
  const statuses = [];
  const network = { online };
  const tracker = new Tracker({
    url: URL,
    token: TOKEN,
    queue,
    clock,
    WebSocketClass,
    random: () => 0.5,
    isOnline: () => network.online,
    onStatus: (status) => statuses.push(status),
    backoffStartMs: 1000,
    backoffCapMs: 8000,
    ackTimeoutMs: 20000,
    minFrameIntervalMs: 250,
    ...options,
  });
  const socket = () => WebSocketClass.instances.at(-1);
  const last = () => statuses.at(-1);
  return { tracker, queue, clock, WebSocketClass, socket, last, network, statuses };
}

describe("Tracker", () => {
  it("sends the token in an auth frame first, then the position as a batch", async () => {
    const { tracker, socket, last } = await setup();
    tracker.start();
    assert.equal(socket().url, URL);
    assert.equal(last().link, "connecting");
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    assert.deepEqual(socket().sent[0], { type: "auth", token: TOKEN });
    assert.deepEqual(socket().sent[1], { type: "batch", positions: [{ ...at(1), seq: 100 }] });
    assert.equal(last().link, "live");
    assert.equal(last().lastSent.seq, 100);
    assert.equal(last().queued, 1);
  });

  it("forgets a position only when an ack covers it", async () => {
    const { tracker, socket, last, queue } = await setup();
    tracker.start();
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    assert.equal(queue.size, 1);
    socket().receive({ type: "ack", seq: 100 });
    await settle();
    assert.equal(queue.size, 0);
    assert.equal(last().queued, 0);
    assert.equal(last().lastAcked.seq, 100);
    assert.equal(last().lastAcked.lng, at(1).lng);
  });

  it("sends positions that come within the least frame interval together in the next frame", async () => {
    const { tracker, socket, clock } = await setup();
    tracker.start();
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    socket().receive({ type: "ack", seq: 100 }); // the login is done: frames need no ack now
    for (const n of [2, 3, 4]) await tracker.record(at(n));
    await settle();
    assert.deepEqual(socket().batches(), [[100]]);
    clock.advance(250); // no more than one frame per minFrameIntervalMs
    await settle();
    assert.deepEqual(socket().batches(), [[100], [101, 102, 103]]);
  });

  it("sends one frame on a new socket until its first ack, then pipelines", async () => {
    // Frames sent while the login is checked are read together when it is done, and a login that
    // moved replicas has one frame's budget (docs/protocol.md, Rate limit).
    const { tracker, socket, clock } = await setup();
    tracker.start();
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    for (const n of [2, 3]) {
      clock.advance(1000);
      await tracker.record(at(n));
      await settle();
    }
    assert.deepEqual(socket().batches(), [[100]], "no second frame before the first ack");
    socket().receive({ type: "ack", seq: 100 });
    await settle();
    assert.deepEqual(socket().batches(), [[100], [101, 102]], "what waited leaves at the ack");
    clock.advance(250);
    await tracker.record(at(4));
    await settle();
    assert.deepEqual(socket().batches(), [[100], [101, 102], [103]], "no wait for 101's ack");
  });

  it("waits between frames so as to stay under the server's rate limit", async () => {
    const { tracker, socket, clock } = await setup();
    tracker.start();
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    socket().receive({ type: "ack", seq: 100 });
    await tracker.record(at(2));
    await settle();
    assert.deepEqual(socket().batches(), [[100]], "a second frame at once would exceed 4 a second");
    clock.advance(249);
    await settle();
    assert.equal(socket().batches().length, 1);
    clock.advance(1);
    await settle();
    assert.deepEqual(socket().batches(), [[100], [101]]);
  });

  it("resends what was not acknowledged after a reconnect, oldest first, in batches of 500", async () => {
    const { tracker, socket, clock, WebSocketClass, last } = await setup();
    tracker.start();
    const first = socket();
    for (let n = 0; n < 3; n += 1) await tracker.record(at(n));
    first.serverOpens();
    await settle();
    assert.deepEqual(first.batches(), [[100, 101, 102]]);
    first.serverCloses(1006); // no ack came
    assert.equal(last().link, "reconnecting");
    for (let n = 3; n < 1203; n += 1) await tracker.record(at(n));
    clock.advance(500); // the jitter of the first retry: random 0.5 of 1000 ms
    assert.equal(WebSocketClass.instances.length, 2);
    const second = socket();
    second.serverOpens();
    await settle();
    assert.deepEqual(second.sent[0], { type: "auth", token: TOKEN });
    const seqs = () => second.batches().flat();
    assert.equal(second.batches()[0].length, 500);
    assert.deepEqual(seqs(), Array.from({ length: 500 }, (_, n) => 100 + n));
    second.receive({ type: "ack", seq: 599 });
    await settle();
    clock.advance(250);
    await settle();
    second.receive({ type: "ack", seq: 1099 });
    await settle();
    clock.advance(250);
    await settle();
    assert.deepEqual(second.batches().map((batch) => batch.length), [500, 500, 203]);
    assert.deepEqual(seqs(), Array.from({ length: 1203 }, (_, n) => 100 + n), "each once, in order");
    second.receive({ type: "ack", seq: 1302 });
    await settle();
    assert.equal(last().queued, 0);
    assert.equal(last().lastAcked.seq, 1302);
  });

  it("stops for good when the server refuses the token (4401)", async () => {
    const { tracker, socket, clock, WebSocketClass, last } = await setup();
    tracker.start();
    socket().serverOpens();
    socket().serverCloses(4401);
    assert.equal(last().link, "revoked");
    clock.advance(120_000);
    assert.equal(WebSocketClass.instances.length, 1, "no reconnect after 4401");
    tracker.start();
    assert.equal(WebSocketClass.instances.length, 1, "nor when asked to start again");
  });

  it("stops without retrying when a newer socket of the same worker takes over (4409)", async () => {
    const { tracker, socket, clock, WebSocketClass, last, queue, network } = await setup();
    tracker.start();
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    for (const n of [2, 3]) await tracker.record(at(n));
    socket().receive({ type: "ack", seq: 100 });
    await settle();
    clock.advance(250);
    await settle();
    assert.deepEqual(socket().batches(), [[100], [101, 102]]);
    socket().serverCloses(4409); // 101 and 102 in flight, not acknowledged
    assert.equal(last().link, "replaced");
    assert.equal(last().closeCode, 4409);
    assert.equal(last().retryAt, undefined);
    assert.deepEqual(clock.pending(), [], "no retry, ack or send timer left");
    clock.advance(600_000); // ten times the backoff cap of any real page
    tracker.networkUp(); // the browser's online and visibilitychange events change nothing
    network.online = false;
    tracker.networkDown();
    network.online = true;
    await settle();
    assert.equal(WebSocketClass.instances.length, 1, "no reconnect after 4409");
    assert.equal(last().link, "replaced");
    assert.deepEqual((await queue.oldest()).map((entry) => entry.seq), [101, 102]);
    assert.equal(last().queued, 2);
    await tracker.record(at(4)); // queued, not sent
    assert.equal(WebSocketClass.instances.length, 1);
    assert.equal(queue.size, 3);
    tracker.stop(); // the page stops tracking: the state still says why
    assert.equal(last().link, "replaced");
  });

  it("takes the socket back on start() after 4409, and sends what stayed queued", async () => {
    const { tracker, socket, clock, WebSocketClass, last, queue } = await setup();
    tracker.start();
    const first = socket();
    first.serverOpens();
    for (const n of [1, 2]) await tracker.record(at(n));
    await settle();
    first.serverCloses(4409);
    assert.equal(last().link, "replaced");
    clock.advance(60_000); // the user taps Start a minute later
    tracker.start();
    assert.equal(WebSocketClass.instances.length, 2);
    assert.equal(last().link, "connecting");
    assert.equal(last().closeCode, undefined);
    const second = socket();
    second.serverOpens();
    await settle();
    assert.equal(last().link, "live");
    assert.deepEqual(second.sent[0], { type: "auth", token: TOKEN }, "the same token, kept");
    assert.deepEqual(second.batches(), [[100, 101]]);
    second.receive({ type: "ack", seq: 101 });
    await settle();
    assert.equal(queue.size, 0);
    second.serverCloses(1006); // an ordinary close afterwards: retried as before
    assert.equal(last().link, "reconnecting");
  });

  it("reconnects with growing backoff after 4503 and 4429, and at once after an ack reset it", async () => {
    const { tracker, socket, clock, WebSocketClass, last } = await setup();
    tracker.start();
    socket().serverCloses(4503);
    assert.equal(last().link, "reconnecting");
    assert.equal(last().closeCode, 4503);
    assert.equal(last().retryAt, T0 + 500);
    clock.advance(500);
    socket().serverCloses(4429);
    assert.equal(last().retryAt, clock.now() + 1000); // attempt 1: half of 2000 ms
    clock.advance(1000);
    assert.equal(WebSocketClass.instances.length, 3);
  });

  it("closes the socket at once when the browser goes offline, and queues until it is back", async () => {
    const { tracker, socket, clock, WebSocketClass, last, network } = await setup();
    tracker.start();
    const first = socket();
    first.serverOpens();
    await tracker.record(at(1));
    await settle();
    first.receive({ type: "ack", seq: 100 });
    await settle();
    network.online = false;
    tracker.networkDown();
    assert.equal(first.closedWith, 1000);
    assert.equal(last().link, "offline");
    for (const n of [2, 3, 4]) await tracker.record(at(n));
    assert.equal(last().queued, 3);
    assert.equal(last().link, "offline");
    clock.advance(300_000);
    assert.equal(WebSocketClass.instances.length, 1, "no attempts while offline");
    first.serverCloses(1006); // the old socket's late close event changes nothing
    assert.equal(last().link, "offline");
    network.online = true;
    tracker.networkUp();
    const second = socket();
    assert.notEqual(second, first);
    second.serverOpens();
    await settle();
    assert.deepEqual(second.batches(), [[101, 102, 103]]);
    second.receive({ type: "ack", seq: 103 });
    await settle();
    assert.equal(last().queued, 0);
    assert.equal(last().link, "live");
  });

  it("does not try to connect while the browser says it is offline", async () => {
    const { tracker, WebSocketClass, last } = await setup({ online: false });
    tracker.start();
    assert.equal(WebSocketClass.instances.length, 0);
    assert.equal(last().link, "offline");
  });

  it("treats a socket that never acknowledges as dead and reconnects", async () => {
    const { tracker, socket, clock, WebSocketClass, last } = await setup();
    tracker.start();
    const first = socket();
    first.serverOpens();
    await tracker.record(at(1));
    await settle();
    clock.advance(19_999);
    assert.equal(WebSocketClass.instances.length, 1);
    clock.advance(1);
    assert.equal(first.closedWith, 1000);
    assert.equal(last().link, "reconnecting");
    clock.advance(500);
    socket().serverOpens();
    await settle();
    assert.deepEqual(socket().batches(), [[100]], "the position is sent again");
  });

  it("also gives up on a socket that never opens", async () => {
    const { tracker, clock, WebSocketClass, last } = await setup();
    tracker.start();
    clock.advance(20_000);
    assert.equal(last().link, "reconnecting");
    clock.advance(500);
    assert.equal(WebSocketClass.instances.length, 2);
  });

  it("after rate_limited, lets the socket go and resends the batch on a new one 2 s later", async () => {
    const { tracker, socket, clock, WebSocketClass, queue, last } = await setup();
    tracker.start();
    for (const n of [1, 2, 3]) await tracker.record(at(n));
    const first = socket();
    first.serverOpens();
    await settle();
    assert.deepEqual(first.batches(), [[100, 101, 102]]);
    first.receive({ type: "error", code: "rate_limited", detail: "too many frames; slow down" });
    await settle();
    assert.equal(first.closedWith, 1000, "the socket that refused a frame is closed");
    assert.equal(last().link, "reconnecting");
    assert.equal(last().retryAt, clock.now() + 2000);
    assert.equal(queue.size, 3, "the refused batch stays queued");
    assert.equal(last().refused, 0);
    await tracker.record(at(4));
    clock.advance(1999);
    await settle();
    assert.equal(WebSocketClass.instances.length, 1, "not before the pause");
    assert.deepEqual(first.batches(), [[100, 101, 102]], "nothing more on the refused socket");
    clock.advance(1);
    assert.equal(WebSocketClass.instances.length, 2);
    const second = socket();
    second.serverOpens();
    await settle();
    assert.deepEqual(second.sent[0], { type: "auth", token: TOKEN });
    assert.deepEqual(second.batches(), [[100, 101, 102, 103]]);
    second.receive({ type: "ack", seq: 103 });
    await settle();
    assert.equal(queue.size, 0);
    assert.equal(last().link, "live");
  });

  it("waits longer after each rate limit in a row, and 2 s again after an ack", async () => {
    const { tracker, socket, clock, WebSocketClass } = await setup();
    tracker.start();
    await tracker.record(at(1));
    const waits = [];
    const rateLimited = async () => {
      const before = WebSocketClass.instances.length;
      socket().receive({ type: "error", code: "rate_limited", detail: "too many frames; slow down" });
      await settle();
      const start = clock.now();
      for (let i = 0; i < 60 && WebSocketClass.instances.length === before; i += 1) clock.advance(1000);
      waits.push(clock.now() - start);
      socket().serverOpens();
      await settle();
    };
    socket().serverOpens();
    await settle();
    for (let i = 0; i < 6; i += 1) await rateLimited();
    assert.deepEqual(waits, [2000, 4000, 8000, 16000, 32000, 32000]);
    assert.deepEqual(socket().batches(), [[100]], "the batch is sent again on each new socket");
    socket().receive({ type: "ack", seq: 100 });
    await settle();
    await tracker.record(at(2));
    clock.advance(250);
    await settle();
    await rateLimited();
    assert.equal(waits.at(-1), 2000);
  });

  it("after an error frame, drops the position it names and sends the rest on a new socket at once", async () => {
    const { tracker, socket, clock, WebSocketClass, queue, last } = await setup();
    tracker.start();
    for (const n of [1, 2, 3]) await tracker.record(at(n));
    const first = socket();
    first.serverOpens();
    await settle();
    first.receive({ type: "error", code: "out_of_range", detail: "positions[1].lat must be between -90 and 90" });
    await settle();
    assert.equal(first.closedWith, 1000, "the socket that refused a frame is closed");
    assert.equal(last().refused, 1);
    assert.deepEqual((await queue.oldest()).map((entry) => entry.seq), [100, 102]);
    assert.equal(WebSocketClass.instances.length, 2, "a new socket, without waiting");
    assert.equal(last().link, "connecting");
    const second = socket();
    second.serverOpens();
    await settle();
    clock.advance(250); // the least time between two frames, sockets or not
    await settle();
    assert.deepEqual(first.batches(), [[100, 101, 102]], "nothing more on the refused socket");
    assert.deepEqual(second.sent[0], { type: "auth", token: TOKEN });
    assert.deepEqual(second.batches(), [[100, 102]]);
    second.receive({ type: "ack", seq: 102 });
    await settle();
    assert.equal(queue.size, 0);
    assert.equal(last().lastAcked.seq, 102);
  });

  it("with no frame in flight, still replaces a socket that sent an error frame, with backoff", async () => {
    const { tracker, socket, clock, WebSocketClass, queue, last } = await setup();
    tracker.start();
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    socket().receive({ type: "ack", seq: 100 });
    await settle();
    for (const n of [2, 3]) await tracker.record(at(n));
    await settle();
    const first = socket();
    assert.deepEqual(first.batches(), [[100]], "the next frame waits for the least interval");
    first.receive({ type: "error", code: "invalid_frame", detail: "already authenticated" });
    await settle();
    assert.equal(first.closedWith, 1000);
    assert.equal(last().refused, 0, "nothing in flight: nothing dropped");
    assert.equal(queue.size, 2);
    assert.equal(last().link, "reconnecting");
    assert.equal(last().retryAt, clock.now() + 500, "the ordinary backoff: 0.5 of 1000 ms");
    clock.advance(500);
    assert.equal(WebSocketClass.instances.length, 2);
    socket().serverOpens();
    await settle();
    assert.deepEqual(socket().batches(), [[101, 102]]);
    assert.deepEqual(first.batches(), [[100]], "nothing more on the refused socket");
  });

  it("drops the frame in flight for an error that names no position, and reconnects at once", async () => {
    const { tracker, socket, clock, WebSocketClass, queue, last } = await setup();
    tracker.start();
    for (const n of [1, 2]) await tracker.record(at(n));
    const first = socket();
    first.serverOpens();
    await settle();
    await tracker.record(at(3)); // queued behind the frame in flight
    first.receive({ type: "error", code: "invalid_json", detail: "the frame is not valid JSON" });
    await settle();
    assert.equal(last().refused, 2);
    assert.deepEqual((await queue.oldest()).map((entry) => entry.seq), [102]);
    assert.equal(WebSocketClass.instances.length, 2);
    socket().serverOpens();
    await settle();
    clock.advance(250);
    await settle();
    assert.deepEqual(socket().batches(), [[102]]);
  });

  it("after an error frame, ignores what the refused socket says afterwards", async () => {
    const { tracker, socket, queue, last } = await setup();
    tracker.start();
    for (const n of [1, 2]) await tracker.record(at(n));
    const first = socket();
    first.serverOpens();
    await settle();
    first.receive({ type: "error", code: "rate_limited", detail: "too many frames; slow down" });
    await settle();
    first.receive({ type: "ack", seq: 101 }); // cannot come from the server; ignored all the same
    first.serverCloses(4429);
    await settle();
    assert.equal(queue.size, 2);
    assert.equal(last().link, "reconnecting");
    assert.equal(last().closeCode, undefined);
  });

  it("does not reconnect after an error frame while the browser is offline or after stop()", async () => {
    const { tracker, socket, clock, WebSocketClass, last, network } = await setup();
    tracker.start();
    await tracker.record(at(1));
    socket().serverOpens();
    await settle();
    network.online = false; // before the browser's offline event
    socket().receive({ type: "error", code: "out_of_range", detail: "positions[0].lat must be between -90 and 90" });
    await settle();
    assert.equal(last().link, "offline");
    clock.advance(60_000);
    assert.equal(WebSocketClass.instances.length, 1);
    network.online = true;
    tracker.networkUp();
    assert.equal(WebSocketClass.instances.length, 2);
    await tracker.record(at(2));
    socket().serverOpens();
    await settle();
    socket().receive({ type: "error", code: "rate_limited", detail: "too many frames; slow down" });
    tracker.stop();
    clock.advance(60_000);
    assert.equal(WebSocketClass.instances.length, 2);
    assert.equal(last().link, "idle");
  });

  it("takes a cumulative ack for the frame in flight only: a lower one removes nothing", async () => {
    const { tracker, socket, clock, queue, last } = await setup();
    tracker.start();
    for (const n of [1, 2, 3]) await tracker.record(at(n));
    socket().serverOpens();
    await settle();
    assert.deepEqual(socket().batches(), [[100, 101, 102]]);
    socket().receive({ type: "ack", seq: 101 }); // not this frame's seq: it covers no frame of ours
    await settle();
    assert.equal(queue.size, 3);
    assert.equal(last().lastAcked, null);
    clock.advance(19_999);
    assert.equal(last().link, "live", "the frame is still awaited");
    socket().receive({ type: "ack", seq: 102 });
    await settle();
    assert.equal(queue.size, 0);
    assert.equal(last().lastAcked.seq, 102);
  });

  it("does not let an ack above the frame in flight remove positions queued after it", async () => {
    const { tracker, socket, clock, queue, last } = await setup();
    tracker.start();
    socket().serverOpens();
    await tracker.record(at(1));
    await settle();
    for (const n of [2, 3]) await tracker.record(at(n)); // queued, not sent
    socket().receive({ type: "ack", seq: 102 });
    await settle();
    assert.deepEqual((await queue.oldest()).map((entry) => entry.seq), [101, 102]);
    assert.equal(last().lastAcked.seq, 100);
    clock.advance(250);
    await settle();
    assert.deepEqual(socket().batches(), [[100], [101, 102]]);
  });

  it("does not let an ack from the socket it replaced remove positions", async () => {
    const { tracker, socket, clock, queue } = await setup();
    tracker.start();
    for (const n of [1, 2]) await tracker.record(at(n));
    const first = socket();
    first.serverOpens();
    await settle();
    clock.advance(20_000); // no ack: the socket is taken for dead
    clock.advance(500);
    const second = socket();
    assert.notEqual(second, first);
    for (const n of [3]) await tracker.record(at(n));
    second.serverOpens();
    await settle();
    assert.deepEqual(second.batches(), [[100, 101, 102]]);
    first.receive({ type: "ack", seq: 102 }); // late, from the socket let go
    await settle();
    assert.equal(queue.size, 3);
    second.receive({ type: "ack", seq: 102 });
    await settle();
    assert.equal(queue.size, 0);
  });

  it("closes the socket and stops retrying on stop(), keeping the queue", async () => {
    const { tracker, socket, clock, WebSocketClass, last, queue } = await setup();
    tracker.start();
    const first = socket();
    first.serverOpens();
    await tracker.record(at(1));
    await settle();
    tracker.stop();
    assert.equal(first.closedWith, 1000);
    assert.equal(last().link, "idle");
    clock.advance(60_000);
    assert.equal(WebSocketClass.instances.length, 1);
    assert.equal(queue.size, 1);
  });

  it("ignores frames it does not know and acks from a socket it let go", async () => {
    const { tracker, socket, queue } = await setup();
    tracker.start();
    const first = socket();
    first.serverOpens();
    await tracker.record(at(1));
    await settle();
    first.onmessage({ data: "not json" });
    first.receive({ type: "snapshot" });
    tracker.networkDown();
    first.receive({ type: "ack", seq: 100 });
    await settle();
    assert.equal(queue.size, 1);
  });
});

describe("Tracker pipelining", () => {
  /**
   * An open tracker past its socket's first ack (a new socket sends one frame until then), with
   * that frame (seq 99) left out of what the socket sent; `record(n)` queues at(n) and lets the
   * tracker send it.
   */
  async function live(options) {
    const env = await setup({ firstSeq: 99, ...options });
    env.tracker.start();
    env.socket().serverOpens();
    await env.tracker.record(at(0));
    await settle();
    env.socket().receive({ type: "ack", seq: 99 });
    env.clock.advance(250);
    await settle();
    assert.deepEqual(env.socket().batches(), [[99]]);
    env.socket().sent.length = 0;
    env.record = async (n) => {
      await env.tracker.record(at(n));
      await settle();
    };
    env.tick = async (ms) => {
      env.clock.advance(ms);
      await settle();
    };
    env.ack = async (seq, ws = env.socket()) => {
      ws.receive({ type: "ack", seq });
      await settle();
    };
    env.queued = async () => (await env.queue.oldest()).map((entry) => entry.seq);
    return env;
  }

  it("sends a second batch before the first one's ack", async () => {
    const { socket, record, tick, last } = await live();
    await record(1);
    await tick(250);
    await record(2);
    assert.deepEqual(socket().batches(), [[100], [101]], "no wait for the ack of 100");
    assert.equal(last().lastSent.seq, 101);
    assert.equal(last().queued, 2, "both stay queued until acknowledged");
  });

  it("removes both frames in flight on one ack that covers them", async () => {
    const { socket, record, tick, ack, queue, last, clock } = await live();
    await record(1);
    await tick(250);
    await record(2);
    await ack(101);
    assert.equal(queue.size, 0);
    assert.equal(last().lastAcked.seq, 101);
    assert.deepEqual(clock.pending(), [], "nothing in flight: no ack awaited");
    await tick(250);
    assert.deepEqual(socket().batches(), [[100], [101]], "nothing sent again");
  });

  it("keeps the second frame in flight on an ack that covers only the first", async () => {
    const { socket, record, tick, ack, queued, last } = await live();
    await record(1);
    await tick(250);
    await record(2);
    await ack(100);
    assert.deepEqual(await queued(), [101]);
    assert.equal(last().lastAcked.seq, 100);
    await record(3);
    await tick(250);
    assert.deepEqual(socket().batches(), [[100], [101], [102]], "101 is in flight: not sent again");
    await ack(102);
    assert.deepEqual(await queued(), []);
  });

  it("never sends a queued position twice on one socket", async () => {
    const { socket, record, tick, ack } = await live();
    for (let n = 1; n <= 40; n += 1) {
      await record(n);
      if (n % 3 === 0) await tick(250);
      if (n % 7 === 0) await ack(socket().batches()[0].at(-1)); // an old ack, then a newer one
      if (n % 11 === 0) await ack(socket().batches().at(-2).at(-1));
    }
    await tick(250);
    const sent = socket().batches().flat();
    assert.deepEqual(sent, Array.from({ length: 40 }, (_, n) => 100 + n), "each once, in order");
  });

  it(`keeps at most ${MAX_FRAMES_IN_FLIGHT} frames in flight, and sends the next after an ack`, async () => {
    const { socket, record, tick, ack, queued } = await live();
    for (let n = 0; n < MAX_FRAMES_IN_FLIGHT; n += 1) {
      await record(n);
      await tick(1000);
    }
    assert.equal(socket().batches().length, MAX_FRAMES_IN_FLIGHT);
    await record(100);
    await record(101);
    await tick(2000);
    assert.equal(socket().batches().length, MAX_FRAMES_IN_FLIGHT, "the window is full");
    await ack(100); // the first frame only
    const batches = socket().batches();
    assert.equal(batches.length, MAX_FRAMES_IN_FLIGHT + 1);
    assert.deepEqual(batches.at(-1), [100 + MAX_FRAMES_IN_FLIGHT, 101 + MAX_FRAMES_IN_FLIGHT]);
    assert.equal((await queued()).length, MAX_FRAMES_IN_FLIGHT + 1);
  });

  it(`keeps at most ${MAX_POSITIONS_IN_FLIGHT} positions in flight: a backlog leaves at an ack's pace`, async () => {
    const { tracker, socket, record, tick, ack } = await live();
    await record(0); // leaves at once, alone
    for (let n = 1; n < 1500; n += 1) await tracker.record(at(n));
    await settle();
    for (let i = 0; i < 20; i += 1) await tick(250);
    const sizes = () => socket().batches().map((batch) => batch.length);
    assert.deepEqual(sizes(), [1, 500, MAX_POSITIONS_IN_FLIGHT - 501], "up to the bound, no more");
    await ack(100);
    assert.deepEqual(sizes(), [1, 500, 499, 1], "one position fewer in flight: room for one");
    await ack(1099);
    await tick(250);
    assert.deepEqual(sizes(), [1, 500, 499, 1, 499]);
    assert.deepEqual(socket().batches().flat(), Array.from({ length: 1500 }, (_, n) => 100 + n));
  });

  it("resends everything not acknowledged on a new socket, and ignores the old socket's acks", async () => {
    const { socket, record, tick, ack, WebSocketClass, queue, queued } = await live();
    for (let n = 1; n <= 4; n += 1) {
      await record(n);
      await tick(250);
    }
    const first = socket();
    assert.deepEqual(first.batches(), [[100], [101], [102], [103]]);
    await ack(101);
    first.serverCloses(1006);
    await record(5);
    await tick(500);
    assert.equal(WebSocketClass.instances.length, 2);
    const second = socket();
    second.serverOpens();
    await settle();
    assert.deepEqual(second.batches(), [[102, 103, 104]], "all that was in flight, then the new one");
    await ack(104, first); // the socket let go: ignored
    assert.equal(queue.size, 3);
    await ack(104, second);
    assert.deepEqual(await queued(), []);
  });

  it("takes a socket that gets frames but gives no ack for 20 s for dead", async () => {
    const { socket, record, tick, WebSocketClass, last } = await live();
    const first = socket();
    for (let s = 0; s < 20; s += 1) {
      await record(s);
      if (s < 19) await tick(1000);
    }
    assert.equal(first.batches().length, MAX_FRAMES_IN_FLIGHT, "frames went on going out");
    await tick(999);
    assert.equal(last().link, "live", "19.999 s after the oldest frame left");
    await tick(1);
    assert.equal(first.closedWith, 1000);
    assert.equal(last().link, "reconnecting");
    await tick(500);
    assert.equal(WebSocketClass.instances.length, 2);
    socket().serverOpens();
    await settle();
    assert.deepEqual(socket().batches(), [Array.from({ length: 20 }, (_, n) => 100 + n)]);
  });

  it("counts the 20 s from the last ack or the oldest frame's sending, whichever is later", async () => {
    const { socket, record, tick, ack, last } = await live();
    await record(1);
    await tick(5000);
    await ack(100); // nothing in flight
    await tick(7000);
    await record(2); // at 12 s: the oldest frame in flight, sent after the last ack
    await tick(19_999);
    assert.equal(last().link, "live");
    await tick(1);
    assert.equal(last().link, "reconnecting");
    assert.deepEqual(socket().batches(), [[100], [101]]);
  });

  it("keeps a socket whose acks come every 10 s, sending each position at once", async () => {
    const { socket, record, tick, ack, WebSocketClass, last, queue } = await live();
    for (let s = 0; s < 120; s += 1) {
      await record(s);
      assert.equal(socket().batches().length, s + 1, "the position left without waiting");
      // Every 10 s an ack of every frame but the newest (not yet safe when the ack left).
      if (s % 10 === 0 && s > 0) await ack(socket().batches().at(-2).at(-1));
      await tick(1000);
    }
    assert.equal(WebSocketClass.instances.length, 1);
    assert.equal(last().link, "live");
    assert.ok(queue.size <= 10);
    // Then the acks stop: the socket is dead 20 s after the last one (at 110 s), though frames
    // went on going out until 119 s.
    await tick(9_999);
    assert.equal(last().link, "live");
    await tick(1);
    assert.equal(last().link, "reconnecting");
  });

  it("after an error frame with several frames in flight, drops nothing and resends one frame at a time", async () => {
    const { socket, record, tick, ack, WebSocketClass, last, queued } = await live();
    await record(1);
    await tick(250);
    await record(2);
    const first = socket();
    first.receive({ type: "error", code: "out_of_range", detail: "positions[0].lat must be between -90 and 90" });
    await settle();
    assert.equal(first.closedWith, 1000);
    assert.equal(last().refused, 0, "which frame it was is not known");
    assert.deepEqual(await queued(), [100, 101]);
    assert.equal(WebSocketClass.instances.length, 2, "a new socket at once");
    const second = socket();
    second.serverOpens();
    await tick(250); // the least time between two frames, sockets or not
    assert.deepEqual(second.batches(), [[100, 101]]);
    await record(3);
    await tick(1000);
    assert.deepEqual(second.batches(), [[100, 101]], "one frame at a time after an error");
    second.receive({ type: "error", code: "out_of_range", detail: "positions[1].lat must be between -90 and 90" });
    await settle();
    assert.equal(last().refused, 1);
    assert.deepEqual(await queued(), [100, 102], "101 dropped: the one frame in flight named it");
    const third = socket();
    third.serverOpens();
    await tick(250);
    assert.deepEqual(third.batches(), [[100, 102]]);
    await record(4);
    await tick(1000);
    assert.equal(third.batches().length, 1, "still one at a time");
    await ack(102);
    assert.deepEqual(third.batches(), [[100, 102], [103]], "103 leaves once the ack comes");
    await tick(250);
    await record(5);
    assert.deepEqual(third.batches(), [[100, 102], [103], [104]], "104 does not wait for 103's ack");
  });
});
