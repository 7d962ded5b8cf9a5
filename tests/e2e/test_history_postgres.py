"""The history's reads, exports and retention on real PostgreSQL: the same answers as on SQLite,
the worker's track and the moment read on the unique (worker, ts) index, and prune_history
deleting in batches. One script runs in a manage.py process pointed at a throwaway database."""

import json
import os
import textwrap

import pytest

from deploy.processes import manage

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SCRIPT = textwrap.dedent(
    """
    import asyncio, csv, io, json, time

    import gpxpy
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import F
    from django.test.utils import CaptureQueriesContext

    from teams import services
    from teams.models import Worker
    from tracking import exports, history
    from tracking.history import Query
    from tracking.models import StoredPosition

    alpha = services.team_create(slug="alpha", name="Alpha")
    bravo = services.team_create(slug="bravo", name="Bravo")
    workers = [services.worker_create(team=alpha, name=f"A{i}")[0] for i in range(20)]
    bea, _ = services.worker_create(team=bravo, name="Bea")
    now = time.time()
    day = now - now % 86400 - 86400  # yesterday, midnight UTC
    # Each alpha worker: one position every 30 s over yesterday, standing still from 10:00 to 10:30.
    with connection.cursor() as cursor:
        for worker in workers:
            cursor.execute(
                "INSERT INTO tracking_storedposition (team_id, worker_id, ts, lat, lng, batt) "
                "SELECT %s, %s, %s + s * 30, 41 + CASE WHEN s BETWEEN 1200 AND 1260 THEN 0.01 "
                "ELSE s * 1e-3 END, 2, 50 FROM generate_series(0, 2879) AS s",
                [alpha.id, worker.id, day],
            )
        cursor.execute("ANALYZE tracking_storedposition")
    StoredPosition.objects.create(team=bravo, worker=bea, ts=day + 36000, lat=9, lng=9)
    out = {}

    def plan(sql):
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + sql)
            return "\\n".join(row[0] for row in cursor.fetchall())

    first = workers[0]
    query = Query(worker_id=first.id, since=day, until=day + 86400)
    with CaptureQueriesContext(connection) as queries:
        track = history.tracks(alpha, query)[first.id]
    out["track_points"] = len(track)
    out["track_plan"] = plan(queries[-1]["sql"])
    out["stops"] = [
        [s.since - day, s.until - day] for s in history.stops(track, minutes=5, radius_m=50)
    ]
    out["positions"] = history.positions(alpha, Query(since=day, until=day + 3600)).count()
    out["other_team"] = history.positions(alpha, Query(worker_id=bea.id)).count()

    at = day + 36000 + 15  # 10:00:15: each worker's 10:00:00
    with CaptureQueriesContext(connection) as queries:
        found = history.moment(alpha, at)
    out["moment_queries"] = len(queries)
    out["moment"] = sorted({(p["id"], p["ts"] - day, p["batt"]) for p in found})
    out["moment_ids"] = [w.id for w in workers]
    out["moment_plan"] = plan(queries[0]["sql"])  # the probe; the second, moved workers
    # A worker moved to bravo since stays in alpha's moment; bravo's moment does not have it.
    Worker.objects.filter(id=first.id).update(team=bravo)
    out["moved_in_alpha"] = first.id in [p["id"] for p in history.moment(alpha, at)]
    out["moved_in_bravo"] = first.id in [p["id"] for p in history.moment(bravo, at)]
    out["bravo_moment"] = [[p["id"], p["lat"]] for p in history.moment(bravo, at)]
    out["bea"] = bea.id

    async def body(kind, query):
        response = exports.export_response(kind, alpha, query)
        return b"".join([piece async for piece in response.streaming_content]).decode()

    hour = Query(since=day + 36000, until=day + 39600)
    gpx = gpxpy.parse(asyncio.run(body("gpx", hour)))
    out["gpx"] = sorted((t.name, len(t.segments[0].points)) for t in gpx.tracks)
    geo = json.loads(asyncio.run(body("geojson", hour)))
    out["geojson"] = sorted(
        (f["properties"]["name"], len(f["geometry"]["coordinates"])) for f in geo["features"]
    )
    out["csv_rows"] = len(list(csv.DictReader(io.StringIO(asyncio.run(body("csv", hour))))))

    # Retention: everything before yesterday 12:00 (1,440 positions of each alpha worker).
    StoredPosition.objects.filter(ts__lt=day + 43200).update(ts=F("ts") - 86400 * 100)
    text = io.StringIO()
    call_command("prune_history", "--days", "90", "--batch-size", "5000", stdout=text)
    again = io.StringIO()
    call_command("prune_history", "--days", "90", stdout=again)
    out["prune"] = [text.getvalue().strip(), again.getvalue().strip()]
    out["left"] = StoredPosition.objects.count()
    print("RESULT " + json.dumps(out))
    """
)


