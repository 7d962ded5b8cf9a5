"""Abuse limits: on an injected clock in one process, and on real Redis across two replicas."""

import uuid

import pytest

from tracking.limits import MAX_KEYS, FrameRateLimit, LocalLimits, RedisLimits

NUMBERS = {
    "failed_logins_per_minute": 3,
    "worker_logins_per_minute": 3,
    "frames_per_second": 1.0,
    "frame_burst": 2,
}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def local(clock):
    return LocalLimits(clock=clock, **NUMBERS)


async def test_failures_over_the_limit_in_a_minute_are_told_to_slow_down(local, clock):
    assert [await local.login_failed("203.0.113.7") for _ in range(4)] == [False] * 3 + [True]
    assert not await local.login_failed("203.0.113.8")
    clock.now += 60.5
    assert not await local.login_failed("203.0.113.7")


async def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself(local):
    for address in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2::77"):
        assert not await local.login_failed(address)  # one subscriber, three addresses
    assert await local.login_failed("2001:db8:1:2::5")
    assert not await local.login_failed("2001:db8:1:3::1")
    for address in ("::ffff:198.51.100.1", "198.51.100.1", "198.51.100.1"):
        assert not await local.login_failed(address)
    assert await local.login_failed("::ffff:198.51.100.1")


async def test_the_counts_stay_bounded_forgetting_the_longest_quiet(local):
    for index in range(MAX_KEYS + 10):
        await local.login_failed(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}")
    assert len(local.failed_logins.counts) == MAX_KEYS
    assert "10.0.0.0" not in local.failed_logins.counts


async def test_a_worker_logging_in_too_often_is_refused_and_each_login_is_newer(local, clock):
    logins = [await local.worker_login(7) for _ in range(4)]
    assert logins[3] is None
    assert logins[0].seq < logins[1].seq < logins[2].seq
    assert await local.worker_login(8) is not None
    clock.now += 61
    assert await local.worker_login(7) is not None


async def test_a_workers_budget_outlives_its_connections_until_refilled(local, clock):
    first = await local.worker_login(7)
    assert first.frames.take() and first.frames.take() and not first.frames.take()
    second = await local.worker_login(7)  # reconnected: no fresh burst
    assert not second.frames.take()
    assert await local.take_upload(7) == pytest.approx(1.0)  # uploads share the budget
    local.PRUNE_EVERY = 1
    assert local.frame_limit(8).is_full()  # never used: as good as new
    local.frame_limit(9)  # a new entry sweeps the refilled ones
    assert 8 not in local.frame_limits and 7 in local.frame_limits


def test_a_bucket_waits_then_refills(clock):
    bucket = FrameRateLimit(rate=2.0, burst=2, clock=clock)
    assert bucket.take() and bucket.take() and not bucket.take()
    assert bucket.seconds_until_token() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take()
    assert not bucket.is_full()
    clock.now += 1.0
    assert bucket.is_full()
    bucket.keep_at_most(1)
    assert bucket.take() and not bucket.take()


# ---------------------------------------------------------------- across replicas, on Redis


@pytest.fixture
def replicas():
    """Two replicas' limits on the test Redis, under a prefix of their own."""
    prefix = f"test-limits-{uuid.uuid4().hex[:8]}:"
    return [
        RedisLimits(url="redis://127.0.0.1:6379/0", prefix=prefix, replica=name, **NUMBERS)
        for name in ("a", "b")
    ]


async def test_failed_logins_count_across_replicas(replicas):
    a, b = replicas
    assert not await a.login_failed("203.0.113.7")
    assert not await b.login_failed("203.0.113.7")
    assert not await a.login_failed("203.0.113.7")
    assert await b.login_failed("203.0.113.7")  # the 4th in the minute, on either replica
    assert not await b.login_failed("203.0.113.8")


async def test_a_workers_logins_count_across_replicas_and_the_newest_is_known(replicas):
    a, b = replicas
    logins = [await a.worker_login(7), await b.worker_login(7), await a.worker_login(7)]
    assert [login.seq for login in logins] == sorted({login.seq for login in logins})
    assert await b.worker_login(7) is None


async def test_a_login_on_another_replica_continues_the_spent_budget(replicas):
    a, b = replicas
    first = await a.worker_login(7)
    assert first.frames.take()
    assert first.frames.take()
    moved = await b.worker_login(7)
    assert moved.frames.take(), "a device moved by a restart must resend its queue at once"
    assert not moved.frames.take(), "a login on another replica bought a fresh burst"
    again = await b.worker_login(7)  # same replica as the last login: its own budget goes on
    assert again.frames is moved.frames


async def test_uploads_share_one_budget_across_replicas(replicas):
    a, b = replicas
    assert await a.take_upload(7) == 0
    assert await b.take_upload(7) == 0  # burst of 2
    wait = await a.take_upload(7)
    assert 0.5 < wait <= 1.0
    assert await b.take_upload(8) == 0  # another worker's budget is its own


async def test_without_redis_each_replica_falls_back_to_its_own_counts():
    limits = RedisLimits(url="redis://127.0.0.1:1/0", prefix="x:", replica="a", **NUMBERS)
    assert [await limits.login_failed("203.0.113.7") for _ in range(4)] == [False] * 3 + [True]
    assert (await limits.worker_login(7)).frames.take()
    assert await limits.take_upload(7) == 0


async def test_login_seqs_keep_growing_across_a_redis_restart_and_its_outage(replicas):
    a, b = replicas
    before = (await a.worker_login(7)).seq
    # Redis restarted empty (compose keeps nothing): a later login must still be the newest.
    await a.redis.client.delete(*await a.redis.client.keys(f"{a.prefix}*"))
    after_restart = (await b.worker_login(7)).seq
    down = RedisLimits(url="redis://127.0.0.1:1/0", prefix="x:", replica="c", **NUMBERS)
    during_outage = (await down.worker_login(7)).seq
    assert before < after_restart < during_outage


async def test_a_window_count_always_has_its_expiry(replicas):
    a, _ = replicas
    key = f"{a.prefix}failed-logins:203.0.113.7"
    await a.redis.client.set(key, 1)  # as an INCR racing the key's expiry would have left it
    await a.login_failed("203.0.113.7")
    assert 0 < await a.redis.client.ttl(key) <= 60
