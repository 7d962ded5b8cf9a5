"""Where the relay keeps last-known positions and presence.

InMemoryRelayState serves one process. RedisRelayState shares both across replicas: a worker's
socket is a *lease* of its replica, renewed every few seconds; when a replica dies without a
goodbye, its leases expire and any surviving replica reaps them and reports the workers offline.
Each operation is one Lua script, so replicas never race and every call is one round trip.

Every presence change gets a *version*, increasing per team, so that the managers' relays can
drop a change that arrives after a newer one of the same worker: replicas publish on their own
connections, so their messages can overtake each other (a reap racing a reconnect, say).
"""

import json
import logging
from typing import NamedTuple, Protocol

import orjson
from redis import asyncio as aioredis

from tracking.positions import Batches, Position, merge_newest
from tracking.redis_clients import PerLoopRedis

logger = logging.getLogger(__name__)


class TeamState(NamedTuple):
    latest: dict[int, Position]  # worker id -> last-known position
    online: set[int]  # ids of the workers online
    presence_version: int  # of the newest presence change the above includes


class RelayState(Protocol):
    """Where a relay keeps last-known positions and presence; every method may raise when the
    backing store cannot be reached."""

    async def connection_opened(self, team_id: int, worker_id: int) -> int: ...

    async def connection_closed(self, team_id: int, worker_id: int) -> int: ...

    async def store_latest(self, batches: Batches) -> None: ...

    async def team_state(self, team_id: int) -> TeamState: ...

    async def renew(self, team_id: int, worker_ids: list[int]) -> list[tuple[int, int]]: ...

    async def reap(self) -> list[tuple[int, int, int]]: ...

    async def ping(self) -> None: ...


class InMemoryRelayState:
    """Last-known positions and open device sockets, held by this process alone."""

    def __init__(self):
        self.latest: Batches = {}
        self.online: dict[int, set[int]] = {}
        self.versions: dict[int, int] = {}

    def _next_version(self, team_id: int) -> int:
        self.versions[team_id] = self.versions.get(team_id, 0) + 1
        return self.versions[team_id]

    async def connection_opened(self, team_id: int, worker_id: int) -> int:
        """Record the first socket of a worker on this replica; return the version of the change
        if it came online, else 0."""
        online = self.online.setdefault(team_id, set())
        if worker_id in online:
            return 0
        online.add(worker_id)
        return self._next_version(team_id)

    async def connection_closed(self, team_id: int, worker_id: int) -> int:
        """Forget the last socket of a worker on this replica; return the version of the change
        if it went offline, else 0."""
        online = self.online.get(team_id, set())
        if worker_id not in online:
            return 0
        online.discard(worker_id)
        return self._next_version(team_id)

    async def store_latest(self, batches: Batches) -> None:
        """Keep, per team and worker, the position if it is newer than the last known."""
        merge_newest(self.latest, batches)

    async def team_state(self, team_id: int) -> TeamState:
        """Return a team's last-known positions, online workers and presence version."""
        return TeamState(
            dict(self.latest.get(team_id, {})),
            set(self.online.get(team_id, ())),
            self.versions.get(team_id, 0),
        )

    async def renew(self, team_id: int, worker_ids: list[int]) -> list[tuple[int, int]]:
        """Nothing to renew in one process; return no (worker, version) that came back."""
        return []

    async def reap(self) -> list[tuple[int, int, int]]:
        """Nothing expires in one process; return no (team, worker, version) that went offline."""
        return []

    async def ping(self) -> None:
        """Nothing to reach."""


# KEYS and ARGV of each script are documented above it. Lease members are "<worker>:<replica>";
# `online` counts each worker's live leases; `teams` lists teams that have leases, for reaping;
# `presence_version` is the version of the team's newest presence change.
# Times come from the Redis server (TIME), so replica clocks need not agree.

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"

# The next presence version of a team: at least the server time in microseconds, so that
# versions keep increasing when Redis restarts empty.
_NEXT_VERSION = """
local function next_version(key)
  local version = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]),
                           tonumber(redis.call('GET', key) or 0) + 1)
  redis.call('SET', key, string.format('%d', version))  -- tostring() would round it
  return version
end
"""

# KEYS: leases, online, teams, presence_version. ARGV: member, worker, ttl, team.
# Returns the version of the change if the worker came online, else 0.
_OPEN = (
    _NOW
    + _NEXT_VERSION
    + """
redis.call('SADD', KEYS[3], ARGV[4])
if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return next_version(KEYS[4]) end
end
return 0
"""
)

# KEYS: leases, online, presence_version. ARGV: member, worker.
# Returns the version of the change if the worker went offline, else 0.
_CLOSE = (
    _NOW
    + _NEXT_VERSION
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    return next_version(KEYS[3])
  end
end
return 0
"""
)

# KEYS: leases, online, teams, presence_version. ARGV: ttl, team, then member, worker pairs.
# Returns worker, version pairs (flat) of workers whose lease had gone (Redis restarted, or
# reaped) and are online again.
_RENEW = (
    _NOW
    + _NEXT_VERSION
    + """
local back = {}
redis.call('SADD', KEYS[3], ARGV[2])
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) == 1 then
      table.insert(back, ARGV[i + 1])
      table.insert(back, next_version(KEYS[4]))
    end
  end
