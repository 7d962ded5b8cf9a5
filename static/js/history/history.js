// @ts-check
// The history page: reads the form (who, when, stop length), draws the tracks and stops that
// tracks.json returns, replays them with the slider, shows "where was everyone at" from
// moment.json, and keeps the export links on the current selection.

import { TeamMap } from "../map.js";
import { el, loginUrl } from "../util.js";
import { readHistoryConfig } from "./config.js";
import { colourAt, HistoryLayers } from "./layers.js";
import { dayRange, isoWithOffset, parseLocalInput, queryString, timeLabel, toLocalInput } from "./range.js";
import { boundsOf, extent, positionAt, ReplayClock } from "./replay.js";

/** @typedef {import("./types.js").TrackPoint} TrackPoint */
/** @typedef {import("./types.js").Selection} Selection */
/** @typedef {import("./types.js").TracksResponse} TracksResponse */
/** @typedef {import("./types.js").FeedPosition} FeedPosition */
/** @typedef {{ id: number, name: string, colour: string, points: TrackPoint[] }} Loaded */

const config = readHistoryConfig();

/** @param {string} id */
const byId = (id) => /** @type {any} */ (document.getElementById(id));

const form = /** @type {HTMLFormElement} */ (byId("history-form"));
const workerSelect = /** @type {HTMLSelectElement} */ (byId("history-worker"));
const customRange = byId("history-custom");
const sinceInput = /** @type {HTMLInputElement} */ (byId("history-since"));
const untilInput = /** @type {HTMLInputElement} */ (byId("history-until"));
const stopInput = /** @type {HTMLInputElement} */ (byId("history-stop-minutes"));
const drawButton = /** @type {HTMLButtonElement} */ (byId("history-draw"));
const status = byId("history-status");
const notice = byId("history-notice");
const slider = /** @type {HTMLInputElement} */ (byId("replay-slider"));
const replayTime = byId("replay-time");
const playButton = /** @type {HTMLButtonElement} */ (byId("replay-play"));
const speedSelect = /** @type {HTMLSelectElement} */ (byId("replay-speed"));
const momentForm = /** @type {HTMLFormElement} */ (byId("moment-form"));
const momentInput = /** @type {HTMLInputElement} */ (byId("moment-at"));
const momentList = byId("moment-list");
const exportLinks = /** @type {HTMLAnchorElement[]} */ ([...document.querySelectorAll("a[data-kind]")]);

const teamMap = new TeamMap(byId("map"), config, {
  onTilesFailed() {
    byId("map").dataset.tiles = "failed";
  },
});
const layers = new HistoryLayers(teamMap.map);

// Each worker keeps one colour whoever else is drawn: its place in the team's list.
/** @type {Map<number, { name: string, colour: string }>} */
const roster = new Map();
for (const option of workerSelect.options) {
  if (option.value) {
    roster.set(Number(option.value), { name: option.text, colour: colourAt(roster.size) });
  }
}
/** @param {number} id */
const nameOf = (id) => roster.get(id)?.name ?? `Worker ${id}`;
/** @param {number} id */
const colourOf = (id) => roster.get(id)?.colour ?? colourAt(id);

/** @type {Loaded[]} */
let loaded = [];
/** @type {ReplayClock | null} */
let clock = null;
/** @type {AbortController | null} */
let drawing = null;
/** @type {{ points: number, workers: number, fetchMs: number, parseMs: number, drawMs: number, totalMs: number } | null} */
let lastDraw = null;

// ---------------------------------------------------------------- the selection

/** @returns {"today" | "yesterday" | "custom"} */
function rangeKind() {
  const checked = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="range"]:checked'));
  return /** @type {any} */ (checked ? checked.value : "today");
}

/**
 * The worker and range the form asks for, or a short text saying what is wrong with it.
 * @returns {Selection | string}
 */
function readSelection() {
  const worker = workerSelect.value ? Number(workerSelect.value) : null;
  const kind = rangeKind();
  if (kind !== "custom") return { worker, ...dayRange(kind, new Date()) };
  const since = parseLocalInput(sinceInput.value);
  const until = parseLocalInput(untilInput.value);
  if (!since || !until) return "Give both the start and the end of the range.";
  if (until <= since) return "The end of the range must be after its start.";
  return { worker, since, until };
}

function updateExportLinks() {
  const selection = readSelection();
  for (const link of exportLinks) {
    if (typeof selection === "string") {
      link.href = "#";
      link.setAttribute("aria-disabled", "true");
    } else {
      link.href = `${config.exportUrl}${link.dataset.kind}?${queryString(selection)}`;
      link.removeAttribute("aria-disabled");
    }
  }
}

