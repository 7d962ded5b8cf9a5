// static/js/track/queue.js: turning geolocation fixes into protocol positions, the queue of
// positions not yet acknowledged and its seq counter (over the in-memory storage; store.js keeps
// the same interface in IndexedDB, exercised by tests/browser/test_track_page.py).

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { batchFrame, firstSeq, fixToPosition, MAX_BATCH, MemoryStorage, PositionQueue } from "../../static/js/track/queue.js";

const T0 = 1_764_150_000_000; // ms

/** A GeolocationPosition-like fix. */
function fix(coords, timestamp = T0) {
  return { coords: { latitude: 41.39, longitude: 2.16, accuracy: 5, speed: null, heading: null, ...coords }, timestamp };
}

const position = (n) => ({ lat: 41.39, lng: 2.16 + n / 1000, ts: T0 / 1000 + n });

describe("fixToPosition", () => {
  it("converts a fix: degrees, seconds since the epoch, metres", () => {
    assert.deepEqual(fixToPosition(fix({ speed: 3.5, heading: 270 }, T0 + 250)), {
      lat: 41.39, lng: 2.16, ts: T0 / 1000 + 0.25, acc: 5, speed: 3.5, heading: 270,
    });
  });

  it("leaves out what the browser does not know (null speed, NaN heading)", () => {
    assert.deepEqual(fixToPosition(fix({ accuracy: null, speed: null, heading: Number.NaN })), {
      lat: 41.39, lng: 2.16, ts: T0 / 1000,
    });
  });

  it("leaves out optional values the server would refuse, rather than lose the position", () => {
    const out = fixToPosition(fix({ accuracy: 200000, speed: -1, heading: 361 }));
    assert.deepEqual(out, { lat: 41.39, lng: 2.16, ts: T0 / 1000 });
  });

  it("gives nothing for a fix without usable coordinates or time", () => {
    assert.equal(fixToPosition(fix({ latitude: Number.NaN })), null);
    assert.equal(fixToPosition(fix({ latitude: 91 })), null);
    assert.equal(fixToPosition(fix({ longitude: -181 })), null);
    assert.equal(fixToPosition(fix({}, 0)), null);
    assert.equal(fixToPosition(/** @type {any} */ ({})), null);
  });
});

describe("batchFrame", () => {
  it("gives nothing to send for an empty queue", () => {
    assert.equal(batchFrame([]), null);
  });

  it("sends the oldest positions first, at most 500 in a frame", () => {
    const queued = Array.from({ length: 1200 }, (_, n) => ({ ...position(n), seq: 100 + n }));
    const frame = batchFrame(queued);
    assert.equal(frame.type, "batch");
    assert.equal(frame.positions.length, MAX_BATCH);
    assert.deepEqual(frame.positions.map((entry) => entry.seq), queued.slice(0, 500).map((entry) => entry.seq));
    assert.equal(batchFrame(queued, 3).positions.length, 3);
  });
});

describe("PositionQueue", () => {
  it("numbers positions from the clock, one more each time", async () => {
    assert.equal(firstSeq(() => T0 + 0.7), T0);
    const queue = await new PositionQueue(new MemoryStorage(), { now: () => T0 }).load();
    const first = await queue.push(position(1));
    const second = await queue.push(position(2));
    assert.equal(first.seq, T0);
    assert.equal(second.seq, T0 + 1);
    assert.equal(queue.size, 2);
    assert.deepEqual((await queue.oldest()).map((entry) => entry.seq), [T0, T0 + 1]);
  });

  it("keeps the counter and the queue in storage: a reload goes on where it stopped", async () => {
    const storage = new MemoryStorage();
    const before = await new PositionQueue(storage, { now: () => T0 }).load();
    await before.push(position(1));
    await before.push(position(2));
    await before.acknowledge(T0 + 1); // both acknowledged: the queue is empty, the counter is not
    await before.push(position(3));
    // A later page, whose clock went backwards: the stored counter wins.
    const after = await new PositionQueue(storage, { now: () => T0 - 5000 }).load();
    assert.equal(after.size, 1);
    const next = await after.push(position(4));
    assert.equal(next.seq, T0 + 3);
    assert.deepEqual((await after.oldest()).map((entry) => entry.lng), [position(3).lng, position(4).lng]);
  });

  it("forgets exactly what an ack covers", async () => {
    const queue = await new PositionQueue(new MemoryStorage(), { now: () => 10 }).load();
    for (let n = 0; n < 5; n += 1) await queue.push(position(n));
    await queue.acknowledge(12);
    assert.equal(queue.size, 2);
    assert.deepEqual((await queue.oldest()).map((entry) => entry.seq), [13, 14]);
    await queue.acknowledge(11); // a late ack of something already gone changes nothing
    assert.equal(queue.size, 2);
  });

  it("drops refused positions and can be cleared", async () => {
    const queue = await new PositionQueue(new MemoryStorage(), { now: () => 10 }).load();
    for (let n = 0; n < 4; n += 1) await queue.push(position(n));
    await queue.drop([11, 13]);
    assert.deepEqual((await queue.oldest()).map((entry) => entry.seq), [10, 12]);
    await queue.clear();
    assert.equal(queue.size, 0);
    assert.equal((await queue.push(position(9))).seq, 14, "clearing the queue keeps the counter");
  });

  it("gives copies: changing what it returned does not change the queue", async () => {
    const queue = await new PositionQueue(new MemoryStorage(), { now: () => 10 }).load();
    await queue.push(position(1));
    const [entry] = await queue.oldest();
    entry.lat = 0;
    assert.equal((await queue.oldest())[0].lat, 41.39);
  });
});
