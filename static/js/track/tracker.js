// @ts-check
// The worker socket of the tracking page: authenticates with an auth frame, sends the queue as
// batch frames oldest first, one frame at a time, and forgets positions only when an ack covers
// them. Reconnects with backoff and jitter; goes quiet while the browser is offline; stops for
// good when the server refuses the token (4401), and until start() when a newer socket of the same
// worker took over (4409: reconnecting on its own would take the socket back, for ever).
//
// One frame in flight at a time ("stop and wait"): positions that arrive meanwhile wait in the
// queue and leave together in the next batch, after the ack. So a backlog of any size goes out in
// frames of up to 500 positions, no faster than one per ack and one per minFrameIntervalMs, well
// under the server's limit of 5 frames a second.
//
// Acks are cumulative and per socket, and a socket that answered a frame with an error frame
// never acknowledges anything past the frames it received before that one (docs/protocol.md,
// Acknowledgements). So after an error frame the tracker deals with the refused frame (keeps it
// to resend, or drops what the server will never take) and replaces the socket: the queue goes
// out again on a new one, which acknowledges it.

import { backoffDelay, CLOSE_REPLACED, CLOSE_UNAUTHENTICATED } from "../socket.js";
import { batchFrame, MAX_BATCH } from "./queue.js";

/** @typedef {import("../types.js").DevicePosition} DevicePosition */
/** @typedef {import("../types.js").ServerToDeviceFrame} ServerToDeviceFrame */
/** @typedef {import("./queue.js").PositionQueue} PositionQueue */
/** @typedef {import("./types.js").LinkState} LinkState */
/** @typedef {import("./types.js").QueuedPosition} QueuedPosition */
/** @typedef {import("./types.js").TrackerStatus} TrackerStatus */

