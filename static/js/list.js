// @ts-check
// The side panel's worker list: one button per worker, built once per snapshot and then patched
// row by row, writing to the DOM only the text that changed. "Time ago" labels change every
// second for every worker, so only rows near the visible part of the list get them rewritten.

import { el, timeAgo } from "./util.js";

/** @typedef {import("./types.js").Worker} Worker */
/**
 * A row of the list, and what it shows now.
 * @typedef {object} Row
 * @property {HTMLElement} li
 * @property {HTMLElement} button
 * @property {HTMLElement} name
 * @property {HTMLElement} state
 * @property {HTMLElement} ago
 * @property {number | null} ts
 * @property {{ name: string, state: string, ago: string }} shown
 */

const collator = new Intl.Collator(undefined, { sensitivity: "base", numeric: true });

/**
 * @param {{ id: number, name: string }} a
 * @param {{ id: number, name: string }} b
 */
function byName(a, b) {
  return collator.compare(a.name, b.name) || a.id - b.id;
}

export class WorkerList {
  /**
   * @param {HTMLElement} element  the list (ul)
   * @param {{ onSelect?: (id: number) => void, scrollRoot?: Element | null }} [options]
   */
  constructor(element, { onSelect = () => {}, scrollRoot = null } = {}) {
    this.element = element;
    /** @type {Map<number, Row>} */
    this.rows = new Map(); // worker id -> {li, button, name, state, ago, ts, shown}
    /** @type {number | null} */
    this.followed = null;
    // Rewriting a thousand labels a second costs a style and layout pass over the whole list;
    // rows out of sight are brought up to date as they scroll into it instead.
    /** @type {Set<number>} */
    this.visible = new Set();
    this.observer = window.IntersectionObserver
      ? new IntersectionObserver((entries) => this.seen(entries), { root: scrollRoot, rootMargin: "200px 0px" })
      : null;
    // One listener for the whole list; buttons turn Enter and Space into clicks themselves.
    element.addEventListener("click", (event) => {
      const target = /** @type {Element} */ (event.target);
      const li = /** @type {HTMLElement | null} */ (target.closest("li[data-worker-id]"));
      if (li && element.contains(li)) onSelect(Number(li.dataset.workerId));
    });
  }

  /**
   * Rebuild the list from scratch (a snapshot): the only time every row is touched.
   * @param {Iterable<Worker>} workers
   * @param {number} nowSeconds
   */
  replaceAll(workers, nowSeconds) {
    if (this.observer) this.observer.disconnect();
    this.visible.clear();
    this.rows.clear();
    const fragment = document.createDocumentFragment();
    for (const worker of [...workers].sort(byName)) fragment.append(this.build(worker, nowSeconds));
    this.element.replaceChildren(fragment);
  }

  /**
   * Add a worker that arrived after the snapshot, in its place by name.
   * @param {Worker} worker
   * @param {number} nowSeconds
   */
  add(worker, nowSeconds) {
    if (this.rows.has(worker.id)) return;
    const li = this.build(worker, nowSeconds);
    // Walk in DOM order: rows added after the snapshot sit out of order in this.rows.
    for (const other of this.element.children) {
      const id = Number(/** @type {HTMLElement} */ (other).dataset.workerId);
      const row = this.rows.get(id);
      if (id !== worker.id && row && byName(worker, { id, name: row.shown.name }) < 0) {
        other.before(li);
        return;
      }
    }
    this.element.append(li);
  }

  /** @param {number} id */
  remove(id) {
    const row = this.rows.get(id);
    if (!row) return;
    if (this.observer) this.observer.unobserve(row.li);
    this.visible.delete(id);
    row.li.remove();
    this.rows.delete(id);
  }

  /**
   * Bring a row up to date, touching only what differs from what it shows.
   * @param {Worker} worker
   * @param {number} nowSeconds
   */
  update(worker, nowSeconds) {
    const row = this.rows.get(worker.id);
    if (!row) return;
    const { shown } = row;
    if (shown.name !== worker.name) {
      shown.name = worker.name;
      row.name.textContent = worker.name;
    }
    if (shown.state !== worker.state) {
      shown.state = worker.state;
      row.li.dataset.state = worker.state;
      row.state.textContent = worker.state;
    }
    row.ts = worker.ts;
    if (!this.observer || this.visible.has(worker.id)) this.age(row, nowSeconds);
  }

  /**
   * @param {Row} row
   * @param {number} nowSeconds
   */
  age(row, nowSeconds) {
    const ago = timeAgo(row.ts, nowSeconds);
    if (row.shown.ago !== ago) {
      row.shown.ago = ago;
      row.ago.textContent = ago;
    }
  }

  /** @param {IntersectionObserverEntry[]} entries */
  seen(entries) {
    const now = Date.now() / 1000;
    for (const entry of entries) {
      const id = Number(/** @type {HTMLElement} */ (entry.target).dataset.workerId);
      const row = this.rows.get(id);
      if (!row || row.li !== entry.target) continue;
      if (entry.isIntersecting) {
        this.visible.add(id);
        this.age(row, now);
      } else {
        this.visible.delete(id);
      }
    }
  }

  /** @param {number | null} id */
  setFollowed(id) {
    const previous = this.rows.get(this.followed);
    if (previous) previous.button.setAttribute("aria-pressed", "false");
    this.followed = id;
    const current = this.rows.get(id);
    if (current) current.button.setAttribute("aria-pressed", "true");
  }

  /**
   * Scroll a row into view, e.g. when its marker was clicked on the map.
   * @param {number} id
   */
  reveal(id) {
    const row = this.rows.get(id);
    if (row) row.li.scrollIntoView({ block: "nearest" });
  }

  /**
   * @param {Worker} worker
   * @param {number} nowSeconds
   * @returns {HTMLElement}
   */
  build(worker, nowSeconds) {
    const ago = timeAgo(worker.ts, nowSeconds);
    const name = el("span", { className: "worker-name", text: worker.name });
    const state = el("span", { className: "worker-state", text: worker.state });
    const agoNode = el("span", { className: "worker-ago", text: ago });
    const button = el("button", {
      className: "worker",
      attrs: { type: "button", "aria-pressed": worker.id === this.followed ? "true" : "false" },
    }, [el("span", { className: "worker-dot", attrs: { "aria-hidden": "true" } }), name, state, agoNode]);
    const li = el("li", { attrs: { "data-worker-id": worker.id, "data-state": worker.state } }, [button]);
    this.rows.set(worker.id, {
      li, button, name, state, ago: agoNode, ts: worker.ts,
      shown: { name: worker.name, state: worker.state, ago },
    });
    if (this.observer) this.observer.observe(li);
    return li;
  }
}
