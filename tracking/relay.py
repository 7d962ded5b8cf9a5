"""The relay: batches and conflates each team's positions, fans them out to the team's managers,
and keeps every worker's last-known position and presence (through a state from tracking.state).

Consumers talk only to `get_relay()`. Positions of a team are gathered for one flush window and
sent as one pre-encoded frame to the team's group, so the encoding happens once per batch and the
channel layer carries one message per team per window and replica, however many managers watch.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from tracking import protocol
from tracking.state import InMemoryRelayState, RedisRelayState

logger = logging.getLogger(__name__)


def team_group(team_id: int) -> str:
    """Name the group of every manager socket watching a team."""
    return f"team.{team_id}"


# The group of every replica's relay control channel. One group for all devices, rather than one
# per worker, keeps a replica's group memberships (Redis subscriptions, Kafka partitions) down to
# the teams it serves; revocations are rare and reach each replica once.
DEVICES_GROUP = "devices"

# Channel-layer message types; a consumer handles "a.b" in its method a_b.
POSITIONS_BATCH = "positions.batch"
PRESENCE_CHANGED = "presence.changed"
WORKER_REVOKED = "worker.revoked"


class DeviceSocket(Protocol):
    """What the relay needs of a device's socket: a way to close it when its token is revoked."""

    async def refuse(self) -> None: ...


@dataclass
class LocalWorker:
    """A worker with at least one device socket on this replica."""

    team_id: int
    name: str
    sockets: set[DeviceSocket] = field(default_factory=set)


class RelayUnavailable(Exception):
    """The channel layer or the shared state cannot be reached; a socket cannot be served now."""


