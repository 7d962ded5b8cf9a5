// @ts-check
// The manager socket: connects, reconnects with exponential backoff and full jitter, parses each
// frame and hands it to the handler named by its `type`, and reports its state to one callback.

/** @typedef {import("./types.js").CloseCode} CloseCode */
/** @typedef {import("./types.js").ConnectionState} ConnectionState */
/** @typedef {import("./types.js").FrameHandlers} FrameHandlers */
/** @typedef {import("./types.js").ManagerFrame} ManagerFrame */

// The close codes of tracking/protocol.py, under its names (tests/js/close-codes.test.js keeps the
// two in step); docs/protocol.md says what each means.
export const CLOSE_UNAUTHENTICATED = 4401; // not logged in, or logged out while watching
export const CLOSE_FORBIDDEN = 4403; // not a manager of this team (any more)
export const CLOSE_NOT_FOUND = 4404; // no team with this slug
export const CLOSE_TOO_SLOW = 4408; // this page stopped reading while its frames piled up
// A newer socket of the same worker logged in (worker sockets only): never reconnect on our own,
// or two pages with the same token would take the socket from each other for ever.
export const CLOSE_REPLACED = 4409;
export const CLOSE_RATE_LIMITED = 4429; // too many frames (device sockets, in practice)
export const CLOSE_TRY_AGAIN = 4503; // the relay cannot be reached right now
export const CLOSE_SERVICE_RESTART = 4012; // the replica is stopping

/**
 * What the socket does after each of those codes: "stop" where retrying cannot help or must not
 * happen (it reports "lost"), "retry" with backoff as after any other close (1000, 1006). A 4012
 * closes a live socket, whose snapshot reset the attempt count to 0, so the wait is a jitter of up
 * to backoffStartMs: the "reconnect at once, with a little jitter" that docs/protocol.md asks for.
 * Manager sockets never get 4409; its rule is here so that the map mirrors protocol.py.
 * @type {ReadonlyMap<CloseCode, "stop" | "retry">}
 */
export const AFTER_CLOSE = new Map([
  [CLOSE_UNAUTHENTICATED, "stop"],
  [CLOSE_FORBIDDEN, "stop"],
  [CLOSE_NOT_FOUND, "stop"],
  [CLOSE_TOO_SLOW, "retry"],
  [CLOSE_REPLACED, "stop"],
  [CLOSE_RATE_LIMITED, "retry"],
  [CLOSE_TRY_AGAIN, "retry"],
  [CLOSE_SERVICE_RESTART, "retry"],
]);

/**
 * The timers a TeamSocket uses; tests pass a fake one.
 * @typedef {object} Clock
 * @property {() => number} now  milliseconds since the epoch
 * @property {(callback: () => void, ms: number) => any} setTimeout
 * @property {(handle: any) => void} clearTimeout
 */

/** @type {Clock} */
const REAL_CLOCK = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

/**
 * Return the wait before retry number `attempt` (0-based): a uniformly random time up to an
 * exponentially growing ceiling, so that many maps dropped at once do not return in step.
 * @param {number} attempt
 * @param {{ startMs: number, capMs: number, random?: () => number }} backoff
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, { startMs, capMs, random = Math.random }) {
  const ceiling = Math.min(capMs, startMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}

/**
 * States passed to onState (ConnectionState in types.js):
 *   {state: "connecting"}                       a connection attempt is under way
 *   {state: "live"}                             the snapshot arrived; frames are flowing
 *   {state: "reconnecting", retryAt, attempt}   waiting until retryAt (ms since epoch)
 *   {state: "lost", code}                       closed for good (code is the close code)
 */
export class TeamSocket {
  /**
   * @param {string} url
   * @param {object} [options]
   * @param {FrameHandlers} [options.handlers]
   * @param {(state: ConnectionState) => void} [options.onState]
   * @param {number} [options.backoffStartMs]
   * @param {number} [options.backoffCapMs]
   * @param {{ new (url: string): WebSocket }} [options.WebSocketClass]  the browser's, or a fake
   * @param {() => number} [options.random]  uniform in [0, 1), for the jitter
   * @param {Clock} [options.clock]
   */
  constructor(url, {
    handlers = {},
    onState = () => {},
    backoffStartMs = 500,
    backoffCapMs = 30000,
    WebSocketClass = window.WebSocket,
    random = Math.random,
    clock = REAL_CLOCK,
  } = {}) {
    this.url = url;
    this.handlers = handlers;
    this.onState = onState;
    this.backoff = { startMs: backoffStartMs, capMs: backoffCapMs, random };
    this.WebSocketClass = WebSocketClass;
    this.clock = clock;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    /** @type {ConnectionState | null} */
    this.state = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }

  /** Skip the rest of the wait, e.g. when the browser says the network is back. */
  retryNow() {
    if (this.timer === null || this.stopped) return;
    this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.connect();
  }

  connect() {
    this.setState({ state: "connecting" });
    let ws;
    try {
      ws = new this.WebSocketClass(this.url);
    } catch (error) {
      console.error("teamtrack: cannot open the socket", error);
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => {
      if (this.ws === ws) this.receive(event.data);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.closed(event.code);
    };
    // An error is always followed by a close event, where the retry is decided.
    ws.onerror = () => {};
  }

  /** @param {string} data */
  receive(data) {
    /** @type {ManagerFrame} */
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (error) {
      console.warn("teamtrack: ignoring a frame that is not JSON", error);
      return;
    }
    if (!frame || typeof frame.type !== "string") {
      console.warn("teamtrack: ignoring a frame without a type", frame);
      return;
    }
    // Own properties only: a frame typed "constructor" or "__proto__" must not reach Object's.
    const handler = Object.prototype.hasOwnProperty.call(this.handlers, frame.type)
      ? /** @type {(frame: ManagerFrame) => void} */ (this.handlers[frame.type])
      : undefined;
    if (handler) {
      handler(frame);
    } else {
      console.warn(`teamtrack: ignoring a frame of unknown type ${frame.type}`);
    }
    if (frame.type === "snapshot") {
      // Only a snapshot proves the server accepted us; an open that is closed at once does not.
      this.attempt = 0;
      this.setState({ state: "live" });
    }
  }

  /** @param {number} code */
  closed(code) {
    this.ws = null;
    if (this.stopped) return;
    if (AFTER_CLOSE.get(/** @type {CloseCode} */ (code)) === "stop") {
      this.setState({ state: "lost", code });
      return;
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
    this.setState({ state: "reconnecting", retryAt: this.clock.now() + delay, attempt: this.attempt });
  }

  /** @param {ConnectionState} state */
  setState(state) {
    this.state = state;
    this.onState(state);
  }
}
