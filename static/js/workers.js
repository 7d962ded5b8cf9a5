// @ts-check
// The team's workers as this page knows them (presence, last position, a short trail each) and
// the rule that turns those into online / stale / offline. No DOM and no Leaflet here.

import { isNumber } from "./util.js";

/** @typedef {import("./types.js").Worker} Worker */
/** @typedef {import("./types.js").WorkerStateName} WorkerStateName */
/** @typedef {import("./types.js").SnapshotWorker} SnapshotWorker */
/** @typedef {import("./types.js").FeedPosition} FeedPosition */
/** @typedef {import("./types.js").PresenceFrame} PresenceFrame */

const OPTIONAL_FIELDS = /** @type {const} */ (["acc", "speed", "heading"]);

/**
 * Return "offline", "stale" or "online" for a worker at `nowSeconds`.
 * @param {Pick<Worker, "online" | "ts">} worker
 * @param {number} nowSeconds
 * @param {number} staleAfter  seconds
 * @returns {WorkerStateName}
 */
export function workerState(worker, nowSeconds, staleAfter) {
  if (!worker.online) return "offline";
  if (worker.ts === null || nowSeconds - worker.ts > staleAfter) return "stale";
  return "online";
}

/** @param {number} id */
function fallbackName(id) {
  return `Worker ${id}`;
}

export class WorkerStore {
  /** @param {Pick<import("./types.js").Config, "staleAfter" | "trailPoints" | "trailSeconds">} config */
  constructor({ staleAfter, trailPoints, trailSeconds }) {
    this.staleAfter = staleAfter;
    this.trailPoints = trailPoints;
    this.trailSeconds = trailSeconds;
    /** @type {Map<number, Worker>} */
    this.workers = new Map(); // id -> worker
  }

  /**
   * @param {number} id
   * @param {string} name
   * @param {boolean} online
   * @returns {Worker}
   */
  blank(id, name, online) {
    return {
      id, name, online,
      lat: null, lng: null, ts: null, acc: null, speed: null, heading: null,
      trail: [], // [lat, lng, ts], oldest first
      state: online ? "stale" : "offline",
    };
  }

  /**
   * Replace everything with a snapshot's workers. Trails of workers still on the team are kept
   * (they are history the server does not resend), cut back to the snapshot's position.
   * Return the ids that are gone.
   * @param {SnapshotWorker[]} entries
   * @param {number} nowSeconds
   * @returns {number[]}
   */
  replaceAll(entries, nowSeconds) {
    // Refill the same Map: window.teamtrack.workers and other holders keep seeing the truth.
    const previous = new Map(this.workers);
    this.workers.clear();
    for (const entry of entries) {
      if (!Number.isInteger(entry.id)) continue;
      const name = typeof entry.name === "string" && entry.name ? entry.name : fallbackName(entry.id);
      const worker = this.blank(entry.id, name, entry.online === true);
      const before = previous.get(entry.id);
      if (isNumber(entry.lat) && isNumber(entry.lng) && isNumber(entry.ts)) {
        if (before) worker.trail = before.trail.filter((point) => point[2] < entry.ts);
        this.place(worker, entry);
      }
      worker.state = workerState(worker, nowSeconds, this.staleAfter);
      this.workers.set(worker.id, worker);
    }
    return [...previous.keys()].filter((id) => !this.workers.has(id));
  }

  /**
   * Apply a positions batch in one pass; return the workers that moved, and those that the
   * snapshot did not know (created on the spot) among them marked with `created`.
   * @param {FeedPosition[]} positions
   * @param {number} nowSeconds
   * @returns {{ moved: Worker[], created: Worker[] }}
   */
  applyPositions(positions, nowSeconds) {
    const moved = [];
    const created = [];
    for (const position of positions) {
      const { id } = position;
      if (!Number.isInteger(id) || !isNumber(position.lat) || !isNumber(position.lng) || !isNumber(position.ts)) {
        continue;
      }
      let worker = this.workers.get(id);
      if (!worker) {
        // Positions only come from a connected device, so a worker we never heard of is online.
        worker = this.blank(id, fallbackName(id), true);
        this.workers.set(id, worker);
        created.push(worker);
      }
      if (worker.ts !== null && position.ts < worker.ts) continue; // late, out of order
      this.place(worker, position);
      worker.state = workerState(worker, nowSeconds, this.staleAfter);
      moved.push(worker);
    }
    return { moved, created };
  }

  /**
   * Apply a presence frame; return the worker and whether it is new.
   * @param {PresenceFrame} frame
   * @param {number} nowSeconds
   * @returns {{ worker: Worker | null, created: boolean }}
   */
  applyPresence(frame, nowSeconds) {
    if (!Number.isInteger(frame.id)) return { worker: null, created: false };
    let worker = this.workers.get(frame.id);
    const created = !worker;
    if (created) {
      worker = this.blank(frame.id, fallbackName(frame.id), false);
      this.workers.set(worker.id, worker);
    }
    if (typeof frame.name === "string" && frame.name) worker.name = frame.name;
    worker.online = frame.online === true;
    worker.state = workerState(worker, nowSeconds, this.staleAfter);
    return { worker, created };
  }

  /**
   * Recompute a worker's state as time passes; return whether it changed.
   * @param {Worker} worker
   * @param {number} nowSeconds
   */
  refresh(worker, nowSeconds) {
    const state = workerState(worker, nowSeconds, this.staleAfter);
    if (state === worker.state) return false;
    worker.state = state;
    return true;
  }

  /** @returns {{ online: number, total: number }} */
  counts() {
    let online = 0;
    for (const worker of this.workers.values()) if (worker.online) online += 1;
    return { online, total: this.workers.size };
  }

  /**
   * Move a worker to a position (checked by the caller) and extend its trail, bounded.
   * @param {Worker} worker
   * @param {Pick<FeedPosition, "lat" | "lng" | "ts" | "acc" | "speed" | "heading">} position
   */
  place(worker, position) {
    worker.lat = position.lat;
    worker.lng = position.lng;
    for (const name of OPTIONAL_FIELDS) worker[name] = isNumber(position[name]) ? position[name] : null;
    const trail = worker.trail;
    const last = trail[trail.length - 1];
    if (last && last[2] === position.ts) {
      trail[trail.length - 1] = [position.lat, position.lng, position.ts];
    } else {
      trail.push([position.lat, position.lng, position.ts]);
    }
    worker.ts = position.ts;
    // Bounded by count and by age, so a thousand workers cost a few hundred kilobytes at most.
    const oldest = position.ts - this.trailSeconds;
    let drop = Math.max(0, trail.length - this.trailPoints);
    while (drop < trail.length - 1 && trail[drop][2] < oldest) drop += 1;
    if (drop > 0) trail.splice(0, drop);
  }
}
