// @ts-check
// The tracking page's settings: what Django passes with json_script, merged over defaults, so
// that the other modules read one frozen object and never the DOM.

/** @typedef {import("./types.js").TrackConfig} TrackConfig */

/** @type {TrackConfig} */
export const DEFAULTS = {
  socketPath: "/ws/worker/",
  enrolPath: "/track/enrol",
  serviceWorker: "",
  scope: "/track/",
  backoffStartMs: 1000,
  backoffCapMs: 60000,
  // Acks come at most once per ACK_INTERVAL_SECONDS (up to 10 s); 20 s without one while frames
  // are in flight means the connection died without a close (a phone that changed networks).
  ackTimeoutMs: 20000,
  // At most 4 frames a second: the server allows 5 a second per worker (docs/protocol.md).
  minFrameIntervalMs: 250,
};

/**
 * Return the page's configuration: defaults, then the json_script `id` (numbers that are not
 * positive numbers keep their defaults).
 * @param {Document} [doc]
 * @param {string} [id]
 * @returns {Readonly<TrackConfig>}
 */
export function readTrackConfig(doc = document, id = "track-config") {
  /** @type {Partial<TrackConfig>} */
  let fromPage = {};
  const node = doc.getElementById(id);
  if (node) {
    try {
      const value = JSON.parse(node.textContent || "");
      if (value && typeof value === "object") fromPage = value;
    } catch (error) {
      console.error(`teamtrack: #${id} is not valid JSON`, error);
    }
  }
  const config = { ...DEFAULTS, ...fromPage };
  for (const name of /** @type {const} */ (["backoffStartMs", "backoffCapMs", "ackTimeoutMs", "minFrameIntervalMs"])) {
    const value = Number(config[name]);
    config[name] = Number.isFinite(value) && value > 0 ? value : DEFAULTS[name];
  }
  return Object.freeze(config);
}
