"""Kafka fixtures: one tansu broker (deploy/tansu.py) for the test session, and layers that
stand for replicas on a topic of their own."""

import uuid

import pytest

from deploy.tansu import KafkaBroker
from tracking.layers.kafka import KafkaChannelLayer

PARTITIONS = 16  # of the topics `replicas` makes


@pytest.fixture(scope="session")
def kafka_broker():
    """One tansu broker for the whole test session: use unique topic names per test."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
async def replicas(kafka_broker):
    """Make layers that stand for replicas: separate clients on one topic of their own."""
    topic = f"test-{uuid.uuid4().hex[:8]}"
    made = []

    def make(**config) -> KafkaChannelLayer:
        layer = KafkaChannelLayer(
            **kafka_broker.layer_config(), topic=topic, partitions=PARTITIONS, **config
        )
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()
