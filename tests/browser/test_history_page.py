"""A team's history page in Debian's Chromium, against the real server: tracks drawn from stored
positions, stops marked, the replay moving the markers, "where was everyone at", the exports
downloaded and parsed, what another team's manager gets, and how long a worker-day at one
position a second (86,400 points) takes to draw.

Positions are written straight into the server's SQLite database (the history writer's table,
tracking.models.StoredPosition), as if devices had sent them days ago.
"""

import csv
import io
import json
import math
import os
import platform
import random
import re
import sqlite3
import time

import gpxpy
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(120)]

DRAW_REPORT = OUTPUT / "browser-history.md"
# Two days ago, on the hour: a custom range, whatever the browser's time zone.
T0 = (int(time.time()) // 3600 - 48) * 3600.0
WALK_SECONDS = 1800  # then each worker stands still for 30 minutes: a stop
STEP = 0.0001  # degrees east every 10 s while walking

# The replay's and the moment's markers, by worker id (static/js/history/layers.js).
MARKERS = """kind => Object.fromEntries([...window.teamtrack.layers[kind]].map(
  ([id, marker]) => [id, [marker.getLatLng().lat, marker.getLatLng().lng]]))"""
# A Unix time as a datetime-local value in the browser's own time zone.
LOCAL_INPUT = """ts => {
  const date = new Date(ts * 1000);
  const pad = (value) => String(value).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}"""


def manager(team: dict) -> str:
    return team["managers"][0]


def history_path(team: dict) -> str:
    return f"/teams/{team['slug']}/history/"


def seed(site, team: dict, worker: dict, points: list[tuple[float, float, float]]) -> None:
    """Store (ts, lat, lng) points of a worker in the server's database."""
    with sqlite3.connect(site.workdir / "db.sqlite3", timeout=30) as database:
        database.executemany(
            "INSERT INTO tracking_storedposition (team_id, worker_id, ts, lat, lng)"
            " VALUES (?, ?, ?, ?, ?)",
            [(team["id"], worker["id"], ts, lat, lng) for ts, lat, lng in points],
        )
    database.close()


def walk(number: int, *, until: float = 3600) -> list[tuple[float, float, float]]:
    """Worker `number` walks east from (41.38 + number/100, 2.15) for WALK_SECONDS, a point every
    10 s, then stands still; its points end at T0 + until."""
    lat = round(41.38 + number / 100, 6)
    points = []
    for n in range(int(until) // 10):
        moving = min(n, WALK_SECONDS // 10)
        points.append((T0 + 10 * n, lat, round(2.15 + STEP * moving, 6)))
    return points


def expected_at(number: int, t: float, *, until: float = 3600) -> tuple[float, float]:
    """Where `walk(number)` is at a time that is one of its points (or after its last)."""
    ts, lat, lng = [point for point in walk(number, until=until) if point[0] <= t][-1]
    return lat, lng


def open_history(browsing, site, team: dict):
    page = browsing.open(site, manager(team), history_path(team))
    page.wait_for_function("() => window.teamtrack && window.teamtrack.layers")
    return page


def choose_range(page, since: float, until: float) -> None:
    page.get_by_label("Custom").check()
    page.locator("#history-since").fill(page.evaluate(LOCAL_INPUT, since))
    page.locator("#history-until").fill(page.evaluate(LOCAL_INPUT, until))


def draw(page, points: int, timeout: float = 20_000) -> None:
    page.get_by_role("button", name="Draw").click()
    expect(page.locator("#history-form")).to_have_attribute(
        "data-drawn", str(points), timeout=timeout
    )


def markers(page, kind: str = "replayMarkers") -> dict[int, tuple[float, float]]:
    return {int(key): tuple(value) for key, value in page.evaluate(MARKERS, kind).items()}


def seek(page, t: float) -> None:
    """Move the replay slider to `t`, as dragging it does."""
    page.locator("#replay-slider").evaluate(
        "(slider, t) => { slider.value = String(t); slider.dispatchEvent(new Event('input')); }",
        t,
    )


def close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return math.isclose(a[0], b[0], abs_tol=1e-9) and math.isclose(a[1], b[1], abs_tol=1e-9)


@pytest.fixture
def walked(site, team):
    """Three workers of `team` with stored tracks: the third's ends after 15 minutes."""
    workers = team["workers"][:3]
    seed(site, team, workers[0], walk(0))
    seed(site, team, workers[1], walk(1))
    seed(site, team, workers[2], walk(2, until=910))
    return team


# ---------------------------------------------------------------- getting there


def test_the_live_map_links_to_the_history_and_back(site, team, browsing):
    page = browsing.open(site, manager(team), f"/teams/{team['slug']}/")
    page.get_by_role("link", name="History").click()
    expect(page).to_have_url(f"{site.base}{history_path(team)}")
    expect(page.get_by_role("link", name="History")).to_have_attribute("aria-current", "page")
    expect(page.get_by_label("Who")).to_have_value("")  # the whole team
    expect(page.get_by_label("Today")).to_be_checked()
    expect(page.get_by_label("Stops of at least")).to_have_value("5")
    page.get_by_role("link", name="Live map").click()
    expect(page).to_have_url(f"{site.base}/teams/{team['slug']}/")


# ---------------------------------------------------------------- drawing and replaying


def test_tracks_draw_with_their_stops_and_the_replay_moves_the_markers(site, walked, browsing):
    team = walked
    workers = team["workers"][:3]
    page = open_history(browsing, site, team)
    choose_range(page, T0 - 600, T0 + 4200)
    draw(page, 360 + 360 + 91)
    expect(page.locator("#history-status")).to_have_text("3 workers, 811 positions, 2 stops.")

    drawn = page.evaluate(
        """() => Object.fromEntries([...window.teamtrack.layers.lines].map(
          ([id, line]) => [id, [line.getLatLngs().length, line.options.color]]))"""
    )
    assert {int(key): value[0] for key, value in drawn.items()} == {
        workers[0]["id"]: 360,
        workers[1]["id"]: 360,
        workers[2]["id"]: 91,
    }
    assert len({colour for _, colour in drawn.values()}) == 3, "one colour per worker"

    # The two who stood still for 30 minutes have a stop there, whose popup says so.
    popups = page.evaluate(
        """() => Object.fromEntries([...window.teamtrack.layers.stopMarkers].map(
          ([id, stops]) => [id, stops.map((marker) => {
            marker.openPopup();
            const text = marker.getPopup().getElement().textContent;
            marker.closePopup();
            return [marker.getLatLng().lat, marker.getLatLng().lng, text];
          })]))"""
    )
    for number, worker in enumerate(workers[:2]):
        [(lat, lng, text)] = popups[str(worker["id"])]
        # Where they arrived within the stop radius (50 m, some 6 steps) of where they stood.
        stood = expected_at(number, T0 + WALK_SECONDS)
        assert lat == stood[0] and stood[1] - 0.0007 < lng <= stood[1]
        assert worker["name"] in text and re.search(r"Stopped 3[01] min", text), text
    assert popups[str(workers[2]["id"])] == []

    # The slider starts at the first point: everyone where they began.
    slider = page.locator("#replay-slider")
    expect(slider).to_be_enabled()
    assert float(slider.input_value()) == T0
    assert markers(page) == {
        worker["id"]: expected_at(number, T0) for number, worker in enumerate(workers)
    }

    # Moving the slider moves each marker to where its worker was then.
    seek(page, T0 + 600)
    assert markers(page) == {
        worker["id"]: expected_at(number, T0 + 600) for number, worker in enumerate(workers)
    }
    seek(page, T0 + 1200)
    now = markers(page)
    assert now[workers[0]["id"]] == expected_at(0, T0 + 1200)
    assert now[workers[2]["id"]] == expected_at(2, T0 + 1200, until=910), "holds its last point"

    # Play at ×60 from 10 minutes in: the markers move on east, then pause holds them.
    seek(page, T0 + 600)
    page.get_by_label("Speed").select_option("60")
    page.get_by_role("button", name="Play").click()
    expect(page.locator("#replay-play")).to_have_attribute("aria-pressed", "true")
    first = workers[0]["id"]
    page.wait_for_function(
        "([id, lng]) => window.teamtrack.layers.replayMarkers.get(id).getLatLng().lng > lng",
        arg=[first, expected_at(0, T0 + 600)[1] + 3 * STEP],
    )
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#replay-play")).to_have_attribute("aria-pressed", "false")
    paused_at = float(slider.input_value())
    assert paused_at > T0 + 600
    held = markers(page)
    page.wait_for_timeout(400)
    assert markers(page) == held and float(slider.input_value()) == paused_at
    # Between two points 10 s apart the marker is on the line between them.
    lat, lng = held[first]
    assert lat == expected_at(0, T0)[0]
    assert expected_at(0, paused_at)[1] <= lng <= expected_at(0, paused_at + 10)[1]


def test_where_everyone_was_at_a_moment(site, walked, browsing):
    team = walked
    workers = team["workers"][:3]
    page = open_history(browsing, site, team)
    at = T0 + 1205
    page.get_by_label("At", exact=True).fill(page.evaluate(LOCAL_INPUT, at))
    page.get_by_role("button", name="Show").click()
    items = page.locator("#moment-list li")
    expect(items).to_have_count(3)
    assert markers(page, "momentMarkers") == {
        workers[0]["id"]: expected_at(0, at),
        workers[1]["id"]: expected_at(1, at),
        workers[2]["id"]: expected_at(2, at, until=910),  # its last, 5 minutes before
    }
    expect(items.filter(has_text=workers[2]["name"])).to_have_count(1)
    assert markers(page, "replayMarkers") == {}, "nothing was drawn: only the moment shows"

    # Before anyone had sent a position: nobody.
    page.get_by_label("At", exact=True).fill(page.evaluate(LOCAL_INPUT, T0 - 60))
    page.get_by_role("button", name="Show").click()
    expect(items).to_have_count(1)
    expect(items).to_have_text("Nobody had sent a position in the hour before.")
    assert markers(page, "momentMarkers") == {}


# ---------------------------------------------------------------- exports


def download(page, kind: str) -> bytes:
    with page.expect_download() as info:
        page.locator(f"#export-{kind}").click()
    path = info.value.path()
    assert info.value.suggested_filename.endswith(f".{kind}")
    return open(path, "rb").read()


def test_exports_download_the_selection_and_parse(site, walked, browsing):
    team = walked
    workers = team["workers"][:3]
    page = open_history(browsing, site, team)
    choose_range(page, T0 - 600, T0 + 4200)
    page.get_by_label("Who").select_option(str(workers[0]["id"]))
    seeded = walk(0)

    gpx = gpxpy.parse(download(page, "gpx").decode())
    [track] = gpx.tracks
    points = [point for segment in track.segments for point in segment.points]
    assert track.name == workers[0]["name"]
    assert [(point.latitude, point.longitude) for point in points] == [
        (lat, lng) for _, lat, lng in seeded
    ]
    assert points[0].time.timestamp() == T0

    geojson = json.loads(download(page, "geojson"))
    [feature] = geojson["features"]
    assert feature["geometry"]["type"] == "LineString"
    assert [tuple(c[:2]) for c in feature["geometry"]["coordinates"]] == [
        (lng, lat) for _, lat, lng in seeded
    ]

    rows = list(csv.DictReader(io.StringIO(download(page, "csv").decode())))
    assert [(float(row["ts"]), float(row["lat"]), float(row["lng"])) for row in rows] == seeded
    assert {row["id"] for row in rows} == {str(workers[0]["id"])}

    # The whole team: every worker's positions.
    page.get_by_label("Who").select_option("")
    rows = list(csv.DictReader(io.StringIO(download(page, "csv").decode())))
    assert len(rows) == 360 + 360 + 91
    assert {int(row["id"]) for row in rows} == {worker["id"] for worker in workers}


# ---------------------------------------------------------------- who may see it


def test_a_manager_of_another_team_gets_none_of_it(site, walked, other_team, browsing):
    team = walked
    page = browsing.open(site, manager(other_team), history_path(other_team))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 - 600))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 4200))
    query = f"since={since}&until={until}"
    base = history_path(team)
    api = f"/api/v1/teams/{team['slug']}/"
    urls = [
        base,
        f"{base}tracks.json?{query}",
        f"{base}moment.json?at={until}",
        *(f"{base}export.{kind}?{query}" for kind in ("gpx", "geojson", "csv")),
        # The API with the same browser session: the same rule as the pages.
        api,
        f"{api}workers/",
        f"{api}positions/?{query}",
        *(f"{api}export.{kind}?{query}" for kind in ("gpx", "geojson", "csv")),
    ]
    for url in urls:
        response = page.request.get(url, max_redirects=0)
        assert response.status in (403, 404), (url, response.status)
        assert team["workers"][0]["name"] not in response.text(), url
    response = page.goto(base)
    assert response.status in (403, 404)
    expect(page.locator("#map")).to_have_count(0)
    # Their own team's history works with the same session, and holds none of the other's.
    page.goto(history_path(other_team))
    own = page.request.get(f"{history_path(other_team)}tracks.json?{query}")
    assert own.status == 200 and own.json()["tracks"] == {}
    teams = page.request.get("/api/v1/teams/")
    assert teams.status == 200
    assert [t["slug"] for t in teams.json()] == [other_team["slug"]]


