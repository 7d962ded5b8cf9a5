// static/js/workers.js: the worker store fed by snapshot, positions and presence frames, its
// trails, and the rule that makes a worker online, stale or offline.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { WorkerStore, workerState } from "../../static/js/workers.js";

const NOW = 1_764_150_000;
const CONFIG = { staleAfter: 30, trailPoints: 5, trailSeconds: 120 };

function store(config = CONFIG) {
  return new WorkerStore(config);
}

function entry(id, fields = {}) {
  return { id, name: `Courier ${id}`, lat: null, lng: null, ts: null, online: true, ...fields };
}

describe("workerState", () => {
  it("is offline whenever the worker is offline, whatever its last position", () => {
    assert.equal(workerState({ online: false, ts: NOW }, NOW, 30), "offline");
    assert.equal(workerState({ online: false, ts: null }, NOW, 30), "offline");
  });

  it("is stale for an online worker with no position, or none for more than staleAfter", () => {
    assert.equal(workerState({ online: true, ts: null }, NOW, 30), "stale");
    assert.equal(workerState({ online: true, ts: NOW - 30.5 }, NOW, 30), "stale");
  });

  it("is online up to staleAfter seconds after the last position, and for a clock ahead", () => {
    assert.equal(workerState({ online: true, ts: NOW - 30 }, NOW, 30), "online");
    assert.equal(workerState({ online: true, ts: NOW }, NOW, 30), "online");
    assert.equal(workerState({ online: true, ts: NOW + 5 }, NOW, 30), "online");
  });
});

describe("WorkerStore.replaceAll (snapshot)", () => {
  it("takes every worker of the snapshot, with its position and state", () => {
    const workers = store();
    const gone = workers.replaceAll([
      entry(7, { lat: 41.39, lng: 2.16, ts: NOW - 1, acc: 5, speed: 3.2, heading: 270 }),
      entry(8, { online: false }),
      entry(9, { lat: 41.4, lng: 2.17, ts: NOW - 100 }),
    ], NOW);
    assert.deepEqual(gone, []);
    assert.deepEqual([...workers.workers.keys()], [7, 8, 9]);
    assert.deepEqual(workers.workers.get(7), {
      id: 7, name: "Courier 7", online: true,
      lat: 41.39, lng: 2.16, ts: NOW - 1, acc: 5, speed: 3.2, heading: 270,
      trail: [[41.39, 2.16, NOW - 1]],
      state: "online",
    });
    assert.deepEqual(workers.workers.get(8), {
      id: 8, name: "Courier 8", online: false,
      lat: null, lng: null, ts: null, acc: null, speed: null, heading: null,
      trail: [],
      state: "offline",
    });
    assert.equal(workers.workers.get(9).state, "stale");
  });

  it("names nameless workers, takes only `online: true` as online, and skips bad ids", () => {
    const workers = store();
    workers.replaceAll([
      { id: 3, name: "", online: 1, lat: null, lng: null, ts: null },
      { id: 4, online: "true", lat: null, lng: null, ts: null },
      { id: "5", name: "String id", online: true },
      { id: 6.5, name: "Fraction", online: true },
      { name: "No id", online: true },
    ], NOW);
    assert.deepEqual([...workers.workers.keys()], [3, 4]);
    assert.equal(workers.workers.get(3).name, "Worker 3");
    assert.equal(workers.workers.get(3).online, false);
    assert.equal(workers.workers.get(4).online, false);
  });

  it("ignores a position with a missing or non-finite part", () => {
    const workers = store();
    workers.replaceAll([
      entry(1, { lat: 41.39, lng: null, ts: NOW }),
      entry(2, { lat: 41.39, lng: 2.16, ts: "1764150000" }),
      entry(3, { lat: Number.NaN, lng: 2.16, ts: NOW }),
    ], NOW);
    for (const worker of workers.workers.values()) {
      assert.equal(worker.lat, null, `worker ${worker.id}`);
      assert.deepEqual(worker.trail, []);
    }
  });

  it("refills the same Map and returns the ids that are gone", () => {
    const workers = store();
    const map = workers.workers;
    workers.replaceAll([entry(1), entry(2), entry(3)], NOW);
    const gone = workers.replaceAll([entry(2), entry(4)], NOW + 1);
    assert.deepEqual(gone.sort(), [1, 3]);
    assert.equal(workers.workers, map);
    assert.deepEqual([...map.keys()], [2, 4]);
  });

  it("keeps the trail of a worker still there, cut back to the snapshot's position", () => {
    const workers = store();
    workers.replaceAll([entry(1)], NOW);
    workers.applyPositions([
      { id: 1, lat: 1, lng: 1, ts: NOW + 1 },
      { id: 1, lat: 2, lng: 2, ts: NOW + 2 },
      { id: 1, lat: 3, lng: 3, ts: NOW + 3 },
    ], NOW + 3);
    // After a reconnect the snapshot says the newest position was the second one.
    workers.replaceAll([entry(1, { lat: 2.5, lng: 2.5, ts: NOW + 2 })], NOW + 10);
    assert.deepEqual(workers.workers.get(1).trail, [[1, 1, NOW + 1], [2.5, 2.5, NOW + 2]]);
  });
});