class Relay:
    """Gathers positions per team for one flush window, then sends each team one frame."""

    def __init__(self, *, state, flush_window: float, lease_renewal: float | None = None):
        self.state = state
        self.flush_window = flush_window
        self.lease_renewal = lease_renewal
        # team id -> worker id -> newest position received in the current window
        self.pending: dict[int, dict[int, dict]] = {}
        self.local_workers: dict[int, LocalWorker] = {}
        self.tasks: set[asyncio.Task] = set()
        self.maintenance: asyncio.Task | None = None
        self.control_channel: str | None = None
        self.control_lock = asyncio.Lock()
        self.failing = False

    # ------------------------------------------------------------ device side

    async def worker_connected(
        self, socket: DeviceSocket, *, team_id: int, worker_id: int, name: str
    ) -> None:
        """Record a device socket; tell managers if the worker came online."""
        self._ensure_maintenance()
        try:
            await self._ensure_control_channel()
        except Exception as error:
            raise RelayUnavailable from error
        worker = self.local_workers.setdefault(worker_id, LocalWorker(team_id, name))
        worker.sockets.add(socket)
        if len(worker.sockets) == 1:
            if await self._guard(self.state.connection_opened(team_id, worker_id)):
                await self._send_presence(team_id, worker_id, online=True)

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
        if await self._guard(self.state.connection_closed(team_id, worker_id)):
            await self._send_presence(team_id, worker_id, online=False)
        del self.local_workers[worker_id]

    def positions_received(self, *, team_id: int, worker_id: int, positions: list[dict]) -> None:
        """Queue the newest of a worker's positions for the team's next flush."""
        if not positions:
            return
        newest = max(positions, key=lambda position: position["ts"])
        batch = self.pending.get(team_id)
        if batch is None:
            batch = self.pending[team_id] = {}
            asyncio.get_running_loop().call_later(self.flush_window, self._start_flush, team_id)
        queued = batch.get(worker_id)
        if queued is None or newest["ts"] >= queued["ts"]:
            batch[worker_id] = newest

    def _start_flush(self, team_id: int) -> None:
        self._spawn(self.flush_team(team_id))

    async def flush_team(self, team_id: int) -> None:
        """Send a team's queued positions to its managers now."""
        batch = self.pending.pop(team_id, None)
        if not batch:
            return
        newer = await self._guard(self.state.store_latest(team_id, batch))
        if newer is None:
            newer = batch  # the state is unreachable: the live feed still goes out
        if newer:
            frame = protocol.encode_positions(
                [
                    protocol.feed_position(worker_id, position)
                    for worker_id, position in newer.items()
                ]
            )
            await self._guard(
                get_channel_layer().group_send(
                    team_group(team_id), {"type": POSITIONS_BATCH, "text": frame}
                )
            )

    async def _send_presence(self, team_id: int, worker_id: int, *, online: bool) -> None:
        worker = self.local_workers.get(worker_id)
        frame = protocol.encode_presence(worker_id, worker and worker.name, online)
        await self._guard(
            get_channel_layer().group_send(
                team_group(team_id), {"type": PRESENCE_CHANGED, "text": frame}
            )
        )

    # ------------------------------------------------------------ manager side

    async def watch_team(
        self, channel_name: str, *, team_id: int, team_slug: str, roster: list[tuple[int, str]]
    ) -> str:
        """Join a manager socket to its team's group; return the team's snapshot frame."""
        # Replicas with managers reap dead replicas' leases, even if no device is connected here.
        self._ensure_maintenance()
        try:
            # Join before taking the snapshot, so that nothing sent in between is missed.
            await get_channel_layer().group_add(team_group(team_id), channel_name)
            latest, online = await self.state.team_state(team_id)
        except Exception as error:
            raise RelayUnavailable from error
        workers = []
        for worker_id, name in roster:
            entry = {"id": worker_id, "name": name, "lat": None, "lng": None, "ts": None}
            if worker_id in latest:
                entry.update(protocol.feed_position(worker_id, latest[worker_id]))
            entry["online"] = worker_id in online
            workers.append(entry)
        return protocol.encode_snapshot(team_slug, workers)

    async def unwatch_team(self, channel_name: str, *, team_id: int) -> None:
        """Take a manager socket out of its team's group."""
        await self._guard(get_channel_layer().group_discard(team_group(team_id), channel_name))

    # ------------------------------------------------------------ leases (shared state only)

    def _ensure_maintenance(self) -> None:
        if self.lease_renewal and self.maintenance is None:
            self.maintenance = asyncio.ensure_future(self._maintain())

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
            for worker_id in await self.state.renew(team_id, worker_ids):
                await self._send_presence(team_id, worker_id, online=True)
        for team_id, worker_id in await self.state.reap():
            await self._send_presence(team_id, worker_id, online=False)
        self._report_recovery()

    # ------------------------------------------------------------ revocations

    async def _ensure_control_channel(self) -> None:
        """Join this replica to the devices group once, through a channel of the relay's own."""
        async with self.control_lock:  # devices connecting at once must make only one
            if self.control_channel is None:
                layer = get_channel_layer()
                channel = await layer.new_channel()
                await layer.group_add(DEVICES_GROUP, channel)
                self.control_channel = channel
                self._spawn(self._receive_control())

    async def _receive_control(self) -> None:
        """Close the local sockets of workers whose tokens stopped working, for as long as we run."""
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.control_channel)
            except Exception:
                self._report_failure()
                await asyncio.sleep(1)
                continue
            worker = self.local_workers.get(message.get("worker_id"))
            if message.get("type") == WORKER_REVOKED and worker is not None:
                for socket in list(worker.sockets):
                    await socket.refuse()

    # ------------------------------------------------------------ failures

    async def _guard(self, operation):
        """Await a state or layer operation; on failure log once per outage and return None."""
        try:
            result = await operation
        except Exception:
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
        for task in [*self.tasks, self.maintenance]:
            if task is not None:
                task.cancel()


def close_worker_sockets(worker_id: int) -> None:
    """Close every open socket of a worker whose token stopped working (from sync code)."""
    try:
        async_to_sync(get_channel_layer().group_send)(
            DEVICES_GROUP, {"type": WORKER_REVOKED, "worker_id": worker_id}
        )
    except Exception:
        # The token is already gone from the database, so no new socket gets in; an open one
        # stays until it reconnects. The change itself must not fail for that.
        logger.exception("Could not close the open sockets of worker %s", worker_id)


def build_relay() -> Relay:
    """Build the relay the settings ask for: in-process state, or state shared through Redis."""
    if settings.TEAMTRACK_RELAY_STATE == "redis":
        lease_ttl = settings.TEAMTRACK_PRESENCE_TTL
        state = RedisRelayState(
            url=settings.REDIS_URL,
            replica=uuid.uuid4().hex[:12],
            lease_ttl=lease_ttl,
            prefix=f"{settings.REDIS_PREFIX}:state:",
        )
        return Relay(
            state=state, flush_window=settings.TEAMTRACK_FLUSH_WINDOW, lease_renewal=lease_ttl / 3
        )
    return Relay(state=InMemoryRelayState(), flush_window=settings.TEAMTRACK_FLUSH_WINDOW)


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
