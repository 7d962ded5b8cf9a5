// @ts-check
// The tracking page's queue of positions not yet acknowledged, oldest first, with the device's
// seq counter beside it so that both survive a reload. Storage is behind a small interface
// (TrackStorage): store.js keeps it in IndexedDB in the browser, MemoryStorage here keeps it in
// memory for the tests under Node. Also the pure helpers: a geolocation fix to a protocol
// position, and the next batch to send.

/** @typedef {import("../types.js").DevicePosition} DevicePosition */
/** @typedef {import("./types.js").QueuedPosition} QueuedPosition */
/** @typedef {import("./types.js").TrackStorage} TrackStorage */
/** @typedef {import("./types.js").Fix} Fix */

/** The most positions one batch frame may carry (docs/protocol.md, MAX_BATCH_POSITIONS). */
export const MAX_BATCH = 500;

// The ranges of docs/protocol.md: a value outside them would make the server refuse the whole
// batch, so optional fields out of range are left out rather than sent.
const RANGES = /** @type {const} */ ({ acc: [0, 100000], speed: [0, 1000], heading: [0, 360] });

/**
 * @param {unknown} value
 * @returns {value is number}
 */
function finite(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/**
 * Turn a GeolocationPosition (or anything shaped like one) into the fields of a protocol position,
 * without seq; return null when it has no usable coordinates or time. Browsers give null speed and
 * NaN heading when standing still: those fields are left out.
 * @param {Fix} fix
 * @returns {DevicePosition | null}
 */
export function fixToPosition(fix) {
  const coords = fix && fix.coords;
  if (!coords) return null;
  const { latitude: lat, longitude: lng } = coords;
  const ts = fix.timestamp / 1000;
  if (!finite(lat) || !finite(lng) || !finite(ts) || ts < 1) return null;
  if (lat < -90 || lat > 90 || lng < -180 || lng > 180) return null;
  /** @type {DevicePosition} */
  const position = { lat, lng, ts };
  const optional = { acc: coords.accuracy, speed: coords.speed, heading: coords.heading };
  for (const name of /** @type {(keyof typeof RANGES)[]} */ (Object.keys(RANGES))) {
    const value = optional[name];
    const [lowest, highest] = RANGES[name];
    if (finite(value) && value >= lowest && value <= highest) position[name] = value;
  }
  return position;
}

/**
 * Return the batch frame of the oldest queued positions, at most `max` of them, oldest first; or
 * null when the queue is empty. Its ack (the highest seq in it) covers all of them.
 * @param {QueuedPosition[]} queued  oldest first
 * @param {number} [max]
 * @returns {import("../types.js").BatchFrame | null}
 */
export function batchFrame(queued, max = MAX_BATCH) {
  if (!queued.length) return null;
  return { type: "batch", positions: queued.slice(0, max).map((entry) => ({ ...entry })) };
}

/**
 * The first seq of a device that has none stored: the clock in milliseconds. A phone whose
 * storage was wiped starts above every seq it used before (unless it sent more than a thousand
 * positions a second), so the server never takes a new position for a resend of an old one.
 * @param {() => number} now
 */
export function firstSeq(now = Date.now) {
  return Math.floor(now());
}

/** TrackStorage in memory: for the tests, and where IndexedDB is missing (the page says so). */
export class MemoryStorage {
  constructor() {
    /** @type {Map<string, unknown>} */
    this.meta = new Map();
    /** @type {QueuedPosition[]} */
    this.queue = [];
  }

  /** @param {string} key */
  async get(key) {
    return this.meta.get(key);
  }

  /**
   * @param {string} key
   * @param {unknown} value
   */
  async set(key, value) {
    this.meta.set(key, structuredClone(value));
  }

  /** @param {string} key */
  async delete(key) {
    this.meta.delete(key);
  }

  /**
   * @param {DevicePosition} position
   * @param {number} startSeq
   */
  async append(position, startSeq) {
    const stored = this.meta.get("nextSeq");
    const seq = typeof stored === "number" ? stored : startSeq;
    this.queue.push({ ...position, seq });
    this.meta.set("nextSeq", seq + 1);
    return seq;
  }

  /** @param {number} limit */
  async oldest(limit) {
    return this.queue.slice(0, limit).map((entry) => ({ ...entry }));
  }

  /** @param {number} seq */
  async removeThrough(seq) {
    this.queue = this.queue.filter((entry) => entry.seq > seq);
  }

  /** @param {number[]} seqs */
  async remove(seqs) {
    const gone = new Set(seqs);
    this.queue = this.queue.filter((entry) => !gone.has(entry.seq));
  }

  async count() {
    return this.queue.length;
  }

  async clearQueue() {
    this.queue = [];
  }
}

/**
 * The positions this device has not had acknowledged, in storage, with a count kept in memory so
 * that the page can show it without asking storage each time.
 */
export class PositionQueue {
  /**
   * @param {TrackStorage} storage
   * @param {{ now?: () => number }} [options]  milliseconds since the epoch, for the first seq
   */
  constructor(storage, { now = Date.now } = {}) {
    this.storage = storage;
    this.now = now;
    this.size = 0;
  }

  /** Read the count from storage (once, at start). */
  async load() {
    this.size = await this.storage.count();
    return this;
  }

  /**
   * Queue a position under the device's next seq; return the queued entry.
   * @param {DevicePosition} position
   * @returns {Promise<QueuedPosition>}
   */
  async push(position) {
    const seq = await this.storage.append(position, firstSeq(this.now));
    this.size += 1;
    return { ...position, seq };
  }

  /**
   * The oldest positions, at most `limit`.
   * @param {number} [limit]
   */
  async oldest(limit = MAX_BATCH) {
    return this.storage.oldest(limit);
  }

  /**
   * Forget every position an ack of `seq` covers (all with seq up to it).
   * @param {number} seq
   */
  async acknowledge(seq) {
    await this.storage.removeThrough(seq);
    this.size = await this.storage.count();
  }

  /**
   * Forget these positions (ones the server refused: sending them again cannot help).
   * @param {number[]} seqs
   */
  async drop(seqs) {
    await this.storage.remove(seqs);
    this.size = await this.storage.count();
  }

  async clear() {
    await this.storage.clearQueue();
    this.size = 0;
  }
}