end
return back
"""
)

# KEYS: teams. ARGV: key prefix. Returns team, worker, version triples (flat) that went offline.
_REAP = (
    _NOW
    + _NEXT_VERSION
    + """
local gone = {}
for _, team in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local leases = ARGV[1] .. 'leases:' .. team
  local online = ARGV[1] .. 'online:' .. team
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
    redis.call('ZREM', leases, member)
    local worker = string.match(member, '^(%d+):')
    if redis.call('HINCRBY', online, worker, -1) <= 0 then
      redis.call('HDEL', online, worker)
      table.insert(gone, team)
      table.insert(gone, worker)
      table.insert(gone, next_version(ARGV[1] .. 'presence_version:' .. team))
    end
  end
  if redis.call('ZCARD', leases) == 0 then redis.call('SREM', KEYS[1], team) end
end
return gone
"""
)

# KEYS: latest. ARGV: worker, ts, position JSON triples. Stores each position that is newer than
# the one stored, by tracking.positions.is_newer: the later ts wins, and on a tie the stored one
# stays.
_STORE_LATEST = """
for i = 1, #ARGV, 3 do
  local known = redis.call('HGET', KEYS[1], ARGV[i])
  if not known or cjson.decode(known).ts < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
return 0
"""


class RedisRelayState:
    """Last-known positions and presence shared by every replica through Redis."""

    def __init__(self, *, url: str, replica: str, lease_ttl: float, prefix: str = "teamtrack:"):
        self.url = url
        self.replica = replica
        self.lease_ttl = lease_ttl
        self.prefix = prefix
        self._redis = PerLoopRedis(url)
        # Scripts are loaded by SHA on whichever client runs them; this one only encodes.
        scripts = aioredis.Redis.from_url(url)
        self._open = scripts.register_script(_OPEN)
        self._close = scripts.register_script(_CLOSE)
        self._renew = scripts.register_script(_RENEW)
        self._reap = scripts.register_script(_REAP)
        self._store_latest = scripts.register_script(_STORE_LATEST)

    @property
    def redis(self) -> aioredis.Redis:
        """Return the Redis client of the running event loop."""
        return self._redis.client

    async def close(self) -> None:
        """Close the connections of the running event loop."""
        await self._redis.close()

    def _key(self, kind: str, team_id: int | None = None) -> str:
        return f"{self.prefix}{kind}" if team_id is None else f"{self.prefix}{kind}:{team_id}"

    def _member(self, worker_id: int) -> str:
        return f"{worker_id}:{self.replica}"

    async def connection_opened(self, team_id: int, worker_id: int) -> int:
        """Take a lease for the first socket of a worker here; return the version of the change
        if it came online, else 0."""
        keys = [
            self._key("leases", team_id),
            self._key("online", team_id),
            self._key("teams"),
            self._key("presence_version", team_id),
        ]
        args = [self._member(worker_id), worker_id, self.lease_ttl, team_id]
        return int(await self._open(keys, args, client=self.redis))

    async def connection_closed(self, team_id: int, worker_id: int) -> int:
        """Give back the lease of a worker's last socket here; return the version of the change
        if it went offline, else 0."""
        keys = [
            self._key("leases", team_id),
            self._key("online", team_id),
            self._key("presence_version", team_id),
        ]
        args = [self._member(worker_id), worker_id]
        return int(await self._close(keys, args, client=self.redis))

    async def store_latest(self, batches: Batches) -> None:
        """Keep, per team and worker, the position if it is newer than the last known.

        One round trip for every team: the relay calls this once a window."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for team_id, positions in batches.items():
                args = []
                for worker_id, position in positions.items():
                    args += [worker_id, repr(position["ts"]), orjson.dumps(position)]
                await self._store_latest([self._key("latest", team_id)], args, client=pipe)
            await pipe.execute()

    async def team_state(self, team_id: int) -> TeamState:
        """Return a team's last-known positions, online workers and presence version."""
        async with self.redis.pipeline(transaction=True) as pipe:  # one consistent view
            pipe.hgetall(self._key("latest", team_id))
            pipe.hkeys(self._key("online", team_id))
            pipe.get(self._key("presence_version", team_id))
            latest, online, version = await pipe.execute()
        return TeamState(
            {int(worker_id): json.loads(value) for worker_id, value in latest.items()},
            {int(worker_id) for worker_id in online},
            int(version or 0),
        )

    async def renew(self, team_id: int, worker_ids: list[int]) -> list[tuple[int, int]]:
        """Extend this replica's leases of a team's workers; return the (worker, version) pairs
        of those that came back online."""
        keys = [
            self._key("leases", team_id),
            self._key("online", team_id),
            self._key("teams"),
            self._key("presence_version", team_id),
        ]
        args = [self.lease_ttl, team_id]
        for worker_id in worker_ids:
            args += [self._member(worker_id), worker_id]
        flat = await self._renew(keys, args, client=self.redis)
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def reap(self) -> list[tuple[int, int, int]]:
        """Expire the leases of dead replicas; return the (team, worker, version) triples of the
        workers now offline."""
        flat = await self._reap([self._key("teams")], [self.prefix], client=self.redis)
        return [(int(flat[i]), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def ping(self) -> None:
        """Raise if Redis cannot be reached."""
        await self.redis.ping()
