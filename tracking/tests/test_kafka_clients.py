"""The Kafka layer's clients and topic against real brokers: a TLS-only one, a missing one, and
tansu's topic settings (tracking/layers/kafka_clients.py)."""

import asyncio
import logging
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from deploy.processes import free_port
from deploy.tansu import FETCH_WAIT_MS
from tracking.layers.kafka import KafkaChannelLayer
from tracking.layers.kafka_clients import RECORD_BYTES_ALLOWED, client_configs
from tracking.tests.kafka_broker import kafka_broker  # noqa: F401 - fixture
from tracking.tests.kafka_tls import TlsKafka

pytestmark = pytest.mark.timeout(60)


def topic_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_the_common_client_config_reaches_every_client_of_a_tls_cluster(tmp_path):
    """TLS (like SASL) set once in client_config: the admin client that makes the topic, the
    producer and the consumer all need it, or the layer never starts."""
    with TlsKafka(tmp_path) as kafka:
        tls = {"security.protocol": "SSL", "ssl.ca.location": str(kafka.ca)}
        topic = topic_name()
        made = [
            KafkaChannelLayer(
                kafka.bootstrap, topic=topic, fetch_wait_ms=FETCH_WAIT_MS, client_config=tls
            )
            for _ in range(2)
        ]
        sender, holder = made
        try:
            channel = await asyncio.wait_for(holder.new_channel(), 20)
            await holder.group_add("team.1", channel)
            await sender.group_send_many([("team.1", {"type": "x"})])
            assert await asyncio.wait_for(holder.receive(channel), 10) == {"type": "x"}
        finally:
            for layer in made:
                await layer.flush()

        plain = KafkaChannelLayer(kafka.bootstrap, topic=topic, admin_config={})
        with pytest.raises(KafkaException):
            await plain.new_channel()  # the same cluster without TLS: refused at the door
        await plain.flush()


async def test_librdkafka_logs_through_python_logging_and_never_to_stderr(capfd, caplog):
    """While no broker answers, librdkafka retries; its lines go to the
    tracking.layers.kafka.client logger (connection failures at DEBUG), not to stderr."""
    caplog.set_level(logging.DEBUG, logger="tracking.layers.kafka.client")
    layer = KafkaChannelLayer(f"127.0.0.1:{free_port()}", topic=topic_name())
    with pytest.raises(KafkaException):
        await layer.new_channel()  # the admin client's metadata request times out (5 s)
    await layer.flush()
    stderr = capfd.readouterr().err
    assert "rdkafka" not in stderr and "%3|" not in stderr, stderr
    failures = [r for r in caplog.records if r.name == "tracking.layers.kafka.client"]
    assert failures, "librdkafka's lines reach Python logging"
    assert all(r.levelno == logging.DEBUG for r in failures if "FAIL" in r.getMessage())


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    found = admin.describe_configs([resource])[resource].result(5)
    return {key: entry.value for key, entry in found.items()}


async def test_the_topic_is_made_with_a_live_feeds_retention(kafka_broker):  # noqa: F811
    topic = topic_name()
    layer = KafkaChannelLayer(
        **kafka_broker.layer_config(), topic=topic, retention_ms=120_000, segment_ms=30_000
    )
    await layer.new_channel()
    await layer.flush()
    config = topic_config(kafka_broker.bootstrap, topic)
    assert config["retention.ms"] == "120000"
    assert config["segment.ms"] == "30000"
    assert config["max.message.bytes"] == str(RECORD_BYTES_ALLOWED)


async def test_an_existing_topic_with_other_settings_is_warned_about(kafka_broker, caplog):  # noqa: F811
    topic = topic_name()
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=8)])[topic].result(5)
    layer = KafkaChannelLayer(**kafka_broker.layer_config(), topic=topic, partitions=8)
    await layer.new_channel()
    await layer.flush()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"Kafka topic {topic} has retention.ms=" in w for w in warnings), warnings
    assert any("segment.ms" in w for w in warnings), warnings


async def test_a_topic_made_by_the_layer_is_not_warned_about(kafka_broker, caplog):  # noqa: F811
    topic = topic_name()
    for _ in range(2):  # the second start finds the topic the first made
        layer = KafkaChannelLayer(**kafka_broker.layer_config(), topic=topic)
        await layer.new_channel()
        await layer.flush()
    assert not [r for r in caplog.records if f"Kafka topic {topic}" in r.getMessage()]


def test_the_common_config_tunes_every_client_and_the_layer_s_keys_stay():
    """KAFKA_CLIENT_CONFIG is documented as every client's: the layer's own per-client
    defaults must not win over it; what the layer depends on must win over everything."""
    built = client_configs(
        bootstrap_servers="b:9092", client_id="c", fetch_wait_ms=100, error_cb=None,
        on_delivery=None, admin={}, consumer={"fetch.wait.max.ms": 5},
        common={"acks": "all", "message.timeout.ms": 10_000, "fetch.wait.max.ms": 50,
                "enable.auto.commit": True, "allow.auto.create.topics": True},
        producer={"delivery.report.only.error": True},
    )  # fmt: skip
    assert (built.producer["acks"], built.producer["message.timeout.ms"]) == ("all", 10_000)
    assert built.consumer["fetch.wait.max.ms"] == 5
    assert built.producer["delivery.report.only.error"] is False
    assert built.consumer["enable.auto.commit"] is False
    for config in (built.producer, built.consumer, built.admin):
        assert config["allow.auto.create.topics"] is False
