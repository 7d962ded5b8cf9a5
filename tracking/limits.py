"""Abuse limits of devices: failed logins per client address, logins per worker, and each
worker's frames (or HTTP uploads) per second; and how many socket logins a replica runs at once.

With several replicas (a Redis-backed relay), the counts that a client could otherwise multiply
by the number of replicas are kept in Redis, one round trip where they are counted:
- failed logins per address (bad tokens on sockets and phone uploads, bad enrolment codes);
- logins per worker (a reconnect storm from one token);
- HTTP uploads per worker (each upload may land on any replica).
A socket's frames are counted in the replica's memory, without a round trip per frame, and still
hold across replicas: a worker has one live socket (a newer login closes older ones on every
replica, tracking.relay), and a login on another replica than the worker's previous one starts
with an empty budget there.

If Redis cannot be reached, each replica falls back to its own counts. Every table is bounded.
"""

import asyncio
import ipaddress
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from django.conf import settings
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from tracking.redis_clients import PerLoopRedis

WINDOW = 60.0  # seconds over which logins and failed logins are counted
# Frames a login brings to a replica other than the worker's previous one (see worker_login).
MOVED_LOGIN_FRAMES = 1
MAX_KEYS = 10_000  # addresses or workers a local count remembers; the longest quiet go first
# Socket logins a replica runs at once; the others wait their turn at the gate. 10,000 sockets
# logging in together otherwise hold 10,000 logins half done (the database hop, Redis round
# trips), and the heap they leave behind fragmented kept about 6 KB per socket after the storm
# (docs/performance.md). The database takes one login at a time anyway (one thread).
LOGINS_AT_ONCE = 32
# Seconds a login may wait at the gate before its socket is closed with 4503 (try again later):
# well under a device's 20 s without an answer, so that no login is run for a device that has
# given up on its socket already (and would take the place of its next socket).
LOGIN_WAIT_SECONDS = 10.0


class FrameRateLimit:
    """A token bucket: `rate` frames a second on average, bursts of up to `burst` frames."""

    __slots__ = ("rate", "burst", "clock", "tokens", "updated", "refused_in_a_row")  # one a socket

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

    def keep_at_most(self, tokens: float) -> None:
        """Spend all but `tokens`: the budget goes on from one spent on another replica."""
        self.tokens, self.updated = min(self._tokens_now(), tokens), self.clock()

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


class WindowCounts:
    """Counts per key over fixed windows of WINDOW seconds from each key's first count."""

    def __init__(self, *, clock=time.monotonic):
        self.clock = clock
        self.counts: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (start, count)

    def add(self, key: str) -> int:
        """Count one for `key`; return its count in the current window."""
        now = self.clock()
        start, count = self.counts.pop(key, (now, 0))
        if now - start >= WINDOW:
            start, count = now, 0
        self.counts[key] = (start, count + 1)
        while len(self.counts) > MAX_KEYS:
            self.counts.popitem(last=False)
        return count + 1


@dataclass
class Login:
    """A worker's accepted socket login."""

    seq: int  # grows with every login of the worker: the newest socket is the live one
    frames: FrameRateLimit  # the worker's frame budget on this replica


def client_key(address: str) -> str:
    """Who a failed login counts against: an IPv4 address, or an IPv6 client's /64 (which one
    subscriber's device may roam freely)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


class LocalLimits:
    """The limits as this process alone counts them: the embedded default, and every replica's
    frame budgets."""

    PRUNE_EVERY = 1000  # new frame budgets between sweeps of the refilled ones

    def __init__(
        self,
        *,
        failed_logins_per_minute: int,
        worker_logins_per_minute: int,
        frames_per_second: float,
        frame_burst: int,
        clock=time.monotonic,
    ):
        self.failed_logins_per_minute = failed_logins_per_minute
        self.worker_logins_per_minute = worker_logins_per_minute
        self.frames_per_second = frames_per_second
        self.frame_burst = frame_burst
        self.clock = clock
        self.failed_logins = WindowCounts(clock=clock)
        self.worker_logins = WindowCounts(clock=clock)
        self.last_login_seq = 0
        # Kept after the worker's sockets and uploads end, until refilled: reconnecting (or an
        # OwnTracks lwt ending its uploads) must not buy a fresh burst.
        self.frame_limits: dict[int, FrameRateLimit] = {}
        self._size_after_prune = 0

    async def login_failed(self, address: str) -> bool:
        """Count a failed login from `address`; return whether it failed too often this minute
        (the client is told to slow down rather than that the token was wrong)."""
        return self.failed_logins.add(client_key(address)) > self.failed_logins_per_minute

    async def worker_login(self, worker_id: int) -> Login | None:
        """Count a socket login of a worker; return it, or None if the worker logged in too
        often this minute."""
        if self.worker_logins.add(str(worker_id)) > self.worker_logins_per_minute:
            return None
        return Login(seq=self.next_login_seq(), frames=self.frame_limit(worker_id))

    def next_login_seq(self) -> int:
        """A login's place in time: wall-clock microseconds, as Redis numbers them too, so that
        seqs taken here while Redis is down still order with those it gave before and after."""
        self.last_login_seq = max(time.time_ns() // 1000, self.last_login_seq + 1)
        return self.last_login_seq

    async def take_upload(self, worker_id: int) -> float:
        """Spend the worker's budget on one HTTP upload: 0 if taken, else the seconds to wait
        before it could be."""
        limit = self.frame_limit(worker_id)
        return 0.0 if limit.take() else max(limit.seconds_until_token(), 0.001)

    def frame_limit(self, worker_id: int) -> FrameRateLimit:
        """Return the frame budget that every socket and upload of this worker here shares."""
        limit = self.frame_limits.get(worker_id)
        if limit is None:
            if len(self.frame_limits) >= self._size_after_prune + self.PRUNE_EVERY:
                for known, old in list(self.frame_limits.items()):
                    if old.is_full():
                        del self.frame_limits[known]
                self._size_after_prune = len(self.frame_limits)
            limit = self.frame_limits[worker_id] = FrameRateLimit(
                rate=self.frames_per_second, burst=self.frame_burst, clock=self.clock
            )
        return limit


# GCRA (a token bucket as one timestamp): KEYS[1] holds the time at which the bucket is full
# again; ARGV = seconds per upload, burst. Returns "0" if the upload is taken, else the seconds to
# wait, as a string (Lua numbers reach Python as integers).
_TAKE_UPLOAD = """
local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local full_at = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local wait = full_at - (burst - 1) * interval - now
if wait > 0 then return string.format('%.3f', math.max(wait, 0.001)) end
full_at = full_at + interval
redis.call('SET', KEYS[1], string.format('%.6f', full_at), 'PX',
           math.ceil((full_at - now) * 1000) + 1000)