def test_without_a_login_every_history_url_sends_to_the_login_page(site, team, browsing):
    page = browsing.open(site, None, "/accounts/login/")
    base = history_path(team)
    for url in (base, f"{base}tracks.json", f"{base}moment.json", f"{base}export.csv"):
        response = page.request.get(url, max_redirects=0)
        assert response.status == 302, url
        assert response.headers["location"].startswith("/accounts/login/?next="), url


# ---------------------------------------------------------------- a worker-day, measured


def worker_day(start: float) -> list[tuple[float, float, float]]:
    """86,400 points, one a second: a walker wandering about town with GPS noise, standing
    still now and then."""
    rng = random.Random(15)
    lat, lng, heading = 41.38, 2.15, 0.0
    points = []
    for second in range(86_400):
        if (second // 1200) % 3 != 2:  # 40 minutes moving, 20 standing
            heading += rng.gauss(0, 0.08)
            lat += 1.4 * math.cos(heading) / 111_320
            lng += 1.4 * math.sin(heading) / (111_320 * math.cos(math.radians(lat)))
        noise_lat, noise_lng = rng.gauss(0, 3) / 111_320, rng.gauss(0, 3) / 83_500
        points.append((start + second, round(lat + noise_lat, 6), round(lng + noise_lng, 6)))
    return points


PROBE_FIGURES = """() => ({
  longTasks: [...window.__probe.longTasks],
  rafMs: [...window.__probe.rafMs],
})"""


@pytest.mark.timeout(180)
def test_a_worker_day_draws_without_freezing_the_page(site, team, browsing, capsys):
    worker = team["workers"][0]
    start = T0 - 86_400 * 3
    seed(site, team, worker, worker_day(start))
    page = open_history(browsing, site, team)
    page.get_by_label("Who").select_option(str(worker["id"]))
    choose_range(page, start, start + 86_400)
    page.wait_for_timeout(500)  # the page settled: its own load is not the draw's

    page.evaluate("() => window.__probe.reset()")
    clicked = time.monotonic()
    draw(page, 86_400)
    wall_ms = (time.monotonic() - clicked) * 1000
    during = page.evaluate(PROBE_FIGURES)
    figures = page.evaluate(
        """() => {
          const draw = window.teamtrack.lastDraw;
          const start = performance.getEntriesByName("history-draw-start").at(-1);
          const end = performance.getEntriesByName("history-draw-end").at(-1);
          const resource = performance.getEntriesByType("resource")
            .filter((entry) => entry.name.includes("tracks.json")).at(-1);
          return { ...draw, marks: end.startTime - start.startTime,
            bytes: resource ? resource.encodedBodySize : 0 };
        }"""
    )
    line_points = page.evaluate(
        "id => window.teamtrack.layers.lines.get(id).getLatLngs().length", worker["id"]
    )
    # What Leaflet drew after simplifying at this zoom (its projected, simplified rings).
    drawn_points = page.evaluate(
        """id => (window.teamtrack.layers.lines.get(id)._parts || [])
          .reduce((sum, part) => sum + part.length, 0)""",
        worker["id"],
    )

    # Responsive afterwards: a zoom in and out (every point projected again), and the replay.
    zoom_ms = page.evaluate(
        """() => new Promise((resolve) => {
          const map = window.teamtrack.map;
          const start = performance.now();
          map.setZoom(map.getZoom() + 2, { animate: false });
          requestAnimationFrame(() => setTimeout(() => {
            const zoomIn = performance.now() - start;
            const again = performance.now();
            map.setZoom(map.getZoom() - 2, { animate: false });
            requestAnimationFrame(() => setTimeout(
              () => resolve([zoomIn, performance.now() - again]), 0));
          }, 0));
        })"""
    )
    page.evaluate("() => window.__probe.reset()")
    page.get_by_label("Speed").select_option("60")
    page.get_by_role("button", name="Play").click()
    replay_seconds = 3
    page.wait_for_timeout(replay_seconds * 1000)
    page.get_by_role("button", name="Pause").click()
    replaying = page.evaluate(PROBE_FIGURES)
    assert page.evaluate("() => window.teamtrack.clock.time(performance.now())") > start + 120

    results = {
        "points drawn": figures["points"],
        "tracks.json size, MB": figures["bytes"] / 1e6,
        "click to drawn, wall clock (Playwright), ms": wall_ms,
        "click to drawn, performance marks, ms": figures["marks"],
        "  request and download, ms": figures["fetchMs"],
        "  JSON.parse, ms": figures["parseMs"],
        "  Leaflet: points, projection, simplification, paint, ms": figures["drawMs"],
        "points Leaflet drew after simplifying (whole day in view)": drawn_points,
        "long tasks while drawing (over 50 ms)": len(during["longTasks"]),
        "longest task while drawing, ms": max(during["longTasks"], default=0),
        "longest gap between animation frames while drawing, ms": max(during["rafMs"], default=0),
        "zoom in 2 levels, until painted, ms": zoom_ms[0],
        "zoom out 2 levels, until painted, ms": zoom_ms[1],
        "replay at x60: animation frames per second": len(replaying["rafMs"]) / replay_seconds,
        "replay at x60: long tasks": len(replaying["longTasks"]),
    }
    report = draw_report(browsing.browser.version, results)
    DRAW_REPORT.write_text(report)
    with capsys.disabled():
        print(f"\n{report}")

    # Sanity bounds only: the timings depend on the machine and its load.
    assert line_points == 86_400
    assert figures["totalMs"] < 20_000 and wall_ms < 20_000
    assert len(replaying["rafMs"]) / replay_seconds >= 5, "the page stopped painting"


def draw_report(chromium: str, results: dict) -> str:
    lines = [
        "# The history page drawing a worker-day",
        "",
        "Measured by `tests/browser/test_history_page.py::"
        "test_a_worker_day_draws_without_freezing_the_page` (`make browser` rewrites this file):"
        f" headless Chromium {chromium}, 1280x800, on {os.cpu_count()} cores"
        f" ({platform.machine()}, Python {platform.python_version()}), daphne and SQLite on the"
        " same machine. One worker, 86,400 stored positions (one a second for a day, a wandering"
        " walk with 3 m of GPS noise), drawn with Draw; the track is one Leaflet polyline on a"
        " canvas of its own, simplified by Leaflet for each zoom (smoothFactor 1.5), and the"
        f" replay's markers on another. At {time.strftime('%Y-%m-%d')}.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for name, value in results.items():
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        lines.append(f"| {name} | {shown} |")
    lines += [
        "",
        '"Performance marks" run from the click\'s handler to the first animation frame after'
        " Leaflet's redraw (`history-draw-start` and `history-draw-end`); long tasks are counted"
        " by a `PerformanceObserver` of type `longtask`, and the gaps between animation frames by"
        " a requestAnimationFrame loop installed before the page's scripts (the probe of"
        " tests/browser/conftest.py).",
        "",
    ]
    return "\n".join(lines)
