"""What only the Kafka layer promises: reading by interest, drops instead of stalls, recovery."""

import asyncio
import threading
import time
import uuid

import psutil
import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import channel_layers
from confluent_kafka import KafkaException, Producer

import tracking.layers.kafka as kafka_module
import tracking.relay as relay_module
from tracking import health
from tracking.devices import TeamBatch
from tracking.layers.kafka import (
    HANDOVER_BATCHES,
    READ_BATCH,
    KafkaChannelLayer,
    MessageTooLarge,
)
from tracking.layers.utils import partition_for
from tracking.relay import Relay, RelayUnavailable
from tracking.state import InMemoryRelayState
from tracking.tests.clock import settle
from tracking.tests.kafka_broker import PARTITIONS, kafka_broker  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(60)


def groups_apart(count: int, avoid: set[int]) -> list[str]:
    """Return team groups whose partitions differ from each other and from `avoid`."""
    groups, taken = [], set(avoid)
    for team_id in range(1, 10_000):
        partition = partition_for(f"team.{team_id}", PARTITIONS)
        if partition not in taken:
            groups.append(f"team.{team_id}")
            taken.add(partition)
            if len(groups) == count:
                return groups
    raise AssertionError("not enough partitions")


async def test_a_replica_reads_only_its_inbox_and_the_partitions_of_its_groups(replicas):
    watching, idle = replicas(), replicas()
    manager = await watching.new_channel()
    await idle.new_channel()
    inboxes = {partition_for(layer._layer().process, PARTITIONS) for layer in (watching, idle)}
    watched, unwatched = groups_apart(2, inboxes)
    await watching.group_add(watched, manager)

    reads = watching._layer().read_partitions()
    assert reads == {
        partition_for(watching._layer().process, PARTITIONS),
        partition_for(watched, PARTITIONS),
    }
    assert partition_for(unwatched, PARTITIONS) not in reads
    assert partition_for(watched, PARTITIONS) not in idle._layer().read_partitions()
    # Leaving the group stops the reading.
    await watching.group_discard(watched, manager)
    assert partition_for(watched, PARTITIONS) not in watching._layer().read_partitions()


async def test_group_messages_fan_out_locally_from_one_record(replicas):
    sender, holder = replicas(), replicas()
    managers = [await holder.new_channel() for _ in range(20)]
    for channel in managers:
        await holder.group_add("team.1", channel)
    await sender.group_send("team.1", {"type": "positions.batch", "text": "x"})
    received = await asyncio.gather(
        *(asyncio.wait_for(holder.receive(channel), 5) for channel in managers)
    )
    assert all(message["text"] == "x" for message in received)


async def test_a_full_producer_queue_drops_group_sends_and_refuses_sends(kafka_broker, replicas):  # noqa: F811
    tiny = replicas(producer_config={"queue.buffering.max.messages": 5, "linger.ms": 1000})
    other = replicas()
    remote = await other.new_channel()
    for _ in range(20):
        await tiny.group_send("team.1", {"type": "x"})  # never raises, never waits
    assert tiny.metrics["group_send_dropped"] >= 10
    with pytest.raises(ChannelFull):
        for _ in range(20):
            await tiny.send(remote, {"type": "x"})


async def test_a_full_local_channel_refuses_sends(replicas):
    layer = replicas(capacity=3)
    channel = await layer.new_channel()
    for _ in range(3):
        await layer.send(channel, {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "x"})


async def test_the_layer_recovers_by_itself_when_the_broker_returns(
    replicas,
    kafka_broker,  # noqa: F811
    caplog,
):
    sender, holder = replicas(), replicas()
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    await sender.group_send("team.1", {"type": "x", "n": 0})
    assert (await asyncio.wait_for(holder.receive(channel), 5))["n"] == 0

    kafka_broker.stop()
    with pytest.raises((KafkaException, TimeoutError)):
        await asyncio.wait_for(sender.ping(), 5)
    await asyncio.sleep(2)  # long enough for the clients to notice
    assert sender._layer().broker_lost
    kafka_broker.start()  # same port, empty: the topic must be created again

    loop = asyncio.get_running_loop()
    started = loop.time()
    n = 0
    while True:
        n += 1
        await sender.group_send("team.1", {"type": "x", "n": n})
        try:
            message = await asyncio.wait_for(holder.receive(channel), 0.5)
        except TimeoutError:
            assert loop.time() - started < 30, "the layer did not recover within 30 s"
            continue
        break
    assert message["n"] > 0
    await sender.ping()
    assert await health.run_check("layer", health.check_channel_layer(sender)) == "ok"
    lost = [r for r in caplog.records if r.getMessage().startswith("Kafka broker lost")]
    assert 1 <= len(lost) <= 2, "the outage is logged once per client set, not per error"
    print(f"delivering again {loop.time() - started:.1f} s after the broker came back")


