"""An ack is a promise: no ack before every step took the position, on every layer.

Each test fails one step of the hand-off on a real layer and state (the channel layer's publish,
the shared state's write, or the Kafka broker's acknowledgement after the send returned), checks
that the device gets no ack however often it resends, lifts the fault, and checks that the
resend is then acknowledged, relayed to the team's map, and in a new manager's snapshot.
"""

import asyncio
import os
import signal
import time

import pytest
from channels.layers import get_channel_layer

from tracking import feed
from tracking.models import StoredPosition
from tracking.relay import get_relay

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(40),
]

SILENCE = 0.6  # seconds (six windows) in which no ack may come while a step fails


class InjectedFault(ConnectionError):
    pass


class Fault:
    """A switch for one step: while `on`, the step raises as its backend would when down."""

    def __init__(self):
        self.on = True
        self.hits = 0

    def check(self):
        if self.on:
            self.hits += 1
            raise InjectedFault("injected")


def fail_layer_publish(monkeypatch, fault: Fault) -> None:
    """Make the channel layer refuse the team feed's positions (not presence or control)."""
    layer = get_channel_layer()
    for name in ("group_send", "group_send_many"):
        original = getattr(layer, name, None)
        if original is None:
            continue

        def failing(*args, _original=original, _name=name):
            messages = args[0] if _name == "group_send_many" else [args]
            if any(message["type"] == feed.POSITIONS_BATCH for _, message in messages):
                fault.check()
            return _original(*args)

        monkeypatch.setattr(layer, name, failing)


def fail_state_write(monkeypatch, fault: Fault) -> None:
    state = get_relay().state
    original = state.store_latest

    async def failing(batches):
        fault.check()
        return await original(batches)

    monkeypatch.setattr(state, "store_latest", failing)


def frame(lat: float, seq: int, ts: float) -> dict:
    return {"lat": lat, "lng": 2.16, "ts": ts, "seq": seq}


async def acks_within(worker, seconds: float) -> list[int]:
    """Return the seqs acknowledged to a worker within `seconds`."""
    acks, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        # Waiting with receive() would cancel the application when it times out.
        if await worker.nothing(min(left, 0.05)):
            continue
        received = await worker.receive()
        if received["type"] == "ack":
            acks.append(received["seq"])
    return acks


async def expect_taken_after_the_fault(world, worker, manager, open_manager, fault, sent):
    """While the fault is on no resend is acknowledged; once it is off the resend is
    acknowledged, on the map, and in a new manager's snapshot."""
    await worker.send(sent)
    assert await acks_within(worker, SILENCE) == []
    await worker.send(sent)  # the device resends what was not acknowledged
    assert await acks_within(worker, SILENCE) == []
    assert fault.hits >= 2  # the fault was really in the way, more than once
    fault.on = False
    await worker.send(sent)
    assert sent["seq"] in await acks_within(worker, 2.0)
    live = await manager.receive_type("positions")
    assert [(p["id"], p["lat"]) for p in live["positions"]] == [(world.a1.id, sent["lat"])]
    late = await open_manager("alpha", world.cookies["ann"])
    snapshot = await late.receive_type("snapshot")
    alice = next(w for w in snapshot["workers"] if w["id"] == world.a1.id)
    assert (alice["lat"], alice["ts"]) == (sent["lat"], sent["ts"])


