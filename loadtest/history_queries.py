"""Time the history's reads on PostgreSQL filled by loadtest/history_data.py, through the real
functions (tracking.history, tracking.exports) with Django pointed at that database.

    python -m loadtest.history_queries --database-url postgresql://postgres@127.0.0.1:5432/NAME

Each measure runs `--repeats` times (the exports `--export-repeats`), each time on another
worker, day or moment drawn with a fixed seed, so that a repeat does not just read what the one
before left in PostgreSQL's buffers (the OS page cache still holds what it held: the table
and its indexes, 7.3 GB at 36 M rows, are about the size of this machine's page cache). It
reports the median, the max and the first:

- a worker-day track: tracks() for one worker and one day (a position every 30 s of a shift);
- the dense worker-day: tracks() for the worker with a position every second of the last day
  (86,400 points), and stops() along it;
- the team moment: moment() at 10:00 of a day (every worker has a position in the hour before);
- a one-day team export as GPX, GeoJSON and CSV, read to the end from the streamed response;
- the worker-day track and the moment again after the exports, which read a day of the whole
  team and may push index pages out of the page cache.

It writes loadtest/results/NAME.json and NAME.md (`--name`, default history-queries), with the
table's size and the query plans (EXPLAIN ANALYZE) of the track and the moment.
"""

import argparse
import asyncio
import os
import random
import resource
import secrets
import statistics
import sys
import time
from pathlib import Path

from loadtest.machine import cpu_model, git_revision
from loadtest.runs import save_results

DAY = 86_400
TEAM_SLUG = "history-1"  # loadtest/history_data.py's team
RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(message, flush=True)


