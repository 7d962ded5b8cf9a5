"""The Kafka-protocol broker fixture: one tansu broker (deploy/tansu.py) for the test session."""

import pytest

from deploy.tansu import KafkaBroker


@pytest.fixture(scope="session")
def kafka_broker():
    """One tansu broker for the whole test session: use unique topic names per test."""
    with KafkaBroker() as broker:
        yield broker
