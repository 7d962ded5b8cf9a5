"""The replica's history writer: stores every position its devices sent, once per flush window
in one multi-row insert for all teams, and only then acknowledges the frames they came in.

The device side (tracking.devices) hands a window's frames here once the live feed took them
(published, last-known state written), so the live map never waits for the database. Storing is
the last step an ack waits on: a frame is acknowledged (a socket's ack, an upload's 200) only
once every one of its positions is committed.

If the database is slow, frames wait here and their acks come later; devices keep their buffers
meanwhile. If it is down, the insert fails and the frames are kept for the next window, in
order; nothing is acknowledged, and the live map still moves. The rows kept are bounded by
HISTORY_MAX_PENDING: past it, new frames are refused, which means their devices are not
acknowledged and send them again later, never that an acknowledged position is dropped.
Resends are stored once: (worker, ts) is unique, and inserts skip rows already there.
"""

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from django.db import IntegrityError, close_old_connections, connection, transaction

from teams.models import Team, Worker
from tracking import metrics
from tracking.clock import Clock, WallClock
from tracking.models import StoredPosition
from tracking.outage import Outage
from tracking.positions import Position

logger = logging.getLogger(__name__)

# Rows per INSERT statement where the database's own bulk insert is used (not PostgreSQL, not
# SQLite): some take at most 65,535 parameters in one (10 a row).
INSERT_BATCH = 5_000
# Rows in one SQLite INSERT at most (_insert_sqlite).
SQLITE_ROWS = 512
# Where in the flush window the writer inserts (a fraction of the window after the tick).
PHASE = 0.75


class Row(NamedTuple):
    """A position to store, with the team its worker was in when it arrived."""

    team_id: int
    worker_id: int
    position: Position


# A frame's ack: (the device's socket, the frame's seq); frames that asked for none have a key
# of their own, which acknowledges nothing.
FrameKey = Hashable
Frames = list[tuple[FrameKey, list[Row]]]