def run_script(database, script: str) -> dict:
    """Migrate the throwaway database, run `script` in a manage.py shell on it, and return what
    it printed after RESULT."""
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "DJANGO_SETTINGS_MODULE": "teamtrack.settings",
        "CHANNEL_LAYER": "memory",
    }
    manage(env, "migrate", "--verbosity", "0")
    output = manage(env, "shell", "--no-imports", "-c", script)
    return json.loads(output.split("RESULT ", 1)[1])


def test_history_reads_exports_and_prunes_on_postgres(postgres_database):
    out = run_script(postgres_database, SCRIPT)

    assert out["track_points"] == 2880
    assert "position_once_per_worker_ts" in out["track_plan"], out["track_plan"]
    assert out["stops"] == [[36000, 37800]]  # 10:00 to 10:30
    assert out["positions"] == 20 * 120
    assert out["other_team"] == 0

    assert out["moment_queries"] <= 2
    assert out["moment"] == [[worker_id, 36000, 50] for worker_id in out["moment_ids"]]
    assert "position_once_per_worker_ts" in out["moment_plan"], out["moment_plan"]
    assert out["moved_in_alpha"] and not out["moved_in_bravo"]
    assert out["bravo_moment"] == [[out["bea"], 9]]  # bravo's own worker only

    assert out["gpx"] == sorted([f"A{i}", 120] for i in range(20))
    assert out["geojson"] == out["gpx"]
    assert out["csv_rows"] == 20 * 120

    assert out["prune"] == [
        f"Deleted {20 * 1440 + 1} positions older than 90 days.",
        "Deleted 0 positions older than 90 days.",
    ]
    assert out["left"] == 20 * 1440


WRITER_SCRIPT = textwrap.dedent(
    """
    import json

    from teams import services
    from tracking.history_writer import Row, insert_rows
    from tracking.models import StoredPosition

    alpha = services.team_create(slug="writer", name="Writer")
    ann, _ = services.worker_create(team=alpha, name="Ann")
    bo, _ = services.worker_create(team=alpha, name="Bo")
    full = {"lat": 41.0, "lng": 2.0, "ts": 100.5, "acc": 5.0, "speed": 1.5, "heading": 90.0,
            "alt": 12.0, "batt": 80.0, "seq": 7}
    insert_rows([Row(alpha.id, ann.id, full), Row(alpha.id, ann.id, {"lat": 1, "lng": 2, "ts": 101})])
    insert_rows([Row(alpha.id, ann.id, full)])  # a resend
    insert_rows([])
    gone = bo.id
    bo.delete()
    insert_rows([Row(alpha.id, gone, {"lat": 3, "lng": 4, "ts": 102}),
                 Row(alpha.id, ann.id, {"lat": 5, "lng": 6, "ts": 103})])
    rows = StoredPosition.objects.filter(team=alpha).order_by("ts").values_list(
        "worker_id", "ts", "lat", "acc", "speed", "heading", "alt", "batt")
    print("RESULT " + json.dumps({"rows": [list(r) for r in rows], "ann": ann.id}))
    """
)


def test_the_writer_stores_once_and_skips_deleted_workers_on_postgres(postgres_database):
    out = run_script(postgres_database, WRITER_SCRIPT)
    ann = out["ann"]
    assert out["rows"] == [
        [ann, 100.5, 41.0, 5.0, 1.5, 90.0, 12.0, 80.0],
        [ann, 101.0, 1.0, None, None, None, None, None],
        [ann, 103.0, 5.0, None, None, None, None, None],
    ]
