// @ts-check
// The shapes the tracking page's modules (static/js/track/) pass to each other. Only typedefs:
// the frames themselves are those of ../types.js (AuthFrame, BatchFrame, AckFrame, ErrorFrame).

/**
 * What a geolocation watch reports: a GeolocationPosition, or a plain object shaped like one.
 * @typedef {object} Fix
 * @property {{ latitude: number, longitude: number, accuracy?: number | null,
 *   speed?: number | null, heading?: number | null }} coords
 * @property {number} timestamp  milliseconds since the epoch
 */

/**
 * A position waiting for its ack, under the device's own seq.
 * @typedef {import("../types.js").DevicePosition & { seq: number }} QueuedPosition
 */

/**
 * Where the page keeps its token and its queue: IndexedDB (store.js) or memory (queue.js).
 * Every method may be asynchronous. `append` gives the position the next seq and stores both the
 * position and the counter at once, so that a seq is never used twice, even across reloads.
 * @typedef {object} TrackStorage
 * @property {(key: string) => Promise<unknown>} get
 * @property {(key: string, value: unknown) => Promise<void>} set
 * @property {(key: string) => Promise<void>} delete
 * @property {(position: import("../types.js").DevicePosition, startSeq: number) => Promise<number>} append
 *   the seq given; `startSeq` is used when no counter is stored yet
 * @property {(limit: number) => Promise<QueuedPosition[]>} oldest  oldest first
 * @property {(seq: number) => Promise<void>} removeThrough  every position with a seq up to this one
 * @property {(seqs: number[]) => Promise<void>} remove
 * @property {() => Promise<number>} count
 * @property {() => Promise<void>} clearQueue
 */

/**
 * The enrolment the page keeps: what /track/enrol answered.
 * @typedef {object} Enrolment
 * @property {string} token
 * @property {{ id: number, name: string }} worker
 * @property {{ slug: string, name: string }} team
 */

/**
 * What the Tracker's socket is doing.
 *   idle          not connected, and nothing to send
 *   connecting    opening the socket or waiting for the server to take the token
 *   live          connected: positions go out as they come
 *   offline       the browser says there is no network: positions queue until it returns
 *   reconnecting  waiting (until retryAt, ms since the epoch) to try again
 *   revoked       the server refused the token (4401): this phone is no longer enrolled
 *   replaced      a newer socket of the same worker took over (4409): stopped until start()
 * @typedef {"idle" | "connecting" | "live" | "offline" | "reconnecting" | "revoked" | "replaced"
 * } LinkState
 */

/**
 * Everything the page shows about the tracker, reported after every change.
 * @typedef {object} TrackerStatus
 * @property {LinkState} link
 * @property {number} queued  positions not yet acknowledged
 * @property {QueuedPosition | null} lastSent  the newest position sent over the socket
 * @property {QueuedPosition | null} lastAcked  the newest position the server acknowledged
 * @property {number} refused  positions the server refused for good (dropped, never resent)
 * @property {number} [retryAt]  when link is "reconnecting"
 * @property {number} [closeCode]  the last close code, when link is "reconnecting", "offline",
 *   "revoked" or "replaced"
 */

/**
 * What redeeming an enrolment link came to (enrol.js).
 * @typedef {{ ok: true, enrolment: Enrolment }
 *   | { ok: false, reason: "used" | "invalid" | "blocked" | "network" | "server", message: string }
 * } EnrolResult
 */

/**
 * The tracking page's settings: defaults, then the template's json_script.
 * @typedef {object} TrackConfig
 * @property {string} socketPath
 * @property {string} enrolPath
 * @property {string} serviceWorker  the script's URL, or "" for none
 * @property {string} scope  the service worker's scope
 * @property {number} backoffStartMs
 * @property {number} backoffCapMs
 * @property {number} ackTimeoutMs  a frame not acknowledged this long means a dead socket
 * @property {number} minFrameIntervalMs  the least time between two position frames
 */

export {};