def setup_django(database_url: str) -> None:
    """Point Django at the benchmark's database, with production settings."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "teamtrack.settings"
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def timed(function, repeats: int, label: str) -> tuple[dict, object]:
    """Call function(i) for each repeat; return the times (ms) and the last result."""
    times = []
    result = None
    for i in range(repeats):
        started = time.perf_counter()
        result = function(i)
        times.append((time.perf_counter() - started) * 1000)
    figures = {
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "first_ms": round(times[0], 1),
        "repeats": repeats,
        "all_ms": [round(t, 1) for t in times],
    }
    log(f"{label}: median {figures['median_ms']} ms, max {figures['max_ms']} ms")
    return figures, result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--export-repeats", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="history-queries")
    args = parser.parse_args(argv)
    revision = git_revision()
    command = "python -m loadtest.history_queries " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    setup_django(args.database_url)

    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from teams.models import Team, Worker
    from tracking import exports, history
    from tracking.history import Query
    from tracking.models import StoredPosition

    team = Team.objects.get(slug=TEAM_SLUG)
    worker_ids = list(Worker.objects.filter(team=team).order_by("id").values_list("id", flat=True))
    dense = worker_ids.pop()  # history_data.py provisions the dense worker last
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint, pg_table_size(oid), pg_indexes_size(oid), "
            "current_setting('server_version'), current_setting('shared_buffers') "
            "FROM pg_class WHERE relname = 'tracking_storedposition'"
        )
        rows, table_bytes, index_bytes, pg_version, shared_buffers = cursor.fetchone()
    first_ts = StoredPosition.objects.filter(worker_id=worker_ids[0]).order_by("ts")[0].ts
    last_ts = StoredPosition.objects.filter(worker_id=worker_ids[0]).order_by("-ts")[0].ts
    days = [d * DAY for d in range(int(first_ts // DAY), int(last_ts // DAY) + 1)]
    dense_day = StoredPosition.objects.filter(worker_id=dense).order_by("ts")[0].ts // DAY * DAY
    log(f"{rows:,} rows, {len(worker_ids)} workers + 1 dense, {len(days)} days")
    pick = random.Random(15)
    result = {
        "command": command,
        "revision": revision,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "postgres": pg_version,
        "shared_buffers": shared_buffers,
        "rows": rows,
        "table_bytes": table_bytes,
        "index_bytes": index_bytes,
        "workers": len(worker_ids),
        "days": len(days),
        "load_average_before": [round(load, 2) for load in os.getloadavg()],
    }

    # A worker-day track: another worker and day each time.
    cases = [(pick.choice(worker_ids), pick.choice(days)) for _ in range(args.repeats)]

    def worker_day(i):
        worker_id, day = cases[i]
        return history.tracks(team, Query(worker_id=worker_id, since=day, until=day + DAY))

    figures, found = timed(worker_day, args.repeats, "worker-day track")
    result["worker_day_track"] = {**figures, "points": len(next(iter(found.values())))}

    dense_query = Query(worker_id=dense, since=dense_day, until=dense_day + DAY)
    figures, found = timed(lambda i: history.tracks(team, dense_query), args.repeats, "dense day")
    points = found[dense]
    result["dense_worker_day_track"] = {**figures, "points": len(points)}
    figures, found = timed(
        lambda i: history.stops(
            points,
            minutes=settings.TEAMTRACK_STOP_MINUTES,
            radius_m=settings.TEAMTRACK_STOP_RADIUS_METRES,
        ),
        args.repeats,
        "stops on the dense day",
    )
    result["dense_worker_day_stops"] = {**figures, "points": len(points), "stops": len(found)}

    # The team moment at 10:00 of another day each time.
    moments = [pick.choice(days) + 10 * 3600 for _ in range(args.repeats)]
    split = []

    def team_moment(i):
        with CaptureQueriesContext(connection) as queries:
            found = history.moment(team, moments[i])
        split.append([float(q["time"]) * 1000 for q in queries])
        return found

    figures, found = timed(team_moment, args.repeats, "team moment")
    result["team_moment"] = {
        **figures,
        "workers_found": len(found),
        "queries": len(split[-1]),
        "query_ms_median": [round(statistics.median(q), 1) for q in zip(*split, strict=True)],
    }

    # One day of the team, exported.
    export_days = [pick.choice(days) for _ in range(args.export_repeats)]
    for kind in ("gpx", "geojson", "csv"):
        sizes = []

        def export(i, kind=kind, sizes=sizes):
            day = export_days[i]
            response = exports.export_response(kind, team, Query(since=day, until=day + DAY))

            async def read():
                size = 0
                async for piece in response.streaming_content:
                    size += len(piece)
                return size

            sizes.append(asyncio.run(read()))

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        figures, _ = timed(export, args.export_repeats, f"one-day team export, {kind}")
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        day_rows = [
            StoredPosition.objects.filter(team=team, ts__gte=day, ts__lt=day + DAY).count()
            for day in export_days
        ]
        result[f"team_day_export_{kind}"] = {
            **figures,
            "rows": day_rows,
            "megabytes": [round(size / 1e6, 1) for size in sizes],
            "peak_rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
        }

    # Again, now that the exports' scans of the table have pushed much of the unique index out
    # of the page cache (the table and its indexes are about the size of this machine's cache).
    cases[:] = [(pick.choice(worker_ids), pick.choice(days)) for _ in range(args.repeats)]
    figures, _ = timed(worker_day, args.repeats, "worker-day track, after the exports")
    result["worker_day_track_after_exports"] = figures
    moments[:] = [pick.choice(days) + 10 * 3600 for _ in range(args.repeats)]
    split.clear()
    figures, _ = timed(team_moment, args.repeats, "team moment, after the exports")
    result["team_moment_after_exports"] = figures

    result["plans"] = {
        "worker_day_track": explain(
            connection,
            history.matching(
                team, Query(worker_id=cases[0][0], since=cases[0][1], until=cases[0][1] + DAY)
            )
            .order_by("worker_id", "ts")
            .values_list("worker_id", "ts", "lat", "lng"),
        ),  # fmt: skip
        "team_moment": explain_captured(connection, lambda: history.moment(team, moments[0])),
        "team_day_export": explain(
            connection,
            exports._of_worker(team, Query(since=days[0], until=days[0] + DAY), worker_ids[0]),
        ),
        "team_day_export_csv": explain(
            connection,
            history.positions(team, Query(since=days[0], until=days[0] + DAY)).values_list(
                *exports.ROW_FIELDS
            ),
        ),
    }
    markdown = report(result)
    save_results(args.output_dir, args.name, result, markdown)
    log(markdown)
    return result


def explain(connection, queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def explain_captured(connection, function) -> list[str]:
    """EXPLAIN ANALYZE of each query `function` runs."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        function()
    plans = []
    with connection.cursor() as cursor:
        for query in queries:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return plans


