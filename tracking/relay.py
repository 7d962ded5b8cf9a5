"""The relay: batches and conflates each team's positions, fans them out to the team's managers,
and keeps every worker's last-known position and presence (through a state from tracking.state).

Consumers talk only to `get_relay()`. Each replica's relay has one channel of its own, which
joins the group of every team that has a manager socket here, and one clock that ticks once per
flush window, at the same wall-clock moments on every replica:
- on the tick, each team's newest positions received here go to the team's group as one message
  (and to the shared state as one write);
- DELIVERY_DELAY windows later, when every replica's message of that tick has arrived, each team
  watched here gets one frame, encoded once and written to each of its manager sockets directly.
So the channel layer carries one message per team, window and sending replica, and a manager
gets at most one positions frame per window, however many workers, replicas and managers.

Devices' frames that carry `seq` are acknowledged once the tick has handed them to the channel
layer. A manager socket whose write buffer is full gets nothing meanwhile; what it missed is
conflated (tracking.backpressure) and sent when it drains, or it is closed if it never does.
"""

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from tracking import drain, metrics, protocol
from tracking.backpressure import HeldFrames, WriteFlow
from tracking.state import InMemoryRelayState, RedisRelayState, merge_newest

logger = logging.getLogger(__name__)


def team_group(team_id: int) -> str:
    """Name the group a team's messages go to: the relays of replicas with its managers."""
    return f"team.{team_id}"


# The group of every replica's relay channel, for closing a worker's or a manager's sockets
# wherever they are. One group, rather than one per worker or user, keeps a replica's group
# memberships (Redis subscriptions, Kafka partitions) down to the teams it serves; revocations
# and logouts are rare and reach each replica once.
RELAYS_GROUP = "relays"

# How far into a window a replica delivers what arrived for its managers, as a fraction of the
# window. Measured on 2 loaded cores, a tick's messages from the other replica arrive within 30 ms
# (p90) of the tick; a message later than this waits for the next window's frame.
DELIVERY_DELAY = 0.6

# Channel-layer message types, all taken by the relays' own channels.
POSITIONS_BATCH = "positions.batch"
PRESENCE_CHANGED = "presence.changed"
WORKER_REVOKED = "worker.revoked"
WATCHER_REVOKED = "watcher.revoked"


class DeviceSocket(Protocol):
    """What the relay needs of a device's socket: acks go out on it; revocation closes it."""

    async def send_frame(self, text: str, frame_type: str) -> None: ...

    async def close_with(self, code: int) -> None: ...


class ManagerSocket(Protocol):
    """What the relay needs of a manager's socket: frames go out on it, unless its buffer is
    full (write_flow, None where the server cannot tell); its user's logout closes it."""

    user_id: int
    write_flow: WriteFlow | None

    async def send_frame(self, text: str, frame_type: str) -> None: ...

    async def close_with(self, code: int) -> None: ...


@dataclass
class LocalWorker:
    """A worker with at least one device socket on this replica."""

    team_id: int
    name: str
    sockets: set[DeviceSocket] = field(default_factory=set)
    # The newest position taken from its devices, so that a resent one is relayed once.
    newest_ts: float = -math.inf
    newest_seq: int | None = None


class RelayUnavailable(Exception):
    """The channel layer or the shared state cannot be reached; a socket cannot be served now."""


