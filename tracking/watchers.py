"""The manager side of a replica's relay: the manager sockets here, by team, and what they get.

The relay's channel is in the group of every team watched here. What arrives for a team from
every replica during a window is merged (newest per worker) and delivered once per window as one
frame, encoded once for all of the team's sockets here. Two guards keep a map from going back:
a position not newer than one delivered is dropped, and so is a presence change older than the
worker's last one or than the team's snapshot here (versions from tracking.state).

A socket whose write buffer is full (tracking.backpressure) gets nothing meanwhile: what it
missed is held, conflated, and sent when it drains; after `slow_manager_timeout` it is closed
with 4408.
"""

import asyncio
import time
from typing import Protocol

from channels.layers import get_channel_layer

from tracking import feed, metrics, protocol
from tracking.backpressure import HeldFrames, WriteFlow
from tracking.outage import Outage
from tracking.positions import FeedPosition, is_newer
from tracking.state import RelayState


class ManagerSocket(Protocol):
    """What the relay needs of a manager's socket: frames go out on it, unless its buffer is
    full (write_flow, None where the server cannot tell); its user's logout closes it."""

    user_id: int
    write_flow: WriteFlow | None

    async def send_frame(self, text: str, frame_type: str) -> None: ...

    async def close_with(self, code: int) -> None: ...


class RelayUnavailable(Exception):
    """The channel layer or the shared state cannot be reached; a socket cannot be served now."""


class TeamWatch:
    """A team watched here: its sockets and what they have been sent."""

    def __init__(self):
        self.sockets: set[ManagerSocket] = set()
        self.joining: asyncio.Future | None = None  # this replica joining the team's group
        self.arriving = 0  # sockets between joining and their snapshot
        # What arrived this window, newest per worker, to deliver at the window's delivery.
        self.outgoing: dict[int, FeedPosition] = {}
        # The newest position delivered per worker, and presence versions (from the team's
        # first snapshot here on), so that nothing older is delivered after them.
        self.delivered: dict[int, FeedPosition] = {}
        self.presence_versions: dict[int, int] = {}
        self.snapshot_version: int | None = None
        # Who the maps here were last told is online, and the workers' names, so that a
        # presence change lost in an outage can be told again (catch_up).
        self.online: set[int] = set()
        self.names: dict[int, str] = {}


