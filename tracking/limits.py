"""Abuse limits of devices: frames (or HTTP uploads) per worker, and failed logins per client
address.

Both are kept in the replica's memory: a flood is stopped where it arrives, without a round trip
to Redis per frame. With N replicas behind the load balancer, an address may fail logins N times
as often before every replica refuses it.
"""

import time
import weakref
from collections import deque

from django.conf import settings


class FrameRateLimit:
    """A token bucket: `rate` frames a second on average, bursts of up to `burst` frames."""

    def __init__(self, *, rate: float, burst: int, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()
        self.refused_in_a_row = 0

    def take(self) -> bool:
        """Spend a token for one frame; return False (the frame is refused) if none is left."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    def seconds_until_token(self) -> float:
        """How long until `take` would succeed (0 if it would now)."""
        tokens = min(self.burst, self.tokens + (self.clock() - self.updated) * self.rate)
        return max(0.0, (1 - tokens) / self.rate)

    @property
    def flooding(self) -> bool:
        """Whether the client went on sending a whole burst's worth after being refused."""
        return self.refused_in_a_row > self.burst


class FailedLoginLimit:
    """Counts failed device logins per client address over a sliding minute."""

    WINDOW = 60.0
    MAX_ADDRESSES = 10_000  # above this, sweep out addresses with no recent failure

    def __init__(self, *, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float] | None:
        failures = self.failures.get(address)
        if failures is None:
            return None
        horizon = self.clock() - self.WINDOW
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self.failures[address]
            return None
        return failures

    def blocked(self, address: str) -> bool:
        """Whether this address failed too often in the last minute to try again now."""
        failures = self._recent(address)
        return failures is not None and len(failures) >= self.per_minute

    def record_failure(self, address: str) -> None:
        self._recent(address)
        if len(self.failures) >= self.MAX_ADDRESSES:
            for known in list(self.failures):  # forget addresses whose minute has passed
                self._recent(known)
        self.failures.setdefault(address, deque()).append(self.clock())


_failed_logins: FailedLoginLimit | None = None


def failed_logins() -> FailedLoginLimit:
    """Return this process's count of failed device logins, built from settings on first use."""
    global _failed_logins
    if _failed_logins is None:
        _failed_logins = FailedLoginLimit(per_minute=settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE)
    return _failed_logins


def reset_limits() -> None:
    """Forget every failed login and frame budget (tests, settings changes)."""
    global _failed_logins
    _failed_logins = None
    _worker_frame_limits.clear()


# Each socket of a worker holds its limit; the entry goes when the worker's last socket here does.
_worker_frame_limits: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def worker_frame_limit(worker_id: int) -> FrameRateLimit:
    """Return the frame limit that every socket of this worker on this replica shares."""
    limit = _worker_frame_limits.get(worker_id)
    if limit is None:
        limit = _worker_frame_limits[worker_id] = FrameRateLimit(
            rate=settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND,
            burst=settings.TEAMTRACK_WORKER_FRAME_BURST,
        )
    return limit
