"""The Kafka layer under broker faults and races that a second review found: a broker that
stalls, comes back (with its log, or with the topic made anew), a flush at a bad moment, a
partition read again from below where it was read before."""

import asyncio
import logging
import os
import signal
import threading
import time

import psutil
import pytest
from asgiref.sync import sync_to_async
from confluent_kafka import KafkaException

import tracking.layers.kafka as kafka_module
from deploy.tansu import KafkaBroker
from teamtrack import control
from tracking.layers.kafka import KafkaChannelLayer
from tracking.layers.utils import partition_for
from tracking.tests.kafka_broker import PARTITIONS, kafka_broker  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def stalled_broker():
    """A broker of the test's own, and a way to stall it (SIGSTOP: a GC pause, a full disk)."""
    with KafkaBroker() as broker:
        stalled = []

        def stall():
            os.kill(broker.process.pid, signal.SIGSTOP)
            stalled.append(True)

        broker.stall = stall
        try:
            yield broker
        finally:
            if stalled:
                os.kill(broker.process.pid, signal.SIGCONT)


async def test_revocations_do_not_hold_a_sync_view_while_the_broker_stalls(
    stalled_broker, monkeypatch
):
    """Deleting a team revokes each worker from a sync view (one thread for every sync view
    under daphne): none may wait for the broker."""
    layer = KafkaChannelLayer(**stalled_broker.layer_config(), topic="revocations")
    monkeypatch.setattr(control, "get_channel_layer", lambda: layer)
    await layer.new_channel()  # the server's layer is running

    def delete_team_of_five():
        for worker_id in range(5):
            control.close_worker_sockets(worker_id)

    stalled_broker.stall()
    started = time.monotonic()
    await sync_to_async(delete_team_of_five)()
    assert time.monotonic() - started < 1.0
    await layer.flush()


def test_a_revocation_the_broker_never_took_is_logged(stalled_broker, monkeypatch, caplog):
    """From a thread without an event loop (a management command): the loop's clients close
    with the loop, and say what the broker never took."""
    layer = KafkaChannelLayer(**stalled_broker.layer_config(), topic="revocations")
    monkeypatch.setattr(control, "get_channel_layer", lambda: layer)
    real_connect = kafka_module._LoopLayer._connect

    def connect_then_the_broker_stalls(self):
        real_connect(self)
        stalled_broker.stall()

    monkeypatch.setattr(kafka_module._LoopLayer, "_connect", connect_then_the_broker_stalls)
    worker = threading.Thread(target=control.close_worker_sockets, args=(42,))
    worker.start()
    worker.join(20)
    assert not worker.is_alive()
    assert "closed with 1 records the broker never took" in caplog.text
    assert "a record for g:relays was not written" in caplog.text


async def test_a_flush_while_the_broker_stalls_fails_what_waits_for_it(stalled_broker):
    layer = KafkaChannelLayer(
        **stalled_broker.layer_config(),
        topic="purge",
        producer_config={"message.timeout.ms": 60_000},
    )
    await layer.new_channel()
    stalled_broker.stall()
    sending = asyncio.ensure_future(
        layer.group_send_many([("team.1", {"type": "x"}), ("team.2", {"type": "x"})])
    )
    await asyncio.sleep(0.5)  # in flight (or queued) to the stalled broker
    await layer.flush()
    done, _ = await asyncio.wait([sending], timeout=5)
    assert done, "group_send_many still waits after the flush"
    with pytest.raises(KafkaException):
        sending.result()


async def test_a_probe_after_an_outage_that_lost_nothing_delivers_nothing_twice(replicas, caplog):
    sender, holder = replicas(), replicas()
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    # One record batch of ten: tansu's end offset then points inside it.
    await sender.group_send_many([("team.1", {"type": "x", "n": n}) for n in range(10)])
    got = [(await asyncio.wait_for(holder.receive(channel), 5))["n"] for _ in range(10)]
    assert got == list(range(10))
    loop_layer = holder._layer()
    loop_layer.broker_lost = True  # a network blip; the broker's log is intact
    await asyncio.sleep(1.5)  # the polling thread probes and finds it back
    assert not loop_layer.broker_lost
    with pytest.raises(TimeoutError):
        message = await asyncio.wait_for(holder.receive(channel), 1)
        pytest.fail(f"delivered again after the probe: {message}")
    assert "made anew" not in caplog.text and "restarted at offset" not in caplog.text


