"""Where the relay keeps last-known positions and presence.

InMemoryRelayState serves one process. RedisRelayState shares both across replicas: a worker's
socket is a *lease* of its replica, renewed every few seconds; when a replica dies without a
goodbye, its leases expire and any surviving replica reaps them and reports the workers offline.
Each operation is one Lua script, so replicas never race and every call is one round trip.
"""

import asyncio
import json
import logging
import weakref

from redis import asyncio as aioredis

logger = logging.getLogger(__name__)


def merge_newest(into: dict[int, dict[int, dict]], batches: dict[int, dict[int, dict]]) -> None:
    """Merge team -> worker -> position batches into `into`, keeping the newest position by ts."""
    for team_id, positions in batches.items():
        known_positions = into.setdefault(team_id, {})
        for worker_id, position in positions.items():
            known = known_positions.get(worker_id)
            if known is None or position["ts"] >= known["ts"]:
                known_positions[worker_id] = position


class InMemoryRelayState:
    """Last-known positions and open device sockets, held by this process alone."""

    def __init__(self):
        self.latest: dict[int, dict[int, dict]] = {}
        self.online: dict[int, set[int]] = {}

    async def connection_opened(self, team_id: int, worker_id: int) -> bool:
        """Record the first socket of a worker on this replica; return whether it came online."""
        online = self.online.setdefault(team_id, set())
        came_online = worker_id not in online
        online.add(worker_id)
        return came_online

    async def connection_closed(self, team_id: int, worker_id: int) -> bool:
        """Forget the last socket of a worker on this replica; return whether it went offline."""
        online = self.online.get(team_id, set())
        went_offline = worker_id in online
        online.discard(worker_id)
        return went_offline

    async def store_latest(self, batches: dict[int, dict[int, dict]]) -> None:
        """Keep, per team and worker, the position if it is newer than the last known."""
        merge_newest(self.latest, batches)

    async def team_state(self, team_id: int) -> tuple[dict[int, dict], set[int]]:
        """Return a team's last-known positions and the ids of its online workers."""
        return dict(self.latest.get(team_id, {})), set(self.online.get(team_id, ()))

    async def renew(self, team_id: int, worker_ids: list[int]) -> list[int]:
        """Nothing to renew in one process; return no worker that came back."""
        return []

    async def reap(self) -> list[tuple[int, int]]:
        """Nothing expires in one process; return no (team, worker) that went offline."""
        return []

    async def ping(self) -> None:
        """Nothing to reach."""


# KEYS and ARGV of each script are documented above it. Lease members are "<worker>:<replica>";
# `online` counts each worker's live leases; `teams` lists teams that have leases, for reaping.
# Times come from the Redis server (TIME), so replica clocks need not agree.

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"

# KEYS: leases, online, teams. ARGV: member, worker, ttl, team. Returns 1 if the worker came online.
_OPEN = (
    _NOW
    + """
redis.call('SADD', KEYS[3], ARGV[4])
if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
end
return 0
"""
)

# KEYS: leases, online. ARGV: member, worker. Returns 1 if the worker went offline.
_CLOSE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    return 1
  end
end
return 0
"""

# KEYS: leases, online, teams. ARGV: ttl, team, then member, worker pairs.
# Returns the workers whose lease had gone (Redis restarted, or reaped) and are online again.
_RENEW = (
    _NOW
    + """
local back = {}
redis.call('SADD', KEYS[3], ARGV[2])
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) == 1 then table.insert(back, ARGV[i + 1]) end
  end
end
return back
"""
)

# KEYS: teams. ARGV: key prefix. Returns team, worker pairs (flat) that went offline.
_REAP = (
    _NOW
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
    end
  end
  if redis.call('ZCARD', leases) == 0 then redis.call('SREM', KEYS[1], team) end
end
return gone
"""
)

# KEYS: latest. ARGV: worker, ts, position JSON triples. Stores each position that is at least
# as new as the one stored.
_STORE_LATEST = """
for i = 1, #ARGV, 3 do
  local known = redis.call('HGET', KEYS[1], ARGV[i])
  if not known or cjson.decode(known).ts <= tonumber(ARGV[i + 1]) then
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
        # A client binds to the event loop it first runs on, so keep one per loop.
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
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
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # A bounded pool that waits: a storm of connects or disconnects queues for a
            # connection instead of failing with "too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=32, timeout=20, socket_timeout=5, socket_connect_timeout=5
            )
            client = self._clients[loop] = aioredis.Redis(connection_pool=pool)
        return client

    async def close(self) -> None:
        """Close the connections of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _key(self, kind: str, team_id: int | None = None) -> str:
        return f"{self.prefix}{kind}" if team_id is None else f"{self.prefix}{kind}:{team_id}"

    def _member(self, worker_id: int) -> str:
        return f"{worker_id}:{self.replica}"

    async def connection_opened(self, team_id: int, worker_id: int) -> bool:
        """Take a lease for the first socket of a worker here; return whether it came online."""
        keys = [self._key("leases", team_id), self._key("online", team_id), self._key("teams")]
        args = [self._member(worker_id), worker_id, self.lease_ttl, team_id]
        return await self._open(keys, args, client=self.redis) == 1

    async def connection_closed(self, team_id: int, worker_id: int) -> bool:
        """Give back the lease of a worker's last socket here; return whether it went offline."""
        keys = [self._key("leases", team_id), self._key("online", team_id)]
        return await self._close(keys, [self._member(worker_id), worker_id], client=self.redis) == 1

    async def store_latest(self, batches: dict[int, dict[int, dict]]) -> None:
        """Keep, per team and worker, the position if it is newer than the last known.

        One round trip for every team: the relay calls this once a window."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for team_id, positions in batches.items():
                args = []
                for worker_id, position in positions.items():
                    args += [worker_id, repr(position["ts"]), json.dumps(position)]
                await self._store_latest([self._key("latest", team_id)], args, client=pipe)
            await pipe.execute()

    async def team_state(self, team_id: int) -> tuple[dict[int, dict], set[int]]:
        """Return a team's last-known positions and the ids of its online workers."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key("latest", team_id))
            pipe.hkeys(self._key("online", team_id))
            latest, online = await pipe.execute()
        return (
            {int(worker_id): json.loads(value) for worker_id, value in latest.items()},
            {int(worker_id) for worker_id in online},
        )

    async def renew(self, team_id: int, worker_ids: list[int]) -> list[int]:
        """Extend this replica's leases of a team's workers; return those that came back online."""
        keys = [self._key("leases", team_id), self._key("online", team_id), self._key("teams")]
        args = [self.lease_ttl, team_id]
        for worker_id in worker_ids:
            args += [self._member(worker_id), worker_id]
        return [int(worker_id) for worker_id in await self._renew(keys, args, client=self.redis)]

    async def reap(self) -> list[tuple[int, int]]:
        """Expire the leases of dead replicas; return the (team, worker) pairs now offline."""
        flat = await self._reap([self._key("teams")], [self.prefix], client=self.redis)
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def ping(self) -> None:
        """Raise if Redis cannot be reached."""
        await self.redis.ping()
