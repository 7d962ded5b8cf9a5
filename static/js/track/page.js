// @ts-check
// The tracking page (/track/) for workers who install nothing: enrols the phone from the link's
// fragment, watches its position while the worker tracks, queues every position in IndexedDB and
// hands the queue to the Tracker (the worker socket). Shows what it is doing, keeps the screen on
// and registers the service worker that makes the page installable and open offline.

import { socketUrl } from "../util.js";
import { readTrackConfig } from "./config.js";
import { enrolCode, hasEnrolFragment, redeem } from "./enrol.js";
import { fixToPosition, MemoryStorage, PositionQueue } from "./queue.js";
import { IndexedDbStorage } from "./store.js";
import { Tracker } from "./tracker.js";
import { ScreenWakeLock } from "./wakelock.js";

/** @typedef {import("./types.js").Enrolment} Enrolment */
/** @typedef {import("./types.js").Fix} Fix */
/** @typedef {import("./types.js").QueuedPosition} QueuedPosition */
/** @typedef {import("./types.js").TrackerStatus} TrackerStatus */
/** @typedef {import("./types.js").TrackStorage} TrackStorage */
/** @typedef {import("./wakelock.js").WakeLockState} WakeLockState */

const config = readTrackConfig();

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const ui = {
  identity: byId("track-identity"),
  state: byId("track-state"),
  stateText: byId("track-state-text"),
  queue: byId("track-queue"),
  lastSent: byId("track-last-sent"),
  lastAcked: byId("track-last-acked"),
  wakeLock: byId("track-wake-lock"),
  notice: byId("track-notice"),
  start: /** @type {HTMLButtonElement} */ (byId("track-start")),
  stop: /** @type {HTMLButtonElement} */ (byId("track-stop")),
};

/** @type {TrackStorage} */
let storage;
try {
  storage = await IndexedDbStorage.open();
} catch (error) {
  console.error("teamtrack: IndexedDB is not available", error);
  storage = new MemoryStorage();
  showNotice(
    "This browser does not let the page keep data (private browsing?): positions not yet sent are lost when the page closes.",
    "error",
  );
}
const queue = await new PositionQueue(storage).load();

/** @type {Enrolment | null} */
let enrolment = /** @type {Enrolment | undefined} */ (await storage.get("enrolment")) || null;
/** @type {Tracker | null} */
let tracker = null;
let tracking = false;
/** @type {number | null} */
let watchId = null;
let lastFixTs = 0;
/** @type {TrackerStatus | null} */
let status = null;
/** @type {WakeLockState} */
let wakeState = "off";

const wakeLock = new ScreenWakeLock({
  onChange(state) {
    wakeState = state;
    render();
  },
});
wakeState = wakeLock.state;

// ---------------------------------------------------------------- enrolment

/** Take an enrolment code from the fragment, remove the fragment, and redeem the code. */
async function enrolFromFragment() {
  if (!hasEnrolFragment(location.hash)) return;
  const code = enrolCode(location.hash);
  // At once, before anything can fail: the code must not stay in the address bar or history.
  history.replaceState(history.state, "", location.pathname + location.search);
  if (code === null) {
    showNotice("This enrolment link is not valid. Ask your manager for a new one.", "error");
    return;
  }
  showNotice("Enrolling this phone…");
  const result = await redeem(code, { path: config.enrolPath });
  if (!result.ok) {
    showNotice(result.message, "error");
    return;
  }
  const fresh = result.enrolment;
  const wasTracking = tracking;
  if (tracker) tracker.stop();
  tracker = null;
  // Positions queued for another worker must not be sent in this one's name.
  if (enrolment && enrolment.worker.id !== fresh.worker.id) await queue.clear();
  enrolment = fresh;
  await storage.set("enrolment", fresh);
  showNotice(
    `This phone is enrolled as ${fresh.worker.name} (${fresh.team.name}).` +
      (wasTracking ? "" : " Tap “Start tracking” to share your location."),
  );
  if (wasTracking) ensureTracker().start();
  else if (queue.size) ensureTracker().start();
  render();
}

// ---------------------------------------------------------------- tracking

