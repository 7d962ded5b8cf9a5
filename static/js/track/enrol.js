// @ts-check
// Enrolment: the one-time code of a link `/track/#enrol=<code>`, read from the fragment (which
// browsers never send to a server), and exchanged at /track/enrol for the device token.

/** @typedef {import("./types.js").EnrolResult} EnrolResult */

// Codes the server issues are URL-safe base64; anything else is not one of ours.
const CODE = /^[A-Za-z0-9_-]{8,256}$/;

/**
 * Return the enrolment code of a location's fragment ("#enrol=<code>"), or null. The fragment is
 * read as a query string, so "#enrol=abc&x=1" works too.
 * @param {string} hash  location.hash, with or without its "#"
 * @returns {string | null}
 */
export function enrolCode(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const code = params.get("enrol");
  return code !== null && CODE.test(code) ? code : null;
}

/**
 * Whether the fragment mentions an enrolment at all (even a malformed one), so that the page
 * removes it from the address bar and history either way.
 * @param {string} hash
 */
export function hasEnrolFragment(hash) {
  return new URLSearchParams(hash.replace(/^#/, "")).has("enrol");
}

const MESSAGES = {
  used: "This enrolment link was already used, has expired or was withdrawn. Ask your manager for a new one.",
  invalid: "This enrolment link is not valid. Ask your manager for a new one.",
  blocked: "Too many attempts from this network. Wait a minute, then open the link again.",
  network: "Could not reach TeamTrack to enrol this phone. Check the connection and open the link again.",
  server: "TeamTrack could not enrol this phone just now. Try the link again in a minute.",
};

/**
 * Exchange the code for the device token; never throws.
 * @param {string} code
 * @param {{ path: string, fetch?: typeof fetch }} options
 * @returns {Promise<EnrolResult>}
 */
export async function redeem(code, { path, fetch: fetchImpl = globalThis.fetch }) {
  let response;
  try {
    response = await fetchImpl(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
      credentials: "omit", // the code is the credential; no cookie needed or wanted
      cache: "no-store",
    });
  } catch {
    return { ok: false, reason: "network", message: MESSAGES.network };
  }
  if (response.status === 200) {
    try {
      const body = await response.json();
      if (body && typeof body.token === "string" && body.worker && body.team) {
        return {
          ok: true,
          enrolment: {
            token: body.token,
            worker: { id: Number(body.worker.id), name: String(body.worker.name) },
            team: { slug: String(body.team.slug), name: String(body.team.name) },
          },
        };
      }
    } catch {
      // fall through: an answer we cannot read
    }
    return { ok: false, reason: "server", message: MESSAGES.server };
  }
  /** @type {Record<number, "used" | "invalid" | "blocked">} */
  const reasons = { 410: "used", 400: "invalid", 429: "blocked" };
  const reason = reasons[response.status] || "server";
  return { ok: false, reason, message: MESSAGES[reason] };
}
