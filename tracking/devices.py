"""The device side of a replica's relay: the workers whose sockets are here, what they sent this
window, and the acks that wait on it.

A device's positions are gathered per team (newest per worker) into a `TeamBatch`, with the
frames they came in (their acks, and every position of each for the history). At every tick the
relay hands the batches on through a list of *steps* (publish to the team's group; write the
shared last-known state), run at once. If one failed, the batches go back to be handed on again
at the next tick, frames and all. Once every step took them, the frames go to the last step,
the history writer (tracking.history_writer), which acknowledges each once its positions are
committed to the database; with the history off they are acknowledged at once. So an ack
promises that every position of its frame was stored, and reached every live step or was
superseded there by a newer one of the same worker that did.

A resent position (its ts not newer than the worker's last one taken, or its seq that one's) is
not taken again for the live feed, but its frame joins the team's next batch all the same, and
its positions the history (stored once: the database skips a position it has). Hand-offs run
one at a time, a failed one is merged back before the next starts, and the writer stores frames
in the order it took them, so a resend is acknowledged only after its original was.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from channels.layers import get_channel_layer

from tracking import feed, metrics
from tracking.clock import Clock, WallClock
from tracking.history_writer import FrameKey, Frames, HistoryWriter, Row
from tracking.outage import Outage
from tracking.positions import Position, TeamPositions, is_newer
from tracking.state import RelayState

# Seconds a step may take before it counts as failed (and the batch is kept): a hand-off never
# holds the next one, nor a socket's disconnect, for longer.
STEP_TIMEOUT = 5.0

# Frames a team's batch keeps waiting while it cannot be handed on: a team of 100 devices sending
# a frame a second fills it in 100 s, and it costs about 2 MB (more with the history's positions).
MAX_WAITING_ACKS = 10_000
# Positions those frames may hold for the history, for the same reason: frames of 500 positions
# (a full batch) reach it after 100 frames, about 15 MB.
MAX_WAITING_ROWS = 50_000


class DeviceSocket(Protocol):
    """What the relay needs of a device's connection (a worker socket, or an HTTP device of
    tracking.uploads): acks go out on it; revocation closes it."""

    async def acknowledge(self, seq: int) -> None:
        """Tell the device its frame `seq` is safe; never raises (a closed socket's device
        resends after reconnecting)."""

    async def close_with(self, code: int) -> None: ...

    async def token_revoked(self) -> None:
        """Its worker's token was rotated or revoked, or the worker changed: close unless it
        logged in with the token that works now."""


@dataclass(slots=True)
class LocalWorker:
    """A worker with at least one device socket on this replica."""

    team_id: int
    name: str
    sockets: set[DeviceSocket] = field(default_factory=set)
    # The newest position taken from its devices, so that a resent one is taken once.
    taken: Position | None = None


@dataclass
class TeamBatch:
    """A team's positions of one window, newest per worker, and the frames they came in."""

    positions: TeamPositions = field(default_factory=dict)
    # Each frame, in arrival order: its ack (socket, seq), or a key of its own if it asked for
    # none, -> every position in it, for the history (none with the history off). A dict, so
    # that a frame resent many times during an outage waits once.
    frames: dict[FrameKey, list[Row]] = field(default_factory=dict)
    rows: int = 0  # positions in `frames`

    def add_frame(self, key: FrameKey, rows: list[Row]) -> None:
        """Acknowledge this frame once the batch is handed on and stored. A frame with the same
        key (a resend, or a device that repeated a seq) waits once, with the positions of both."""
        earlier = self.frames.get(key)
        if earlier:
            rows = _union(earlier, rows)
        self.rows += len(rows) - len(earlier or ())
        self.frames[key] = rows
        self._keep_bounded()

    def merge_into(self, later: "TeamBatch") -> None:
        """Put this (failed, earlier) batch back under `later`: the newest positions win, and
        this batch's frames go first."""
        for worker_id, position in self.positions.items():
            if is_newer(position, later.positions.get(worker_id)):
                later.positions[worker_id] = position
        frames = dict(self.frames)
        for key, rows in later.frames.items():
            frames[key] = _union(frames[key], rows) if key in frames else rows
        later.frames = frames
        later.rows = sum(map(len, later.frames.values()))
        later._keep_bounded()

    def _keep_bounded(self) -> None:
        """Past MAX_WAITING_ACKS frames or MAX_WAITING_ROWS positions (a long outage), forget
        the oldest frames: their devices never hear of them and resend them, which breaks no
        promise, where memory would grow with every frame."""
        while len(self.frames) > MAX_WAITING_ACKS or self.rows > MAX_WAITING_ROWS:
            self.rows -= len(self.frames.pop(next(iter(self.frames))))


