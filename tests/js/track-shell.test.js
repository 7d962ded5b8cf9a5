// The service worker's list of the tracking page's files (SHELL_STATIC in
// tracking/track_views.py) holds every module that page.js imports, directly or not, and
// nothing else: a module left out would be missing when the page opens offline.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";

const STATIC = new URL("../../static/", import.meta.url);
const VIEWS = new URL("../../tracking/track_views.py", import.meta.url);

/** The static paths of every module reachable from `entry` through its import statements. */
async function reachable(entry) {
  const seen = new Set();
  const pending = [entry];
  while (pending.length) {
    const path = pending.pop();
    if (seen.has(path)) continue;
    seen.add(path);
    const source = await readFile(new URL(path, STATIC), "utf8");
    // Statements only: the JSDoc `import("./types.js")` type references load nothing.
    for (const [, target] of source.matchAll(/^\s*import\s[^;]*?from\s+"(\.{1,2}\/[^"]+)";/gms)) {
      pending.push(new URL(target, new URL(path, STATIC)).href.slice(STATIC.href.length));
    }
  }
  return seen;
}

async function shellStatic() {
  const source = await readFile(VIEWS, "utf8");
  const block = /^SHELL_STATIC = \(([^)]*)\)/m.exec(source);
  assert.ok(block, "SHELL_STATIC not found in tracking/track_views.py");
  return new Set([...block[1].matchAll(/"([^"]+)"/g)].map((match) => match[1]));
}

describe("the service worker's shell", () => {
  it("lists the page's stylesheet and every module it imports, and nothing else", async () => {
    const modules = await reachable("js/track/page.js");
    assert.ok(modules.has("js/track/tracker.js") && modules.has("js/socket.js"), [...modules].join());
    assert.deepEqual([...(await shellStatic())].sort(), ["css/track.css", ...modules].sort());
  });
});
