// @ts-check
// The team map page: wires the socket's frames into the worker store, the map and the side list,
// and runs the once-a-second tick that ages "time ago" labels, staleness and the retry countdown.

import { readConfig } from "./config.js";
import { WorkerList } from "./list.js";
import { TeamMap } from "./map.js";
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED, TeamSocket } from "./socket.js";
import { loginUrl, socketUrl } from "./util.js";
import { WorkerStore } from "./workers.js";

/** @typedef {import("./types.js").ConnectionState} ConnectionState */
/** @typedef {import("./types.js").FrameHandlers} FrameHandlers */
/** @typedef {import("./types.js").Worker} Worker */

const LOST_MESSAGES = {
  [CLOSE_UNAUTHENTICATED]: "Your session has ended. Taking you to the login page…",
  [CLOSE_FORBIDDEN]: "You are not a manager of this team, so its live positions are not shown.",
  [CLOSE_NOT_FOUND]: "This team does not exist (any more).",
};
const NARROW = window.matchMedia("(max-width: 699.98px)");

const nowSeconds = () => Date.now() / 1000;

const config = readConfig();
const store = new WorkerStore(config);

const panel = document.getElementById("side-panel");
const connection = document.getElementById("connection-state");
const onlineCount = document.getElementById("online-count");
const notice = document.getElementById("map-notice");
const listToggle = document.getElementById("list-toggle");

/** @type {number | null} */
let followed = null;
// Fit the team into view once, when positions first exist, unless the user moved the map first.
let fitPending = true;
/** @type {ConnectionState} */
let connectionState = { state: "connecting" };

const list = new WorkerList(document.getElementById("worker-list"), {
  onSelect: toggleFollow,
  scrollRoot: document.getElementById("worker-list-region"),
});
const teamMap = new TeamMap(document.getElementById("map"), config, {
  onMarkerClick(id) {
    toggleFollow(id);
    list.reveal(id);
  },
  onUserMove() {
    fitPending = false;
    follow(null);
  },
  onTilesFailed() {
    document.getElementById("map").dataset.tiles = "failed";
    showNotice("Map tiles could not load; workers are drawn on a plain background.");
  },
});

// ---------------------------------------------------------------- frames

// Rows of moved workers are patched once per animation frame, however many batches arrived.
/** @type {Set<Worker>} */
const dirty = new Set();
let flushQueued = false;

function scheduleFlush() {
  if (flushQueued || dirty.size === 0) return;
  flushQueued = true;
  requestAnimationFrame(() => {
    flushQueued = false;
    const now = nowSeconds();
    for (const worker of dirty) list.update(worker, now);
    dirty.clear();
  });
}

/** @type {FrameHandlers} */
const handlers = {
  snapshot(frame) {
    const now = nowSeconds();
    dirty.clear(); // those worker objects are about to be replaced
    const gone = store.replaceAll(Array.isArray(frame.workers) ? frame.workers : [], now);
    for (const id of gone) teamMap.remove(id);
    for (const worker of store.workers.values()) {
      if (worker.lat === null) teamMap.remove(worker.id);
      else teamMap.show(worker);
    }
    if (followed !== null && !store.workers.has(followed)) follow(null);
    else if (followed !== null) teamMap.drawTrail(store.workers.get(followed));
    list.replaceAll(store.workers.values(), now);
    maybeFit();
    renderCounts();
  },

  positions(frame) {
    if (!Array.isArray(frame.positions)) return;
    const now = nowSeconds();
    const { moved, created } = store.applyPositions(frame.positions, now);
    for (const worker of created) list.add(worker, now);
    for (const worker of moved) {
      teamMap.show(worker);
      dirty.add(worker);
    }
    scheduleFlush();
    if (created.length) renderCounts();
    if (fitPending) maybeFit();
  },

  presence(frame) {
    const now = nowSeconds();
    const { worker, created } = store.applyPresence(frame, now);
    if (!worker) return;
    if (created) list.add(worker, now);
    else list.update(worker, now);
    teamMap.restyle(worker);
    renderCounts();
  },

  error(frame) {
    console.warn("teamtrack: the server reported an error", frame.code, frame.detail);
    showNotice(`The server reported a problem: ${frame.detail || frame.code}`);
  },
};

