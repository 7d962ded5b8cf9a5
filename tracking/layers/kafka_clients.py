"""The Kafka layer's clients and topic: one configuration for producer, consumer and admin
client alike, librdkafka's logs through Python logging, and a topic made (or checked) at start.

A cluster's security and tuning (TLS, SASL, timeouts) go in the common configuration
(KAFKA_CLIENT_CONFIG), so that no client is left without them: the admin client that makes the
topic connects first. Per-client overrides come after it, and the keys the layer depends on last.
"""

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

logger = logging.getLogger(__name__)
client_logger = logging.getLogger("tracking.layers.kafka.client")

BROKER_TIMEOUT = 5.0  # seconds for metadata, topic creation and configuration look-ups

# The layer's messages may be as large as the Channels spec allows (1 MB, serialized here); the
# topic and producer take twice that, for the record batch's own overhead.
MAX_MESSAGE_BYTES = 1_000_000
RECORD_BYTES_ALLOWED = 2 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    segment_ms: int

    def config(self) -> dict[str, str]:
        """Topic settings for a live feed: nothing is read back after seconds, so closed
        segments go within minutes (broker defaults would keep them for a week, and 1 GiB of
        segment per partition before one even closes)."""
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            "segment.ms": str(self.segment_ms),
            "max.message.bytes": str(RECORD_BYTES_ALLOWED),
        }


@dataclass(frozen=True)
class TopicFound:
    partitions: int  # the real count: every process hashes by it
    topic_id: str  # changes when the topic is made anew (a broker that lost it)


@dataclass(frozen=True)
class ClientConfigs:
    producer: dict
    consumer: dict
    admin: dict


class _ClientLog:
    """Where librdkafka's log lines go: Python logging, with connection failures (FAIL, one a
    reconnect attempt while a broker is down) lowered to DEBUG, since error_cb reports an
    outage once."""

    def log(self, level: int, message: str, facility: str, name: str, text: str) -> None:
        if facility == "FAIL":
            level = logging.DEBUG
        client_logger.log(level, message, facility, name, text)


def client_configs(
    *,
    bootstrap_servers: str,
    client_id: str,
    common: dict,
    producer: dict,
    consumer: dict,
    admin: dict,
    fetch_wait_ms: int,
    error_cb,
    on_delivery,
) -> ClientConfigs:
    """Build the three clients' configurations: defaults, then the common configuration, then
    each client's overrides, then the keys the layer cannot work without."""
    defaults = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "reconnect.backoff.max.ms": 1000,
        "log.connection.close": False,
        "logger": _ClientLog(),
    }
    required = {
        "error_cb": error_cb,
        # Only ensure_topic makes the topic: a broker's auto-created one would have its default
        # partition count, and every process must hash by the same count.
        "allow.auto.create.topics": False,
    }
    producer_defaults = {
        # At most once, low latency: the live feed is latest-wins.
        "enable.idempotence": False,
        "acks": 1,
        "retries": 0,
        "linger.ms": 2,
        "message.timeout.ms": 3000,
        "queue.buffering.max.messages": 100_000,
    }
    consumer_defaults = {
        "auto.offset.reset": "latest",
        "fetch.wait.max.ms": fetch_wait_ms,
        "fetch.error.backoff.ms": 50,
        # librdkafka prefetches up to 64 MiB by default; what the event loop has not taken in
        # time is stale anyway (see the hand-over bound in kafka.py).
        "queued.max.messages.kbytes": 16_384,
    }
    return ClientConfigs(
        producer={
            **defaults,
            **producer_defaults,
            **common,
            **producer,
            **required,
            "message.max.bytes": RECORD_BYTES_ALLOWED,
            # group_send_many waits for every record's report of the broker's acknowledgement.
            "delivery.report.only.error": False,
            "on_delivery": on_delivery,
        },
        consumer={
            **defaults,
            **consumer_defaults,
            **common,
            **consumer,
            **required,
            # Required by the client, never joined: partitions are assigned by hand.
            "group.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        },
        admin={**defaults, **common, **admin, **required},
    )


def ensure_topic(admin_config: dict, spec: TopicSpec) -> TopicFound:
    """Make the topic if it is missing, warn about settings of an existing one that differ
    from ours, and return its partition count and id."""
    admin = AdminClient(admin_config)
    try:
        return _ensure_topic(admin, spec)
    finally:
        admin.poll(0)  # hands its queued log lines to Python logging


def _ensure_topic(admin: AdminClient, spec: TopicSpec) -> TopicFound:
    # Asking for our topic only (a cluster may hold thousands); with auto-creation off, a
    # missing one comes back as UNKNOWN_TOPIC_OR_PART and is not made by the asking.
    metadata = admin.list_topics(spec.name, timeout=BROKER_TIMEOUT)
    found = metadata.topics.get(spec.name)
    if found is None or found.error is not None:
        new_topic = NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            config=spec.config(),
        )
        try:
            admin.create_topics([new_topic])[spec.name].result(BROKER_TIMEOUT)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    else:
        _warn_about_differences(admin, spec)
    topics = TopicCollection([spec.name])
    described = admin.describe_topics(topics)[spec.name].result(BROKER_TIMEOUT)
    partitions = len(described.partitions)
    if partitions != spec.partitions:
        logger.warning(
            "Kafka topic %s has %d partitions, not %d; using %d",
            spec.name, partitions, spec.partitions, partitions,
        )  # fmt: skip
    return TopicFound(partitions or spec.partitions, str(described.topic_id))


def _warn_about_differences(admin: AdminClient, spec: TopicSpec) -> None:
    resource = ConfigResource(ResourceType.TOPIC, spec.name)
    try:
        found = admin.describe_configs([resource])[resource].result(BROKER_TIMEOUT)
    except KafkaException as error:
        logger.warning("Kafka topic %s: cannot read its settings (%s)", spec.name, error)
        return
    for key, wanted in spec.config().items():
        entry = found.get(key)
        value = entry.value if entry is not None else None
        if value != wanted:
            logger.warning(
                "Kafka topic %s has %s=%s, not %s; change it with kafka-configs.sh --alter"
                " (see docs/operations.md)",
                spec.name, key, value, wanted,
            )  # fmt: skip