function showCustomRange() {
  const custom = rangeKind() === "custom";
  customRange.hidden = !custom;
  if (custom && !sinceInput.value && !untilInput.value) {
    const today = dayRange("today", new Date());
    sinceInput.value = toLocalInput(today.since);
    untilInput.value = toLocalInput(today.until);
  }
}

form.addEventListener("change", () => {
  showCustomRange();
  updateExportLinks();
});
form.addEventListener("input", updateExportLinks);
for (const link of exportLinks) {
  link.addEventListener("click", (event) => {
    updateExportLinks(); // "today" ends now, not when the page was loaded
    const selection = readSelection();
    if (typeof selection === "string") {
      event.preventDefault();
      showNotice(selection);
    }
  });
}

// ---------------------------------------------------------------- messages and requests

/** @param {string} text */
function showNotice(text) {
  notice.textContent = text;
  notice.hidden = false;
}

function hideNotice() {
  notice.hidden = true;
}

/**
 * GET a JSON endpoint of the page; throw an Error whose message is for the user.
 * @param {string} url
 * @param {AbortSignal} [signal]
 */
async function getJson(url, signal) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, signal });
  const loginPath = new URL(config.loginPath, window.location.href).pathname;
  if (response.redirected && new URL(response.url).pathname === loginPath) {
    window.location.assign(loginUrl(config.loginPath, window.location.pathname));
    throw new Error("Your session has ended. Taking you to the login page…");
  }
  if (response.status === 400) throw new Error(`The server refused it: ${await response.text()}`);
  if (!response.ok) throw new Error(`The server answered ${response.status}.`);
  return response;
}

// ---------------------------------------------------------------- drawing

/** The next frame after Leaflet's canvas redraw (requested before this) has been painted. */
function painted() {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}

async function draw() {
  const selection = readSelection();
  if (typeof selection === "string") {
    showNotice(selection);
    return;
  }
  const minutes = Number(stopInput.value);
  if (!(minutes > 0)) {
    showNotice("The stop length must be a number of minutes above 0.");
    return;
  }
  drawing?.abort();
  const controller = new AbortController();
  drawing = controller;
  hideNotice();
  status.textContent = "Loading…";
  drawButton.setAttribute("aria-busy", "true");
  const start = performance.now();
  performance.mark("history-draw-start");
  try {
    const url = `${config.tracksUrl}?${queryString(selection, { stop_minutes: minutes })}`;
    const response = await getJson(url, controller.signal);
    const text = await response.text();
    const fetched = performance.now();
    /** @type {TracksResponse} */
    const body = JSON.parse(text);
    const parsed = performance.now();
    if (drawing !== controller) return; // a newer draw took over meanwhile
    clearTracks();
    loaded = Object.keys(body.tracks).map(Number).sort((a, b) => a - b).map((id) => ({
      id,
      name: body.workers[id] || nameOf(id),
      colour: colourOf(id),
      points: body.tracks[id],
    }));
    const corners = boundsOf(loaded.map((track) => track.points));
    if (corners) layers.fit(corners);
    let points = 0;
    let stops = 0;
    for (const track of loaded) {
      layers.drawTrack(track.id, track.points, track.colour);
      const found = body.stops[track.id] || [];
      layers.drawStops(track.id, track.name, found, track.colour);
      points += track.points.length;
      stops += found.length;
    }
    startReplay();
    await painted();
    performance.mark("history-draw-end");
    const end = performance.now();
    lastDraw = {
      points,
      workers: loaded.length,
      fetchMs: fetched - start,
      parseMs: parsed - fetched,
      drawMs: end - parsed,
      totalMs: end - start,
    };
    status.textContent = loaded.length === 0
      ? "No positions in this range."
      : `${plural(loaded.length, "worker")}, ${plural(points, "position")}, ${plural(stops, "stop")}.`;
    form.dataset.drawn = String(points);
  } catch (error) {
    if (/** @type {Error} */ (error).name === "AbortError") return;
    status.textContent = "";
    showNotice(/** @type {Error} */ (error).message || "The tracks could not be loaded.");
  } finally {
    if (drawing === controller) {
      drawing = null;
      drawButton.removeAttribute("aria-busy");
    }
  }
}

/**
 * @param {number} count
 * @param {string} noun
 */
function plural(count, noun) {
  return `${count.toLocaleString("en")} ${noun}${count === 1 ? "" : "s"}`;
}

