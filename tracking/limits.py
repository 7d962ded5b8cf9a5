"""Abuse limits of devices: frames (or HTTP uploads) per worker, and failed logins per client
address.

Both are kept in the replica's memory: a flood is stopped where it arrives, without a round trip
to Redis per frame. With N replicas behind the load balancer, an address may fail logins N times
as often before every replica refuses it. Both tables are bounded: a worker's budget is
forgotten once it has refilled, an address once many others failed since.
"""

import ipaddress
import time
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
        return max(0.0, (1 - self._tokens_now()) / self.rate)

    def is_full(self) -> bool:
        """Whether the bucket refilled: then it is as good as a new one."""
        return self._tokens_now() >= self.burst

    def _tokens_now(self) -> float:
        return min(self.burst, self.tokens + (self.clock() - self.updated) * self.rate)

    @property
    def flooding(self) -> bool:
        """Whether the client went on sending a whole burst's worth after being refused."""
        return self.refused_in_a_row > self.burst


class FailedLoginLimit:
    """Counts failed device logins per client address over a sliding minute. An IPv6 client
    counts by its /64, which one subscriber's device may roam freely."""

    WINDOW = 60.0
    MAX_ADDRESSES = 10_000  # beyond these, the address whose last failure is oldest is forgotten

    def __init__(self, *, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        # address -> times of its last `per_minute` failures; the most recent failure last.
        self.failures: dict[str, deque[float]] = {}

    def blocked(self, address: str) -> bool:
        """Whether this address failed too often in the last minute to try again now."""
        failures = self.failures.get(_client(address))
        return (
            failures is not None
            and len(failures) >= self.per_minute
            and failures[0] > self.clock() - self.WINDOW
        )

    def record_failure(self, address: str) -> None:
        key = _client(address)
        failures = self.failures.pop(key, None) or deque(maxlen=self.per_minute)
        failures.append(self.clock())
        self.failures[key] = failures
        while len(self.failures) > self.MAX_ADDRESSES:
            del self.failures[next(iter(self.failures))]


def _client(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


_failed_logins: FailedLoginLimit | None = None


def failed_logins() -> FailedLoginLimit:
    """Return this process's count of failed device logins, built from settings on first use."""
    global _failed_logins
    if _failed_logins is None:
        _failed_logins = FailedLoginLimit(per_minute=settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE)
    return _failed_logins


def reset_limits() -> None:
    """Forget every failed login and frame budget (tests, settings changes)."""
    global _failed_logins, _size_after_prune
    _failed_logins = None
    _worker_frame_limits.clear()
    _size_after_prune = 0


# Kept after the worker's sockets and uploads end, until refilled: reconnecting (or an
# OwnTracks lwt ending its uploads) must not buy a fresh burst.
_worker_frame_limits: dict[int, FrameRateLimit] = {}
PRUNE_EVERY = 1000  # new entries between sweeps of the refilled ones
_size_after_prune = 0


def worker_frame_limit(worker_id: int) -> FrameRateLimit:
    """Return the frame limit that every socket and upload of this worker on this replica
    shares."""
    global _size_after_prune
    limit = _worker_frame_limits.get(worker_id)
    if limit is None:
        if len(_worker_frame_limits) >= _size_after_prune + PRUNE_EVERY:
            for known, old in list(_worker_frame_limits.items()):
                if old.is_full():
                    del _worker_frame_limits[known]
            _size_after_prune = len(_worker_frame_limits)
        limit = _worker_frame_limits[worker_id] = FrameRateLimit(
            rate=settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND,
            burst=settings.TEAMTRACK_WORKER_FRAME_BURST,
        )
    return limit