return '0'
"""


# A count over a window from its first count: KEYS[1], ARGV[1] = the window in seconds. One
# script, so that the count can never outlive its window (an INCR after the key expired would
# make one without a TTL: refused for ever).
_COUNT_IN_WINDOW = """
local count = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""

# A login's seq: Redis' clock in microseconds, and always above the last one (KEYS[1]), so that
# it keeps growing across a Redis restart, as the fallback's seqs do (LocalLimits).
_NEXT_LOGIN_SEQ = """
local t = redis.call('TIME')
local seq = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]),
                     tonumber(redis.call('GET', KEYS[1]) or 0) + 1)
redis.call('SET', KEYS[1], string.format('%d', seq), 'EX', 86400)
return seq
"""


class RedisLimits(LocalLimits):
    """The limits of a replica among several: what a client could multiply by the number of
    replicas is counted in Redis."""

    def __init__(self, *, url: str, prefix: str, replica: str, **limits):
        super().__init__(**limits)
        self.redis = PerLoopRedis(url)
        self.prefix = prefix
        self.replica = replica
        # Loaded by SHA on whichever loop's client runs it; this client only encodes.
        scripts = aioredis.Redis.from_url(url)
        self._take_upload = scripts.register_script(_TAKE_UPLOAD)
        self._count_in_window = scripts.register_script(_COUNT_IN_WINDOW)
        self._next_login_seq = scripts.register_script(_NEXT_LOGIN_SEQ)

    async def login_failed(self, address: str) -> bool:
        key = f"{self.prefix}failed-logins:{client_key(address)}"
        try:
            count = await self._count_in_window([key], [int(WINDOW)], client=self.redis.client)
        except RedisError:
            return await super().login_failed(address)
        return count > self.failed_logins_per_minute

    async def worker_login(self, worker_id: int) -> Login | None:
        logins, seq, last = (
            f"{self.prefix}logins:{worker_id}",
            f"{self.prefix}login-seq:{worker_id}",
            f"{self.prefix}last-login:{worker_id}",
        )
        try:
            async with self.redis.client.pipeline(transaction=False) as pipe:
                await self._count_in_window([logins], [int(WINDOW)], client=pipe)
                await self._next_login_seq([seq], [], client=pipe)
                pipe.set(last, self.replica, ex=int(WINDOW), get=True)
                count, login_seq, previous = await pipe.execute()
        except RedisError:
            return await super().worker_login(worker_id)
        if count > self.worker_logins_per_minute:
            return None
        frames = self.frame_limit(worker_id)
        if previous is not None and previous.decode() != self.replica:
            # The worker's budget was being spent on another replica: no fresh burst here, but
            # one frame, so that a device moved by a replica's restart resends its queue at once
            # (a login limit of 20 a minute bounds what that frame lends to one who hops).
            frames.keep_at_most(MOVED_LOGIN_FRAMES)
        return Login(seq=login_seq, frames=frames)

    async def take_upload(self, worker_id: int) -> float:
        args = [1 / self.frames_per_second, self.frame_burst]
        try:
            wait = await self._take_upload(
                [f"{self.prefix}uploads:{worker_id}"], args, client=self.redis.client
            )
        except RedisError:
            return await super().take_upload(worker_id)
        return float(wait)


_limits: LocalLimits | None = None


_login_gates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> gate


def login_gate() -> asyncio.Semaphore:
    """Return the running event loop's gate of socket logins (LOGINS_AT_ONCE at a time)."""
    loop = asyncio.get_running_loop()
    gate = _login_gates.get(loop)
    if gate is None:
        gate = _login_gates[loop] = asyncio.Semaphore(LOGINS_AT_ONCE)
    return gate


def get_limits() -> LocalLimits:
    """Return this process's limits, built from settings on first use."""
    global _limits
    if _limits is None:
        numbers = {
            "failed_logins_per_minute": settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE,
            "worker_logins_per_minute": settings.TEAMTRACK_WORKER_LOGINS_PER_MINUTE,
            "frames_per_second": settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND,
            "frame_burst": settings.TEAMTRACK_WORKER_FRAME_BURST,
        }
        if settings.TEAMTRACK_RELAY_STATE == "redis":
            _limits = RedisLimits(
                url=settings.REDIS_URL,
                prefix=f"{settings.REDIS_PREFIX}:limits:",
                replica=uuid.uuid4().hex[:12],
                **numbers,
            )
        else:
            _limits = LocalLimits(**numbers)
    return _limits


def reset_limits() -> None:
    """Forget every count and budget (tests, settings changes)."""
    global _limits
    _limits = None