describe("WorkerStore.applyPositions", () => {
  it("moves known workers and returns them", () => {
    const workers = store();
    workers.replaceAll([entry(7, { lat: 41.39, lng: 2.16, ts: NOW - 10 }), entry(8)], NOW - 10);
    const { moved, created } = workers.applyPositions([
      { id: 7, lat: 41.4, lng: 2.17, ts: NOW, speed: 3.1 },
    ], NOW);
    const worker = workers.workers.get(7);
    assert.deepEqual(moved, [worker]);
    assert.deepEqual(created, []);
    assert.deepEqual([worker.lat, worker.lng, worker.ts, worker.speed], [41.4, 2.17, NOW, 3.1]);
    assert.deepEqual(worker.trail, [[41.39, 2.16, NOW - 10], [41.4, 2.17, NOW]]);
  });

  it("clears optional fields a newer position does not carry", () => {
    const workers = store();
    workers.replaceAll([entry(7, { lat: 1, lng: 1, ts: NOW - 1, acc: 5, speed: 3, heading: 90 })], NOW);
    workers.applyPositions([{ id: 7, lat: 2, lng: 2, ts: NOW, acc: 8, heading: null }], NOW);
    const worker = workers.workers.get(7);
    assert.deepEqual([worker.acc, worker.speed, worker.heading], [8, null, null]);
  });

  it("creates a worker the snapshot did not know, online", () => {
    const workers = store();
    workers.replaceAll([], NOW);
    const { moved, created } = workers.applyPositions([{ id: 12, lat: 1, lng: 2, ts: NOW }], NOW);
    const worker = workers.workers.get(12);
    assert.deepEqual(created, [worker]);
    assert.deepEqual(moved, [worker]);
    assert.equal(worker.name, "Worker 12");
    assert.equal(worker.online, true);
    assert.equal(worker.state, "online");
  });

  it("skips positions that are late or malformed", () => {
    const workers = store();
    workers.replaceAll([entry(7, { lat: 1, lng: 1, ts: NOW })], NOW);
    const { moved, created } = workers.applyPositions([
      { id: 7, lat: 9, lng: 9, ts: NOW - 1 }, // older than the one shown
      { id: 7, lat: "9", lng: 9, ts: NOW + 1 },
      { id: 7, lat: 9, lng: Number.POSITIVE_INFINITY, ts: NOW + 1 },
      { id: 7, lat: 9, lng: 9 },
      { id: "7", lat: 9, lng: 9, ts: NOW + 1 },
      { lat: 9, lng: 9, ts: NOW + 1 },
    ], NOW + 1);
    assert.deepEqual(moved, []);
    assert.deepEqual(created, []);
    assert.deepEqual([...workers.workers.keys()], [7]);
    assert.deepEqual(workers.workers.get(7).trail, [[1, 1, NOW]]);
  });

  it("replaces the newest trail point by a position with the same ts", () => {
    const workers = store();
    workers.replaceAll([entry(7, { lat: 1, lng: 1, ts: NOW })], NOW);
    const { moved } = workers.applyPositions([{ id: 7, lat: 1.5, lng: 1.5, ts: NOW }], NOW);
    assert.equal(moved.length, 1);
    assert.deepEqual(workers.workers.get(7).trail, [[1.5, 1.5, NOW]]);
  });

  it("keeps at most trailPoints points, none older than trailSeconds but the newest", () => {
    const workers = store({ staleAfter: 30, trailPoints: 5, trailSeconds: 120 });
    workers.replaceAll([entry(1)], NOW);
    for (let i = 0; i < 8; i += 1) workers.applyPositions([{ id: 1, lat: i, lng: i, ts: NOW + i }], NOW + i);
    assert.deepEqual(workers.workers.get(1).trail.map((point) => point[0]), [3, 4, 5, 6, 7]);

    // Within the count but far apart in time: points over 120 s older than the newest go.
    workers.applyPositions([{ id: 1, lat: 8, lng: 8, ts: NOW + 100 }], NOW + 100);
    workers.applyPositions([{ id: 1, lat: 9, lng: 9, ts: NOW + 200 }], NOW + 200);
    assert.deepEqual(workers.workers.get(1).trail.map((point) => point[0]), [8, 9]);
    workers.applyPositions([{ id: 1, lat: 10, lng: 10, ts: NOW + 1000 }], NOW + 1000);
    assert.deepEqual(workers.workers.get(1).trail, [[10, 10, NOW + 1000]]);
  });
});