async def test_an_inbox_never_read_from_receives_again_after_the_topic_is_made_anew(
    replicas,
    kafka_broker,  # noqa: F811
):
    sender, holder = replicas(), replicas()
    inbox = partition_for(holder._layer().process, PARTITIONS)
    neighbour = next(
        f"team.{n}" for n in range(1, 10_000) if partition_for(f"team.{n}", PARTITIONS) == inbox
    )
    for n in range(300):  # another team's records on the holder's inbox partition
        await sender.group_send_many([(neighbour, {"type": "x", "n": n})])
    channel = await holder.new_channel()  # its inbox is read from ~300, nothing came yet
    kafka_broker.restart()  # in memory: the topic is made anew, offsets from 0
    loop = asyncio.get_running_loop()
    started, n = loop.time(), 0
    while True:
        n += 1
        try:
            await sender.send(channel, {"type": "x", "n": n})
            await asyncio.wait_for(holder.receive(channel), 0.5)
        except Exception:
            assert loop.time() - started < 40, "the inbox stayed deaf after the broker came back"
            continue
        break


async def test_a_flush_during_the_first_start_leaves_no_client_connected(
    replicas,
    kafka_broker,  # noqa: F811
    monkeypatch,
):
    real_ensure_topic = kafka_module.ensure_topic

    def slow_ensure_topic(*args):
        time.sleep(1)
        return real_ensure_topic(*args)

    monkeypatch.setattr(kafka_module, "ensure_topic", slow_ensure_topic)
    process = psutil.Process()

    def broker_connections() -> int:
        return sum(
            1
            for c in process.net_connections("tcp")
            if c.raddr and c.raddr.port == kafka_broker.port and c.status == "ESTABLISHED"
        )

    before = broker_connections()
    layer = replicas()
    loop_layer = layer._layer()
    starting = asyncio.ensure_future(layer.new_channel())
    await asyncio.sleep(0.2)
    await layer.flush()
    with pytest.raises(RuntimeError):
        await starting
    await asyncio.sleep(1.0)
    assert (loop_layer.producer, loop_layer.consumer) == (None, None)
    assert broker_connections() <= before


def colliding_groups(avoid: set[int]) -> tuple[str, str]:
    """Two team groups on one partition, not one of `avoid`."""
    by_partition: dict[int, str] = {}
    for team_id in range(1, 10_000):
        group = f"team.{team_id}"
        partition = partition_for(group, PARTITIONS)
        if partition in avoid:
            continue
        if partition in by_partition:
            return by_partition[partition], group
        by_partition[partition] = group
    raise AssertionError("no two groups share a partition")


async def test_a_partition_read_again_from_a_lower_fence_is_no_log_restart(replicas, caplog):
    """A's first member wrote its fence, B's member read on past it and left; A's partition is
    then read again from A's fence, below what was read for B: no restart, and a second A
    member that joined later still gets nothing sent before it joined."""
    caplog.set_level(logging.WARNING)
    sender, holder = replicas(), replicas(capacity=1000)
    loop_layer = holder._layer()
    m_b, m_a, m_a2 = [await holder.new_channel() for _ in range(3)]
    await sender.new_channel()
    group_a, group_b = colliding_groups(
        {partition_for(layer._layer().process, PARTITIONS) for layer in (sender, holder)}
    )
    await holder.group_add(group_b, m_b)

    real_fence, paused, resume = loop_layer._fence, asyncio.Event(), asyncio.Event()

    async def fence_then_wait(group, partition):
        offset = await real_fence(group, partition)
        if group == group_a and not paused.is_set():
            paused.set()
            await resume.wait()
        return offset

    loop_layer._fence = fence_then_wait
    adding_a = asyncio.ensure_future(holder.group_add(group_a, m_a))
    await paused.wait()
    await sender.group_send_many([(group_a, {"type": "x", "n": "a-early"})])
    await sender.group_send_many([(group_b, {"type": "x", "n": "b"})])
    assert (await asyncio.wait_for(holder.receive(m_b), 5))["n"] == "b"
    await holder.group_discard(group_b, m_b)  # the partition is given up

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, loop_layer.handover.acquire)  # hold the reading
    await loop.run_in_executor(None, loop_layer.handover.acquire)
    resume.set()
    await adding_a  # read again from A's fence, below the offsets read for B
    await holder.group_add(group_a, m_a2)  # its fence is after "a-early"
    await sender.group_send_many([(group_a, {"type": "x", "n": "a-late"})])
    loop_layer.handover.release()
    loop_layer.handover.release()

    assert (await asyncio.wait_for(holder.receive(m_a), 5))["n"] == "a-early"
    first = (await asyncio.wait_for(holder.receive(m_a2), 5))["n"]
    assert first == "a-late", f"a member got {first!r}, sent before it joined"
    assert "restarted at offset" not in caplog.text
