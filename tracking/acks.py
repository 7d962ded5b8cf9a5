"""Cumulative acks of one device socket, sent at most once per ACK_INTERVAL.

The relay says when each frame is safe (tracking.devices, tracking.history_writer: handed on and
stored). A socket does not answer each frame: it sends `{"type": "ack", "seq": N}`, which tells
the device that every frame it sent on this socket with a seq up to N is safe, except the ones
answered with an error frame (docs/protocol.md). An ack costs a write on the socket, as much as
the frame it answers costs to read; one ack per interval covers every frame of that interval.

N is the highest safe seq below every seq received here and not yet safe, so a frame that is
late, lost in an outage or refused unseen holds back the acks of every frame after it, never the
other way round. A frame refused (an error frame, or dropped unread over the rate limit) has a
seq the socket does not track: from then on nothing above the highest seq received before it is
acknowledged, and the device resends it after reconnecting, as it does when acks stop coming.

An ack held back by the interval goes out at the relay's first tick after the interval ends
(DueAcks): one check per tick for all sockets, where a timer per socket cost a task and a timer
handle per ack (7% of a replica's CPU at 2,000 devices, measured with py-spy).
"""

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


class DueAcks:
    """A replica's sockets whose next ack waits for the end of their interval."""

    def __init__(self):
        self.sockets: dict[SocketAcks, None] = {}  # a set, in the order they were held back

    async def send_due(self, now: float) -> None:
        """Send the acks whose interval has ended (the relay's tick)."""
        due = [acks for acks in self.sockets if acks.due_at <= now]
        for acks in due:
            await acks.flush()


class SocketAcks:
    """What one socket has received and what of it is safe, and the ack that says so."""

    # One per device socket, thousands per replica: slots, and a dict for a set (64 bytes empty
    # against 216), keep it under 300 bytes.
    __slots__ = (
        "send", "interval", "due", "clock", "waiting", "safe", "highest_received", "ceiling",
        "acked", "sent_at", "due_at", "closed", "repeat",
    )  # fmt: skip

    def __init__(
        self,
        send: Callable[[int], Awaitable[None]],
        *,
        interval: float,
        due: DueAcks,
        clock: Clock | None = None,
    ):
        self.send = send
        self.interval = interval
        self.due = due
        self.clock = clock or WallClock()
        # Seqs received and not yet safe (a dict as a set). A seq resent while it waits waits
        # once: the relay keeps one frame per (socket, seq), and either copy's being safe makes
        # the seq safe.
        self.waiting: dict[int, None] = {}
        self.safe: list[int] = []  # safe seqs not yet covered by an ack
        self.highest_received = -1
        self.ceiling = math.inf  # no ack above this: a frame was dropped unread
        self.acked = -1  # the seq of the last ack sent
        self.sent_at = -math.inf  # when (clock.time())
        self.due_at = math.inf  # when the ack held back goes out
        self.closed = False
        self.repeat = False  # a frame acknowledged before came again: say so again

    def received(self, seq: int) -> None:
        """A frame with this seq was taken: acks wait for it."""
        if len(self.waiting) >= MAX_WAITING:
            self.stop_at(min(self.waiting) - 1)
            self.waiting.clear()
        self.waiting[seq] = None
        self.highest_received = max(self.highest_received, seq)

    def frame_refused(self) -> None:
        """A frame was refused (its seq unknown or untracked): acknowledge nothing past the
        frames before it."""
        self.stop_at(self.highest_received)

    def stop_at(self, seq: float) -> None:
        self.ceiling = min(self.ceiling, seq)

    async def frame_safe(self, seq: int) -> None:
        """A frame with this seq is safe: acknowledge it now, or when the interval is up."""
        if self.closed:
            return
        self.waiting.pop(seq, None)
        if seq <= self.acked:
            # A resend of a frame acknowledged before: its device missed the ack, or did not
            # wait for it. Repeat it, so that it is not left waiting.
            self.repeat = True
        else:
            self.safe.append(seq)
            if len(self.safe) > MAX_SAFE:
                self.safe = sorted(self.safe)[-MAX_SAFE // 2 :]
        if self in self.due.sockets:
            return  # an ack goes out at the end of the interval already
        due_at = self.sent_at + self.interval
        if self.clock.time() >= due_at:
            await self.flush()
        else:
            self.due_at = due_at
            self.due.sockets[self] = None

    def ackable(self) -> int | None:
        """The highest seq an ack may name now, if above the last one sent."""
        below = min(min(self.waiting, default=math.inf), self.ceiling + 1)
        covered = [seq for seq in self.safe if seq < below]
        seq = max(covered, default=-1)
        if seq > self.acked:
            return seq
        return self.acked if self.repeat and self.acked >= 0 else None

    async def flush(self) -> None:
        """Send the ack that is due, if any, whatever the interval (a socket that closes)."""
        self._unschedule()
        seq = self.ackable()
        if seq is None or self.closed:
            return
        self.safe = [s for s in self.safe if s > seq]
        self.acked, self.sent_at, self.repeat = seq, self.clock.time(), False
        await self.send(seq)

    def close(self) -> None:
        """The socket is gone: forget the ack held back, and every frame made safe later."""
        self.closed = True
        self._unschedule()

    def _unschedule(self) -> None:
        self.due.sockets.pop(self, None)
        self.due_at = math.inf
