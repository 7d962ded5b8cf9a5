// static/js/history/range.js and config.js: "today" and "yesterday" in local time (run here in
// a zone with DST), datetime-local values read and written as local time, ISO 8601 with the
// local offset, the query strings, labels; and the page's settings over their defaults.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

process.env.TZ = "Europe/Madrid"; // Node reads it again on change: +01:00 in winter, +02:00 in summer

const {
  dayRange, durationLabel, isoWithOffset, parseLocalInput, queryString, startOfDay, toLocalInput,
} = await import("../../static/js/history/range.js");
const { readHistoryConfig } = await import("../../static/js/history/config.js");

describe("isoWithOffset", () => {
  it("writes local time with the local offset", () => {
    assert.equal(isoWithOffset(new Date(Date.UTC(2026, 10, 30, 9, 0, 5))), "2026-11-30T10:00:05+01:00");
    assert.equal(isoWithOffset(new Date(Date.UTC(2026, 6, 1, 22, 30))), "2026-07-02T00:30:00+02:00");
  });

  it("means the same instant as the date", () => {
    const date = new Date(Date.UTC(2026, 2, 29, 0, 59, 59));
    assert.equal(new Date(isoWithOffset(date)).getTime(), date.getTime());
  });
});

describe("parseLocalInput and toLocalInput", () => {
  it("read a datetime-local value as local time, with or without seconds", () => {
    assert.equal(parseLocalInput("2026-11-30T10:00").toISOString(), "2026-11-30T09:00:00.000Z");
    assert.equal(parseLocalInput("2026-07-01T10:00:30").toISOString(), "2026-07-01T08:00:30.000Z");
    assert.equal(parseLocalInput("2026-07-01T10:00:30.250").getMilliseconds(), 250);
  });

  it("refuse what is no time", () => {
    for (const value of ["", "2026-11-30", "10:00", "2026-04-31T10:00", "2026-02-29T00:00", "soon"]) {
      assert.equal(parseLocalInput(value), null, value);
    }
  });

  it("round-trip", () => {
    const date = new Date(2026, 10, 30, 7, 5, 9);
    assert.equal(toLocalInput(date), "2026-11-30T07:05:09");
    assert.equal(parseLocalInput(toLocalInput(date)).getTime(), date.getTime());
  });
});

describe("dayRange", () => {
  const now = new Date(2026, 10, 30, 15, 20); // 30 November, 15:20 local

  it("today runs from local midnight to now", () => {
    const { since, until } = dayRange("today", now);
    assert.equal(isoWithOffset(since), "2026-11-30T00:00:00+01:00");
    assert.equal(until, now);
  });

  it("yesterday runs midnight to midnight", () => {
    const { since, until } = dayRange("yesterday", now);
    assert.equal(isoWithOffset(since), "2026-11-29T00:00:00+01:00");
    assert.equal(isoWithOffset(until), "2026-11-30T00:00:00+01:00");
  });

  it("a day with a DST change is 23 hours long", () => {
    const { since, until } = dayRange("yesterday", new Date(2026, 2, 30, 12)); // after 29 March
    assert.equal((until.getTime() - since.getTime()) / 3_600_000, 23);
    assert.equal(startOfDay(new Date(2026, 0, 1, 0, 30), -1).getDate(), 31);
  });
});

describe("queryString", () => {
  it("names the worker only when one is chosen, and encodes the offset's +", () => {
    const since = new Date(2026, 10, 30, 0, 0);
    const until = new Date(2026, 10, 30, 12, 0);
    assert.equal(
      queryString({ worker: null, since, until }),
      "since=2026-11-30T00%3A00%3A00%2B01%3A00&until=2026-11-30T12%3A00%3A00%2B01%3A00",
    );
    const params = new URLSearchParams(queryString({ worker: 7, since, until }, { stop_minutes: 5 }));
    assert.equal(params.get("worker"), "7");
    assert.equal(params.get("since"), "2026-11-30T00:00:00+01:00");
    assert.equal(params.get("stop_minutes"), "5");
  });
});

describe("durationLabel", () => {
  it("says seconds, minutes, or hours and minutes", () => {
    assert.equal(durationLabel(45), "45 s");
    assert.equal(durationLabel(12 * 60 + 10), "12 min");
    assert.equal(durationLabel(65 * 60), "1 h 05 min");
    assert.equal(durationLabel(-3), "0 s");
  });
});

describe("readHistoryConfig", () => {
  /** A document holding the json_script `json`. */
  const page = (json) => ({
    getElementById: (id) => (id === "history-config" && json !== undefined ? { textContent: json } : null),
  });

  it("merges the page's settings over the map's and the history's defaults", () => {
    const config = readHistoryConfig(page(JSON.stringify({
      team: "alpha", tracksUrl: "/t.json", stopMinutes: 7.5, loginPath: "/in/",
    })));
    assert.equal(config.team, "alpha");
    assert.equal(config.tracksUrl, "/t.json");
    assert.equal(config.stopMinutes, 7.5);
    assert.equal(config.loginPath, "/in/");
    assert.deepEqual(config.defaultCenter, [20, 0]);
    assert.ok(Object.isFrozen(config));
  });

  it("keeps the default stop length unless the page gives a positive number", () => {
    for (const stopMinutes of [0, -1, "soon", null]) {
      assert.equal(readHistoryConfig(page(JSON.stringify({ stopMinutes }))).stopMinutes, 5, String(stopMinutes));
    }
    assert.equal(readHistoryConfig(page(undefined)).stopMinutes, 5);
  });
});
