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
