// @ts-check
// The history page's times, without the DOM: the ranges "today" and "yesterday" in the browser's
// local time, datetime-local input values read and written as local time, ISO 8601 with the
// local offset (what the server is sent, so that it needs no idea of the browser's zone), the
// query strings of the JSON and export URLs, and short labels for times and durations.

/** @typedef {import("./types.js").Selection} Selection */

/**
 * The local midnight that begins `date`'s day, `days` days later (negative: earlier).
 * @param {Date} date
 * @param {number} [days]
 */
export function startOfDay(date, days = 0) {
  // Built from the calendar fields, so that a day with a DST change is 23 or 25 hours long.
  return new Date(date.getFullYear(), date.getMonth(), date.getDate() + days);
}

/**
 * The range of "today" (from midnight until `now`) or "yesterday" (midnight to midnight).
 * @param {"today" | "yesterday"} kind
 * @param {Date} now
 * @returns {{ since: Date, until: Date }}
 */
export function dayRange(kind, now) {
  if (kind === "yesterday") return { since: startOfDay(now, -1), until: startOfDay(now) };
  return { since: startOfDay(now), until: now };
}

/** @param {number} value @param {number} [width] */
const pad = (value, width = 2) => String(value).padStart(width, "0");

/**
 * ISO 8601 in local time with the local offset, to the second: 2026-11-30T10:00:00+01:00.
 * @param {Date} date
 */
export function isoWithOffset(date) {
  const offset = -date.getTimezoneOffset(); // minutes east of UTC
  const sign = offset < 0 ? "-" : "+";
  const hours = pad(Math.floor(Math.abs(offset) / 60));
  const minutes = pad(Math.abs(offset) % 60);
  return `${toLocalInput(date)}${sign}${hours}:${minutes}`;
}

/**
 * A datetime-local input's value for `date`, in local time to the second: 2026-11-30T10:00:00.
 * @param {Date} date
 */
export function toLocalInput(date) {
  return `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
    + `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

const LOCAL_INPUT = /^(\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/;

/**
 * Read a datetime-local input's value as local time; null if it is empty or not a real time.
 * @param {string} value  "2026-11-30T10:00" or with seconds
 * @returns {Date | null}
 */
export function parseLocalInput(value) {
  const match = LOCAL_INPUT.exec(value);
  if (!match) return null;
  const [year, month, day, hours, minutes, seconds] = match.slice(1, 7).map((part) => Number(part || 0));
  const millis = match[7] ? Math.round(Number(`0.${match[7]}`) * 1000) : 0;
  const date = new Date(year, month - 1, day, hours, minutes, seconds, millis);
  // new Date rolls 31 April over into 1 May: that is no date the input could hold.
  if (date.getMonth() !== month - 1 || date.getDate() !== day) return null;
  return date;
}

/**
 * The query string of a selection, as tracks.json and the exports read it.
 * @param {Selection} selection
 * @param {Record<string, string | number>} [extra]
 */
export function queryString(selection, extra = {}) {
  const params = new URLSearchParams();
  if (selection.worker !== null) params.set("worker", String(selection.worker));
  params.set("since", isoWithOffset(selection.since));
  params.set("until", isoWithOffset(selection.until));
  for (const [name, value] of Object.entries(extra)) params.set(name, String(value));
  return params.toString();
}

/**
 * A time of day for labels, in local time: "10:02:03".
 * @param {number} ts  Unix seconds
 */
export function clockLabel(ts) {
  const date = new Date(ts * 1000);
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/**
 * A date and time for labels, in local time: "2026-11-30 10:02:03".
 * @param {number} ts  Unix seconds
 */
export function timeLabel(ts) {
  return toLocalInput(new Date(ts * 1000)).replace("T", " ");
}

/**
 * A duration for labels: "45 s", "12 min", "1 h 05 min".
 * @param {number} seconds
 */
export function durationLabel(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) return `${whole} s`;
  const minutes = Math.round(whole / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${pad(minutes % 60)} min`;
}
