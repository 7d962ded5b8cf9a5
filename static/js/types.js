// @ts-check
// The shapes of every frame of docs/protocol.md (tracking/protocol.py builds and checks them),
// and of the data the map page's modules pass to each other. Only typedefs: nothing imports this
// file at run time; other modules name its types as `import("./types.js").SnapshotFrame`.

// ---------------------------------------------------------------- manager socket (server -> map)

/**
 * A worker of a snapshot: its last known position, with null fields if it has none yet.
 * @typedef {object} SnapshotWorker
 * @property {number} id
 * @property {string} name
 * @property {number | null} lat
 * @property {number | null} lng
 * @property {number | null} ts  Unix seconds, fraction allowed
 * @property {number} [acc]  metres
 * @property {number} [speed]  m/s
 * @property {number} [heading]  degrees
 * @property {boolean} online
 */

/**
 * The first frame of every manager socket: every active worker of the team.
 * @typedef {object} SnapshotFrame
 * @property {"snapshot"} type
 * @property {string} team  the team's slug
 * @property {SnapshotWorker[]} workers
 */

/**
 * A worker's newest position in a flush window, as managers see it (no seq).
 * @typedef {object} FeedPosition
 * @property {number} id  the worker's id
 * @property {number} lat
 * @property {number} lng
 * @property {number} ts  Unix seconds, fraction allowed
 * @property {number} [acc]  metres
 * @property {number} [speed]  m/s
 * @property {number} [heading]  degrees
 */

/**
 * At most one per flush window: the newest position of every worker that moved.
 * @typedef {object} PositionsFrame
 * @property {"positions"} type
 * @property {FeedPosition[]} positions
 */

/**
 * A worker's first socket opened or its last one closed. The name is missing when a replica
 * reports the workers of another, dead, replica offline.
 * @typedef {object} PresenceFrame
 * @property {"presence"} type
 * @property {number} id
 * @property {string} [name]
 * @property {boolean} online
 */

/**
 * The `code` of an error frame; match on it (`detail` is for people).
 * @typedef {"binary_frame" | "frame_too_large" | "invalid_json" | "not_finite" | "invalid_frame"
 *   | "invalid_field" | "out_of_range" | "invalid_ts" | "batch_too_large" | "rate_limited"
 * } ErrorCode
 */

/**
 * A frame the server could not accept; the socket stays open. Both sockets send it.
 * @typedef {object} ErrorFrame
 * @property {"error"} type
 * @property {ErrorCode} code
 * @property {string} detail
 */

/** @typedef {SnapshotFrame | PositionsFrame | PresenceFrame | ErrorFrame} ManagerFrame */

/** @typedef {ManagerFrame["type"]} ManagerFrameType */

/**
 * One handler per frame type, each given the frame of its type.
 * @typedef {{ [K in ManagerFrameType]?: (frame: Extract<ManagerFrame, { type: K }>) => void }} FrameHandlers
 */

// ---------------------------------------------------------------- worker socket (device <-> server)

/**
 * Sent first by a device that cannot set an Authorization header, within 5 seconds.
 * @typedef {object} AuthFrame
 * @property {"auth"} type
 * @property {string} token  ASCII, at most 256 characters
 */

/**
 * One position of a device; `seq` (the device's own increasing number) asks for an ack.
 * @typedef {object} DevicePosition
 * @property {number} lat  -90 .. 90
 * @property {number} lng  -180 .. 180
 * @property {number} ts  Unix seconds, at most MAX_CLOCK_SKEW_SECONDS (30) ahead of the server clock
 * @property {number} [acc]  metres, 0 .. 100000
 * @property {number} [speed]  m/s, 0 .. 1000
 * @property {number} [heading]  degrees, 0 .. 360
 * @property {number} [seq]  an integer, 0 .. 2^63-1
 */

/**
 * A single position; `type` may be left out, "position" is the default.
 * @typedef {DevicePosition & { type?: "position" }} PositionFrame
 */

/**
 * Up to 500 positions a device buffered while offline; all or nothing.
 * @typedef {object} BatchFrame
 * @property {"batch"} type
 * @property {DevicePosition[]} positions
 */

/** @typedef {AuthFrame | PositionFrame | BatchFrame} DeviceFrame */

/**
 * The acknowledgement of a position or batch that carried `seq` (a batch's highest).
 * @typedef {object} AckFrame
 * @property {"ack"} type
 * @property {number} seq
 */

/** @typedef {AckFrame | ErrorFrame} ServerToDeviceFrame */

// ---------------------------------------------------------------- close codes

/**
 * TeamTrack's close codes (tracking/protocol.py's CLOSE_*; socket.js exports them by name).
 * @typedef {4401 | 4403 | 4404 | 4408 | 4409 | 4429 | 4503 | 4012} CloseCode
 */

// ---------------------------------------------------------------- the map page

/**
 * What TeamSocket reports to its onState callback.
 * @typedef {{ state: "connecting" }
 *   | { state: "live" }
 *   | { state: "reconnecting", retryAt: number, attempt: number }
 *   | { state: "lost", code: number }
 * } ConnectionState
 */

/** @typedef {"online" | "stale" | "offline"} WorkerStateName */

/** @typedef {[lat: number, lng: number, ts: number]} TrailPoint */

/**
 * A worker as the page knows it (workers.js): presence, last position, a short trail.
 * @typedef {object} Worker
 * @property {number} id
 * @property {string} name
 * @property {boolean} online
 * @property {number | null} lat
 * @property {number | null} lng
 * @property {number | null} ts
 * @property {number | null} acc
 * @property {number | null} speed
 * @property {number | null} heading
 * @property {TrailPoint[]} trail  oldest first
 * @property {WorkerStateName} state
 */

/**
 * The page's settings (config.js): defaults, then the template's json_script.
 * @typedef {object} Config
 * @property {string} team
 * @property {string} socketPath
 * @property {string} loginPath
 * @property {number} staleAfter  seconds without a position before an online worker is stale
 * @property {string} tileUrl
 * @property {string} tileAttribution
 * @property {[number, number]} defaultCenter
 * @property {number} defaultZoom
 * @property {number} followZoom
 * @property {number} trailPoints
 * @property {number} trailSeconds
 * @property {number} backoffStartMs
 * @property {number} backoffCapMs
 */

export {};