function ensureTracker() {
  if (!tracker && enrolment) {
    tracker = new Tracker({
      url: socketUrl(config.socketPath),
      token: enrolment.token,
      queue,
      onStatus: onTrackerStatus,
      isOnline: () => navigator.onLine,
      backoffStartMs: config.backoffStartMs,
      backoffCapMs: config.backoffCapMs,
      ackTimeoutMs: config.ackTimeoutMs,
      minFrameIntervalMs: config.minFrameIntervalMs,
    });
  }
  return /** @type {Tracker} */ (tracker);
}

async function startTracking() {
  if (!enrolment || tracking) return;
  if (!("geolocation" in navigator)) {
    showNotice("This browser cannot tell the page where the phone is.", "error");
    return;
  }
  tracking = true;
  // Asked for first, within the tap: some browsers grant the location prompt and the wake lock
  // only to a page the user has just touched.
  watchId = navigator.geolocation.watchPosition(onFix, onFixError, {
    enableHighAccuracy: true,
    maximumAge: 0,
  });
  wakeLock.acquire();
  ensureTracker().start();
  hideNotice();
  render();
  await storage.set("tracking", true);
}

/** @param {{ keepQueue?: boolean }} [options] */
async function stopTracking({ keepQueue = true } = {}) {
  tracking = false;
  if (watchId !== null) navigator.geolocation.clearWatch(watchId);
  watchId = null;
  wakeLock.release();
  await storage.set("tracking", false);
  // What is still queued goes out first; the socket closes when the queue is empty.
  if (tracker && (!keepQueue || queue.size === 0)) tracker.stop();
  render();
}

/** @param {Fix} fix */
async function onFix(fix) {
  const position = fixToPosition(fix);
  // Some browsers report the same fix twice; the server would take it as a resend anyway.
  if (!position || position.ts === lastFixTs || !tracking || !tracker) return;
  lastFixTs = position.ts;
  if (!ui.notice.hidden && ui.notice.dataset.kind === "waiting") hideNotice();
  await tracker.record(position);
}

/** @param {GeolocationPositionError} error */
function onFixError(error) {
  if (error.code === error.PERMISSION_DENIED) {
    stopTracking();
    showNotice(
      "Location is blocked for this page. Allow location for this site in the browser's settings, then tap “Start tracking”.",
      "error",
    );
  } else if (ui.notice.hidden) {
    // No fix for now (indoors, GPS starting): the watch goes on and the next fix clears this.
    showNotice("Waiting for a location fix…", "waiting");
  }
}

/** @param {TrackerStatus} next */
function onTrackerStatus(next) {
  status = next;
  if (next.link === "revoked") {
    revoked();
    return;
  }
  if (next.link === "replaced") {
    replaced();
    return;
  }
  // Stopped with positions still queued: close once the last of them is acknowledged.
  if (!tracking && next.queued === 0 && next.link === "live" && tracker) tracker.stop();
  render();
}

async function revoked() {
  await stopTracking({ keepQueue: false });
  tracker = null;
  enrolment = null;
  await storage.delete("enrolment");
  showNotice(
    "This phone is no longer enrolled: its link was replaced or withdrawn. Ask your manager for a new enrolment link.",
    "error",
  );
  render();
}

/** Another page or device with this token took the socket (4409): stop here, keep the rest. */
async function replaced() {
  // Stop watching and keep the enrolment and the queue; the tracker stays "replaced" until a tap
  // on Start takes the socket back. Not resumed on reload either ("tracking" is stored false).
  await stopTracking();
  showNotice(
    "Tracking continues on another page or device with this enrolment, so it stopped here. Positions not yet sent stay queued. Tap “Start tracking” to track here instead (the other one then stops).",
  );
  render();
}

// ---------------------------------------------------------------- rendering

/** @param {QueuedPosition | null | undefined} position */
function describe(position) {
  if (!position) return "—";
  const time = new Date(position.ts * 1000).toLocaleTimeString();
  const accuracy = position.acc !== undefined ? ` (±${Math.round(position.acc)} m)` : "";
  return `${position.lat.toFixed(5)}, ${position.lng.toFixed(5)} at ${time}${accuracy}`;
}

/**
 * The state the page shows: one word for tests and styles, one sentence for people.
 * @returns {[string, string]}
 */
