"""Abuse limits on an injected clock: failed logins per address, and each worker's budget."""

import pytest

from tracking import limits
from tracking.limits import FailedLoginLimit, FrameRateLimit


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_an_address_is_blocked_for_the_rest_of_the_minute_after_its_failures():
    clock = Clock()
    logins = FailedLoginLimit(per_minute=3, clock=clock)
    for _ in range(2):
        logins.record_failure("203.0.113.7")
    assert not logins.blocked("203.0.113.7")
    logins.record_failure("203.0.113.7")
    assert logins.blocked("203.0.113.7")
    assert not logins.blocked("203.0.113.8")
    clock.now += 60.5
    assert not logins.blocked("203.0.113.7")


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself():
    logins = FailedLoginLimit(per_minute=2, clock=Clock())
    logins.record_failure("2001:db8:1:2::1")
    logins.record_failure("2001:db8:1:2:ffff::9")  # the same subscriber, another address
    assert logins.blocked("2001:db8:1:2::77")
    assert not logins.blocked("2001:db8:1:3::1")
    logins.record_failure("::ffff:198.51.100.1")
    logins.record_failure("198.51.100.1")
    assert logins.blocked("198.51.100.1")


def test_the_table_of_addresses_stays_bounded_forgetting_the_longest_quiet(monkeypatch):
    monkeypatch.setattr(FailedLoginLimit, "MAX_ADDRESSES", 3)
    clock = Clock()
    logins = FailedLoginLimit(per_minute=1, clock=clock)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        logins.record_failure(address)
        clock.now += 1
    logins.record_failure("10.0.0.1")  # failed again: now the most recent
    logins.record_failure("10.0.0.4")
    assert list(logins.failures) == ["10.0.0.3", "10.0.0.1", "10.0.0.4"]
    assert logins.blocked("10.0.0.1") and not logins.blocked("10.0.0.2")


def test_a_bucket_waits_then_refills():
    clock = Clock()
    bucket = FrameRateLimit(rate=2.0, burst=2, clock=clock)
    assert bucket.take() and bucket.take() and not bucket.take()
    assert bucket.seconds_until_token() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take()
    assert not bucket.is_full()
    clock.now += 1.0
    assert bucket.is_full()


@pytest.mark.usefixtures("settings")
def test_a_workers_budget_outlives_its_connections_until_refilled(settings, monkeypatch):
    settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND = 0.001
    settings.TEAMTRACK_WORKER_FRAME_BURST = 1
    limit = limits.worker_frame_limit(7)
    assert limit.take()
    del limit  # every socket and upload of the worker ended
    assert not limits.worker_frame_limit(7).take(), "a new connection got a fresh burst"
    monkeypatch.setattr(limits, "PRUNE_EVERY", 1)
    full = limits.worker_frame_limit(8)  # never used: as good as new
    assert full.is_full()
    limits.worker_frame_limit(9)  # a new entry sweeps the refilled ones
    assert 8 not in limits._worker_frame_limits and 7 in limits._worker_frame_limits