def _union(earlier: list[Row], later: list[Row]) -> list[Row]:
    """The positions of two frames with the same key, each once (a worker's ts names one)."""
    return list({row.position["ts"]: row for row in [*earlier, *later]}.values())


# A step a batch must pass before it is acknowledged: it raises if it could not take them all.
Step = Callable[[dict[int, TeamBatch]], Awaitable[None]]


class DeviceSide:
    """Takes the positions of this replica's device sockets and hands them on once a tick."""

    def __init__(
        self,
        *,
        state: RelayState,
        state_outage: Outage,
        layer_outage: Outage,
        steps: list[Step],
        history: HistoryWriter | None = None,
        clock: Clock | None = None,
        offline_grace: float = 0.0,
    ):
        self.state = state
        self.clock = clock or WallClock()
        self.offline_grace = offline_grace
        self.spawn = asyncio.ensure_future  # the relay's way to run a task in the background
        self.graces: dict[int, object] = {}  # worker id -> its latest close's grace
        self.state_outage = state_outage
        self.layer_outage = layer_outage
        self.steps = steps
        self.history = history
        self.workers: dict[int, LocalWorker] = {}
        self.pending: dict[int, TeamBatch] = {}
        self.handing_off = asyncio.Lock()
        self.draining = False  # set by the relay on SIGTERM

    # ------------------------------------------------------------ sockets and presence

    async def worker_connected(
        self, socket: DeviceSocket, *, team_id: int, worker_id: int, name: str
    ) -> None:
        """Record a device socket; tell managers if the worker came online."""
        worker = self.workers.setdefault(worker_id, LocalWorker(team_id, name))
        worker.sockets.add(socket)
        if len(worker.sockets) == 1:
            version = await self.state_outage.guard(
                self.state.connection_opened(team_id, worker_id)
            )
            if version:
                await self.send_presence(team_id, worker_id, online=True, version=version)

    async def worker_disconnected(
        self, socket: DeviceSocket, *, team_id: int, worker_id: int
    ) -> None:
        """Hand on what the worker sent, then tell managers if it went offline."""
        # Forget the socket before anything can wait: daphne cancels a disconnect that takes
        # over 10 s (a slow hand-off), and a socket left here would hold its lease for ever.
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        worker.sockets.discard(socket)
        last = not worker.sockets
        if last:
            del self.workers[worker_id]
        await self.hand_off([team_id])
        if last:
            # Only the grace of the worker's latest close may take it offline: an earlier one
            # ending while it is away again would show a blink the grace is there to hide.
            grace = self.graces[worker_id] = object()
            went_offline = self._went_offline(team_id, worker_id, worker.name, grace)
            if self.offline_grace:
                self.spawn(went_offline)
            else:
                await went_offline

    async def _went_offline(self, team_id: int, worker_id: int, name: str, grace: object) -> None:
        """Give back the worker's lease, OFFLINE_GRACE after its last socket here closed, unless
        it reconnected meanwhile: a device that flaps (a phone between networks, a client in a
        reconnect loop) shows no offline and online blinks, and its managers get no frame."""
        if self.offline_grace:
            await self.clock.sleep_until(self.clock.time() + self.offline_grace)
        if self.graces.get(worker_id) is not grace:
            return  # it reconnected and closed again since: that close's grace decides
        del self.graces[worker_id]
        back = self.workers.get(worker_id)
        if self.draining or (back is not None and back.team_id == team_id):
            # Draining: the device reconnects to another replica at once, so its lease is kept
            # until it expires and its managers see no offline blink in between. In self.workers
            # again: it reconnected here meanwhile, under the same lease.
            return
        version = await self.state_outage.guard(self.state.connection_closed(team_id, worker_id))
        if version:
            await self.send_presence(team_id, worker_id, online=False, version=version, name=name)

    async def send_presence(
        self, team_id: int, worker_id: int, *, online: bool, version: int, name: str | None = None
    ) -> None:
        """Tell the team's managers, on every replica, that a worker came online or went offline."""
        worker = self.workers.get(worker_id)
        name = worker.name if worker else name
        message = feed.presence_message(
            team_id, worker_id, name=name, online=online, version=version
        )
        await self.layer_outage.guard(
            get_channel_layer().group_send(feed.team_group(team_id), message)
        )

    def sockets_of(self, worker_id: int) -> list[DeviceSocket]:
        worker = self.workers.get(worker_id)
        return list(worker.sockets) if worker else []

    def all_sockets(self) -> list[DeviceSocket]:
        return [socket for worker in self.workers.values() for socket in worker.sockets]

    def workers_by_team(self) -> dict[int, list[int]]:
        """Return the ids of the workers here, by team (for lease renewal)."""
        teams: dict[int, list[int]] = {}
        for worker_id, worker in self.workers.items():
            teams.setdefault(worker.team_id, []).append(worker_id)
        return teams

    # ------------------------------------------------------------ positions

    def positions_received(
        self,
        socket: DeviceSocket,
        *,
        team_id: int,
        worker_id: int,
        positions: list[Position],
        ack_seq: int | None = None,
    ) -> None:
        """Queue the newest of a frame's positions for the next hand-off, unless it was taken
        already (a resend), and the frame for the history; its ack waits on both."""
        worker = self.workers.get(worker_id)
        if worker is None or not positions:
            return
        batch = self.pending.get(team_id)
        if batch is None:
            batch = self.pending[team_id] = TeamBatch()
        if ack_seq is not None or self.history is not None:
            key = (socket, ack_seq) if ack_seq is not None else object()
            rows = [Row(team_id, worker_id, p) for p in positions] if self.history else []
            batch.add_frame(key, rows)
        newest = max(positions, key=lambda position: position["ts"])
        seq = newest.get("seq")
        taken = worker.taken
        if taken is not None and (
            not is_newer(newest, taken) or (seq is not None and seq == taken.get("seq"))
        ):
            metrics.POSITIONS_REJECTED.labels("duplicate").inc(len(positions))
            return
        worker.taken = newest
        metrics.POSITIONS_ACCEPTED.inc(len(positions))
        batch.positions[worker_id] = newest

    async def hand_off(self, team_ids: Iterable[int] | None = None) -> bool:
        """Run the pending batches (of these teams, or all) through every step at once, and
        if every step took them, pass their frames to the history writer (or acknowledge them,
        with the history off); else keep them for the next time (also if the hand-off is
        cancelled). Return whether they were taken."""
        async with self.handing_off:
            if team_ids is None:
                batches, self.pending = self.pending, {}
            else:
                batches = {t: b for t in team_ids if (b := self.pending.pop(t, None)) is not None}
            if not batches:
                return True
            failures = None
            try:
                failures = await _run_steps(self.steps, batches)
            finally:
                if failures != []:
                    self._put_back(batches)
            if failures:
                metrics.LAYER_PUBLISH_ERRORS.inc()
                return False
            frames: Frames = [frame for b in batches.values() for frame in b.frames.items()]
            if self.history is not None:
                self.history.take(frames)  # it acknowledges them once stored
                return True
            for key, _ in frames:
                socket, seq = key
                await socket.acknowledge(seq)
            return True

    def _put_back(self, batches: dict[int, TeamBatch]) -> None:
        for team_id, failed in batches.items():
            later = self.pending.get(team_id)
            if later is None:
                self.pending[team_id] = failed
            else:
                failed.merge_into(later)


async def _run_steps(steps: list[Step], batches: dict[int, TeamBatch]) -> list[BaseException]:
    """Run every step on the batches at once, each for at most STEP_TIMEOUT; return the failures.
    The first step (the live feed's publish) runs in the caller itself, the others as tasks
    beside it: as a task of its own it would start only after every socket read already queued
    in the event loop, and under load its message then missed other replicas' delivery of the
    window (p99 +40 ms measured at 2,000 devices)."""
    first, *others = steps
    beside = [
        asyncio.ensure_future(asyncio.wait_for(step(batches), STEP_TIMEOUT)) for step in others
    ]
    failures = []
    try:
        async with asyncio.timeout(STEP_TIMEOUT):  # not wait_for: that would make it a task
            await first(batches)
    except Exception as error:
        failures.append(error)
    results = await asyncio.gather(*beside, return_exceptions=True)
    return failures + [result for result in results if isinstance(result, BaseException)]