async def open_pair(world, open_worker, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await manager.receive_type("presence")
    return worker, manager


@pytest.mark.parametrize("fail_step", [fail_layer_publish, fail_state_write])
async def test_no_ack_while_a_step_fails(
    layer_kind, world, open_worker, open_manager, monkeypatch, fail_step
):
    worker, manager = await open_pair(world, open_worker, open_manager)
    fault = Fault()
    fail_step(monkeypatch, fault)
    sent = frame(51.0, seq=7, ts=time.time())
    await expect_taken_after_the_fault(world, worker, manager, open_manager, fault, sent)


async def test_a_batch_that_failed_is_retried_without_a_resend(
    layer_kind, world, open_worker, open_manager, monkeypatch
):
    """The relay keeps a failed batch and hands it on at the next tick: a device that never
    resends is still acknowledged, and its position reaches the map, once the fault is gone."""
    worker, manager = await open_pair(world, open_worker, open_manager)
    fault = Fault()
    fail_layer_publish(monkeypatch, fault)
    await worker.send(frame(53.0, seq=9, ts=time.time()))
    assert await acks_within(worker, SILENCE) == []
    fault.on = False
    assert await acks_within(worker, 2.0) == [9]
    live = await manager.receive_type("positions")
    assert live["positions"][0]["lat"] == 53.0


async def test_a_duplicate_of_a_pending_position_waits_for_its_original(
    layer_kind, world, open_worker, open_manager, monkeypatch
):
    """A newer frame that is refused as a duplicate (the same seq) is acknowledged only with
    the original, not by whichever tick comes first."""
    worker, manager = await open_pair(world, open_worker, open_manager)
    fault = Fault()
    fail_state_write(monkeypatch, fault)
    now = time.time()
    await worker.send(frame(54.0, seq=10, ts=now))
    await asyncio.sleep(0.25)  # the original's batch has failed at least once
    await worker.send(frame(54.0, seq=10, ts=now))
    await worker.send({"type": "batch", "positions": [frame(54.0, seq=10, ts=now - 1)]})
    assert await acks_within(worker, SILENCE) == []
    fault.on = False
    assert set(await acks_within(worker, 2.0)) == {10}


@pytest.mark.parametrize("layer_kind", ["kafka"], indirect=True)
async def test_no_ack_until_the_kafka_broker_acknowledged_the_write(
    layer_kind, kafka_broker, world, open_worker, open_manager
):
    """The Kafka producer's send returns at once; the record's delivery report fails seconds
    later when the broker does not answer (stopped with SIGSTOP). The ack must wait for it."""
    worker, manager = await open_pair(world, open_worker, open_manager)
    layer = get_channel_layer()
    sent = frame(55.0, seq=11, ts=time.time())
    os.kill(kafka_broker.process.pid, signal.SIGSTOP)
    try:
        await worker.send(sent)
        # message.timeout.ms is 3 s: the first delivery report fails by then.
        assert await acks_within(worker, 4.5) == []
        assert layer.metrics["delivery_failed"] >= 1
    finally:
        os.kill(kafka_broker.process.pid, signal.SIGCONT)
    await worker.send(sent)
    assert sent["seq"] in await acks_within(worker, 8.0)
    live = await manager.receive_type("positions", timeout=5)
    assert live["positions"][0]["lat"] == 55.0
    late = await open_manager("alpha", world.cookies["ann"])
    snapshot = await late.receive_type("snapshot")
    alice = next(w for w in snapshot["workers"] if w["id"] == world.a1.id)
    assert alice["lat"] == 55.0


# ---------------------------------------------------------------- cumulative acks (tracking.acks)


async def test_frames_safe_within_the_ack_interval_share_one_cumulative_ack(
    world, open_worker, open_manager, settings
):
    """The first frame is acknowledged at once; the two after it, sent in later windows within
    the interval, by one ack of the highest seq at its end, and no ack of the middle one."""
    settings.TEAMTRACK_ACK_INTERVAL = 1.0
    worker, manager = await open_pair(world, open_worker, open_manager)
    now = time.time()
    await worker.send(frame(56.0, seq=21, ts=now))
    first = await acks_within(worker, 0.5)
    assert first == [21]
    await worker.send(frame(56.1, seq=22, ts=now + 0.1))
    await asyncio.sleep(0.15)
    await worker.send(frame(56.2, seq=23, ts=now + 0.2))
    assert await acks_within(worker, 1.2) == [23]


async def test_with_interval_zero_every_frame_made_safe_is_acknowledged(
    world, open_worker, open_manager, settings
):
    settings.TEAMTRACK_ACK_INTERVAL = 0.0
    worker, manager = await open_pair(world, open_worker, open_manager)
    now = time.time()
    for seq in (31, 32, 33):
        await worker.send(frame(57.0 + seq / 100, seq=seq, ts=now + seq / 100))
        assert await acks_within(worker, 0.4) == [seq]


async def test_a_frame_over_the_rate_limit_stops_the_sockets_acks(
    world, open_worker, open_manager, settings
):
    """A frame dropped unread may have any seq: once one was, the socket acknowledges nothing
    above what it took before, and the device's resend on a new socket is acknowledged."""
    settings.TEAMTRACK_ACK_INTERVAL = 0.0
    settings.TEAMTRACK_WORKER_FRAME_BURST = 2
    settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND = 0.5
    worker, manager = await open_pair(world, open_worker, open_manager)
    now = time.time()
    await worker.send(frame(58.0, seq=41, ts=now))
    assert await acks_within(worker, 0.4) == [41]
    await worker.send(frame(58.1, seq=42, ts=now + 0.1))  # the burst's last
    await worker.send(frame(58.2, seq=43, ts=now + 0.2))  # dropped unread
    error = await worker.receive_type("error")
    assert error["code"] == "rate_limited"
    assert await acks_within(worker, 0.6) == [42]  # taken before the drop
    await asyncio.sleep(2.1)  # the budget is back
    await worker.send(frame(58.3, seq=44, ts=now + 0.3))
    assert await acks_within(worker, 0.6) == []  # 43 may have been lower: nothing past 42
    await worker.close()
    again = await open_worker(world.tokens[world.a1.id])
    await asyncio.sleep(2.1)  # the worker's budget, shared by its sockets, is back
    resent = [frame(58.2, seq=43, ts=now + 0.2), frame(58.3, seq=44, ts=now + 0.3)]
    await again.send({"type": "batch", "positions": resent})
    assert await acks_within(again, 0.6) == [44]


async def test_two_frames_with_the_same_seq_in_one_window_are_both_stored_before_the_ack(
    world, open_worker, settings
):
    """A frame key waits once; the positions of both frames are kept under it."""
    settings.TEAMTRACK_ACK_INTERVAL = 0.0
    worker = await open_worker(world.tokens[world.a1.id])
    now = time.time()
    await worker.send(frame(50.0, seq=7, ts=now - 1))
    await worker.send(frame(50.5, seq=7, ts=now))  # the same window: one TeamBatch
    assert await acks_within(worker, 1.0) == [7]
    stored = await asyncio.to_thread(
        lambda: sorted(StoredPosition.objects.filter(worker=world.a1).values_list("ts", flat=True))
    )
    assert stored == [now - 1, now]


@pytest.mark.parametrize("history", [False, True])
async def test_a_closed_socket_leaves_no_ack_held_back(world, open_worker, settings, history):
    """Frames a socket sent just before it closed are made safe after it: no ack is kept for
    the closed socket (nor sent to it)."""
    settings.TEAMTRACK_ACK_INTERVAL = 1.0
    settings.TEAMTRACK_HISTORY = history
    worker = await open_worker(world.tokens[world.a1.id])
    now = time.time()
    await worker.send(frame(50.0, seq=1, ts=now))
    assert (await worker.receive_type("ack"))["seq"] == 1
    await worker.send(frame(50.1, seq=2, ts=now + 0.1))
    await worker.close()
    await asyncio.sleep(0.3)  # the hand-off, and the history writer's flush
    assert get_relay().due_acks.sockets == {}


async def test_an_error_frame_stops_the_sockets_acks_past_the_frames_before_it(
    world, open_worker, settings
):
    """An error frame names no seq: the device cannot tell which frame it answered, so no ack
    may cover the refused frame, whatever seq it had."""
    settings.TEAMTRACK_ACK_INTERVAL = 0.0
    worker = await open_worker(world.tokens[world.a1.id])
    now = time.time()
    await worker.send(frame(50.0, seq=1, ts=now))
    assert await acks_within(worker, 0.5) == [1]
    await worker.send({"type": "batch", "positions": [frame(50.1, seq=2, ts=now), {"lat": 99}]})
    assert (await worker.receive_type("error"))["code"] != ""
    await worker.send(frame(50.2, seq=3, ts=now + 0.2))
    assert await acks_within(worker, 0.6) == []
