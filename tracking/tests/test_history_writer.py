"""The history writer: a frame is acknowledged only once its positions are committed; a failed
insert keeps them, in order; its memory is bounded by refusing (never dropping) frames; resends
are stored once; the live feed never waits for the database."""

import asyncio
import sqlite3
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from teams.models import Team, Worker
from tracking import metrics
from tracking.devices import DeviceSide
from tracking.history_writer import HistoryWriter, Row, insert_rows
from tracking.models import StoredPosition
from tracking.outage import Outage
from tracking.state import InMemoryRelayState
from tracking.tests.test_devices import Device

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


class Store:
    """The writer's real insert, which can be made to fail or to wait (a slow database)."""

    def __init__(self):
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, rows):
        self.gate.wait(10)
        if self.failing:
            raise ConnectionError("the database is down")
        insert_rows(rows)


@pytest.fixture
def worker():
    team = Team.objects.create(slug="north", name="North")
    return Worker.objects.create(team=team, name="Ann")


def position(ts, lat=41.0):
    return {"lat": lat, "lng": 2.0, "ts": ts, "seq": int(ts)}


def frame(device, worker, *timestamps):
    key = (device, int(timestamps[-1]))
    return key, [Row(worker.team_id, worker.pk, position(ts)) for ts in timestamps]


async def nothing(batches):
    pass


async def device_side(worker, writer, publish=nothing):
    """A device side storing through `writer`, with `worker`'s device connected; its live
    steps take everything (or as `publish` says)."""
    side = DeviceSide(
        state=InMemoryRelayState(),
        state_outage=Outage("state"),
        layer_outage=Outage("channel layer"),
        steps=[publish, nothing],
        history=writer,
    )
    device = Device()
    await side.worker_connected(device, team_id=worker.team_id, worker_id=worker.pk, name="Ann")
    return side, device


def receive(side, device, worker, seq, timestamps):
    side.positions_received(
        device,
        team_id=worker.team_id,
        worker_id=worker.pk,
        positions=[position(ts) for ts in timestamps],
        ack_seq=seq,
    )


@sync_to_async
def stored(worker) -> list[float]:
    return list(
        StoredPosition.objects.filter(worker=worker).order_by("ts").values_list("ts", flat=True)
    )


async def test_a_frame_is_acknowledged_only_once_its_positions_are_committed(worker):
    store = Store()
    writer = HistoryWriter(window=0.1, max_pending=100, store=store)
    device = Device()
    store.gate.clear()  # a slow database
    writer.take([frame(device, worker, 100.0, 101.0)])
    flushing = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(0.2)
    assert device.acks == [] and await stored(worker) == []
    store.gate.set()
    assert await flushing is True
    assert device.acks == [101]
    assert await stored(worker) == [100.0, 101.0]  # every position of the frame, not the newest
    writer.stop()


async def test_a_failed_insert_keeps_its_frames_in_order_and_acknowledges_none(worker):
    store = Store()
    writer = HistoryWriter(window=0.1, max_pending=100, store=store)
    device = Device()
    writer.take([frame(device, worker, 100.0)])
    store.failing = True
    assert await writer.flush() is False
    writer.take([frame(device, worker, 102.0)])  # taken while the database was down
    assert await writer.flush() is False
    assert device.acks == [] and await stored(worker) == []
    assert writer.pending_rows == 2
    store.failing = False
    assert await writer.flush() is True
    assert device.acks == [100, 102]
    assert await stored(worker) == [100.0, 102.0]
    writer.stop()


async def test_past_its_bound_the_writer_refuses_frames_and_never_acknowledges_them(worker):
    store = Store()
    store.failing = True
    writer = HistoryWriter(window=0.1, max_pending=5, store=store)
    device = Device()
    refused = metrics.HISTORY_REFUSED_FRAMES._value.get()
    assert writer.take([frame(device, worker, 100.0, 101.0)]) == 0
    assert await writer.flush() is False
    # Frame by frame: the first fits (4 rows), the next two would pass 5 and are refused.
    later = [frame(device, worker, 102.0, 103.0), frame(device, worker, 104.0, 105.0)]
    assert writer.take([*later, frame(device, worker, 106.0)]) == 2
    assert writer.pending_rows == 4
    assert metrics.HISTORY_REFUSED_FRAMES._value.get() == refused + 2
    store.failing = False
    assert await writer.flush() is True
    assert device.acks == [101, 103]  # the refused frames' device was never told they are safe
    # ... and their resends, once there is room, are stored and acknowledged
    assert writer.take([frame(device, worker, 104.0, 105.0), frame(device, worker, 106.0)]) == 0
    assert await writer.flush() is True
    assert device.acks == [101, 103, 105, 106]
    assert await stored(worker) == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0]
    writer.stop()


