"""/healthz and /readyz, for load balancers."""

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(20)]


def test_healthz_answers_without_a_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


def test_readyz_reports_every_part_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "ready": True,
        "database": "ok",
        "channel_layer": "ok",
        "relay_state": "ok",
    }
    assert client.get("/readyz").status_code == 200  # the check channel is reused


@pytest.mark.parametrize("kind", ["redis", "redis-core"])
def test_readyz_on_a_real_redis_layer(client, settings, kind):
    settings.CHANNEL_LAYERS = {"default": settings.CHANNEL_LAYER_BACKENDS[kind]}
    settings.TEAMTRACK_RELAY_STATE = "redis"
    for _ in range(2):
        assert client.get("/readyz").json()["ready"] is True


def test_readyz_fails_when_redis_is_unreachable(client, settings):
    dead = "redis://127.0.0.1:1/0"
    settings.REDIS_URL = dead
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [dead]},
        }
    }
    settings.TEAMTRACK_RELAY_STATE = "redis"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "database": "ok",
        "channel_layer": "unavailable",
        "relay_state": "unavailable",
    }


def test_readyz_answers_internal_networks_only(client, settings):
    """Each probe costs a database, layer and Redis round trip: not for the public."""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/readyz", REMOTE_ADDR="203.0.113.9").status_code == 404
    assert client.get("/readyz", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/healthz", REMOTE_ADDR="203.0.113.9").status_code == 200
