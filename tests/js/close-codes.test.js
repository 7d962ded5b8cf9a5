// The close codes of static/js/socket.js are those of tracking/protocol.py: the same names with
// the same numbers, none that protocol.py lacks, none of protocol.py's without a rule (stop or
// retry) in the socket. Fails when either side changes alone.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";

import * as socket from "../../static/js/socket.js";

const PROTOCOL_PY = new URL("../../tracking/protocol.py", import.meta.url);
const SOCKET_JS = new URL("../../static/js/socket.js", import.meta.url);

/** Return protocol.py's module-level `CLOSE_NAME = NNNN` constants as {name: number}. */
function pythonCloseCodes(source) {
  const codes = {};
  for (const [, name, value] of source.matchAll(/^(CLOSE_[A-Z0-9_]+)\s*=\s*(\d+)\s*(?:#.*)?$/gm)) {
    codes[name] = Number(value);
  }
  return codes;
}

/** Return the socket module's exported `CLOSE_*` numbers as {name: number}. */
function javascriptCloseCodes(module) {
  const codes = {};
  for (const [name, value] of Object.entries(module)) {
    if (name.startsWith("CLOSE_")) codes[name] = value;
  }
  return codes;
}

const python = pythonCloseCodes(await readFile(PROTOCOL_PY, "utf8"));
const javascript = javascriptCloseCodes(socket);

describe("close codes: socket.js against tracking/protocol.py", () => {
  it("finds protocol.py's close codes", () => {
    // Guards the parsing: the codes docs/protocol.md lists for the manager socket are there.
    for (const name of ["CLOSE_UNAUTHENTICATED", "CLOSE_FORBIDDEN", "CLOSE_NOT_FOUND", "CLOSE_TRY_AGAIN"]) {
      assert.ok(Number.isInteger(python[name]), `${name} not found in tracking/protocol.py`);
    }
  });

  it("gives every code the same name and number on both sides", () => {
    assert.deepEqual(javascript, python);
  });

  it("has a rule, stop or retry, for each of protocol.py's codes and for no other", () => {
    const ruled = [...socket.AFTER_CLOSE.keys()].sort();
    assert.deepEqual(ruled, Object.values(python).sort());
    for (const rule of socket.AFTER_CLOSE.values()) assert.ok(rule === "stop" || rule === "retry", rule);
  });

  it("stops only where retrying cannot help or must not: not logged in, not a manager, no team, replaced", () => {
    const stops = [...socket.AFTER_CLOSE].filter(([, rule]) => rule === "stop").map(([code]) => code);
    const final = [
      python.CLOSE_UNAUTHENTICATED,
      python.CLOSE_FORBIDDEN,
      python.CLOSE_NOT_FOUND,
      python.CLOSE_REPLACED, // a newer socket of the same worker took over: retrying takes it back
    ];
    assert.deepEqual(stops.sort(), final.sort());
  });

  it("writes no application close code (4000-4999) in socket.js but through those names", async () => {
    const source = await readFile(SOCKET_JS, "utf8");
    const known = new Set(Object.values(python));
    const literals = [...source.matchAll(/\b4\d{3}\b/g)].map((match) => Number(match[0]));
    assert.ok(literals.length > 0);
    for (const code of literals) {
      assert.ok(known.has(code), `socket.js uses ${code}, which tracking/protocol.py lacks`);
    }
  });
});