/**
 * The timers a Tracker uses; tests pass a fake one.
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

// After a `rate_limited` error the frame was dropped: reconnect and send it again after this
// long, twice as long after each further one in a row (until an ack), up to the cap.
const RATE_LIMITED_WAIT_MS = 2000;
const RATE_LIMITED_WAIT_CAP_MS = 32000;
// Which position of a batch an error frame names: "positions[3].lat must be ...".
const NAMED_POSITION = /^positions\[(\d+)\]/;

export class Tracker {
  /**
   * @param {object} options
   * @param {string} options.url  the worker socket's URL
   * @param {string} options.token
   * @param {PositionQueue} options.queue
   * @param {(status: TrackerStatus) => void} [options.onStatus]
   * @param {() => boolean} [options.isOnline]  navigator.onLine, or a fake
   * @param {{ new (url: string): WebSocket }} [options.WebSocketClass]
   * @param {Clock} [options.clock]
   * @param {() => number} [options.random]
   * @param {number} [options.backoffStartMs]
   * @param {number} [options.backoffCapMs]
   * @param {number} [options.ackTimeoutMs]  no ack (or no open) this long: the socket is dead
   * @param {number} [options.minFrameIntervalMs]
   */
  constructor({
    url,
    token,
    queue,
    onStatus = () => {},
    isOnline = () => true,
    WebSocketClass = globalThis.WebSocket,
    clock = REAL_CLOCK,
    random = Math.random,
    backoffStartMs = 1000,
    backoffCapMs = 60000,
    ackTimeoutMs = 20000,
    minFrameIntervalMs = 250,
  }) {
    this.url = url;
    this.token = token;
    this.queue = queue;
    this.onStatus = onStatus;
    this.isOnline = isOnline;
    this.WebSocketClass = WebSocketClass;
    this.clock = clock;
    this.backoff = { startMs: backoffStartMs, capMs: backoffCapMs, random };
    this.ackTimeoutMs = ackTimeoutMs;
    this.minFrameIntervalMs = minFrameIntervalMs;

    /** @type {WebSocket | null} */
    this.ws = null;
    this.open = false; // the socket is open and the auth frame went out
    this.wanted = false; // start() was called and stop() was not
    this.attempt = 0;
    this.rateLimited = 0; // rate_limited errors since the last ack
    this.retryTimer = null;
    this.ackTimer = null;
    this.sendTimer = null;
    this.pumping = false;
    this.pumpAgain = false;
    this.lastFrameAt = -Infinity;
    /** @type {{ seq: number, positions: QueuedPosition[] } | null} */
    this.inFlight = null;

    /** @type {TrackerStatus} */
    this.status = { link: "idle", queued: queue.size, lastSent: null, lastAcked: null, refused: 0 };
  }

  // ------------------------------------------------------------ the page's controls

  /** Connect (when the network is up) and keep connected until stop(); after 4409, take over. */
  start() {
    if (this.status.link === "revoked") return;
    this.wanted = true;
    if (!this.ws && this.retryTimer === null) this.connect();
  }

  /** Close the socket and stop reconnecting; queued positions stay for the next start(). */
  stop() {
    this.wanted = false;
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop(1000);
    // Revoked and replaced say more than idle: they stay until the page acts on them.
    const link = this.status.link;
    if (link !== "revoked" && link !== "replaced") this.report({ link: "idle" });
  }

  /**
   * Queue a new position and send it (with anything still queued) when the socket allows.
   * @param {DevicePosition} position
   * @returns {Promise<QueuedPosition>}
   */
  async record(position) {
    const entry = await this.queue.push(position);
    this.report({});
    this.pump();
    return entry;
  }

  /** The browser says the network is gone: close the socket now and queue until it returns. */
  networkDown() {
    if (!this.wanted) return;
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop(1000);
    this.report({ link: "offline" });
  }

  /** The browser says the network is back: connect at once, without waiting out a backoff. */
  networkUp() {
    if (!this.wanted || this.ws) return;
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  // ------------------------------------------------------------ connection handling

  connect() {
    if (!this.isOnline()) {
      this.report({ link: "offline" });
      return;
    }
    this.report({ link: "connecting" });
    let ws;
    try {
      ws = new this.WebSocketClass(this.url);
    } catch (error) {
      console.error("teamtrack: cannot open the socket", error);
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.open = false;
    this.armAckTimer(); // also bounds the time the socket may take to open
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.clock.clearTimeout(this.ackTimer);
      this.ackTimer = null;
      // Browsers cannot set an Authorization header: the token goes in the first frame.
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
      this.open = true;
      this.report({ link: "live" });
      this.pump();
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this.receive(event.data);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.closed(event.code);
    };
    ws.onerror = () => {}; // a close event always follows, where the retry is decided
  }

  /**
   * Let go of the socket at once (its close event is ignored from now on) and close it.
   * @param {number} code
   */
  drop(code) {
    this.clock.clearTimeout(this.ackTimer);
    this.clock.clearTimeout(this.sendTimer);
    this.ackTimer = this.sendTimer = null;
    this.inFlight = null; // resent after the next connect, if no ack came
    this.open = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(code);
      } catch {
        // already closing
      }
    }
  }

  /** @param {number} code */
  closed(code) {
    this.drop(1000);
    if (code === CLOSE_UNAUTHENTICATED) {
      this.wanted = false;
      this.report({ link: "revoked", closeCode: code });
      return;
    }
    if (code === CLOSE_REPLACED) {
      // Another page or device with this token is tracking now. Keep the token and the queue:
      // start() takes the socket back, and sends what is still queued here.
      this.wanted = false;
      this.report({ link: "replaced", closeCode: code });
      return;
    }
    if (!this.wanted) return;
    if (!this.isOnline()) {
      this.report({ link: "offline", closeCode: code });
      return;
    }
    this.scheduleRetry(code);
  }

  /** @param {number} [closeCode] */
  scheduleRetry(closeCode) {
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.retryIn(delay, closeCode);
  }

  /**
   * Connect again after `delay` ms.
   * @param {number} delay
   * @param {number} [closeCode]
   */
  retryIn(delay, closeCode) {
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      if (this.wanted) this.connect();
    }, delay);
    this.report({ link: "reconnecting", retryAt: this.clock.now() + delay, closeCode });
  }

  /**
   * The socket was let go after an error frame: connect a new one after `delay` ms (0: at once),
   * unless the page stopped, the network went, or a socket or retry is already under way (the
   * page may have acted while the refused positions were being dropped).
   * @param {number} delay
   */
  replaceSocket(delay) {
    if (!this.wanted || this.ws || this.retryTimer !== null) return;
    if (!this.isOnline()) {
      this.report({ link: "offline" });
      return;
    }
    if (delay > 0) this.retryIn(delay);
    else this.connect();
  }

  armAckTimer() {
    this.clock.clearTimeout(this.ackTimer);
    this.ackTimer = this.clock.setTimeout(() => {
      this.ackTimer = null;
      // No open, or no ack: the connection is dead without having said so (a phone that lost
      // its network without the browser noticing). Treat it as closed.
      console.warn("teamtrack: no answer from the server; reconnecting");
      this.closed(1006);
    }, this.ackTimeoutMs);
  }

  // ------------------------------------------------------------ sending

  /** Send the oldest queued positions as one batch, if the socket is open and idle. */
  async pump() {
    // One pump at a time; a call while one reads the queue makes it look again afterwards (the
    // queue may have grown while it read).
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        await this.sendNext();
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
  }

  async sendNext() {
    if (!this.open || this.inFlight || this.sendTimer !== null) return;
    const wait = this.lastFrameAt + this.minFrameIntervalMs - this.clock.now();
    if (wait > 0) {
      this.sendTimer = this.clock.setTimeout(() => {
        this.sendTimer = null;
        this.pump();
      }, wait);
      return;
    }
    const ws = this.ws;
    const queued = await this.queue.oldest(MAX_BATCH);
    if (this.ws !== ws || !ws || !this.open || this.inFlight) return;
    const frame = batchFrame(queued);
    if (!frame) return;
    const positions = /** @type {QueuedPosition[]} */ (frame.positions);
    const last = positions[positions.length - 1];
    this.inFlight = { seq: last.seq, positions };
    this.lastFrameAt = this.clock.now();
    ws.send(JSON.stringify(frame));
    this.armAckTimer();
    this.report({ lastSent: last });
  }

  // ------------------------------------------------------------ receiving

  /** @param {string} data */
  receive(data) {
    /** @type {ServerToDeviceFrame} */
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn("teamtrack: ignoring a frame that is not JSON");
      return;
    }
    if (frame && frame.type === "ack" && Number.isInteger(frame.seq)) {
      this.acknowledged(frame.seq);
    } else if (frame && frame.type === "error") {
      this.refused(frame.code, String(frame.detail || ""));
    }
  }

  /**
   * An ack of `seq` on the current socket (acks of a socket let go never get here). Acks are
   * cumulative: it covers the frames sent on this socket with a seq up to `seq`. With one frame in
   * flight, every earlier frame of this socket is acknowledged already, so it is about the frame in
   * flight or about nothing: the frame's positions go when `seq` reaches the frame's seq (a lower
   * one is an old ack again), and nothing queued after the frame was sent goes with them, whatever
   * `seq` says. The frame holds the oldest queued positions, so removing everything up to its seq
   * removes exactly its positions.
   * @param {number} seq
   */
  async acknowledged(seq) {
    this.attempt = 0; // an ack proves the server took our token
    this.rateLimited = 0;
    const flight = this.inFlight;
    if (!flight || seq < flight.seq) return;
    this.clock.clearTimeout(this.ackTimer);
    this.ackTimer = null;
    // The frame stays in flight until the queue has forgotten it: no frame is read from the queue
    // (and sent) before then.
    await this.queue.acknowledge(flight.seq);
    if (this.inFlight === flight) this.inFlight = null;
    this.report({ lastAcked: flight.positions[flight.positions.length - 1] });
    this.pump();
  }

  /**
   * The server refused the frame in flight (docs/protocol.md, error frame). From now on this
   * socket acknowledges nothing past the frames it received before that one: let it go at once
   * (nothing more is sent on it, and whatever it still says is ignored), and send the queue again
   * on a new socket. A rate-limited frame was dropped: it stays queued, and the new socket comes
   * after a pause (longer after each rate limit in a row). Any other error is about the positions
   * themselves and sending them again would fail again: drop the position the error names, or the
   * whole frame, then reconnect at once.
   * @param {string} code
   * @param {string} detail
   */
  async refused(code, detail) {
    const flight = this.inFlight;
    console.warn(`teamtrack: the server refused a frame: ${code} ${detail}`);
    this.drop(1000);
    if (code === "rate_limited") {
      const wait = Math.min(RATE_LIMITED_WAIT_MS * 2 ** this.rateLimited, RATE_LIMITED_WAIT_CAP_MS);
      this.rateLimited += 1;
      this.replaceSocket(wait);
      return;
    }
    if (!flight) {
      // Nothing of ours to drop (the error cannot be about a frame in flight): reconnect with the
      // ordinary backoff, so that a server refusing everything is not asked again and again.
      this.replaceSocket(backoffDelay(this.attempt++, this.backoff));
      return;
    }
    const named = NAMED_POSITION.exec(detail);
    const index = named ? Number(named[1]) : -1;
    const dropped = index >= 0 && index < flight.positions.length
      ? [flight.positions[index]]
      : flight.positions;
    try {
      await this.queue.drop(dropped.map((entry) => entry.seq));
    } catch (error) {
      // Still queued: the new socket would be refused the same way. Not at once, then.
      console.error("teamtrack: cannot drop the refused positions", error);
      this.replaceSocket(backoffDelay(this.attempt++, this.backoff));
      return;
    }
    this.report({ refused: this.status.refused + dropped.length });
    this.replaceSocket(0);
  }

  // ------------------------------------------------------------ status

  /** @param {Partial<TrackerStatus>} change */
  report(change) {
    const link = change.link || this.status.link;
    /** @type {TrackerStatus} */
    const status = { ...this.status, ...change, queued: this.queue.size };
    if (link !== "reconnecting") delete status.retryAt;
    if (!["reconnecting", "revoked", "replaced", "offline"].includes(link)) delete status.closeCode;
    this.status = status;
    this.onStatus(status);
  }
}