function clearTracks() {
  pause();
  layers.clearTracks();
  loaded = [];
  clock = null;
  slider.disabled = true;
  playButton.disabled = true;
  replayTime.textContent = "—";
  status.textContent = "";
  delete form.dataset.drawn;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  draw();
});
byId("history-clear").addEventListener("click", () => {
  drawing?.abort();
  drawing = null;
  drawButton.removeAttribute("aria-busy");
  clearTracks();
  layers.clearMoment();
  momentList.replaceChildren();
  hideNotice();
});

// ---------------------------------------------------------------- the replay

/** @type {number | null} */
let frameRequest = null;

function startReplay() {
  const span = extent(loaded.map((track) => track.points));
  if (!span) return;
  clock = new ReplayClock({ ...span, speed: Number(speedSelect.value) });
  slider.min = String(Math.floor(span.since));
  slider.max = String(Math.ceil(span.until));
  slider.disabled = false;
  playButton.disabled = false;
  render(clock.time(performance.now()));
}

/**
 * Move every replay marker to where its worker was at `t`, and the slider with them.
 * @param {number} t  Unix seconds
 */
function render(t) {
  slider.value = String(Math.round(t));
  replayTime.textContent = timeLabel(t);
  for (const track of loaded) {
    layers.moveReplay(track.id, track.name, positionAt(track.points, t), track.colour);
  }
}

/** @param {number} nowMs */
function tick(nowMs) {
  frameRequest = null;
  if (!clock || !clock.playing) return;
  render(clock.time(nowMs));
  if (clock.ended(nowMs)) pause();
  else frameRequest = requestAnimationFrame(tick);
}

function play() {
  if (!clock) return;
  clock.play(performance.now());
  playButton.setAttribute("aria-pressed", "true");
  playButton.textContent = "Pause";
  if (frameRequest === null) frameRequest = requestAnimationFrame(tick);
}

function pause() {
  if (frameRequest !== null) cancelAnimationFrame(frameRequest);
  frameRequest = null;
  if (clock) clock.pause(performance.now());
  playButton.setAttribute("aria-pressed", "false");
  playButton.textContent = "Play";
}

playButton.addEventListener("click", () => {
  if (clock && clock.playing) pause();
  else play();
});
slider.addEventListener("input", () => {
  if (!clock) return;
  clock.seek(Number(slider.value), performance.now());
  render(clock.time(performance.now()));
});
speedSelect.addEventListener("change", () => {
  if (clock) clock.setSpeed(Number(speedSelect.value), performance.now());
});

// ---------------------------------------------------------------- where was everyone

/** @type {AbortController | null} */
let asking = null;

momentForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const at = parseLocalInput(momentInput.value);
  if (!at) {
    showNotice("Give the date and time to show.");
    return;
  }
  asking?.abort();
  const controller = new AbortController();
  asking = controller;
  hideNotice();
  try {
    const params = new URLSearchParams({ at: isoWithOffset(at) });
    const response = await getJson(`${config.momentUrl}?${params}`, controller.signal);
    /** @type {{ positions: FeedPosition[] }} */
    const body = await response.json();
    if (asking !== controller) return;
    showMoment(body.positions);
  } catch (error) {
    if (/** @type {Error} */ (error).name === "AbortError") return;
    showNotice(/** @type {Error} */ (error).message || "The positions could not be loaded.");
  } finally {
    if (asking === controller) asking = null;
  }
});

/** @param {FeedPosition[]} positions */
function showMoment(positions) {
  layers.showMoment(positions, nameOf, colourOf);
  momentList.replaceChildren(...positions.map((position) => {
    const swatch = el("span", { className: "moment-swatch", attrs: { "aria-hidden": "true" } });
    swatch.style.backgroundColor = colourOf(position.id); // CSSOM: the policy allows it
    return el("li", { attrs: { "data-worker-id": position.id } }, [
      swatch,
      el("span", { className: "moment-name", text: nameOf(position.id) }),
      el("span", { className: "moment-when", text: timeLabel(position.ts) }),
    ]);
  }));
  if (positions.length === 0) {
    momentList.append(el("li", { className: "moment-none", text: "Nobody had sent a position in the hour before." }));
  } else if (loaded.length === 0) {
    /** @type {TrackPoint[]} */
    const points = positions.map((position) => [position.ts, position.lat, position.lng]);
    const corners = boundsOf([points]);
    if (corners) layers.fit(corners);
  }
}

// ---------------------------------------------------------------- start

stopInput.value = String(config.stopMinutes);
momentInput.value = toLocalInput(new Date());
showCustomRange();
updateExportLinks();

// For the browser tests and for a look from the console.
/** @type {any} */ (window).teamtrack = {
  config,
  map: teamMap.map,
  layers,
  get loaded() {
    return loaded;
  },
  get clock() {
    return clock;
  },
  get lastDraw() {
    return lastDraw;
  },
};
