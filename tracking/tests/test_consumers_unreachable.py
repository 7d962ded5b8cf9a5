"""Both sockets when Redis cannot be reached: a documented close code (4503), never 1011."""

import pytest

from tracking import protocol

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]

DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(params=["redis", "redis-core"])
def unreachable_redis(request, settings):
    settings.REDIS_URL = DEAD_REDIS
    layer = dict(settings.CHANNEL_LAYER_BACKENDS[request.param])
    layer["CONFIG"] = {**layer["CONFIG"], "hosts": [DEAD_REDIS]}
    settings.CHANNEL_LAYERS = {"default": layer}
    settings.TEAMTRACK_RELAY_STATE = "redis"


async def test_sockets_are_closed_4503_when_redis_is_unreachable(
    world, unreachable_redis, open_worker, open_manager
):
    manager = await open_manager("alpha", world.cookies["ann"])
    assert manager.accepted
    assert await manager.closed_with(timeout=10) == protocol.CLOSE_TRY_AGAIN
    worker = await open_worker(world.tokens[world.a1.id])
    assert await worker.closed_with(timeout=10) == protocol.CLOSE_TRY_AGAIN