def _span(values: list, form: str) -> str:
    """`a` or `a–b`: the smallest and largest of the repeats' values."""
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}–{high}"


def report(result: dict) -> str:
    def row(label, key, size):
        figures = result[key]
        return (
            f"| {label} | {size} | {figures['median_ms']:,} | {figures['max_ms']:,} | "
            f"{figures['first_ms']:,} | {figures['repeats']} |"
        )

    moment = result["team_moment"]
    lines = [
        "# History queries on PostgreSQL",
        "",
        f"`{result['command']}`: {result['cores']} cores ({result['cpu_model']}), revision "
        f"{result['revision']}, PostgreSQL {result['postgres']} with its default settings "
        f"(shared_buffers {result['shared_buffers']}); load average before the run "
        f"{result['load_average_before'][0]}. The table: {result['rows']:,} positions "
        f"of {result['workers']} workers of one team over {result['days']} days (plus one worker "
        f"with a position every second of a day), {result['table_bytes'] / 1e9:.1f} GB and "
        f"{result['index_bytes'] / 1e9:.1f} GB of indexes, filled by `python -m "
        "loadtest.history_data`. Times are wall-clock through the real functions "
        "(tracking.history, tracking.exports), Django included; each repeat reads another "
        "worker, day or moment (an export's day may be the one with the dense worker: its "
        "86,400 more rows). The table and its indexes are about the size of "
        "the OS page cache here: the last two rows read again after the exports' reads.",
        "",
        "| query | size | median ms | max ms | first ms | repeats |",
        "|---|---|---|---|---|---|",
        row("worker-day track (`tracks()`)", "worker_day_track",
            f"{result['worker_day_track']['points']:,} points"),
        row("dense worker-day track (`tracks()`)", "dense_worker_day_track",
            f"{result['dense_worker_day_track']['points']:,} points"),
        row("stops along it (`stops()`)", "dense_worker_day_stops",
            f"{result['dense_worker_day_stops']['stops']} stops"),
        row("team moment (`moment()`)", "team_moment",
            f"{moment['workers_found']:,} workers, {moment['queries']} queries"),
    ]  # fmt: skip
    for kind in ("gpx", "geojson", "csv"):
        figures = result[f"team_day_export_{kind}"]
        lines.append(
            row(
                f"one-day team export, {kind}",
                f"team_day_export_{kind}",
                f"{_span(figures['rows'], '{:,}')} rows, {_span(figures['megabytes'], '{}')} MB",
            )  # fmt: skip
        )
    lines += [
        row("worker-day track, after the exports", "worker_day_track_after_exports",
            "1,200 points"),
        row("team moment, after the exports", "team_moment_after_exports", "1,000 workers"),
    ]  # fmt: skip
    lines += [
        "",
        f"The moment's queries, median ms each: {moment['query_ms_median']} (the probe of the "
        "team's workers on the (worker, ts) index, then the workers no longer in the team).",
        "Peak RSS growth of this process over each export (MB): "
        + ", ".join(
            f"{kind} {result[f'team_day_export_{kind}']['peak_rss_growth_mb']}"
            for kind in ("gpx", "geojson", "csv")
        )
        + ".",
        "",
        "## Plans",
        "",
        "A worker-day track:",
        "",
        "```",
        result["plans"]["worker_day_track"],
        "```",
        "",
        "The team moment:",
        "",
        "```",
        "\n\n".join(result["plans"]["team_moment"]),
        "```",
        "",
        "A one-day team export (GPX and GeoJSON: this query for each worker in turn):",
        "",
        "```",
        result["plans"]["team_day_export"],
        "```",
        "",
        "A one-day team export (CSV, by ts):",
        "",
        "```",
        result["plans"]["team_day_export_csv"],
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
