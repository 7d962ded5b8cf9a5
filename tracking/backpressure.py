"""Slow manager sockets: see when a socket's write buffer is full, and hold its frames meanwhile.

An ASGI `send` never waits: daphne hands every frame to Twisted, which buffers whatever the
client does not read, without limit. So each manager socket registers a Twisted push producer
(`WriteFlow`) on its connection; Twisted pauses it when the buffer passes 64 KiB and resumes it
once the buffer has drained. While paused, the relay sends that socket nothing and conflates
what it would have sent into `HeldFrames` (a worker's newest position and latest presence), so
a slow manager costs at most its team's size in memory and never delays the others. A socket
that stays paused past SLOW_MANAGER_SECONDS is closed with 4408.
"""

import functools
import logging
import socket
import time
from collections.abc import Callable

from tracking import protocol
from tracking.positions import FeedPosition, is_newer

logger = logging.getLogger(__name__)

# Kernel buffers of a stalled connection can hold megabytes before Twisted's own buffer fills:
# keep the socket's send buffer small, so that a stall shows within seconds.
SEND_BUFFER_BYTES = 64 * 1024


class WriteFlow:
    """Whether the server's write buffer of one socket is full; a Twisted IPushProducer."""

    def __init__(self, chained=None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.full_since: float | None = None
        self.on_drained: Callable[[], None] | None = None
        # The producer the connection had (twisted.web's HTTPChannel, which upgraded it to a
        # WebSocket): a transport takes one producer, so ours passes every call on to it.
        self.chained = chained

    @classmethod
    def attach(cls, send) -> "WriteFlow | None":
        """Register a WriteFlow on daphne's connection behind an ASGI `send`, if it is one."""
        if not isinstance(send, functools.partial) or not send.args:
            return None  # not daphne (tests, other servers): such sockets are never held
        transport = getattr(send.args[0], "transport", None)
        if transport is None or not hasattr(transport, "registerProducer"):
            return None
        try:
            chained = getattr(transport, "producer", None)
            if chained is not None:
                transport.unregisterProducer()
            flow = cls(chained)
            transport.registerProducer(flow, True)
            handle = transport.getHandle()
            if isinstance(handle, socket.socket):
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except Exception:
            # Server internals changed (a daphne or Twisted upgrade): serve the socket unheld.
            logger.exception("Cannot watch a socket's write buffer; slow managers go unheld")
            return None
        return flow

    @property
    def full(self) -> bool:
        return self.full_since is not None

    def full_for(self) -> float:
        """Seconds the buffer has been full (0 if it is not)."""
        return 0.0 if self.full_since is None else self.clock() - self.full_since

    # Twisted's IPushProducer
    def pauseProducing(self):
        if self.full_since is None:
            self.full_since = self.clock()
        if self.chained is not None:
            self.chained.pauseProducing()

    def resumeProducing(self):
        self.full_since = None
        if self.chained is not None:
            self.chained.resumeProducing()
        if self.on_drained is not None:
            self.on_drained()

    def stopProducing(self):
        self.on_drained = None
        if self.chained is not None:
            self.chained.stopProducing()


class WriteFlowMiddleware:
    """ASGI middleware for the manager route: gives each socket's scope its WriteFlow, as
    `scope["write_flow"]`."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            scope = {**scope, "write_flow": WriteFlow.attach(send)}
        return await self.inner(scope, receive, send)


class HeldFrames:
    """What a manager socket missed while it was full, conflated: at most one entry per worker."""

    def __init__(self):
        self.positions: dict[int, FeedPosition] = {}
        self.presence: dict[int, str] = {}

    def hold_positions(self, positions: list[FeedPosition]) -> None:
        for position in positions:
            if is_newer(position, self.positions.get(position["id"])):
                self.positions[position["id"]] = position

    def hold_presence(self, worker_id: int, frame: str) -> None:
        self.presence[worker_id] = frame

    def frames(self) -> list[tuple[str, str]]:
        """Return the (type, frame) pairs that bring the socket up to date: positions first,
        then presence."""
        frames = []
        if self.positions:
            frames.append(("positions", protocol.encode_positions(list(self.positions.values()))))
        frames.extend(("presence", frame) for frame in self.presence.values())
        return frames
