// @ts-check
// The history page's replay, without Leaflet or the DOM: where a worker was at a time (a binary
// search in its loaded points), the time span of the loaded tracks, and the clock that moves the
// slider at a chosen speed (given the time, never reading it, so tests drive it).

/** @typedef {import("./types.js").TrackPoint} TrackPoint */

/** The replay speeds the page offers: seconds of history per second of replay. */
export const SPEEDS = [1, 5, 10, 30, 60];

/**
 * Return the index of the last point at or before `t`, or -1 if every point is after it.
 * `points` are in time order; equal times are allowed (the last of them is returned).
 * @param {readonly TrackPoint[]} points
 * @param {number} t  Unix seconds
 */
export function indexAt(points, t) {
  let low = 0;
  let high = points.length; // the answer + 1 lies in [low, high]
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (points[middle][0] <= t) low = middle + 1;
    else high = middle;
  }
  return low - 1;
}

/**
 * Where a worker was at `t`: its last point at or before `t` (none before its first point).
 * Between two points at most `maxGap` seconds apart the position is interpolated, so that a
 * replay glides instead of jumping; across a longer gap (the device off) it waits at the last
 * point, since where the worker went meanwhile is unknown.
 * @param {readonly TrackPoint[]} points  in time order
 * @param {number} t  Unix seconds
 * @param {{ maxGap?: number }} [options]  maxGap 0 turns interpolation off
 * @returns {[lat: number, lng: number] | null}
 */
export function positionAt(points, t, { maxGap = 120 } = {}) {
  const index = indexAt(points, t);
  if (index < 0) return null;
  const [ts, lat, lng] = points[index];
  const next = points[index + 1];
  if (!next || t === ts || next[0] - ts > maxGap) return [lat, lng];
  const share = (t - ts) / (next[0] - ts);
  return [lat + (next[1] - lat) * share, lng + (next[2] - lng) * share];
}

/**
 * The first and last times of all tracks, or null when there is no point at all.
 * @param {Iterable<readonly TrackPoint[]>} tracks
 * @returns {{ since: number, until: number } | null}
 */
export function extent(tracks) {
  let since = Infinity;
  let until = -Infinity;
  for (const points of tracks) {
    if (points.length === 0) continue;
    since = Math.min(since, points[0][0]);
    until = Math.max(until, points[points.length - 1][0]);
  }
  return since <= until ? { since, until } : null;
}

/**
 * The south-west and north-east corners around all tracks' points, or null when there is none.
 * @param {Iterable<readonly TrackPoint[]>} tracks
 * @returns {[[number, number], [number, number]] | null}
 */
export function boundsOf(tracks) {
  let south = Infinity;
  let west = Infinity;
  let north = -Infinity;
  let east = -Infinity;
  for (const points of tracks) {
    for (const [, lat, lng] of points) {
      if (lat < south) south = lat;
      if (lat > north) north = lat;
      if (lng < west) west = lng;
      if (lng > east) east = lng;
    }
  }
  return south <= north ? [[south, west], [north, east]] : null;
}

/**
 * The slider's clock: a time within [since, until] that runs at `speed` seconds of history per
 * second while playing, and stops at `until`. Every method takes the current time in
 * milliseconds (performance.now() in the page).
 */
export class ReplayClock {
  /**
   * @param {{ since: number, until: number, speed?: number }} range  Unix seconds
   */
  constructor({ since, until, speed = 1 }) {
    this.since = since;
    this.until = Math.max(since, until);
    this.speed = speed;
    this.playing = false;
    this.base = since; // the time at `startedMs` (or now, when paused)
    this.startedMs = 0;
  }

  /**
   * The replay's time now.
   * @param {number} nowMs
   */
  time(nowMs) {
    if (!this.playing) return this.base;
    const t = this.base + ((nowMs - this.startedMs) / 1000) * this.speed;
    return Math.min(this.until, Math.max(this.since, t));
  }

  /**
   * Whether it played to the end (and so stopped).
   * @param {number} nowMs
   */
  ended(nowMs) {
    return this.time(nowMs) >= this.until;
  }

  /**
   * Start playing; from the beginning when it had reached the end.
   * @param {number} nowMs
   */
  play(nowMs) {
    if (this.playing) return;
    if (this.base >= this.until) this.base = this.since;
    this.playing = true;
    this.startedMs = nowMs;
  }

  /** @param {number} nowMs */
  pause(nowMs) {
    if (!this.playing) return;
    this.base = this.time(nowMs);
    this.playing = false;
  }

  /**
   * Jump to `t` (clamped to the range), playing on from there if it was playing.
   * @param {number} t
   * @param {number} nowMs
   */
  seek(t, nowMs) {
    this.base = Math.min(this.until, Math.max(this.since, t));
    this.startedMs = nowMs;
  }

  /**
   * Change the speed without a jump in time.
   * @param {number} speed
   * @param {number} nowMs
   */
  setSpeed(speed, nowMs) {
    this.base = this.time(nowMs);
    this.startedMs = nowMs;
    this.speed = speed;
  }
}
