// @ts-check
// The Screen Wake Lock while tracking: many phones stop a page's geolocation when the screen
// turns off, so the page keeps it on. Browsers release the lock whenever the page is hidden; it
// is asked for again each time the page is visible while tracking.

/** @typedef {"unsupported" | "off" | "on" | "paused" | "refused"} WakeLockState */

export class ScreenWakeLock {
  /**
   * @param {object} [options]
   * @param {{ request: (type: "screen") => Promise<WakeLockSentinel> } | undefined} [options.wakeLock]
   *   navigator.wakeLock, or a fake
   * @param {{ visibilityState: string, addEventListener: (type: string, listener: () => void) => void }} [options.doc]
   * @param {(state: WakeLockState) => void} [options.onChange]
   */
  constructor({ wakeLock = globalThis.navigator?.wakeLock, doc = globalThis.document, onChange = () => {} } = {}) {
    this.wakeLock = wakeLock;
    this.doc = doc;
    this.onChange = onChange;
    this.wanted = false;
    /** @type {WakeLockSentinel | null} */
    this.sentinel = null;
    /** @type {WakeLockState} */
    this.state = wakeLock ? "off" : "unsupported";
    doc.addEventListener("visibilitychange", () => {
      if (this.doc.visibilityState === "visible") this.request();
    });
  }

  /** Keep the screen on from now (and whenever the page is visible again) until release(). */
  async acquire() {
    this.wanted = true;
    await this.request();
  }

  release() {
    this.wanted = false;
    const sentinel = this.sentinel;
    this.sentinel = null;
    if (sentinel) sentinel.release().catch(() => {});
    if (this.wakeLock) this.set("off");
  }

  async request() {
    if (!this.wanted || !this.wakeLock || this.sentinel || this.doc.visibilityState !== "visible") return;
    try {
      const sentinel = await this.wakeLock.request("screen");
      if (!this.wanted) {
        sentinel.release().catch(() => {});
        return;
      }
      this.sentinel = sentinel;
      sentinel.addEventListener("release", () => {
        if (this.sentinel !== sentinel) return;
        this.sentinel = null;
        // Released by the browser (page hidden, battery saver): asked for again when visible.
        this.set(this.wanted ? "paused" : "off");
      });
      this.set("on");
    } catch {
      // Refused: battery saver, no user gesture yet, or a browser that only grants it to
      // installed apps. Tracking goes on; the screen may turn off.
      this.set("refused");
    }
  }

  /** @param {WakeLockState} state */
  set(state) {
    if (state === this.state) return;
    this.state = state;
    this.onChange(state);
  }
}
