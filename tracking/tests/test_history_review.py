"""Defects found reviewing the history (issue 15), each shown by a test: a 500 on a time UTC
cannot write, the GeoJSON export's last feature written on the event loop, a drawn range whose
size nothing bounded, a retention run that `--days nan` turned into deleting everything on
PostgreSQL, and a draining replica held for as long as an insert hangs."""

import asyncio
import threading
import time

import pytest
from django.core.management import CommandError, call_command

from tracking import exports, history_views
from tracking.history_writer import HistoryWriter, Row
from tracking.models import StoredPosition
from tracking.tests.test_history_views import T0, body_of, store

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/teams/alpha/history/export.csv",
        "/teams/alpha/history/export.gpx",
        "/teams/alpha/history/export.geojson",
        "/api/v1/teams/alpha/export.csv",
        "/api/v1/teams/alpha/export.geojson",
    ],
)
@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B05:00",  # 31 December of year 0 in UTC
        "until=9999-12-31T23:00:00-05:00",  # year 10000 in UTC
    ],
)
def test_a_time_outside_the_years_utc_can_write_is_a_400_not_a_500(client, world, path, query):
    client.force_login(world.ann)
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400, body_of(response)[:200]


def test_the_exports_last_piece_is_written_off_the_event_loop():
    """GeoJSON writes its last worker's `times` in end(): a string per point (a week at one a
    second took seconds), which must not hold the loop that carries the live feed."""
    threads = []

    class Writer:
        by_worker = True

        def begin(self):
            return ""

        def write(self, rows, names):
            return ""

        def end(self, names):
            threads.append(threading.get_ident())
            return ""

    async def chunks():
        return
        yield

    class Names:
        names: dict = {}

    async def run():
        async for _ in exports._stream(Writer(), chunks(), Names()):
            pass
        return threading.get_ident()

    loop_thread = asyncio.run(run())
    assert threads and threads[0] != loop_thread


def test_a_drawn_range_with_too_many_positions_is_refused_not_held(client, world, monkeypatch):
    """tracks.json held a whole team's week at once: a thousand workers at one position every
    10 s is 60 M points. Past MAX_DRAW_POINTS it answers 400 and reads no further."""
    monkeypatch.setattr(history_views, "MAX_DRAW_POINTS", 5)
    store(world.a1, [(T0 + n, 41.0, 2.0) for n in range(3)])
    store(world.a2, [(T0 + n, 41.0, 2.0) for n in range(3)])
    client.force_login(world.ann)
    url = "/teams/alpha/history/tracks.json?since=2026-11-18&until=2026-11-19"
    response = client.get(url)
    assert response.status_code == 400
    assert "pick a worker" in response.content.decode()
    response = client.get(f"{url}&worker={world.a1.pk}")
    assert response.status_code == 200
    assert len(response.json()["tracks"][str(world.a1.pk)]) == 3


def test_retention_refuses_days_that_are_not_a_number(world):
    """`ts < NaN` is true of every row on PostgreSQL: `--days nan` deleted the whole history."""
    StoredPosition.objects.create(team=world.alpha, worker=world.a1, ts=time.time(), lat=1, lng=2)
    for days in ("nan", "inf"):
        with pytest.raises(CommandError):
            call_command("prune_history", "--days", days)
    assert StoredPosition.objects.count() == 1


class Device:
    def __init__(self):
        self.acks: list[int] = []

    async def acknowledge(self, seq):
        self.acks.append(seq)


@pytest.mark.timeout(10)
def test_a_drain_gives_up_on_an_insert_that_hangs_at_its_deadline():
    """flush_all checked its deadline only between tries: an insert hanging on a locked table
    held the drain (and the 4012 closes after it) until Kubernetes killed the replica."""
    released = threading.Event()
    writer = HistoryWriter(window=0.1, max_pending=1000, store=lambda rows: released.wait(8))
    device = Device()
    position = {"lat": 1.0, "lng": 2.0, "ts": T0, "seq": 1}
    writer.take([((device, 1), [Row(1, 1, position)])])

    async def drain():
        started = time.monotonic()
        stored = await asyncio.wait_for(writer.flush_all(0.3), 5)
        return stored, time.monotonic() - started

    try:
        stored, took = asyncio.run(drain())
    finally:
        released.set()
        writer.stop()
    assert stored is False and took < 2
    assert device.acks == [] and writer.pending_rows == 1  # kept, never acknowledged


@pytest.mark.timeout(10)
def test_the_bound_counts_the_positions_of_the_insert_under_way():
    """take() counted only the frames waiting, not the ones being inserted: during a slow
    insert a replica held twice HISTORY_MAX_PENDING, and after a failed one kept them all."""
    released = threading.Event()
    writer = HistoryWriter(window=0.1, max_pending=2, store=lambda rows: released.wait(8))
    device = Device()

    def frame(seq):
        return ((device, seq), [Row(1, 1, {"lat": 1.0, "lng": 2.0, "ts": T0 + seq, "seq": seq})])

    async def run():
        assert writer.take([frame(1), frame(2)]) == 0
        flushing = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0.1)  # the insert of both is under way
        refused = writer.take([frame(3), frame(4)])
        released.set()
        await flushing
        return refused

    try:
        refused = asyncio.run(run())
    finally:
        released.set()
        writer.stop()
    assert refused == 2
    assert device.acks == [1, 2] and writer.pending_rows == 0