function pageState() {
  const queued = queue.size;
  const waiting = queued === 1 ? "1 position queued" : `${queued} positions queued`;
  if (!enrolment) return status && status.link === "revoked" ? ["revoked", "No longer enrolled"] : ["unenrolled", "Not enrolled"];
  const link = status ? status.link : "idle";
  if (link === "replaced") return ["replaced", "Tracking continues on another page or device"];
  if (link === "offline") return ["offline", `Offline — ${waiting}`];
  // The browser may think it is online when TeamTrack cannot be reached: offline all the same.
  if (link === "reconnecting") return ["reconnecting", `Offline — ${waiting}, retrying`];
  if (!tracking) return queued && link !== "idle" ? ["sending", `Stopped — sending ${waiting}`] : ["stopped", "Not tracking"];
  if (link === "connecting") return ["connecting", "Connecting…"];
  return ["tracking", queued ? `Tracking — sending ${waiting}` : "Tracking"];
}

const WAKE_TEXT = {
  unsupported: "This browser cannot keep the screen on: keep the page open and the screen unlocked.",
  off: "",
  on: "The screen stays on while tracking.",
  paused: "The screen may turn off: bring this page to the front to keep it on.",
  refused: "The screen may turn off (the browser refused to keep it on): keep the page in front.",
};

function render() {
  const [state, text] = pageState();
  ui.state.dataset.state = state;
  setText(ui.stateText, text);
  ui.identity.textContent = enrolment ? `${enrolment.worker.name} · ${enrolment.team.name}` : "";
  ui.queue.dataset.count = String(queue.size);
  const count = queue.size === 1 ? "1 position" : `${queue.size} positions`;
  const refused = status && status.refused ? ` (${status.refused} refused by the server and dropped)` : "";
  setText(ui.queue, (queue.size ? `${count} waiting to be sent` : "Nothing waiting to be sent") + refused);
  renderPosition(ui.lastSent, status && status.lastSent);
  renderPosition(ui.lastAcked, status && status.lastAcked);
  ui.start.hidden = !enrolment || tracking;
  ui.stop.hidden = !tracking;
  setText(ui.wakeLock, tracking ? WAKE_TEXT[wakeState] : "");
}

/**
 * @param {HTMLElement} node
 * @param {QueuedPosition | null | undefined} position
 */
function renderPosition(node, position) {
  if (position) node.dataset.seq = String(position.seq);
  else delete node.dataset.seq;
  setText(node, describe(position));
}

/**
 * @param {Node} node
 * @param {string} text
 */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * @param {string} text
 * @param {"info" | "error" | "waiting"} [kind]
 */
function showNotice(text, kind = "info") {
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
}

function hideNotice() {
  ui.notice.hidden = true;
}

// ---------------------------------------------------------------- start

ui.start.addEventListener("click", () => startTracking());
ui.stop.addEventListener("click", () => stopTracking());
// A phone may report the network gone while the socket still looks open for minutes: close it
// at once and queue; connect again as soon as the network is back.
window.addEventListener("offline", () => tracker && tracker.networkDown());
window.addEventListener("online", () => tracker && tracker.networkUp());
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && tracker) tracker.networkUp();
});
// A link opened while the page is already open (the installed app, another tab's QR scan).
window.addEventListener("hashchange", () => enrolFromFragment());

if ("serviceWorker" in navigator && config.serviceWorker) {
  navigator.serviceWorker.register(config.serviceWorker, { scope: config.scope }).catch((error) => {
    console.warn("teamtrack: the service worker could not be registered", error);
  });
}

// For the browser tests and for a look from the console.
/** @type {any} */ (window).teamtrack = {
  config,
  queue,
  storage,
  get tracker() {
    return tracker;
  },
  get status() {
    return status;
  },
};

await enrolFromFragment();
if (!enrolment) {
  if (ui.notice.hidden) showNotice("Open the enrolment link your manager sent you (or scan its QR code) to enrol this phone.");
} else if (await storage.get("tracking")) {
  await startTracking(); // it was tracking when the page closed: carry on
} else if (queue.size) {
  ensureTracker().start(); // send what an earlier visit left behind
}
render();