async def test_readiness_reports_the_broker_outage(replicas, kafka_broker):  # noqa: F811
    layer = replicas()
    await layer.new_channel()
    assert await health.run_check("layer", health.check_channel_layer(layer)) == "ok"
    kafka_broker.stop()
    try:
        assert await health.run_check("layer", health.check_channel_layer(layer)) == "unavailable"
    finally:
        kafka_broker.start()


def test_each_event_loop_gets_its_own_clients(kafka_broker):  # noqa: F811
    layer = KafkaChannelLayer(**kafka_broker.layer_config(), topic=f"test-{uuid.uuid4().hex[:8]}")

    async def round_trip():
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "x"})
        message = await asyncio.wait_for(layer.receive(channel), 5)
        clients = layer._layer()
        await layer.flush()
        return message, clients

    first, first_clients = asyncio.run(round_trip())
    second, second_clients = asyncio.run(round_trip())
    assert first == second == {"type": "x"}
    assert first_clients is not second_clients


def test_test_config_is_honoured(settings, kafka_broker):  # noqa: F811
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tracking.layers.kafka.KafkaChannelLayer",
            "CONFIG": {"bootstrap_servers": "production:9092", "topic": "live"},
            "TEST_CONFIG": {"bootstrap_servers": kafka_broker.bootstrap, "topic": "test-topic"},
        }
    }
    layer = channel_layers.make_test_backend("default")
    assert (layer.bootstrap_servers, layer.topic) == (kafka_broker.bootstrap, "test-topic")


@pytest.fixture
async def kafka_loop_layer(monkeypatch):
    """A Kafka layer's per-loop half with no broker: partition commands wait on a gate."""
    layer = KafkaChannelLayer("127.0.0.1:1")
    loop_layer = layer._layer()
    loop_layer.started = asyncio.get_running_loop().create_future()
    loop_layer.started.set_result(None)
    gate = asyncio.Event()
    commands = []

    async def command(name, partition, start=None):
        commands.append((name, partition))
        await gate.wait()

    async def fence(group, partition):
        return 0

    monkeypatch.setattr(loop_layer, "_command", command)
    monkeypatch.setattr(loop_layer, "_fence", fence)
    loop_layer.gate, loop_layer.commands_sent = gate, commands
    return layer, loop_layer


async def test_kafka_a_concurrent_group_add_waits_until_the_partition_is_read(kafka_loop_layer):
    """Two manager sockets of one team connecting at once both call group_add (watch_team's
    first_here). The second returns before the first's assignment is done, so its watch_team
    takes the snapshot before this replica reads the team's partition: what is published in
    between is missed ("Join before taking the snapshot, so that nothing sent in between is
    missed")."""
    layer, loop_layer = kafka_loop_layer
    a, b = (f"specific.{loop_layer.process}!{name}" for name in "ab")
    first = asyncio.ensure_future(layer.group_add("team.1", a))
    second = asyncio.ensure_future(layer.group_add("team.1", b))
    await settle()
    returned_early = second.done()
    loop_layer.gate.set()
    await first
    await second
    assert not returned_early


async def test_kafka_concurrent_group_adds_do_not_leave_the_partition_read_forever(
    kafka_loop_layer,
):
    """The same race counts the partition's readers twice for one group; group_discard of its
    last member takes one off, so the replica reads the team's partition after its last manager
    left (architecture: a replica reads only the partitions of the teams it watches)."""
    layer, loop_layer = kafka_loop_layer
    a, b = (f"specific.{loop_layer.process}!{name}" for name in "ab")
    adding = asyncio.gather(layer.group_add("team.1", a), layer.group_add("team.1", b))
    await settle()
    loop_layer.gate.set()
    await adding
    await layer.group_discard("team.1", a)
    await layer.group_discard("team.1", b)
    assert loop_layer.read_partitions() == set()


