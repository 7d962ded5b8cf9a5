"""Fill a PostgreSQL database with a month of a large team's history, fast, for the history
query benchmark (loadtest/history_queries.py).

    python -m loadtest.history_data --database-url postgresql://postgres@127.0.0.1:5432/NAME \\
        --workers 1000 --days 30 --shift-hours 10 --interval 30

migrates the database, creates the team `history-1` with WORKERS workers (manage.py provision),
then writes, for each of the DAYS days before today (UTC), each worker's position every
INTERVAL seconds through a shift of SHIFT_HOURS from 07:00 UTC (1,000 x 30 x 10 h / 30 s =
36 M rows), plus one more worker ("dense") with a position every second of the last day
(86,400 rows: the worker-day a page must draw). Rows go in time order, all workers interleaved,
as the live writer stores them, so a worker's day is spread over the table as in production.

It is fast because PostgreSQL makes the rows itself (INSERT ... SELECT over generate_series, a
day a statement) with the table's indexes and foreign keys dropped, and builds them again at
the end (their definitions read from the catalog first, so they come back as the migration made
them), then ANALYZE. Each worker walks its own smooth loop (lat/lng from sines of the time), with
accuracy, speed, heading and battery.

It prints what it did and how long each part took; `--summary PATH` writes that as JSON.
"""

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from deploy.processes import manage

TABLE = "tracking_storedposition"
DAY = 86_400
SHIFT_START_HOUR = 7
TEAM_SLUG = "history-1"  # manage.py provision --prefix history --teams 1

# One day's rows of every worker, in time order: a row per (step, worker). Each worker circles
# its own point of a 20 km square around Barcelona, once every two hours.
DAY_ROWS = f"""
INSERT INTO {TABLE} (team_id, worker_id, ts, lat, lng, acc, speed, heading, alt, batt)
SELECT %(team)s, w.id, t.ts,
       41.30 + (w.n %% 40) * 0.0045 + 0.004 * sin(t.ts / 1146.0 + w.n),
       2.05 + (w.n / 40) * 0.006 + 0.005 * cos(t.ts / 1146.0 + w.n),
       3 + (w.n + g.step) %% 17,
       (w.n + g.step) %% 13 * 0.5,
       ((t.ts / 1146.0 + w.n) * 57.3)::bigint %% 360,
       12 + w.n %% 30,
       100 - g.step * 80.0 / %(steps)s
FROM generate_series(0, %(steps)s - 1) AS g(step)
     CROSS JOIN LATERAL (SELECT %(start)s + g.step * %(interval)s) AS t(ts)
     CROSS JOIN unnest(%(workers)s::bigint[]) WITH ORDINALITY AS w(id, n)
ORDER BY g.step, w.n
"""


def log(message: str) -> None:
    print(message, flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database to fill")
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--shift-hours", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between positions")
    parser.add_argument("--no-dense", action="store_true", help="leave out the 1 Hz worker-day")
    parser.add_argument("--summary", type=Path, help="write what was done as JSON here")
    args = parser.parse_args(argv)

    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "DJANGO_SETTINGS_MODULE": "teamtrack.settings",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),  # production settings want one; none is kept
    }
    timings = {}
    started = time.monotonic()
    manage(env, "migrate", "--verbosity", "0")
    with tempfile.TemporaryDirectory() as workdir:
        output = Path(workdir) / "team.json"
        manage(env, "provision", "--teams", "1", "--workers", str(args.workers + 1),
               "--prefix", "history", "--password", "history-password-123",
               "--output", str(output), timeout=600)  # fmt: skip
        (team,) = json.loads(output.read_text())["teams"]
    timings["provision_s"] = round(time.monotonic() - started, 1)
    workers = [worker["id"] for worker in team["workers"]]
    dense, workers = workers[-1], workers[:-1]

    today = time.time() // DAY * DAY
    first_day = today - args.days * DAY
    steps = int(args.shift_hours * 3600 / args.interval)
    with psycopg.connect(args.database_url, autocommit=True) as connection:
        connection.execute("SET synchronous_commit = off")
        connection.execute("SET maintenance_work_mem = '1GB'")  # the index builds
        connection.execute("SET work_mem = '256MB'")  # a day's sort into time order
        definitions = drop_indexes_and_keys(connection)
        fill_started = time.monotonic()
        for day in range(args.days):
            start = first_day + day * DAY + SHIFT_START_HOUR * 3600
            connection.execute(
                DAY_ROWS,
                {"team": team["id"], "workers": workers, "start": start, "steps": steps,
                 "interval": args.interval},
            )  # fmt: skip
            log(f"day {day + 1}/{args.days}: {steps * len(workers):,} rows "
                f"({time.monotonic() - fill_started:.0f} s)")  # fmt: skip
        if not args.no_dense:
            connection.execute(
                DAY_ROWS,
                {"team": team["id"], "workers": [dense], "start": today - DAY, "steps": DAY,
                 "interval": 1},
            )  # fmt: skip
        timings["insert_s"] = round(time.monotonic() - fill_started, 1)
        index_started = time.monotonic()
        for statement in definitions:
            log(statement)
            connection.execute(statement)
        timings["indexes_s"] = round(time.monotonic() - index_started, 1)
        analyze_started = time.monotonic()
        connection.execute(f"VACUUM (ANALYZE) {TABLE}")
        timings["vacuum_analyze_s"] = round(time.monotonic() - analyze_started, 1)
        rows = connection.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        sizes = connection.execute(
            "SELECT pg_table_size(%s), pg_indexes_size(%s)", [TABLE, TABLE]
        ).fetchone()
    timings["total_s"] = round(time.monotonic() - started, 1)
    summary = {
        "command": "python -m loadtest.history_data "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "team": TEAM_SLUG,
        "team_id": team["id"],
        "workers": len(workers),
        "days": args.days,
        "first_day": first_day,
        "shift_hours": args.shift_hours,
        "interval_s": args.interval,
        "dense_worker": None if args.no_dense else dense,
        "dense_day": None if args.no_dense else today - DAY,
        "rows": rows,
        "table_bytes": sizes[0],
        "index_bytes": sizes[1],
        **timings,
    }
    log(json.dumps(summary, indent=1))
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def drop_indexes_and_keys(connection) -> list[str]:
    """Drop the table's indexes, unique and foreign keys (all but its primary key); return the
    statements that make them again, read from the catalog."""
    constraints = connection.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype <> 'p'",
        [TABLE],
    ).fetchall()
    indexes = connection.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
        [TABLE, TABLE],
    ).fetchall()
    for name, _ in constraints:
        connection.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        connection.execute(f'DROP INDEX "{name}"')
    # Indexes first, then the constraints: the unique key builds its own index.
    return [definition for _, definition in indexes] + [
        f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}'
        for name, definition in constraints
    ]


if __name__ == "__main__":
    main()
