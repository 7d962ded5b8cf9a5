// @ts-check
// The shapes the history page's modules pass to each other and read from the server
// (tracking/history_views.py). Only typedefs: nothing imports this file at run time.

/** @typedef {[ts: number, lat: number, lng: number]} TrackPoint */

/**
 * A place a worker stayed (tracking.history.Stop).
 * @typedef {object} Stop
 * @property {number} since  Unix seconds
 * @property {number} until  Unix seconds
 * @property {number} lat
 * @property {number} lng
 */

/**
 * What tracks.json answers; worker ids are the keys (strings, as JSON has them).
 * @typedef {object} TracksResponse
 * @property {Record<string, string>} workers  names
 * @property {Record<string, TrackPoint[]>} tracks  in time order
 * @property {Record<string, Stop[]>} stops
 */

/**
 * A worker's position at a moment, in the live feed's shape (moment.json's `positions`).
 * @typedef {import("../types.js").FeedPosition} FeedPosition
 */

/**
 * Who and when the page's form asks for.
 * @typedef {object} Selection
 * @property {number | null} worker  a worker's id, or null for the whole team
 * @property {Date} since
 * @property {Date} until
 */

/**
 * The page's settings: the map's (config.js) and these, from the template's json_script.
 * @typedef {import("../types.js").Config & {
 *   tracksUrl: string, momentUrl: string, exportUrl: string, stopMinutes: number
 * }} HistoryConfig
 */

export {};
