// static/js/history/replay.js: where a worker was at a time (binary search, interpolation over
// short gaps only), the span and bounds of the loaded tracks, and the slider's clock driven by
// given times.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  boundsOf, extent, indexAt, positionAt, ReplayClock, SPEEDS,
} from "../../static/js/history/replay.js";

// A walk east, one point every 10 s from t=100, then the device off for 10 minutes.
const WALK = [
  [100, 41.0, 2.0],
  [110, 41.0, 2.1],
  [120, 41.0, 2.2],
  [720, 41.5, 2.2],
];

describe("indexAt", () => {
  it("finds the last point at or before a time", () => {
    assert.equal(indexAt(WALK, 99.9), -1);
    assert.equal(indexAt(WALK, 100), 0);
    assert.equal(indexAt(WALK, 109.99), 0);
    assert.equal(indexAt(WALK, 110), 1);
    assert.equal(indexAt(WALK, 500), 2);
    assert.equal(indexAt(WALK, 720), 3);
    assert.equal(indexAt(WALK, 1e12), 3);
    assert.equal(indexAt([], 100), -1);
  });

  it("takes the last of equal times", () => {
    assert.equal(indexAt([[1, 0, 0], [2, 0, 1], [2, 0, 2], [3, 0, 3]], 2), 2);
  });

  it("agrees with a linear scan on a day of points, in about 17 steps each", () => {
    const day = Array.from({ length: 86_400 }, (_, second) => [1_700_000_000 + second, 0, 0]);
    for (const t of [1_699_999_999, 1_700_000_000, 1_700_000_000.5, 1_700_043_210.7, 1_700_086_399, 1_800_000_000]) {
      let expected = -1;
      for (let index = 0; index < day.length; index += 1) if (day[index][0] <= t) expected = index;
      assert.equal(indexAt(day, t), expected, String(t));
    }
  });
});

describe("positionAt", () => {
  it("has no position before the first point and holds the last after the end", () => {
    assert.equal(positionAt(WALK, 50), null);
    assert.deepEqual(positionAt(WALK, 100), [41.0, 2.0]);
    assert.deepEqual(positionAt(WALK, 5000), [41.5, 2.2]);
  });

  it("interpolates between points at most maxGap apart", () => {
    const [lat, lng] = positionAt(WALK, 105);
    assert.equal(lat, 41.0);
    assert.ok(Math.abs(lng - 2.05) < 1e-12, String(lng));
    assert.deepEqual(positionAt(WALK, 110), [41.0, 2.1]);
  });

  it("waits at the last point across a longer gap, or always with maxGap 0", () => {
    assert.deepEqual(positionAt(WALK, 400), [41.0, 2.2]);
    assert.deepEqual(positionAt(WALK, 400, { maxGap: 1000 }).map((value) => Math.round(value * 1e6) / 1e6), [41.233333, 2.2]);
    assert.deepEqual(positionAt(WALK, 105, { maxGap: 0 }), [41.0, 2.0]);
  });
});

describe("extent and boundsOf", () => {
  it("span every track, skipping empty ones", () => {
    const other = [[90, 40.0, 3.0], [130, 40.5, 1.5]];
    assert.deepEqual(extent([WALK, [], other]), { since: 90, until: 720 });
    assert.deepEqual(boundsOf([WALK, [], other]), [[40.0, 1.5], [41.5, 3.0]]);
  });

  it("are null without a point", () => {
    assert.equal(extent([]), null);
    assert.equal(extent([[], []]), null);
    assert.equal(boundsOf([[]]), null);
  });
});

describe("ReplayClock", () => {
  it("starts paused at the beginning", () => {
    const clock = new ReplayClock({ since: 1000, until: 2000 });
    assert.equal(clock.playing, false);
    assert.equal(clock.time(0), 1000);
    assert.equal(clock.time(99_999), 1000);
  });

  it("runs at its speed while playing and holds its time when paused", () => {
    const clock = new ReplayClock({ since: 1000, until: 5000, speed: 60 });
    clock.play(10_000);
    assert.equal(clock.time(10_000), 1000);
    assert.equal(clock.time(11_000), 1060);
    assert.equal(clock.time(12_500), 1150);
    clock.pause(12_500);
    assert.equal(clock.time(60_000), 1150);
    clock.play(60_000);
    assert.equal(clock.time(61_000), 1210);
  });

  it("stops at the end, and plays again from the beginning", () => {
    const clock = new ReplayClock({ since: 1000, until: 1100, speed: 10 });
    clock.play(0);
    assert.equal(clock.ended(9_999), false);
    assert.equal(clock.time(20_000), 1100);
    assert.equal(clock.ended(20_000), true);
    clock.pause(20_000);
    clock.play(30_000);
    assert.equal(clock.time(30_000), 1000);
    assert.equal(clock.time(31_000), 1010);
  });

  it("seeks within its range, playing on from there", () => {
    const clock = new ReplayClock({ since: 1000, until: 2000, speed: 5 });
    clock.seek(1500, 0);
    assert.equal(clock.time(1000), 1500, "paused: stays");
    clock.seek(-5, 0);
    assert.equal(clock.time(0), 1000);
    clock.seek(9999, 0);
    assert.equal(clock.time(0), 2000);
    clock.seek(1200, 0);
    clock.play(0);
    clock.seek(1700, 4_000);
    assert.equal(clock.time(5_000), 1705);
  });

  it("changes speed without a jump", () => {
    const clock = new ReplayClock({ since: 0, until: 100_000, speed: 1 });
    clock.play(0);
    assert.equal(clock.time(10_000), 10);
    clock.setSpeed(30, 10_000);
    assert.equal(clock.time(10_000), 10);
    assert.equal(clock.time(11_000), 40);
    clock.pause(11_000);
    clock.setSpeed(60, 50_000);
    assert.equal(clock.time(90_000), 40);
  });

  it("offers the issue's speeds, ×1 to ×60", () => {
    assert.deepEqual(SPEEDS, [1, 5, 10, 30, 60]);
  });
});