class Relay:
    """Gathers positions per team for one flush window, then sends each team one frame."""

    def __init__(
        self,
        *,
        state,
        flush_window: float,
        lease_renewal: float | None = None,
        slow_manager_timeout: float = 30.0,
    ):
        self.state = state
        self.flush_window = flush_window
        self.lease_renewal = lease_renewal
        self.slow_manager_timeout = slow_manager_timeout
        # Device side: team id -> worker id -> newest position a device here sent this window,
        # and the (socket, seq) acks due once this window's positions are published.
        self.pending: dict[int, dict[int, dict]] = {}
        self.pending_acks: list[tuple[DeviceSocket, int]] = []
        self.local_workers: dict[int, LocalWorker] = {}
        # Manager side: team id -> worker id -> newest position (as managers see it) that
        # arrived from any replica this window; and the manager sockets here, by team.
        self.outgoing: dict[int, dict[int, dict]] = {}
        self.watchers: dict[int, set[ManagerSocket]] = {}
        self.held: dict[ManagerSocket, HeldFrames] = {}  # sockets whose buffer is full
        # team id -> worker id -> ts of the newest position taken for managers here, so that a
        # late or resent older position never moves a worker back on their maps; and the same
        # for presence versions (tracking.state), starting from the team's first snapshot here.
        self.newest_ts: dict[int, dict[int, float]] = {}
        self.presence_versions: dict[int, dict[int, int]] = {}
        self.snapshot_versions: dict[int, int] = {}
        # Positions not yet in the shared state (for snapshots), saved by one task at a time.
        self.unsaved: dict[int, dict[int, dict]] = {}
        self.saving: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.clock: asyncio.Task | None = None
        self.channel: str | None = None
        self.channel_lock = asyncio.Lock()
        self.failing = False
        self.draining = False

    # ------------------------------------------------------------ device side

    async def worker_connected(
        self, socket: DeviceSocket, *, team_id: int, worker_id: int, name: str
    ) -> None:
        """Record a device socket; tell managers if the worker came online."""
        await self._ensure_running()
        worker = self.local_workers.setdefault(worker_id, LocalWorker(team_id, name))
        worker.sockets.add(socket)
        if len(worker.sockets) == 1:
            if version := await self._guard(self.state.connection_opened(team_id, worker_id)):
                await self._send_presence(team_id, worker_id, online=True, version=version)

    async def worker_disconnected(
        self, socket: DeviceSocket, *, team_id: int, worker_id: int
    ) -> None:
        """Deliver what the worker sent, then tell managers if it went offline."""
        await self.flush_team(team_id)
        worker = self.local_workers.get(worker_id)
        if worker is None:
            return
        worker.sockets.discard(socket)
        if worker.sockets:
            return
        if self.draining:
            # The device reconnects to another replica at once: keep its lease until it expires,
            # so that its managers see no offline blink in between.
            del self.local_workers[worker_id]
            return
        if version := await self._guard(self.state.connection_closed(team_id, worker_id)):
            await self._send_presence(team_id, worker_id, online=False, version=version)
        del self.local_workers[worker_id]

    def positions_received(
        self,
        socket: DeviceSocket,
        *,
        team_id: int,
        worker_id: int,
        positions: list[dict],
        ack_seq: int | None = None,
    ) -> None:
        """Queue the newest of a worker's positions for the next tick, unless it was relayed
        already (a resend); acknowledge the frame once the tick has published it."""
        if ack_seq is not None:
            self.pending_acks.append((socket, ack_seq))
        worker = self.local_workers.get(worker_id)
        if worker is None or not positions:
            return
        newest = max(positions, key=lambda position: position["ts"])
        seq = newest.get("seq")
        if newest["ts"] <= worker.newest_ts or (seq is not None and seq == worker.newest_seq):
            metrics.POSITIONS_REJECTED.labels("duplicate").inc(len(positions))
            return
        worker.newest_ts, worker.newest_seq = newest["ts"], seq
        metrics.POSITIONS_ACCEPTED.inc(len(positions))
        batch = self.pending.get(team_id)
        if batch is None:
            batch = self.pending[team_id] = {}
        batch[worker_id] = newest

    async def flush_team(self, team_id: int) -> None:
        """Send a team's queued positions to its group now."""
        batch = self.pending.pop(team_id, None)
        if batch:
            await self._publish({team_id: batch})

    async def flush(self) -> None:
        """Publish every team's queued positions now, and acknowledge them."""
        pending, self.pending = self.pending, {}
        acks, self.pending_acks = self.pending_acks, []
        published = await self._publish(pending) if pending else True
        if published:
            for socket, seq in acks:
                await _send_quietly(socket, protocol.encode_ack(seq), "ack")

    async def _publish(self, batches: dict[int, dict[int, dict]]) -> bool:
        """Send each team's batch to its group at once; save them all to the state meanwhile.
        Return whether the channel layer took them."""
        self._queue_save(batches)
        started = time.perf_counter()
        published = await self.send_batches(batches)
        metrics.RELAY_FLUSH_SECONDS.labels("publish").observe(time.perf_counter() - started)
        if not published:
            metrics.LAYER_PUBLISH_ERRORS.inc()
        return published

    def _queue_save(self, batches: dict[int, dict[int, dict]]) -> None:
        merge_newest(self.unsaved, batches)
        if self.saving is None or self.saving.done():
            self.saving = asyncio.ensure_future(self._save())

    async def send_batches(self, batches: dict[int, dict[int, dict]]) -> bool:
        """Send each team's newest positions to the team's group, one message per team; return
        whether the channel layer took them."""
        messages = [(team_group(t), self.batch_message(t, batch)) for t, batch in batches.items()]
        return await self._guard(group_send_many(get_channel_layer(), messages)) is not None

    async def _save(self) -> None:
        # The live feed never waits for the state: one write, for every team, at a time.
        while self.unsaved:
            batches, self.unsaved = self.unsaved, {}
            await self._guard(self.state.store_latest(batches))

    def batch_message(self, team_id: int, positions: dict[int, dict]) -> dict:
        """Return the channel-layer message of a team's newest positions."""
        return {
            "type": POSITIONS_BATCH,
            "team_id": team_id,
            "positions": [protocol.feed_position(w, p) for w, p in positions.items()],
        }

    async def _send_presence(
        self, team_id: int, worker_id: int, *, online: bool, version: int
    ) -> None:
        worker = self.local_workers.get(worker_id)
        frame = protocol.encode_presence(worker_id, worker and worker.name, online)
        message = {
            "type": PRESENCE_CHANGED,
            "team_id": team_id,
            "worker_id": worker_id,
            "version": version,
            "text": frame,
        }
        await self._guard(get_channel_layer().group_send(team_group(team_id), message))

    # ------------------------------------------------------------ manager side

    async def watch_team(
        self,
        socket: ManagerSocket,
        *,
        team_id: int,
        team_slug: str,
        roster: list[tuple[int, str]],
    ) -> None:
        """Send a manager socket its team's snapshot, then every frame of the team."""
        await self._ensure_running()
        try:
            first_here = team_id not in self.watchers
            if first_here:
                # Join before taking the snapshot, so that nothing sent in between is missed.
                await get_channel_layer().group_add(team_group(team_id), self.channel)
                self.watchers.setdefault(team_id, set())
            latest, online, presence_version = await self.state.team_state(team_id)
            if first_here:
                self.snapshot_versions[team_id] = presence_version
        except Exception as error:
            if not self.watchers.get(team_id):
                self.watchers.pop(team_id, None)
            raise RelayUnavailable from error
        workers = []
        for worker_id, name in roster:
            entry = {"id": worker_id, "name": name, "lat": None, "lng": None, "ts": None}
            if worker_id in latest:
                entry.update(protocol.feed_position(worker_id, latest[worker_id]))
            entry["online"] = worker_id in online
            workers.append(entry)
        # No await between taking the socket in and sending the snapshot: daphne's send does
        # not suspend, so no frame of a tick can get ahead of the snapshot.
        self.watchers[team_id].add(socket)
        if socket.write_flow is not None:
            socket.write_flow.on_drained = lambda: self._spawn(self._release(socket))
        snapshot = protocol.encode_snapshot(team_slug, workers)
        await socket.send_frame(snapshot, "snapshot")
        metrics.frame_sent("snapshot", snapshot)

    async def unwatch_team(self, socket: ManagerSocket, *, team_id: int) -> None:
        """Stop sending a manager socket its team's frames."""
        sockets = self.watchers.get(team_id)
        if sockets is None:
            return
        sockets.discard(socket)
        self.held.pop(socket, None)
        if not sockets:
            del self.watchers[team_id]
            self.outgoing.pop(team_id, None)
            self.newest_ts.pop(team_id, None)
            self.presence_versions.pop(team_id, None)
            self.snapshot_versions.pop(team_id, None)
            await self._guard(get_channel_layer().group_discard(team_group(team_id), self.channel))

    async def _team_message(self, message: dict) -> None:
        """Take a message of a team's group: merge positions for the next delivery, or forward."""
        team_id = message.get("team_id")
        if team_id not in self.watchers:
            return  # the last manager here left while the message was on its way
        if message["type"] == POSITIONS_BATCH:
            merged = self.outgoing.setdefault(team_id, {})
            newest_ts = self.newest_ts.setdefault(team_id, {})
            for position in message["positions"]:
                worker_id, ts = position["id"], position["ts"]
                known = newest_ts.get(worker_id)
                # Only a newer position counts: an older one would move the worker back, and one
                # of the same ts is a device's resend (through another replica, say).
                if known is None or ts > known:
                    newest_ts[worker_id] = ts
                    merged[worker_id] = position
        elif message["type"] == PRESENCE_CHANGED:
            worker_id, version = message["worker_id"], message["version"]
            versions = self.presence_versions.setdefault(team_id, {})
            if version <= versions.get(worker_id, self.snapshot_versions.get(team_id, 0)):
                return  # overtaken by a newer change of the worker, or older than the snapshot
            versions[worker_id] = version
            # Positions that arrived before the presence change go out before it, and none after.
            await self._deliver(team_id)
            await self._send_to_watchers(
                team_id, message["text"], "presence", presence_of=worker_id
            )

    async def deliver_all(self) -> None:
        """Deliver what arrived for every team watched here, one frame per team."""
        started = time.perf_counter()
        for team_id in list(self.outgoing):
            await self._deliver(team_id)
        metrics.RELAY_FLUSH_SECONDS.labels("deliver").observe(time.perf_counter() - started)

    async def _deliver(self, team_id: int) -> None:
        positions = self.outgoing.pop(team_id, None)
        if positions:
            entries = list(positions.values())
            await self._send_to_watchers(
                team_id, protocol.encode_positions(entries), "positions", positions=entries
            )

    async def _send_to_watchers(
        self,
        team_id: int,
        frame: str,
        frame_type: str,
        *,
        positions: list[dict] | None = None,
        presence_of: int | None = None,
    ) -> None:
        """Send a frame, encoded once, to the team's manager sockets here; for a socket whose
        buffer is full, hold what it says instead (or close the socket if it has been too long)."""
        sent = 0
        for socket in list(self.watchers.get(team_id, ())):
            flow = socket.write_flow
            if flow is not None and flow.full:
                if flow.full_for() > self.slow_manager_timeout:
                    await self._drop_slow(team_id, socket)
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
                self.watchers.get(team_id, set()).discard(socket)
        metrics.frame_sent(frame_type, frame, sent)

    async def _drop_slow(self, team_id: int, socket: ManagerSocket) -> None:
        """Close a manager socket that has not read for too long, and send it nothing more."""
        self.watchers[team_id].discard(socket)
        self.held.pop(socket, None)
        metrics.SLOW_MANAGER_DISCONNECTS.inc()
        await _close_quietly(socket, protocol.CLOSE_TOO_SLOW)

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
            if not await _send_quietly(socket, frame, frame_type):
                return

    # ------------------------------------------------------------ the clock

    async def _tick_forever(self) -> None:
        """On every window boundary publish what devices sent here; DELIVERY_DELAY later deliver
        what arrived for managers here. Boundaries are wall-clock multiples of the window, so
        every replica's messages of a tick arrive before the managers' replicas deliver it."""
        window = self.flush_window
        while True:
            now = time.time()
            await asyncio.sleep((math.floor(now / window) + 1) * window - now)
            try:
                await self.flush()
                now = time.time()
                delivery = (math.floor(now / window) + DELIVERY_DELAY) * window
                await asyncio.sleep(max(0.0, delivery - now))
                await self.deliver_all()
            except Exception:
                logger.exception("A relay tick failed; the next one goes on")

    # ------------------------------------------------------------ background work

    async def _ensure_running(self) -> None:
        """Start the clock and the lease upkeep, and open the relay's channel, once."""
        if self.clock is None:
            self.clock = asyncio.ensure_future(self._tick_forever())
            drain.install(self)
            if self.lease_renewal:
                # Replicas with managers reap dead replicas' leases, even with no device here.
                self._spawn(self._maintain())
        try:
            await self._ensure_channel()
        except Exception as error:
            raise RelayUnavailable from error

    async def _maintain(self) -> None:
        """Renew this replica's leases and reap those of dead replicas, for as long as we run."""
        while True:
            await asyncio.sleep(self.lease_renewal)
            try:
                await self.renew_and_reap()
            except Exception:
                self._report_failure()

    async def renew_and_reap(self) -> None:
        """Renew the leases of local sockets; report workers that came back or whose replica died."""
        teams: dict[int, list[int]] = {}
        for worker_id, worker in self.local_workers.items():
            teams.setdefault(worker.team_id, []).append(worker_id)
        for team_id, worker_ids in teams.items():
            for worker_id, version in await self.state.renew(team_id, worker_ids):
                await self._send_presence(team_id, worker_id, online=True, version=version)
        for team_id, worker_id, version in await self.state.reap():
            await self._send_presence(team_id, worker_id, online=False, version=version)
        self._report_recovery()

    # ------------------------------------------------------------ the relay's channel

    async def _ensure_channel(self) -> None:
        """Open the relay's channel and join it to the devices group, once."""
        async with self.channel_lock:  # sockets connecting at once must make only one
            if self.channel is None:
                layer = get_channel_layer()
                channel = await layer.new_channel()
                await layer.group_add(RELAYS_GROUP, channel)
                self.channel = channel
                self._spawn(self._receive_forever())

    async def _receive_forever(self) -> None:
        """Take every message sent to this replica's relay, for as long as we run."""
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.channel)
            except Exception:
                self._report_failure()
                await asyncio.sleep(1)
                continue
            try:
                if message.get("type") == WORKER_REVOKED:
                    worker = self.local_workers.get(message.get("worker_id"))
                    for socket in list(worker.sockets if worker else ()):
                        await _close_quietly(socket, protocol.CLOSE_UNAUTHENTICATED)
                elif message.get("type") == WATCHER_REVOKED:
                    for socket in self._manager_sockets(message.get("team_id")):
                        if socket.user_id == message.get("user_id"):
                            await _close_quietly(socket, message["code"])
                else:
                    await self._team_message(message)
            except Exception:
                logger.exception("The relay could not handle a %s message", message.get("type"))

    # ------------------------------------------------------------ shutdown

    async def drain(self) -> None:
        """Hand everything in flight on, then close every socket with 4012 so that its client
        reconnects to another replica at once (SIGTERM; tracking.drain)."""
        self.draining = True
        await self.flush()
        await self.deliver_all()
        for worker in list(self.local_workers.values()):
            for socket in list(worker.sockets):
                await _close_quietly(socket, protocol.CLOSE_SERVICE_RESTART)
        for socket in self._manager_sockets():
            await _close_quietly(socket, protocol.CLOSE_SERVICE_RESTART)

    def _manager_sockets(self, team_id: int | None = None) -> list[ManagerSocket]:
        """Return the manager sockets here: of one team, or of all."""
        teams = self.watchers.values() if team_id is None else [self.watchers.get(team_id, ())]
        return [socket for sockets in teams for socket in sockets]

    # ------------------------------------------------------------ failures

    async def _guard(self, operation):
        """Await a state or layer operation; on failure log once per outage and return None."""
        try:
            result = await operation
        except Exception:
            metrics.RELAY_ERRORS.inc()
            self._report_failure()
            return None
        self._report_recovery()
        return result

    def _report_failure(self) -> None:
        if not self.failing:
            self.failing = True
            logger.exception("Relay lost its state or channel layer; retrying quietly")

    def _report_recovery(self) -> None:
        if self.failing:
            self.failing = False
            logger.warning("Relay reaches its state and channel layer again")

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def stop(self) -> None:
        """Cancel background work (tests, shutdown)."""
        for task in [*self.tasks, self.clock, self.saving]:
            if task is not None:
                task.cancel()


