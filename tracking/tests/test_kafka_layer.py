"""What only the Kafka layer promises: reading by interest, drops instead of stalls, recovery."""

import asyncio
import uuid

import pytest
from channels.exceptions import ChannelFull
from channels.layers import channel_layers
from confluent_kafka import KafkaException

from tracking import health
from tracking.layers.kafka import KafkaChannelLayer
from tracking.layers.utils import partition_for
from tracking.tests.clock import settle
from tracking.tests.kafka_broker import kafka_broker  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(60)

PARTITIONS = 16


@pytest.fixture
async def replicas(kafka_broker):  # noqa: F811 - the fixture imported above
    """Make layers that stand for replicas: separate clients on one topic of their own."""
    topic = f"test-{uuid.uuid4().hex[:8]}"
    made = []

    def make(**config) -> KafkaChannelLayer:
        layer = KafkaChannelLayer(
            kafka_broker.bootstrap, topic=topic, partitions=PARTITIONS, **config
        )
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()


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
    layer = KafkaChannelLayer(kafka_broker.bootstrap, topic=f"test-{uuid.uuid4().hex[:8]}")

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

    async def command(name, partition):
        commands.append((name, partition))
        await gate.wait()

    monkeypatch.setattr(loop_layer, "_command", command)
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