// ---------------------------------------------------------------- following and fitting

/** @param {number} id */
function toggleFollow(id) {
  follow(followed === id ? null : id);
  if (followed !== null && NARROW.matches) setListOpen(false); // show the map, not the list
}

/** @param {number | null} id */
function follow(id) {
  const worker = id === null ? null : store.workers.get(id) || null;
  const next = worker ? worker.id : null;
  if (next === followed) return;
  followed = next;
  if (worker) fitPending = false;
  teamMap.follow(worker);
  list.setFollowed(followed);
}

function maybeFit() {
  if (fitPending && teamMap.fitTeam(store.workers.values())) fitPending = false;
}

document.getElementById("fit-team").addEventListener("click", () => {
  follow(null);
  fitPending = false;
  if (!teamMap.fitTeam(store.workers.values())) {
    teamMap.map.setView(config.defaultCenter, config.defaultZoom);
  }
});

// ---------------------------------------------------------------- side panel

/** @param {boolean} open */
function setListOpen(open) {
  listToggle.setAttribute("aria-expanded", String(open));
  panel.dataset.listOpen = String(open);
}

listToggle.addEventListener("click", () => {
  setListOpen(listToggle.getAttribute("aria-expanded") !== "true");
});

function renderCounts() {
  const { online, total } = store.counts();
  if (onlineCount.dataset.online === String(online) && onlineCount.dataset.total === String(total)) return;
  onlineCount.dataset.online = String(online);
  onlineCount.dataset.total = String(total);
  onlineCount.textContent = `${online} of ${total} online`;
}

/**
 * @param {string} text
 * @param {"info" | "lost"} [kind]
 */
function showNotice(text, kind = "info") {
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = false;
}

const CONNECTION_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting", lost: "Lost" };
const connectionText = connection.querySelector(".connection-text");
const connectionCountdown = connection.querySelector(".connection-countdown");

/**
 * @param {Node} node
 * @param {string} text
 */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function renderConnection() {
  const current = connectionState;
  connection.dataset.state = current.state;
  setText(connectionText, CONNECTION_TEXT[current.state]);
  // The countdown is aria-hidden in the template: announcing it every second would drown the
  // rest of the page for screen reader users, and "Reconnecting" says what matters.
  const seconds = current.state === "reconnecting"
    ? Math.max(1, Math.ceil((current.retryAt - Date.now()) / 1000))
    : 0;
  setText(connectionCountdown, seconds ? ` in ${seconds}s` : "");
}

/** @param {ConnectionState} state */
function onConnectionState(state) {
  connectionState = state;
  renderConnection();
  if (state.state === "live" && notice.dataset.kind === "lost") notice.hidden = true;
  if (state.state !== "lost") return;
  showNotice(LOST_MESSAGES[state.code] || "The connection was closed.", "lost");
  if (state.code === CLOSE_UNAUTHENTICATED) {
    window.location.assign(loginUrl(config.loginPath, window.location.pathname + window.location.search));
  }
}

// ---------------------------------------------------------------- start

function tick() {
  const now = nowSeconds();
  for (const worker of store.workers.values()) {
    if (store.refresh(worker, now)) teamMap.restyle(worker);
    list.update(worker, now);
  }
  renderCounts();
  if (connectionState.state === "reconnecting") renderConnection();
}

const socket = new TeamSocket(socketUrl(config.socketPath), {
  handlers,
  onState: onConnectionState,
  backoffStartMs: config.backoffStartMs,
  backoffCapMs: config.backoffCapMs,
});
// The browser knows when the network returns; no need to sit out the rest of the backoff.
window.addEventListener("online", () => socket.retryNow());

// For the browser tests and for a look from the console.
/** @type {any} */ (window).teamtrack = {
  config,
  map: teamMap.map,
  markers: teamMap.markers,
  workers: store.workers,
  socket,
  follow,
  get followed() {
    return followed;
  },
};

renderCounts();
socket.start();
setInterval(tick, 1000);
