"""One conformance suite for every channel layer we may run, after the Channels layer spec.

The spec is docs/channel_layer_spec.rst in django/channels. Each test runs once per entry of
LAYER_FACTORIES. A factory gets the test's unique prefix (the same for every instance a test makes, so that
instances share their channels and groups as processes of one deployment would), the pytest
request (to reach fixtures such as a broker), and extra layer options such as `capacity`.
What a third-party layer lacks by design is listed in KNOWN_GAPS and runs as a strict xfail.
"""

import asyncio
import uuid

import pytest
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from tracking.feed import group_send_many
from tracking.layers.kafka import KafkaChannelLayer
from tracking.layers.redis import RedisPubSubChannelLayer

pytestmark = pytest.mark.timeout(10)

NOTHING = 0.3  # seconds a receive waits before we believe nothing is coming


def memory_layer(prefix, request, **config):
    return InMemoryChannelLayer(**config)  # one instance is one process: nothing to prefix


def redis_pubsub_layer(prefix, request, **config):
    return RedisPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=prefix, **config)


def redis_core_layer(prefix, request, **config):
    return RedisChannelLayer(hosts=[settings.REDIS_URL], prefix=prefix, **config)


def kafka_layer(prefix, request, **config):
    broker = request.getfixturevalue("kafka_broker")
    return KafkaChannelLayer(**broker.layer_config(), topic=prefix, partitions=8, **config)


LAYER_FACTORIES = {
    "memory": memory_layer,
    "redis": redis_pubsub_layer,
    "redis-core": redis_core_layer,
    "kafka": kafka_layer,
}

CROSS_PROCESS = (
    "InMemoryChannelLayer keeps channels and groups in the instance: the Channels docs say"
    " 'no cross-process messaging is possible'"
)
# Layer name -> test name -> why that layer fails the test by design.
KNOWN_GAPS = {
    "memory": {
        "test_a_process_specific_channel_is_reached_from_another_instance": CROSS_PROCESS,
        "test_a_group_reaches_members_added_on_another_instance": CROSS_PROCESS,
        "test_group_send_many_reaches_each_group_on_another_instance": CROSS_PROCESS,
    },
    "redis": {
        "test_a_full_channel_refuses_sends": (
            "RedisPubSubChannelLayer has no capacity: it swallows the option in **kwargs,"
            " queues into an unbounded asyncio.Queue and sends with a bare PUBLISH"
        ),
    },
}


@pytest.fixture(params=list(LAYER_FACTORIES))
def layer_name(request):
    reason = KNOWN_GAPS.get(request.param, {}).get(request.node.originalname)
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return request.param


