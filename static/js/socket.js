// The manager socket: connects, reconnects with exponential backoff and full jitter, parses each
// frame and hands it to the handler named by its `type`, and reports its state to one callback.

// Close codes of docs/protocol.md after which retrying cannot help.
export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_NOT_FOUND = 4404;
const FINAL_CODES = new Set([CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND]);

/**
 * Return the wait before retry number `attempt` (0-based): a uniformly random time up to an
 * exponentially growing ceiling, so that many maps dropped at once do not return in step.
 */
export function backoffDelay(attempt, { startMs, capMs, random = Math.random }) {
  const ceiling = Math.min(capMs, startMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}

/**
 * States passed to onState:
 *   {state: "connecting"}                       a connection attempt is under way
 *   {state: "live"}                             the snapshot arrived; frames are flowing
 *   {state: "reconnecting", retryAt, attempt}   waiting until retryAt (ms since epoch)
 *   {state: "lost", code}                       closed for good (code is the close code)
 */
export class TeamSocket {
  constructor(url, {
    handlers = {},
    onState = () => {},
    backoffStartMs = 500,
    backoffCapMs = 30000,
    WebSocketClass = window.WebSocket,
    random = Math.random,
  } = {}) {
    this.url = url;
    this.handlers = handlers;
    this.onState = onState;
    this.backoff = { startMs: backoffStartMs, capMs: backoffCapMs, random };
    this.WebSocketClass = WebSocketClass;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.state = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
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
    clearTimeout(this.timer);
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

  receive(data) {
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
    const handler = this.handlers[frame.type];
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

  closed(code) {
    this.ws = null;
    if (this.stopped) return;
    if (FINAL_CODES.has(code)) {
      this.setState({ state: "lost", code });
      return;
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
    this.setState({ state: "reconnecting", retryAt: Date.now() + delay, attempt: this.attempt });
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }
}