class ManagerSide:
    """Serves the manager sockets of this replica."""

    def __init__(
        self,
        *,
        state: RelayState,
        state_outage: Outage,
        layer_outage: Outage,
        slow_manager_timeout: float,
    ):
        self.state = state
        self.state_outage = state_outage
        self.layer_outage = layer_outage
        self.slow_manager_timeout = slow_manager_timeout
        self.teams: dict[int, TeamWatch] = {}
        self.held: dict[ManagerSocket, HeldFrames] = {}  # sockets whose buffer is full
        self.channel: str | None = None  # the relay's, set once it is open
        self.spawn = None  # the relay's way to run a task in the background

    # ------------------------------------------------------------ sockets

    async def watch_team(
        self,
        socket: ManagerSocket,
        *,
        team_id: int,
        team_slug: str,
        roster: list[tuple[int, str]],
    ) -> None:
        """Send a manager socket its team's snapshot, then every frame of the team."""
        watch = self.teams.get(team_id)
        if watch is None:
            watch = self.teams[team_id] = TeamWatch()
            # Join before taking the snapshot, so that nothing sent in between is missed; once,
            # however many of the team's sockets connect at the same time.
            watch.joining = asyncio.ensure_future(
                get_channel_layer().group_add(feed.team_group(team_id), self.channel)
            )
        watch.arriving += 1
        try:
            await asyncio.shield(watch.joining)
            latest, online, presence_version = await self.state.team_state(team_id)
        except Exception as error:
            watch.arriving -= 1
            await self._forget_if_unwatched(team_id, watch)  # the next socket joins anew
            raise RelayUnavailable from error
        watch.arriving -= 1
        if watch.snapshot_version is None:
            # The team's first snapshot here: what its sockets know from now on. A later
            # socket's snapshot does not change what the earlier ones were told.
            watch.snapshot_version = presence_version
            watch.online = set(online)
        workers = []
        for worker_id, name in roster:
            watch.names[worker_id] = name
            entry = {"id": worker_id, "name": name, "lat": None, "lng": None, "ts": None}
            position = (
                protocol.feed_position(worker_id, latest[worker_id])
                if worker_id in latest
                else None
            )
            delivered = watch.delivered.get(worker_id)
            if delivered is not None and is_newer(delivered, position):
                # Delivered here before the state had it (publish and state write run at once).
                position = delivered
            if position is not None:
                entry.update(position)
            entry["online"] = worker_id in online
            workers.append(entry)
        # No await between taking the socket in and sending the snapshot: daphne's send does
        # not suspend, so no frame of a tick can get ahead of the snapshot.
        watch.sockets.add(socket)
        if socket.write_flow is not None:
            socket.write_flow.on_drained = lambda: self.spawn(self._release(socket))
        snapshot = protocol.encode_snapshot(team_slug, workers)
        await socket.send_frame(snapshot, "snapshot")
        metrics.frame_sent("snapshot", snapshot)

    async def unwatch_team(self, socket: ManagerSocket, *, team_id: int) -> None:
        """Stop sending a manager socket its team's frames."""
        watch = self.teams.get(team_id)
        if watch is None:
            return
        watch.sockets.discard(socket)
        self.held.pop(socket, None)
        await self._forget_if_unwatched(team_id, watch)

    async def _forget_if_unwatched(self, team_id: int, watch: TeamWatch) -> None:
        """Leave the team's group once no socket here watches it or is about to."""
        if watch.sockets or watch.arriving or self.teams.get(team_id) is not watch:
            return
        del self.teams[team_id]
        await self.layer_outage.guard(
            get_channel_layer().group_discard(feed.team_group(team_id), self.channel)
        )

    def sockets(self, team_id: int | None = None) -> list[ManagerSocket]:
        """Return the manager sockets here: of one team, or of all."""
        if team_id is None:
            return [socket for watch in self.teams.values() for socket in watch.sockets]
        watch = self.teams.get(team_id)
        return list(watch.sockets) if watch else []

    async def close_user(self, user_id: int, team_id: int | None) -> None:
        """Close a user's sockets of one team (4403: no longer a manager of it) or of all (4401)."""
        code = protocol.CLOSE_UNAUTHENTICATED if team_id is None else protocol.CLOSE_FORBIDDEN
        for socket in self.sockets(team_id):
            if socket.user_id == user_id:
                await close_quietly(socket, code)

    # ------------------------------------------------------------ what arrives

    async def take_message(self, message: dict) -> None:
        """Take a message of a team's group: merge positions for the next delivery, or forward
        a presence change at once."""
        watch = self.teams.get(message.get("team_id"))
        if watch is None:
            return  # the last manager here left while the message was on its way
        if message["type"] == feed.POSITIONS_BATCH:
            for position in message["positions"]:
                worker_id = position["id"]
                if is_newer(position, watch.delivered.get(worker_id)):
                    watch.delivered[worker_id] = position
                    watch.outgoing[worker_id] = position
        elif message["type"] == feed.PRESENCE_CHANGED:
            worker_id, version = message["worker_id"], message["version"]
            if version <= watch.presence_versions.get(worker_id, watch.snapshot_version or 0):
                return  # overtaken by a newer change of the worker, or older than the snapshot
            watch.presence_versions[worker_id] = version
            online = message.get("online")  # absent from a replica not upgraded yet
            if online is True:
                watch.online.add(worker_id)
            elif online is False:
                watch.online.discard(worker_id)
            # Positions that arrived before the presence change go out before it, and none after.
            await self._deliver(message["team_id"], watch)
            await self._send(watch, message["text"], "presence", presence_of=worker_id)

    async def catch_up(self, *, presence: bool = True) -> None:
        """Bring each watched team's maps here up to date with the shared state: positions newer
        than they were sent, and (if `presence`) presence they were not told. After an outage a
        message may have been published while this replica's subscription was still down
        (Redis pub/sub keeps nothing for it), or not published at all, and a device's resend of
        a position is a duplicate: the state has both, so the maps get them from there."""
        for team_id, watch in list(self.teams.items()):
            team_state = await self.state_outage.guard(self.state.team_state(team_id))
            if team_state is None:
                continue
            for worker_id, position in team_state.latest.items():
                entry = protocol.feed_position(worker_id, position)
                if is_newer(entry, watch.delivered.get(worker_id)):
                    watch.delivered[worker_id] = watch.outgoing[worker_id] = entry
            changed = watch.online ^ team_state.online if presence else set()
            if not changed:
                continue
            await self._deliver(team_id, watch)  # positions before presence, as always
            for worker_id in sorted(changed):
                watch.presence_versions[worker_id] = team_state.presence_version
                online = worker_id in team_state.online
                frame = protocol.encode_presence(worker_id, watch.names.get(worker_id), online)
                await self._send(watch, frame, "presence", presence_of=worker_id)
            watch.online = set(team_state.online)

    # ------------------------------------------------------------ delivery

    async def deliver_all(self) -> None:
        """Deliver what arrived for every team watched here, one frame per team."""
        started = time.perf_counter()
        for team_id, watch in list(self.teams.items()):
            await self._deliver(team_id, watch)
        metrics.RELAY_FLUSH_SECONDS.labels("deliver").observe(time.perf_counter() - started)

    async def _deliver(self, team_id: int, watch: TeamWatch) -> None:
        if watch.outgoing:
            positions = list(watch.outgoing.values())
            watch.outgoing = {}
            await self._send(
                watch, protocol.encode_positions(positions), "positions", positions=positions
            )

    async def _send(
        self,
        watch: TeamWatch,
        frame: str,
        frame_type: str,
        *,
        positions: list[FeedPosition] | None = None,
        presence_of: int | None = None,
    ) -> None:
        """Send a frame, encoded once, to the team's manager sockets here; for a socket whose
        buffer is full, hold what it says instead (or close the socket if it has been too long)."""
        sent = 0
        for socket in list(watch.sockets):
            flow = socket.write_flow
            if flow is not None and flow.full:
                if flow.full_for() > self.slow_manager_timeout:
                    await self._drop_slow(watch, socket)
                else:
                    self._hold(socket, positions, presence_of, frame)
                continue
            if socket in self.held:  # drained: what it missed goes first
                await self._release(socket)
            try:
                await socket.send_frame(frame, frame_type)
                sent += 1
            except Exception:
                # The socket is closing (daphne: "send on a closed protocol"); its disconnect
                # takes it out. The team's other managers must not miss the frame for it.
                watch.sockets.discard(socket)
        metrics.frame_sent(frame_type, frame, sent)

    # ------------------------------------------------------------ slow sockets

    async def _drop_slow(self, watch: TeamWatch, socket: ManagerSocket) -> None:
        """Close a manager socket that has not read for too long, and send it nothing more."""
        watch.sockets.discard(socket)
        self.held.pop(socket, None)
        metrics.SLOW_MANAGER_DISCONNECTS.inc()
        await close_quietly(socket, protocol.CLOSE_TOO_SLOW)

    def _hold(self, socket, positions, presence_of, frame) -> None:
        held = self.held.setdefault(socket, HeldFrames())
        if positions is not None:
            held.hold_positions(positions)
        elif presence_of is not None:
            held.hold_presence(presence_of, frame)
        metrics.HELD_FRAMES.inc()

    async def _release(self, socket: ManagerSocket) -> None:
        """Send a manager socket whose buffer drained what it missed meanwhile, conflated."""
        held = self.held.pop(socket, None)
        if held is None:
            return
        for frame_type, frame in held.frames():
            try:
                await socket.send_frame(frame, frame_type)
            except Exception:
                return  # closing; its disconnect tidies up
            metrics.frame_sent(frame_type, frame)


async def close_quietly(socket, code: int) -> None:
    """Close a socket that may be closed already."""
    try:
        await socket.close_with(code)
    except Exception:
        pass
