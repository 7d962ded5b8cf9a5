"""Relay state: last-known positions and presence, in one process and shared through Redis."""

import asyncio
import uuid

import pytest
from django.conf import settings

from tracking.state import InMemoryRelayState, RedisRelayState

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def redis_states():
    """Make RedisRelayStates of replicas sharing one key prefix; delete their keys afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    made = []

    def make(replica: str, lease_ttl: float = 30.0) -> RedisRelayState:
        state = RedisRelayState(
            url=settings.REDIS_URL, replica=replica, lease_ttl=lease_ttl, prefix=prefix
        )
        made.append(state)
        return state

    yield make
    for state in made:
        keys = await state.redis.keys(f"{prefix}*")
        if keys:
            await state.redis.delete(*keys)
        await state.close()


@pytest.fixture(params=["memory", "redis"])
async def state(request, redis_states):
    if request.param == "memory":
        return InMemoryRelayState()
    return redis_states("a")


async def test_latest_keeps_the_newest_position_per_worker(state):
    await state.store_latest({1: {7: {"lat": 1.0, "lng": 1.0, "ts": 10.0}}})
    await state.store_latest(
        {
            1: {7: {"lat": 2.0, "lng": 2.0, "ts": 5.0}, 8: {"lat": 3.0, "lng": 3.0, "ts": 6.0}},
            2: {9: {"lat": 4.0, "lng": 4.0, "ts": 7.0}},
        }
    )
    latest = (await state.team_state(1)).latest
    assert latest == {
        7: {"lat": 1.0, "lng": 1.0, "ts": 10.0},
        8: {"lat": 3.0, "lng": 3.0, "ts": 6.0},
    }
    other_team = (await state.team_state(2)).latest
    assert other_team == {9: {"lat": 4.0, "lng": 4.0, "ts": 7.0}}
    assert (await state.team_state(3))[0] == {}


async def test_presence_follows_connections_per_team_with_increasing_versions(state):
    came_online = await state.connection_opened(1, 7)
    assert came_online > 0
    assert (await state.team_state(1)).online == {7}
    assert (await state.team_state(1)).presence_version == came_online
    assert (await state.team_state(2)).online == set()
    went_offline = await state.connection_closed(1, 7)
    assert went_offline > came_online
    assert (await state.team_state(1)).online == set()
    assert (await state.team_state(1)).presence_version == went_offline


async def test_a_worker_on_two_replicas_stays_online_until_both_close(redis_states):
    a, b = redis_states("a"), redis_states("b")
    assert await a.connection_opened(1, 7) > 0
    assert await b.connection_opened(1, 7) == 0  # no change
    assert await a.connection_closed(1, 7) == 0
    assert (await b.team_state(1)).online == {7}
    assert await b.connection_closed(1, 7) > 0


async def test_leases_of_a_dead_replica_are_reaped_once(redis_states):
    dead, alive = redis_states("dead", lease_ttl=0.3), redis_states("alive", lease_ttl=30)
    await dead.connection_opened(1, 7)
    await dead.connection_opened(2, 9)
    await alive.connection_opened(1, 8)
    assert await alive.reap() == []
    await asyncio.sleep(0.5)
    reaped = sorted(await alive.reap())
    assert [(team, worker) for team, worker, _ in reaped] == [(1, 7), (2, 9)]
    assert all(version > 0 for _, _, version in reaped)
    assert await alive.reap() == []  # another replica reaping later finds nothing
    assert (await alive.team_state(1))[1] == {8}


async def test_renewal_keeps_leases_alive_and_restores_them_after_redis_lost_them(redis_states):
    replica = redis_states("a", lease_ttl=0.4)
    await replica.connection_opened(1, 7)
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await replica.renew(1, [7]) == []
        assert await replica.reap() == []
    version_before = (await replica.team_state(1)).presence_version
    # Redis restarted empty: the renewal brings the worker back, and says so, with a version
    # newer than any before the restart (managers' relays would drop an older one).
    keys = await replica.redis.keys(f"{replica.prefix}*")
    await replica.redis.delete(*keys)
    [(worker_id, version)] = await replica.renew(1, [7])
    assert worker_id == 7 and version > version_before
    assert (await replica.team_state(1)).online == {7}