async def group_send_many(layer, messages: list[tuple[str, dict]]) -> int:
    """Send (group, message) pairs at once where the layer can (our Redis pub/sub and Kafka
    layers), else one by one; return how many were sent."""
    if "group_send_many" in getattr(layer, "extensions", ()):
        await layer.group_send_many(messages)
    else:
        for group, message in messages:
            await layer.group_send(group, message)
    return len(messages)


async def _send_quietly(socket, text: str, frame_type: str) -> bool:
    """Send a frame to a socket that may be closing; return whether it went out."""
    try:
        await socket.send_frame(text, frame_type)
    except Exception:
        return False  # daphne: "send on a closed protocol"; its disconnect tidies up
    metrics.frame_sent(frame_type, text)
    return True


async def _close_quietly(socket, code: int) -> None:
    try:
        await socket.close_with(code)
    except Exception:
        pass  # already closed


def close_worker_sockets(worker_id: int) -> None:
    """Close every open socket of a worker whose token stopped working (from sync code)."""
    _tell_every_relay({"type": WORKER_REVOKED, "worker_id": worker_id})


def close_manager_sockets(user_id: int, *, team_id: int | None = None, code: int) -> None:
    """Close a user's manager sockets, of one team or of all, on every replica (from sync code):
    the user logged out, was deactivated, or no longer manages the team."""
    _tell_every_relay(
        {"type": WATCHER_REVOKED, "user_id": user_id, "team_id": team_id, "code": code}
    )


