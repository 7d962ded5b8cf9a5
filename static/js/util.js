// @ts-check
// Small helpers shared by the map page: building elements with text (how this app escapes what
// users typed), "time ago" labels, and the URLs of the socket and of the login page.

/**
 * Create an element whose text is set with textContent, so that names such as
 * `<img src=x onerror=alert(1)>` show literally instead of being parsed as HTML.
 * @param {string} tag
 * @param {{ className?: string, text?: unknown, attrs?: Record<string, unknown> }} [options]
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElement}
 */
export function el(tag, { className, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

/**
 * Say how long ago a unix time (seconds) was: "12s ago", "3m ago", "2h ago", "4d ago".
 * @param {number | null | undefined} ts
 * @param {number} [nowSeconds]
 */
export function timeAgo(ts, nowSeconds = Date.now() / 1000) {
  if (ts === null || ts === undefined) return "no position yet";
  // Device clocks may run a little ahead of this browser's; never show a negative age.
  const age = Math.max(0, Math.floor(nowSeconds - ts));
  if (age < 60) return `${age}s ago`;
  if (age < 3600) return `${Math.floor(age / 60)}m ago`;
  if (age < 86400) return `${Math.floor(age / 3600)}h ago`;
  return `${Math.floor(age / 86400)}d ago`;
}

/**
 * Build the WebSocket URL of a path on this page's host, secure when the page is.
 * @param {string} path
 * @param {{ protocol: string, host: string }} [where]  the page's location
 */
export function socketUrl(path, where = window.location) {
  const scheme = where.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${where.host}${path}`;
}

/**
 * Build the login URL that brings the user back to `nextPath` afterwards.
 * @param {string} loginPath
 * @param {string} nextPath
 */
export function loginUrl(loginPath, nextPath) {
  // Keep slashes readable, as Django's own login_required redirect does.
  const next = encodeURIComponent(nextPath).replace(/%2F/gi, "/");
  return `${loginPath}?next=${next}`;
}

/**
 * Whether a value is a usable coordinate or timestamp (JSON gives null for missing ones).
 * @param {unknown} value
 * @returns {value is number}
 */
export function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}