@pytest.fixture
async def make_layer(layer_name, request):
    """Build instances of the layer under test, as separate processes would; flush them all."""
    prefix = f"test-layers-{uuid.uuid4().hex[:12]}"
    made = []

    def make(**config):
        layer = LAYER_FACTORIES[layer_name](prefix, request, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()


@pytest.fixture
async def layer(make_layer):
    """The layer under test (flushed at teardown by make_layer)."""
    yield make_layer()


async def receive(layer, channel, timeout=2.0):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def receives_nothing(layer, channel, timeout=NOTHING) -> bool:
    # A timed-out receive is a cancelled one: the pub/sub layer then unsubscribes the channel,
    # so call this last for a channel.
    try:
        message = await asyncio.wait_for(layer.receive(channel), timeout)
    except TimeoutError:
        return True
    pytest.fail(f"{channel} received {message!r}")


async def test_the_layer_offers_groups_and_flush(layer):
    assert "groups" in layer.extensions
    assert "flush" in layer.extensions


async def test_a_message_round_trips_through_a_new_channel(layer):
    channel = await layer.new_channel()
    message = {
        "type": "test.message",
        "text": "Ahoy-hoy! é ✓",
        "int": -(2**62),
        "float": 3.25,
        "yes": True,
        "no": False,
        "none": None,
        "list": [1, "two", 3.0, None, [4]],
        "nested": {"a": {"b": [{"c": 1}]}, "empty": {}},
        "big": "x" * 50_000,
    }
    await layer.send(channel, message)
    assert await receive(layer, channel) == message


async def test_a_channel_keeps_the_order_of_its_messages(layer):
    channel = await layer.new_channel()
    for n in range(100):
        await layer.send(channel, {"type": "test.message", "n": n})
    assert [(await receive(layer, channel))["n"] for _ in range(100)] == list(range(100))


async def test_receive_waits_for_a_message(layer):
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(receive(layer, channel, timeout=5))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await layer.send(channel, {"type": "test.late"})
    assert (await waiting)["type"] == "test.late"


async def test_a_full_channel_refuses_sends(make_layer):
    layer = make_layer(capacity=5)
    channel = await layer.new_channel()
    for _ in range(5):
        await layer.send(channel, {"type": "test.message"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "test.message"})


async def test_group_send_to_a_full_channel_does_not_raise(make_layer):
    layer = make_layer(capacity=2)
    channel = await layer.new_channel()
    await layer.group_add("full", channel)
    for _ in range(5):
        await layer.group_send("full", {"type": "test.message"})
    assert (await receive(layer, channel))["type"] == "test.message"


async def test_group_send_reaches_members_and_not_discarded_ones(layer):
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("team", first)
    await layer.group_add("team", second)
    await layer.group_send("team", {"type": "test.message", "n": 1})
    assert (await receive(layer, first))["n"] == 1
    assert (await receive(layer, second))["n"] == 1

    await layer.group_discard("team", first)
    await layer.group_send("team", {"type": "test.message", "n": 2})
    assert (await receive(layer, second))["n"] == 2
    assert await receives_nothing(layer, first)


async def test_group_add_twice_and_discarding_a_non_member_are_harmless(layer):
    member, stranger = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("team", member)
    await layer.group_add("team", member)
    await layer.group_discard("team", stranger)
    await layer.group_discard("nobody-here", stranger)
    await layer.group_send("team", {"type": "test.message"})
    assert (await receive(layer, member))["type"] == "test.message"
    assert await receives_nothing(layer, member)  # added twice, delivered once


async def test_a_channel_in_two_groups_gets_the_messages_of_both(layer):
    channel = await layer.new_channel()
    await layer.group_add("alpha", channel)
    await layer.group_add("bravo", channel)
    await layer.group_send("alpha", {"type": "test.message", "group": "alpha"})
    await layer.group_send("bravo", {"type": "test.message", "group": "bravo"})
    got = {(await receive(layer, channel))["group"] for _ in range(2)}
    assert got == {"alpha", "bravo"}


async def test_many_groups_each_reach_only_their_member(layer):
    channels = [await layer.new_channel() for _ in range(50)]
    for n, channel in enumerate(channels):
        await layer.group_add(f"group-{n}", channel)
    for n in range(50):
        await layer.group_send(f"group-{n}", {"type": "test.message", "n": n})
    for n, channel in enumerate(channels):
        assert (await receive(layer, channel))["n"] == n
    nothing_more = [receives_nothing(layer, channel) for channel in channels]
    assert all(await asyncio.gather(*nothing_more))


async def test_a_group_keeps_the_order_of_its_messages(layer):
    channel = await layer.new_channel()
    await layer.group_add("team", channel)
    for n in range(50):
        await layer.group_send("team", {"type": "test.message", "n": n})
    assert [(await receive(layer, channel))["n"] for _ in range(50)] == list(range(50))


async def test_group_send_to_an_unknown_group_does_nothing(layer):
    await layer.group_send("nobody-ever-joined", {"type": "test.message"})
    channel = await layer.new_channel()
    await layer.group_add("team", channel)
    await layer.group_discard("team", channel)
    await layer.group_send("team", {"type": "test.message"})  # emptied group
    assert await receives_nothing(layer, channel)


async def test_flush_empties_channels_and_groups_and_the_layer_works_on(layer):
    old = await layer.new_channel()
    await layer.group_add("team", old)
    await layer.send(old, {"type": "test.before"})

    await layer.flush()

    fresh = await layer.new_channel()
    await layer.send(fresh, {"type": "test.after"})
    assert (await receive(layer, fresh))["type"] == "test.after"
    # Neither the unread message nor the membership survived.
    listening = asyncio.ensure_future(receives_nothing(layer, old, timeout=0.5))
    await asyncio.sleep(0.05)
    await layer.group_send("team", {"type": "test.group"})
    assert await listening


async def test_a_process_specific_channel_is_reached_from_another_instance(layer, make_layer):
    sender, owner = layer, make_layer()
    channel = await owner.new_channel()
    await sender.send(channel, {"type": "test.message", "text": "from afar"})
    assert (await receive(owner, channel))["text"] == "from afar"


async def test_a_group_reaches_members_added_on_another_instance(layer, make_layer):
    sender, owner = layer, make_layer()
    channel = await owner.new_channel()
    await owner.group_add("team", channel)
    await sender.group_send("team", {"type": "test.message", "text": "to the team"})
    assert (await receive(owner, channel))["text"] == "to the team"


async def test_group_send_many_reaches_each_group_on_another_instance(layer, make_layer):
    # The relay's tick: every team's batch at once (one pipeline on Redis pub/sub).
    sender, owner = layer, make_layer()
    first, second = await owner.new_channel(), await owner.new_channel()
    await owner.group_add("team.1", first)
    await owner.group_add("team.2", second)
    await group_send_many(
        sender,
        [
            ("team.1", {"type": "test.message", "n": 1}),
            ("team.2", {"type": "test.message", "n": 2}),
            ("team.1", {"type": "test.message", "n": 3}),
            ("team.3", {"type": "test.message", "n": 4}),  # no members: nothing happens
        ],
    )
    assert [(await receive(owner, first))["n"] for _ in range(2)] == [1, 3]
    assert (await receive(owner, second))["n"] == 2
    assert await receives_nothing(owner, second)


def test_our_layers_send_many_groups_at_once():
    for layer_class in (RedisPubSubChannelLayer, KafkaChannelLayer):
        assert "group_send_many" in layer_class.extensions