async def test_a_discard_while_its_add_is_pending_leaves_no_member(kafka_loop_layer):
    """A manager socket that closes while it is still joining: the discard waits for the add,
    so the channel is not left in the group and the partition not read."""
    layer, loop_layer = kafka_loop_layer
    channel = f"specific.{loop_layer.process}!a"
    adding = asyncio.ensure_future(layer.group_add("team.1", channel))
    await settle()
    discarding = asyncio.ensure_future(layer.group_discard("team.1", channel))
    await settle()
    loop_layer.gate.set()
    await adding
    await discarding
    assert "team.1" not in loop_layer.groups
    assert loop_layer.read_partitions() == set()
    assert not loop_layer.locks, "no lock outlives its users"


async def test_a_cancelled_read_does_not_leave_the_partition_read(kafka_loop_layer):
    layer, loop_layer = kafka_loop_layer
    channel = f"specific.{loop_layer.process}!a"
    adding = asyncio.ensure_future(layer.group_add("team.1", channel))
    await settle()
    adding.cancel()
    await settle()
    loop_layer.gate.set()  # the assignment completes after its caller left
    await asyncio.sleep(0.05)
    assert loop_layer.read_partitions() == set()
    assert [name for name, _ in loop_layer.commands_sent] == ["read", "unread"]


async def test_a_member_never_receives_what_was_sent_before_it_joined(replicas):
    """tansu's end offset can point inside the last record batch, and a partition that is
    already read may hold records fetched but not yet delivered: neither reaches a member that
    joined after they were sent."""
    sender, holder = replicas(), replicas()
    early = await holder.new_channel()
    # The same group twice: first on a partition nobody reads yet, then on one already read.
    for group in ("team.1", "team.1"):
        await sender.group_send_many([(group, {"type": "x", "n": n}) for n in range(200)])
        late = await holder.new_channel()
        await holder.group_add(group, late)
        await sender.group_send_many([(group, {"type": "x", "n": "after"})])
        first = await asyncio.wait_for(holder.receive(late), 5)
        assert first["n"] == "after", f"a record sent before group_add came first: {first}"
        if early not in holder._layer().groups.get(group, {}):
            await holder.group_add(group, early)


async def test_a_full_channel_drops_its_oldest_message_on_arrival(replicas):
    """The feed is latest-wins: what a slow member keeps is the newest."""
    sender, holder = replicas(), replicas(capacity=2)
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    await sender.group_send_many([("team.1", {"type": "x", "n": n}) for n in range(5)])
    for _ in range(100):
        if holder.metrics["group_receive_dropped"] == 3:
            break
        await asyncio.sleep(0.05)
    received = [(await holder.receive(channel))["n"] for _ in range(2)]
    assert received == [3, 4]


