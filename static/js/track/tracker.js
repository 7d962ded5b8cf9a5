// @ts-check
// The worker socket of the tracking page: authenticates with an auth frame, sends the queue as
// batch frames oldest first, and forgets positions only when an ack covers them. Reconnects with
// backoff and jitter; goes quiet while the browser is offline; stops for good when the server
// refuses the token (4401), and until start() when a newer socket of the same worker took over
// (4409: reconnecting on its own would take the socket back, for ever).
//
// Frames do not wait for the acks of earlier ones: the server acknowledges at most once per
// ACK_INTERVAL_SECONDS (up to 10 s), and a position that waited for an ack to leave would reach
// the map that much later. Each new position leaves in the next frame, no sooner than
// minFrameIntervalMs after the last (4 a second, under the server's limit of 5), and stays queued,
// in flight, until an ack covers its frame. A socket never gets a position twice (the next frame
// takes only positions above the last seq sent on it, so frames' seqs increase); a new socket gets
// everything unacknowledged again. At most MAX_FRAMES_IN_FLIGHT frames and
// MAX_POSITIONS_IN_FLIGHT positions wait for acks: a large backlog goes out two full batches per
// ack, not as fast as the frame rate would allow. A new socket sends one frame until its first
// ack, which is what says the login went through (docs/protocol.md, Rate limit).
//
// Acks are cumulative and per socket, and a socket that answered a frame with an error frame
// never acknowledges anything past the frames it received before that one (docs/protocol.md,
// Acknowledgements). So after an error frame the tracker deals with the refused frame (keeps it
// to resend, or drops what the server will never take) and replaces the socket: the queue goes
// out again on a new one, which acknowledges it. An error frame does not say which frame it
// answers; the tracker can tell only when one frame was in flight, so after an error it sends one
// frame at a time until the next ack.

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
// Frames waiting for their ack at most: more than a fix a second sends over the longest ack
// interval (10 s), so that live positions never wait for an ack to leave.
export const MAX_FRAMES_IN_FLIGHT = 16;
// Positions waiting for their ack at most: a backlog leaves two full batches per ack.
export const MAX_POSITIONS_IN_FLIGHT = 2 * MAX_BATCH;