async def test_a_resend_is_stored_once(worker):
    writer = HistoryWriter(window=0.1, max_pending=100)
    device = Device()
    writer.take([frame(device, worker, 100.0, 101.0)])
    assert await writer.flush()
    writer.take([frame(device, worker, 100.0, 101.0), frame(device, worker, 101.0, 102.0)])
    assert await writer.flush()
    assert device.acks == [101, 101, 102]
    assert await stored(worker) == [100.0, 101.0, 102.0]
    writer.stop()


async def test_an_insert_larger_than_one_statement_stores_every_row_once(worker):
    """SQLite inserts many rows a statement, a power of two of them within its parameter limit
    (so that few distinct statements are ever compiled and cached): with the limit lowered to 2
    rows a statement, 7 rows (a resend among them) still go in, once each."""
    statement_rows = []

    def count_rows(execute, sql, params, many, context):
        if sql.startswith("INSERT OR IGNORE"):
            statement_rows.append(len(params) // 10)
        return execute(sql, params, many, context)

    @sync_to_async
    def insert(rows, limit=None):
        if connection.vendor != "sqlite":
            return insert_rows(rows)
        connection.ensure_connection()
        raw = connection.connection
        before = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit or before)
        try:
            with connection.execute_wrapper(count_rows):
                insert_rows(rows)
        finally:
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)

    rows = [Row(worker.team_id, worker.pk, position(ts)) for ts in (100.0, 101.0, 102.0)]
    await insert(rows, limit=25)
    more = [Row(worker.team_id, worker.pk, position(ts)) for ts in (102.0, 103.0, 104.0, 105.0)]
    await insert(more, limit=25)
    assert await stored(worker) == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]
    seven = [Row(worker.team_id, worker.pk, position(200.0 + i)) for i in range(7)]
    await insert(seven)
    if connection.vendor == "sqlite":
        assert statement_rows == [2, 1, 2, 2, 4, 2, 1]


async def test_positions_of_a_worker_deleted_meanwhile_do_not_block_the_others(worker):
    other = await sync_to_async(Worker.objects.create)(team_id=worker.team_id, name="Bo")
    writer = HistoryWriter(window=0.1, max_pending=100)
    ann, bo = Device(), Device()
    writer.take([frame(ann, worker, 100.0), frame(bo, other, 100.0)])
    await sync_to_async(other.delete)()
    assert await writer.flush() is True
    assert ann.acks == [100]
    assert await stored(worker) == [100.0]
    writer.stop()


async def test_the_live_feed_never_waits_for_the_database(worker, settings):
    """With the database stuck, the device side still publishes every window; the acks come
    once the database takes the positions."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    store = Store()
    store.gate.clear()
    writer = HistoryWriter(window=0.1, max_pending=100, store=store)
    published = []

    async def publish(batches):
        published.append({t: dict(b.positions) for t, b in batches.items()})

    side, device = await device_side(worker, writer, publish)
    flushing = None
    for second in range(3):
        receive(side, device, worker, 100 + second, [100.0 + second])
        async with asyncio.timeout(1):
            assert await side.hand_off() is True  # published without waiting for the insert
        flushing = flushing or asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0.05)
    assert [p[worker.team_id][worker.pk]["ts"] for p in published] == [100.0, 101.0, 102.0]
    assert device.acks == []
    store.gate.set()
    await flushing
    await writer.flush()
    assert device.acks == [100, 101, 102]
    assert await stored(worker) == [100.0, 101.0, 102.0]
    writer.stop()


async def test_a_late_buffered_frame_is_stored_though_the_map_has_newer(worker, settings):
    """A device's buffer sent after its live positions is older than what the map shows: the
    live feed ignores it, the history keeps it."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    writer = HistoryWriter(window=0.1, max_pending=100)
    side, device = await device_side(worker, writer)
    for seq, timestamps in [(1, [200.0]), (2, [150.0, 160.0])]:
        receive(side, device, worker, seq, timestamps)
    await side.hand_off()
    await writer.flush()
    assert device.acks == [1, 2]
    assert await stored(worker) == [150.0, 160.0, 200.0]
    writer.stop()


async def test_a_long_outage_keeps_a_bounded_number_of_waiting_positions(
    worker, settings, monkeypatch
):
    """Frames kept through a live outage carry their positions for the history: past
    MAX_WAITING_ROWS the oldest frames are forgotten (never acknowledged), not the memory."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    monkeypatch.setattr("tracking.devices.MAX_WAITING_ROWS", 7)
    writer = HistoryWriter(window=0.1, max_pending=100)
    failing = True

    async def publish(batches):
        if failing:
            raise ConnectionError("the channel layer is down")

    side, device = await device_side(worker, writer, publish)
    for seq in range(1, 5):  # four frames of three positions
        receive(side, device, worker, seq, [100.0 + 10 * seq + i for i in range(3)])
        assert await side.hand_off() is False
    assert side.pending[worker.team_id].rows == 6
    failing = False
    assert await side.hand_off() is True
    await writer.flush()
    assert device.acks == [3, 4]  # the first two frames were forgotten, never acknowledged
    assert len(await stored(worker)) == 6
    writer.stop()
