// @ts-check
// The history page's settings: the map's defaults and the template's json_script, read by the
// map page's own reader (../config.js), with the history's defaults under them.

import { readConfig } from "../config.js";

/** @typedef {import("./types.js").HistoryConfig} HistoryConfig */

const DEFAULTS = {
  tracksUrl: "",
  momentUrl: "",
  exportUrl: "",
  stopMinutes: 5, // settings.TEAMTRACK_STOP_MINUTES's default
};

/**
 * Return the history page's configuration; a stop length that is not a positive number keeps
 * its default.
 * @param {Document} [doc]
 * @param {string} [id]
 * @returns {Readonly<HistoryConfig>}
 */
export function readHistoryConfig(doc = document, id = "history-config") {
  const config = { ...DEFAULTS, ...readConfig(doc, id) };
  const minutes = Number(config.stopMinutes);
  config.stopMinutes = Number.isFinite(minutes) && minutes > 0 ? minutes : DEFAULTS.stopMinutes;
  return Object.freeze(/** @type {HistoryConfig} */ (config));
}
