// @ts-check
// The map page's settings: what Django passes with json_script, merged over defaults, so that
// every other module reads one frozen object and never the DOM.

/** @typedef {import("./types.js").Config} Config */

/** @type {Config} */
const DEFAULTS = {
  team: "",
  socketPath: "",
  loginPath: "/accounts/login/",
  staleAfter: 30, // seconds without a position before an online worker shows as stale
  tileUrl: "",
  tileAttribution: "",
  // With no positions at all, show the whole world rather than an arbitrary city.
  defaultCenter: [20, 0],
  defaultZoom: 2,
  followZoom: 15, // following a worker from a zoomed-out view zooms in to at least this
  trailPoints: 20,
  trailSeconds: 120,
  backoffStartMs: 500,
  backoffCapMs: 30000,
};

/**
 * @param {Document} doc
 * @param {string} id
 * @returns {Partial<Config>}
 */
function readJson(doc, id) {
  const node = doc.getElementById(id);
  if (!node) return {};
  try {
    const value = JSON.parse(node.textContent);
    return value && typeof value === "object" ? value : {};
  } catch (error) {
    console.error(`teamtrack: #${id} is not valid JSON`, error);
    return {};
  }
}

/**
 * Return the page's configuration: defaults, then the json_script, then data-* attributes of
 * #map-page (the template uses those for URLs that only it can reverse).
 * @param {Document} [doc]
 * @param {string} [id]
 * @returns {Readonly<Config>}
 */
export function readConfig(doc = document, id = "map-config") {
  /** @type {Partial<Config>} */
  const fromPage = {};
  const page = doc.getElementById("map-page");
  if (page && page.dataset.loginPath) fromPage.loginPath = page.dataset.loginPath;
  const config = { ...DEFAULTS, ...readJson(doc, id), ...fromPage };
  config.staleAfter = Number(config.staleAfter) > 0 ? Number(config.staleAfter) : DEFAULTS.staleAfter;
  return Object.freeze(config);
}