class HistoryWriter:
    """Stores the frames handed to it once a window and acknowledges them when committed."""

    def __init__(
        self,
        *,
        window: float,
        max_pending: int,
        clock: Clock | None = None,
        store=None,
    ):
        self.window = window
        self.max_pending = max_pending
        self.clock = clock or WallClock()
        self.outage = Outage("history database")
        # The database work runs on one thread of its own, so it keeps one connection and
        # never takes the threads that sockets use to look tokens up.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="history-writer")
        self.store = store or insert_rows
        self.pending: Frames = []
        self.pending_rows = 0
        self.storing_rows = 0  # rows of the insert under way, held too until it ends
        self.writing = asyncio.Lock()
        self.stopped = False

    def take(self, frames: Frames) -> int:
        """Queue frames, in order, to be stored and then acknowledged, until one would pass
        HISTORY_MAX_PENDING rows; refuse it and the rest (their devices get no ack and send
        them again). Return how many were refused. Frame by frame, so that the writer always
        makes progress: a frame holds at most 500 positions, and the bound is at least that."""
        for taken, (key, frame_rows) in enumerate(frames):
            if self.pending_rows + self.storing_rows + len(frame_rows) > self.max_pending:
                refused = len(frames) - taken
                metrics.HISTORY_REFUSED_FRAMES.inc(refused)
                self.outage.failed(HistoryFull(f"{self.pending_rows} positions wait to be stored"))
                return refused
            self.pending.append((key, frame_rows))
            self.pending_rows += len(frame_rows)
        metrics.HISTORY_PENDING.set(self.pending_rows)
        return 0

    async def flush(self) -> bool:
        """Store every frame waiting, in one transaction, then acknowledge them. Return whether
        they were stored; if not, they stay, ahead of any taken since."""
        async with self.writing:
            frames, rows = self.pending, self.pending_rows
            if not frames:
                return True
            self.pending, self.pending_rows = [], 0
            self.storing_rows = rows
            started = time.perf_counter()
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self.executor,
                    self.store,
                    [row for _, frame_rows in frames for row in frame_rows],
                )
            except BaseException as error:
                self.pending, self.pending_rows = frames + self.pending, rows + self.pending_rows
                metrics.HISTORY_PENDING.set(self.pending_rows)
                if isinstance(error, Exception):
                    metrics.HISTORY_WRITE_ERRORS.inc()
                    self.outage.failed(error)
                    return False
                raise  # cancelled: kept, as above
            finally:
                self.storing_rows = 0
            metrics.HISTORY_WRITE_SECONDS.observe(time.perf_counter() - started)
            metrics.HISTORY_STORED.inc(rows)
            metrics.HISTORY_PENDING.set(self.pending_rows)
            self.outage.recovered()
            for key, _ in frames:
                if isinstance(key, tuple):
                    socket, seq = key
                    await socket.acknowledge(seq)
            return True

    async def run_forever(self) -> None:
        """Flush once a window, PHASE of a window after the relay's tick handed frames over:
        after the managers' delivery (at 0.6), and done before the next tick on a loaded
        replica, so that the insert's share of the GIL falls between the live feed's steps."""
        while True:
            now = self.clock.time()
            await self.clock.sleep_until(
                (math.floor(now / self.window - PHASE) + 1 + PHASE) * self.window
            )
            try:
                await self.flush()
            except Exception:
                logger.exception("The history writer's flush failed; the next one goes on")

    async def flush_all(self, timeout: float) -> bool:
        """Store everything waiting, trying again once a window for up to `timeout` seconds
        (a draining replica). Return whether nothing is left.

        Also bounded in real time: an insert that hangs (a locked table, a database that stops
        answering) is given up at the deadline, its frames kept unacknowledged, so the replica
        still closes its sockets with 4012 within its grace."""
        deadline = self.clock.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                while not await self.flush():
                    if self.clock.time() + self.window > deadline:
                        return False
                    await self.clock.sleep_until(self.clock.time() + self.window)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Let an insert under way finish, and close the thread's connection (a test's database
        is flushed next; a replica is stopping)."""
        if not self.stopped:
            self.stopped = True
            self.executor.submit(connection.close)
            self.executor.shutdown(wait=True)


class HistoryFull(Exception):
    """The writer holds HISTORY_MAX_PENDING positions; new frames wait in their devices."""


def insert_rows(rows: list[Row]) -> None:
    """Insert positions in one transaction, skipping those stored already (resends). Rows of a
    worker or team deleted since they arrived are left out: their history went with them."""
    global _staging_made_on
    close_old_connections()  # a connection the database dropped is replaced, not failed on
    try:
        try:
            _insert(rows)
        except IntegrityError:
            _staging_made_on = None  # made in the transaction that was just rolled back
            workers = set(
                Worker.objects.filter(pk__in={r.worker_id for r in rows}).values_list("pk")
            )
            teams = set(Team.objects.filter(pk__in={r.team_id for r in rows}).values_list("pk"))
            _insert([r for r in rows if (r.worker_id,) in workers and (r.team_id,) in teams])
    except Exception:
        connection.close()  # the next try reconnects, rather than reuse a broken connection
        raise


# The table's columns in the order an insert gives them.
COLUMNS = ("team_id", "worker_id", "ts", "lat", "lng", "acc", "speed", "heading", "alt", "batt")
OPTIONAL = COLUMNS[5:]
# PostgreSQL: each insert COPYs its rows into this table of the connection's own (emptied at
# commit), then moves them over, skipping (worker, ts) already stored: COPY cannot skip them
# itself. The writer's thread keeps its connection, so the table is made once per connection.
STAGING = "history_staging"
STAGING_COLUMNS = "team_id bigint, worker_id bigint, " + ", ".join(
    f"{name} double precision" for name in COLUMNS[2:]
)
_staging_made_on = None  # the psycopg connection that has the staging table


def _insert(rows: list[Row]) -> None:
    """One insert of all the rows, skipping (worker, ts) already stored. On PostgreSQL, COPY
    into a staging table and one INSERT ... SELECT ... ON CONFLICT DO NOTHING: measured, COPY
    takes under half the client CPU of any multi-row INSERT's parameters (2.7 against 6.2 µs a
    row), and this runs on a thread beside the event loop, whose GIL the live feed needs. On
    SQLite, multi-row INSERT OR IGNOREs (_insert_sqlite). Plain tuples, never model instances."""
    values = [
        (
            row.team_id,
            row.worker_id,
            float((p := row.position)["ts"]),
            float(p["lat"]),
            float(p["lng"]),
            *(None if (v := p.get(name)) is None else float(v) for name in OPTIONAL),
        )
        for row in rows
    ]
    table = StoredPosition._meta.db_table
    columns = ", ".join(COLUMNS)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            _copy_then_insert(table, columns, values)
        elif connection.vendor == "sqlite":
            _insert_sqlite(table, columns, values)
        else:  # another database Django supports: its own bulk insert
            StoredPosition.objects.bulk_create(
                [StoredPosition(**dict(zip(COLUMNS, value, strict=True))) for value in values],
                batch_size=INSERT_BATCH,
                ignore_conflicts=True,
            )


def _insert_sqlite(table: str, columns: str, values: list[tuple]) -> None:
    """Multi-row INSERT OR IGNOREs, not executemany: that gives the GIL up and takes it back for
    every row, and with the event loop busy each row then cost 27-38 µs of CPU, against 3-9 for
    a statement of many rows (measured with a thread spinning beside the writer, 100 and 1,000
    rows a transaction). Statements hold a power of two of rows, at most SQLITE_ROWS and what
    SQLite's parameter limit allows: sqlite3 keeps each distinct statement it compiled (128 a
    connection, about 1 KB a row each), and a size per flush would keep a statement per size."""
    limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    size = 1 << (min(SQLITE_ROWS, max(1, limit // len(COLUMNS))).bit_length() - 1)
    row_marks = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    start = 0
    with connection.cursor() as cursor:
        while start < len(values):
            while size > len(values) - start:
                size //= 2
            chunk = values[start : start + size]
            cursor.execute(
                f"INSERT OR IGNORE INTO {table} ({columns}) VALUES "
                + ", ".join([row_marks] * size),
                [value for row in chunk for value in row],
            )
            start += size


def _copy_then_insert(table: str, columns: str, values: list[tuple]) -> None:
    global _staging_made_on
    raw = connection.connection  # psycopg's own, inside Django's transaction
    with raw.cursor() as cursor:
        if _staging_made_on is not raw:
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} ({STAGING_COLUMNS}) "
                "ON COMMIT DELETE ROWS"
            )
            _staging_made_on = raw
        with cursor.copy(f"COPY {STAGING} ({columns}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {STAGING} "
            "ON CONFLICT (worker_id, ts) DO NOTHING"
        )