async def test_channel_capacity_patterns_apply(replicas):
    layer = replicas(channel_capacity={"small.*": 1})  # globs, as in channels_redis
    small, big = await layer.new_channel("small"), await layer.new_channel()
    await layer.send(small, {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send(small, {"type": "x"})
    for _ in range(5):
        await layer.send(big, {"type": "x"})


async def test_normal_channels_are_refused_with_a_clear_error(replicas):
    layer = replicas()
    with pytest.raises(TypeError, match="process-specific"):
        await layer.send("workers", {"type": "x"})
    with pytest.raises(TypeError, match="process-specific"):
        await layer.receive("workers")


async def test_the_spec_s_1_mb_arrives_and_more_is_a_clear_error(replicas):
    sender, holder = replicas(), replicas()
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    big = {"type": "x", "blob": b"\0" * (1_000_000 - 100)}
    await sender.group_send_many([("team.1", big)])
    assert (await asyncio.wait_for(holder.receive(channel), 10))["blob"] == big["blob"]
    too_big = {"type": "x", "blob": b"\0" * 1_000_001}
    with pytest.raises(MessageTooLarge):
        await sender.group_send("team.1", too_big)
    with pytest.raises(MessageTooLarge):
        await sender.send(channel, too_big)


async def test_a_cancelled_receive_forgets_its_channel(replicas):
    """Channels cancels a consumer's receive when the consumer leaves; nothing else would ever
    remove its queue (channels_redis' pub/sub layer makes the same assumption)."""
    layer = replicas()
    channel = await layer.new_channel()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.05)
    assert channel not in layer._layer().channels
    await layer.send(channel, {"type": "x"})  # to a channel that is gone: dropped, no queue
    assert channel not in layer._layer().channels


async def test_a_stalled_event_loop_is_handed_a_bounded_number_of_records(replicas):
    """Records read while the event loop is stuck wait in librdkafka (bounded by
    queued.max.messages.kbytes), not in the loop's callbacks."""
    sender, holder = replicas(), replicas(capacity=100_000)
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    await sender.group_send_many([("team.1", {"type": "x", "n": n}) for n in range(30_000)])
    time.sleep(4)  # noqa: ASYNC251 - the event loop stalls; the polling thread goes on
    loop = asyncio.get_running_loop()
    waiting = sum(
        len(handle._args[0])
        for handle in loop._ready
        if getattr(handle._callback, "__name__", "") == "_deliver"
    )
    assert waiting <= HANDOVER_BATCHES * READ_BATCH, f"{waiting} records handed over at once"
    for n in range(30_000):  # and every record still arrives, in order
        assert (await asyncio.wait_for(holder.receive(channel), 10))["n"] == n


def test_sync_callers_leave_no_clients_behind(kafka_broker):  # noqa: F811
    """async_to_sync from a thread without an event loop (management commands, the admin's
    revocations) makes a loop per call: its clients close with it."""
    layer = KafkaChannelLayer(**kafka_broker.layer_config(), topic=f"test-{uuid.uuid4().hex[:8]}")
    process = psutil.Process()

    def broker_connections() -> int:
        return sum(
            1
            for connection in process.net_connections("tcp")
            if connection.raddr and connection.raddr.port == kafka_broker.port
        )

    async_to_sync(layer.group_send)("team.1", {"type": "x"})  # librdkafka's own threads start
    threads, connections = process.num_threads(), broker_connections()
    for _ in range(20):
        async_to_sync(layer.group_send)("team.1", {"type": "x"})
    assert not layer._loop_layers, "every loop's clients were closed with it"
    assert process.num_threads() <= threads + 2
    assert broker_connections() <= connections + 2


async def test_a_failed_start_leaves_no_polling_thread(replicas, monkeypatch):
    layer = replicas()
    loop_layer = layer._layer()
    real_start_of = loop_layer._from
    failures = iter([KafkaException("the inbox's offsets did not come")])

    def failing_start_of(*args):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_start_of(*args)

    monkeypatch.setattr(loop_layer, "_from", failing_start_of)
    with pytest.raises(KafkaException):
        await layer.new_channel()
    await layer.new_channel()
    polling = [t for t in threading.enumerate() if t.name == f"kafka-layer-{loop_layer.process}"]
    assert len(polling) == 1


# ---------------------------------------------------------------- found by review


async def test_a_member_receives_again_after_the_topic_comes_back_empty(replicas, kafka_broker):  # noqa: F811
    """A broker that loses the topic (tansu in memory; a log cut back on Kafka) restarts its
    offsets: a member that joined at offset 2,000 must not wait for offset 2,000 again."""
    sender, holder = replicas(), replicas()
    for _ in range(4):
        await sender.group_send_many([("team.1", {"type": "x", "n": -1}) for _ in range(500)])
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    await sender.group_send_many([("team.1", {"type": "x", "n": 0})])
    assert (await asyncio.wait_for(holder.receive(channel), 5))["n"] == 0

    kafka_broker.restart()  # memory storage: the topic is made again, offsets from 0
    loop = asyncio.get_running_loop()
    started, n = loop.time(), 0
    while True:
        n += 1
        try:
            await sender.group_send_many([("team.1", {"type": "x", "n": n})])
            message = await asyncio.wait_for(holder.receive(channel), 0.5)
        except Exception:
            assert loop.time() - started < 40, "no group message 40 s after the broker came back"
            continue
        break
    assert message["n"] > 0


@pytest.fixture
def slow_start(monkeypatch):
    """The first connection takes 1 s (a TLS and SASL handshake with three brokers); count the
    consumers made."""
    real_ensure_topic, real_consumer = kafka_module.ensure_topic, kafka_module.Consumer
    consumers = []

    def slow_ensure_topic(*args):
        time.sleep(1)
        return real_ensure_topic(*args)

    def counting_consumer(config):
        consumers.append(real_consumer(config))
        return consumers[-1]

    monkeypatch.setattr(kafka_module, "ensure_topic", slow_ensure_topic)
    monkeypatch.setattr(kafka_module, "Consumer", counting_consumer)
    return consumers


async def test_a_caller_that_gives_up_on_the_start_does_not_cancel_the_others(replicas, slow_start):
    layer = replicas()
    probe = asyncio.ensure_future(asyncio.wait_for(layer.ping(), 0.3))  # readiness gives up
    await asyncio.sleep(0.05)
    relay = asyncio.ensure_future(layer.new_channel())  # a manager socket connecting meanwhile
    with pytest.raises(TimeoutError):
        await probe
    assert "!" in await relay
    await asyncio.sleep(1.5)
    assert len(slow_start) == 1, "one start, however many callers came and went"


async def test_one_unreadable_record_does_not_lose_the_rest_of_its_batch(
    replicas,
    kafka_broker,  # noqa: F811
    caplog,
):
    sender, holder = replicas(), replicas()
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    partition = partition_for("team.1", PARTITIONS)
    raw = Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 50})
    for key, value in ((b"g:team.1", b"\xc1 not msgpack"), (None, b"no key")):
        raw.produce(holder.topic, value=value, key=key, partition=partition)
    raw.produce(holder.topic, value=sender.serialize({"type": "x", "n": 1}), key=b"g:team.1",
                partition=partition)  # fmt: skip
    raw.flush(5)
    assert (await asyncio.wait_for(holder.receive(channel), 5))["n"] == 1
    assert holder.metrics["bad_records"] == 2
    assert "skipped a record it cannot read" in caplog.text