/**
 * A frame sent on the current socket and not yet acknowledged.
 * @typedef {object} Flight
 * @property {number} seq  the highest seq of its positions: the ack that covers it
 * @property {QueuedPosition[]} positions
 * @property {number} sentAt  clock.now() when it left
 */

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
   * @param {number} [options.ackTimeoutMs]  no open this long, or frames in flight and no ack
   *   this long since the oldest of them left or the last ack came: the socket is dead
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
    // The current socket's frames not yet acknowledged, oldest first; the highest seq sent on it;
    // when its last ack came that covered a frame.
    /** @type {Flight[]} */
    this.inFlight = [];
    this.sentThrough = -Infinity;
    this.lastAckAt = -Infinity;
    // Frames allowed in flight: 1 on a new socket and after an error frame, until an ack.
    this.window = MAX_FRAMES_IN_FLIGHT;

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
    this.deadAfter(this.ackTimeoutMs); // the time the socket may take to open
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.watchAcks(); // nothing in flight yet: no timer
      // Browsers cannot set an Authorization header: the token goes in the first frame.
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
      this.open = true;
      // One frame until the first ack: frames sent while the login waits reach the server all
      // at once when it is done, and a login that moved replicas has one frame's budget.
      this.window = 1;
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
    // What was in flight stays queued, and the next socket sends it again.
    this.inFlight = [];
    this.sentThrough = this.lastAckAt = -Infinity;
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

  /**
   * Take the socket for dead in `ms` unless this timer is set again or cleared first.
   * @param {number} ms
   */
  deadAfter(ms) {
    this.clock.clearTimeout(this.ackTimer);
    this.ackTimer = this.clock.setTimeout(() => {
      this.ackTimer = null;
      // No open, or no ack: the connection is dead without having said so (a phone that lost
      // its network without the browser noticing). Treat it as closed.
      console.warn("teamtrack: no answer from the server; reconnecting");
      this.closed(1006);
    }, ms);
  }

  /**
   * While frames are in flight, expect an ack within ackTimeoutMs of the oldest one's sending or
   * of the last ack, whichever is later: not of the newest frame's, or a steady stream of frames
   * would keep a dead socket for ever; and not of the oldest alone, which may rightly wait a whole
   * ack interval (up to 10 s) and then some, a frame after each ack.
   */
  watchAcks() {
    this.clock.clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (!this.inFlight.length) return;
    const since = Math.max(this.inFlight[0].sentAt, this.lastAckAt);
    this.deadAfter(since + this.ackTimeoutMs - this.clock.now());
  }

  // ------------------------------------------------------------ sending

  /** Send the queued positions not yet sent on this socket, as batches, while the window allows. */
  async pump() {
    // One pump at a time; a call while one reads the queue makes it look again afterwards (the
    // queue may have grown while it read).
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      let again = true;
      while (again) {
        this.pumpAgain = false;
        again = (await this.sendNext()) || this.pumpAgain;
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Send the next batch, if there is one and the socket, the window and the frame rate allow. */
  async sendNext() {
    if (!this.open || this.sendTimer !== null) return false;
    const inFlight = this.inFlight.reduce((sum, flight) => sum + flight.positions.length, 0);
    const room = Math.min(MAX_BATCH, MAX_POSITIONS_IN_FLIGHT - inFlight);
    // Nothing new queued, or the window is full: the next record or ack pumps again.
    if (this.queue.size <= inFlight || this.inFlight.length >= this.window || room <= 0) return false;
    const wait = this.lastFrameAt + this.minFrameIntervalMs - this.clock.now();
    if (wait > 0) {
      this.sendTimer = this.clock.setTimeout(() => {
        this.sendTimer = null;
        this.pump();
      }, wait);
      return false;
    }
    const ws = this.ws;
    // What is in flight is the head of the queue (or gone from it already, when an ack came
    // meanwhile): read past it, and keep only what this socket has not had.
    const queued = await this.queue.oldest(inFlight + room);
    if (this.ws !== ws || !ws || !this.open) return false;
    const frame = batchFrame(queued.filter((entry) => entry.seq > this.sentThrough), room);
    if (!frame) return false;
    const positions = /** @type {QueuedPosition[]} */ (frame.positions);
    const last = positions[positions.length - 1];
    const now = this.clock.now();
    this.inFlight.push({ seq: last.seq, positions, sentAt: now });
    this.sentThrough = last.seq;
    this.lastFrameAt = now;
    ws.send(JSON.stringify(frame));
    this.watchAcks();
    this.report({ lastSent: last });
    return true;
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
   * cumulative: it covers the frames in flight with a seq up to `seq` (earlier frames of this
   * socket are acknowledged already; an ack below them all is an old one again), and nothing
   * queued after the newest of them was sent goes with them, whatever `seq` says. The frames in
   * flight hold the oldest queued positions, in order, so removing everything up to the newest
   * covered frame's seq removes exactly their positions.
   * @param {number} seq
   */
  async acknowledged(seq) {
    this.attempt = 0; // an ack proves the server took our token
    this.rateLimited = 0;
    const covered = this.inFlight.filter((flight) => flight.seq <= seq);
    if (!covered.length) return;
    const newest = covered[covered.length - 1];
    // Out of flight at once: a frame read from the queue before it forgets them skips them anyway
    // (their seqs are not above sentThrough).
    this.inFlight = this.inFlight.filter((flight) => flight.seq > seq);
    this.lastAckAt = this.clock.now();
    this.window = MAX_FRAMES_IN_FLIGHT;
    this.watchAcks();
    await this.queue.acknowledge(newest.seq);
    this.report({ lastAcked: newest.positions[newest.positions.length - 1] });
    this.pump();
  }

  /**
   * The server refused a frame in flight (docs/protocol.md, error frame). From now on this
   * socket acknowledges nothing past the frames it received before that one: let it go at once
   * (nothing more is sent on it, and whatever it still says is ignored), and send the queue again
   * on a new socket. A rate-limited frame was dropped: it stays queued, and the new socket comes
   * after a pause (longer after each rate limit in a row). Any other error is about the positions
   * themselves and sending them again would fail again: drop the position the error names, or the
   * whole frame, then reconnect at once. Which frame it was is known only when one was in flight:
   * with more, drop nothing, and let the new socket send one frame at a time until an ack, so
   * that the error, when it comes again, is about a known frame.
   * @param {string} code
   * @param {string} detail
   */
  async refused(code, detail) {
    const flights = this.inFlight;
    console.warn(`teamtrack: the server refused a frame: ${code} ${detail}`);
    this.drop(1000);
    this.window = 1;
    if (code === "rate_limited") {
      const wait = Math.min(RATE_LIMITED_WAIT_MS * 2 ** this.rateLimited, RATE_LIMITED_WAIT_CAP_MS);
      this.rateLimited += 1;
      this.replaceSocket(wait);
      return;
    }
    if (!flights.length) {
      // Nothing of ours to drop (the error cannot be about a frame in flight): reconnect with the
      // ordinary backoff, so that a server refusing everything is not asked again and again.
      this.replaceSocket(backoffDelay(this.attempt++, this.backoff));
      return;
    }
    if (flights.length > 1) {
      this.replaceSocket(0);
      return;
    }
    const flight = flights[0];
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