def _tell_every_relay(message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(RELAYS_GROUP, message)
    except Exception:
        # The token or session is already gone from the database, so no new socket gets in;
        # an open one stays until it reconnects. The change itself must not fail for that.
        logger.exception("Could not tell the relays to close sockets: %s", message["type"])


def build_relay() -> Relay:
    """Build the relay the settings ask for: in-process state, or state shared through Redis."""
    relay_class = Relay
    if settings.TEAMTRACK_RELAY_MODE == "stock":
        from tracking.stock import StockRelay  # the benchmark's baseline only

        relay_class = StockRelay
    timing = {
        "flush_window": settings.TEAMTRACK_FLUSH_WINDOW,
        "slow_manager_timeout": settings.TEAMTRACK_SLOW_MANAGER_SECONDS,
    }
    if settings.TEAMTRACK_RELAY_STATE == "redis":
        lease_ttl = settings.TEAMTRACK_PRESENCE_TTL
        state = RedisRelayState(
            url=settings.REDIS_URL,
            replica=uuid.uuid4().hex[:12],
            lease_ttl=lease_ttl,
            prefix=f"{settings.REDIS_PREFIX}:state:",
        )
        return relay_class(state=state, lease_renewal=lease_ttl / 3, **timing)
    return relay_class(state=InMemoryRelayState(), **timing)


_relay: Relay | None = None


def get_relay() -> Relay:
    """Return this process's relay, built from settings on first use."""
    global _relay
    if _relay is None:
        _relay = build_relay()
    return _relay


def reset_relay() -> None:
    """Forget the relay and everything it holds (tests, settings changes)."""
    global _relay
    if _relay is not None:
        _relay.stop()
    _relay = None