async def test_int_keys_round_trip(replicas):
    sender, holder = replicas(), replicas()
    channel = await holder.new_channel()
    await holder.group_add("team.1", channel)
    await sender.group_send_many([("team.1", {"type": "x", "by_worker": {7: "a"}})])
    assert (await asyncio.wait_for(holder.receive(channel), 5))["by_worker"] == {7: "a"}


async def test_a_group_add_under_way_when_the_layer_is_flushed_ends(replicas):
    layer = replicas()
    channel = await layer.new_channel()
    adding = asyncio.ensure_future(layer.group_add("team.1", channel))
    await asyncio.sleep(0)  # it wrote its fence and waits for the broker's report
    await layer.flush()
    done, _ = await asyncio.wait([adding], timeout=10)
    assert done, "group_add() still waits 10 s after flush()"


async def test_a_failed_relay_join_keeps_its_channel_for_the_next_try(replicas, monkeypatch):
    layer = replicas()
    monkeypatch.setattr(relay_module, "get_channel_layer", lambda: layer)
    relay = Relay(state=InMemoryRelayState(), flush_window=1.0)
    loop_layer = layer._layer()

    async def fence_times_out(group, partition):
        raise KafkaException("Local: Message timed out")

    monkeypatch.setattr(loop_layer, "_fence", fence_times_out)
    try:
        for _ in range(20):  # sockets connecting during an outage, one after another
            with pytest.raises(RelayUnavailable):
                await relay._ensure_running()
        assert len(loop_layer.channels) == 1
    finally:
        relay.stop()


def feed_position(worker_id: int) -> dict:
    return {"lat": 51.5 + worker_id * 1e-6, "lng": -0.12, "ts": 1764480000.123, "acc": 12.5,
            "speed": 1.2, "heading": 270.0, "alt": 35.2, "batt": 87.0}  # fmt: skip


async def test_a_team_bigger_than_one_message_reaches_its_managers(replicas, monkeypatch):
    """12,000 positions of one window are 1.4 MB: more than a message carries. They go in
    several messages, and the other teams' go too."""
    sender, holder = replicas(), replicas(capacity=1000)
    big, small = await holder.new_channel(), await holder.new_channel()
    await holder.group_add("team.1", big)
    await holder.group_add("team.2", small)
    monkeypatch.setattr(relay_module, "get_channel_layer", lambda: sender)
    relay = Relay(state=InMemoryRelayState(), flush_window=1.0)
    await relay.publish(
        {
            1: TeamBatch(positions={w: feed_position(w) for w in range(12_000)}),
            2: TeamBatch(positions={1: feed_position(1)}),
        }
    )
    assert (await asyncio.wait_for(holder.receive(small), 5))["team_id"] == 2
    workers = set()
    while len(workers) < 12_000:
        message = await asyncio.wait_for(holder.receive(big), 5)
        workers |= {position["id"] for position in message["positions"]}
    assert workers == set(range(12_000))