describe("WorkerStore.applyPresence", () => {
  it("turns a known worker offline and online, renaming it when the frame names it", () => {
    const workers = store();
    workers.replaceAll([entry(7, { lat: 1, lng: 1, ts: NOW })], NOW);
    let result = workers.applyPresence({ type: "presence", id: 7, name: "Renamed", online: false }, NOW);
    assert.deepEqual(result, { worker: workers.workers.get(7), created: false });
    assert.equal(result.worker.name, "Renamed");
    assert.equal(result.worker.state, "offline");
    // A replica reporting another's workers offline does not know their names.
    result = workers.applyPresence({ type: "presence", id: 7, online: true }, NOW + 1);
    assert.equal(result.worker.name, "Renamed");
    assert.equal(result.worker.online, true);
    assert.equal(result.worker.state, "online");
  });

  it("creates a worker it did not know, and ignores a frame without an integer id", () => {
    const workers = store();
    workers.replaceAll([], NOW);
    const { worker, created } = workers.applyPresence({ type: "presence", id: 5, online: true }, NOW);
    assert.equal(created, true);
    assert.equal(workers.workers.get(5), worker);
    assert.equal(worker.name, "Worker 5");
    assert.equal(worker.state, "stale"); // online, but no position yet
    assert.deepEqual(workers.applyPresence({ type: "presence", id: "6", online: true }, NOW), {
      worker: null,
      created: false,
    });
    assert.equal(workers.workers.size, 1);
  });
});

describe("WorkerStore.refresh and counts", () => {
  it("reports a state change once, as time passes", () => {
    const workers = store();
    workers.replaceAll([entry(7, { lat: 1, lng: 1, ts: NOW })], NOW);
    const worker = workers.workers.get(7);
    assert.equal(workers.refresh(worker, NOW + 30), false);
    assert.equal(workers.refresh(worker, NOW + 31), true);
    assert.equal(worker.state, "stale");
    assert.equal(workers.refresh(worker, NOW + 32), false);
  });

  it("counts the online workers and all of them", () => {
    const workers = store();
    workers.replaceAll([entry(1), entry(2, { online: false }), entry(3)], NOW);
    assert.deepEqual(workers.counts(), { online: 2, total: 3 });
    workers.applyPresence({ type: "presence", id: 3, online: false }, NOW);
    assert.deepEqual(workers.counts(), { online: 1, total: 3 });
  });
});
