"""/metrics: Prometheus' text format, for the internal network only, counting what happens."""

import time

import pytest
from django.test import Client

from tracking import metrics
from tracking.layers.kafka import KafkaChannelLayer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(20)]


def scrape(address="127.0.0.1"):
    return Client(REMOTE_ADDR=address).get("/metrics")


def sample(text: str, name: str) -> float:
    """Return the value of one sample line (name with labels) of the exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.9"])
def test_metrics_answer_the_internal_network(address):
    response = scrape(address)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    for name in (
        "teamtrack_open_sockets",
        "teamtrack_positions_accepted_total",
        "teamtrack_positions_rejected_total",
        "teamtrack_frames_sent_total",
        "teamtrack_bytes_sent_total",
        "teamtrack_relay_flush_seconds",
        "teamtrack_layer_publish_errors_total",
        "teamtrack_layer_dropped",
        "teamtrack_slow_manager_disconnects_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in body, name


@pytest.mark.parametrize("address", ["203.0.113.7", "8.8.8.8", "2001:db8::1", "not-an-ip"])
def test_metrics_are_hidden_from_the_public(address):
    assert scrape(address).status_code == 404


@pytest.mark.usefixtures("layer_kind")
@pytest.mark.parametrize("layer_kind", ["memory"], indirect=True)
async def test_metrics_count_sockets_positions_rejections_and_frames(
    world, open_worker, open_manager
):
    from asgiref.sync import sync_to_async

    before = (await sync_to_async(scrape)()).content.decode()
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send({"lat": 1.0, "lng": 2.0, "ts": time.time()})
    await worker.send({"lat": 100.0, "lng": 2.0, "ts": time.time()})
    await worker.receive_type("error")
    await manager.receive_type("positions")
    after = (await sync_to_async(scrape)()).content.decode()

    def grew(name):
        return sample(after, name) - sample(before, name)

    assert grew('teamtrack_open_sockets{kind="worker"}') == 1
    assert grew('teamtrack_open_sockets{kind="manager"}') == 1
    assert grew("teamtrack_positions_accepted_total") == 1
    assert grew('teamtrack_positions_rejected_total{reason="out_of_range"}') == 1
    assert grew('teamtrack_frames_sent_total{type="snapshot"}') == 1
    assert grew('teamtrack_frames_sent_total{type="positions"}') >= 1
    assert grew('teamtrack_bytes_sent_total{type="positions"}') > 0
    assert grew('teamtrack_relay_flush_seconds_count{stage="publish"}') >= 1


def test_the_kafka_layer_s_failures_and_bytes_reach_metrics(monkeypatch):
    layer = KafkaChannelLayer("127.0.0.1:1")
    layer.metrics.update(delivery_failed=3, bad_records=1, read_bytes=900, wanted_bytes=300)
    monkeypatch.setattr(metrics, "get_channel_layer", lambda: layer)
    samples = {
        (sample.name, tuple(sorted(sample.labels.values()))): sample.value
        for family in metrics.LayerDropsCollector().collect()
        for sample in family.samples
    }
    assert samples[("teamtrack_layer_failed_total", ("delivery_failed",))] == 3
    assert samples[("teamtrack_layer_failed_total", ("bad_records",))] == 1
    assert samples[("teamtrack_layer_read_bytes_total", ("read",))] == 900
    assert samples[("teamtrack_layer_read_bytes_total", ("wanted",))] == 300


def test_open_sockets_read_zero_before_the_first_socket():
    """A new pod must count in the autoscaler's average sockets per pod from its start."""
    text = scrape().content.decode()
    assert 'teamtrack_open_sockets{kind="worker"}' in text
    assert 'teamtrack_open_sockets{kind="manager"}' in text
