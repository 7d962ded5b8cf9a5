"""Cumulative acks of one device socket, sent at most once per ACK_INTERVAL.

The relay says when each frame is safe (tracking.devices, tracking.history_writer: handed on and
stored). A socket does not answer each frame: it sends `{"type": "ack", "seq": N}`, which tells
the device that every frame it sent on this socket with a seq up to N is safe, except the ones
answered with an error frame (docs/protocol.md). An ack costs a write on the socket, as much as
the frame it answers costs to read; one ack per interval covers every frame of that interval.

N is the highest safe seq below every seq received here and not yet safe, so a frame that is
late, lost in an outage or refused unseen holds back the acks of every frame after it, never the
other way round. A frame dropped unread (over the rate limit) has a seq the socket never saw:
from then on nothing above the highest seq received before it is acknowledged, and the device
resends it after reconnecting, as it does when acks stop coming.
"""

import asyncio
import math
from collections.abc import Awaitable, Callable

from tracking.clock import Clock, WallClock

# Frames a socket may have waiting for their ack; past that, its acks stop where they are (as
# for a frame dropped unread), so that a device whose frames are all refused (the history full
# for hours) costs bounded memory. 1,000 is over three minutes at the rate limit's 5 frames/s.
MAX_WAITING = 1000
# Safe seqs remembered above the last ack (behind a frame that holds acks back); the oldest are
# forgotten past this, which only makes the next ack lower, never earlier.
MAX_SAFE = 1000


class SocketAcks:
    """What one socket has received and what of it is safe, and the ack that says so."""

    def __init__(
        self,
        send: Callable[[int], Awaitable[None]],
        *,
        interval: float,
        clock: Clock | None = None,
    ):
        self.send = send
        self.interval = interval
        self.clock = clock or WallClock()
        # Seqs received and not yet safe. A seq resent while it waits waits once: the relay
        # keeps one frame per (socket, seq), and either copy being safe makes the seq safe.
        self.waiting: set[int] = set()
        self.safe: list[int] = []  # safe seqs not yet covered by an ack
        self.highest_received = -1
        self.ceiling = math.inf  # no ack above this: a frame was dropped unread
        self.acked = -1  # the seq of the last ack sent
        self.sent_at = -math.inf  # when (clock.time())
        self.later: asyncio.Task | None = None

    def received(self, seq: int) -> None:
        """A frame with this seq was taken: acks wait for it."""
        if len(self.waiting) >= MAX_WAITING:
            self.stop_at(min(self.waiting) - 1)
            self.waiting.clear()
        self.waiting.add(seq)
        self.highest_received = max(self.highest_received, seq)

    def dropped_unread(self) -> None:
        """A frame was dropped before its seq was read: acknowledge nothing past what came
        before it."""
        self.stop_at(self.highest_received)

    def stop_at(self, seq: float) -> None:
        self.ceiling = min(self.ceiling, seq)

    async def frame_safe(self, seq: int) -> None:
        """A frame with this seq is safe: acknowledge it now, or when the interval is up."""
        self.waiting.discard(seq)
        if seq > self.acked:  # else covered already (a resend of a frame acknowledged before)
            self.safe.append(seq)
            if len(self.safe) > MAX_SAFE:
                self.safe = sorted(self.safe)[-MAX_SAFE // 2 :]
        if self.later is not None:
            return  # an ack is due at the end of the interval already
        due = self.sent_at + self.interval
        if self.clock.time() >= due:
            await self.flush()
        else:
            self.later = asyncio.ensure_future(self._flush_at(due))

    async def _flush_at(self, moment: float) -> None:
        await self.clock.sleep_until(moment)
        self.later = None
        await self.flush()

    def ackable(self) -> int | None:
        """The highest seq an ack may name now, if above the last one sent."""
        below = min(min(self.waiting, default=math.inf), self.ceiling + 1)
        covered = [seq for seq in self.safe if seq < below]
        if not covered:
            return None
        seq = max(covered)
        return seq if seq > self.acked else None

    async def flush(self) -> None:
        """Send the ack that is due, if any, whatever the interval (a socket that closes)."""
        if self.later is not None:
            self.later.cancel()
            self.later = None
        seq = self.ackable()
        if seq is None:
            return
        self.safe = [s for s in self.safe if s > seq]
        self.acked, self.sent_at = seq, self.clock.time()
        await self.send(seq)

    def close(self) -> None:
        """Forget the ack due later: the socket is gone."""
        if self.later is not None:
            self.later.cancel()
            self.later = None
