"""Redis clients for the relay's state and the abuse limits: one per event loop, as a client
binds to the loop it first runs on."""

import asyncio
import weakref

from redis import asyncio as aioredis


class PerLoopRedis:
    """Hands each event loop its own client of one Redis, on a bounded pool that waits."""

    def __init__(self, url: str):
        self.url = url
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def client(self) -> aioredis.Redis:
        """Return the Redis client of the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # A bounded pool that waits: a storm of connects or disconnects queues for a
            # connection instead of failing with "too many connections".
            # health_check_interval: a connection idle for a while (a Redis restart in between)
            # is checked with a PING before use, instead of failing the first command sent on it.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=32,
                timeout=20,
                socket_timeout=5,
                socket_connect_timeout=5,
                health_check_interval=2,
            )
            client = self._clients[loop] = aioredis.Redis(connection_pool=pool)
        return client

    async def close(self) -> None:
        """Close the connections of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
