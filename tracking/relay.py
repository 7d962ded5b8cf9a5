"""The relay: batches and conflates each team's positions, fans them out to the team's managers,
and keeps every worker's last-known position and presence.

Consumers talk only to `get_relay()`. Positions of a team are gathered for one flush window and
sent as one pre-encoded frame to the team's group, so the encoding happens once per batch and the
channel layer carries one message per team per window, however many managers watch.
Where last-known positions and presence live is the job of a RelayState; InMemoryRelayState keeps
them in this process, which is right for the single-process default.
"""

import asyncio
import logging
from collections import Counter

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from tracking import protocol

logger = logging.getLogger(__name__)


def team_group(team_id: int) -> str:
    """Name the group of every manager socket watching a team."""
    return f"team.{team_id}"


def worker_group(worker_id: int) -> str:
    """Name the group of every open socket of one worker's device."""
    return f"worker.{worker_id}"


# Channel-layer message types; a consumer handles "a.b" in its method a_b.
POSITIONS_BATCH = "positions.batch"
PRESENCE_CHANGED = "presence.changed"
WORKER_REVOKED = "worker.revoked"


class InMemoryRelayState:
    """Last-known positions and open device sockets, held by this process alone."""

    def __init__(self):
        self.latest: dict[int, dict] = {}
        self.connections: Counter[int] = Counter()

    async def connection_opened(self, worker_id: int) -> bool:
        """Count a device socket; return whether its worker just came online."""
        self.connections[worker_id] += 1
        return self.connections[worker_id] == 1

    async def connection_closed(self, worker_id: int) -> bool:
        """Uncount a device socket; return whether its worker just went offline."""
        self.connections[worker_id] -= 1
        if self.connections[worker_id] > 0:
            return False
        del self.connections[worker_id]
        return True

    async def store_latest(self, positions: dict[int, dict]) -> dict[int, dict]:
        """Keep the positions newer than the last known; return those that were."""
        newer = {}
        for worker_id, position in positions.items():
            known = self.latest.get(worker_id)
            if known is None or position["ts"] >= known["ts"]:
                self.latest[worker_id] = newer[worker_id] = position
        return newer

    async def team_state(self, worker_ids: list[int]) -> tuple[dict[int, dict], set[int]]:
        """Return the last-known positions and the online set of these workers."""
        latest = {
            worker_id: self.latest[worker_id]
            for worker_id in worker_ids
            if worker_id in self.latest
        }
        online = {worker_id for worker_id in worker_ids if worker_id in self.connections}
        return latest, online


class Relay:
    """Gathers positions per team for one flush window, then sends each team one frame."""

    def __init__(self, *, state, flush_window: float):
        self.state = state
        self.flush_window = flush_window
        # team id -> worker id -> newest position received in the current window
        self.pending: dict[int, dict[int, dict]] = {}
        self.flush_tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------ device side

    async def worker_connected(self, *, team_id: int, worker_id: int, name: str) -> None:
        """Record a device socket and tell managers if the worker came online."""
        if await self.state.connection_opened(worker_id):
            await self._send_presence(team_id, worker_id, name, online=True)

    async def worker_disconnected(self, *, team_id: int, worker_id: int, name: str) -> None:
        """Deliver what the worker sent, then tell managers if it went offline."""
        await self.flush_team(team_id)
        if await self.state.connection_closed(worker_id):
            await self._send_presence(team_id, worker_id, name, online=False)

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
        task = asyncio.ensure_future(self.flush_team(team_id))
        self.flush_tasks.add(task)
        task.add_done_callback(self.flush_tasks.discard)

    async def flush_team(self, team_id: int) -> None:
        """Send a team's queued positions to its managers now."""
        batch = self.pending.pop(team_id, None)
        if not batch:
            return
        try:
            newer = await self.state.store_latest(batch)
            if newer:
                frame = protocol.encode_positions(
                    [
                        protocol.feed_position(worker_id, position)
                        for worker_id, position in newer.items()
                    ]
                )
                await get_channel_layer().group_send(
                    team_group(team_id), {"type": POSITIONS_BATCH, "text": frame}
                )
        except Exception:
            logger.exception("Could not flush the positions of team %s", team_id)

    async def _send_presence(
        self, team_id: int, worker_id: int, name: str, *, online: bool
    ) -> None:
        frame = protocol.encode_presence(worker_id, name, online)
        await get_channel_layer().group_send(
            team_group(team_id), {"type": PRESENCE_CHANGED, "text": frame}
        )

    # ------------------------------------------------------------ manager side

    async def snapshot(self, *, team_slug: str, roster: list[tuple[int, str]]) -> str:
        """Encode the snapshot frame of a team: every worker, its last position and presence."""
        latest, online = await self.state.team_state([worker_id for worker_id, _ in roster])
        workers = []
        for worker_id, name in roster:
            entry = {"id": worker_id, "name": name, "lat": None, "lng": None, "ts": None}
            if worker_id in latest:
                entry.update(protocol.feed_position(worker_id, latest[worker_id]))
            entry["online"] = worker_id in online
            workers.append(entry)
        return protocol.encode_snapshot(team_slug, workers)


def close_worker_sockets(worker_id: int) -> None:
    """Close every open socket of a worker whose token stopped working (from sync code)."""
    async_to_sync(get_channel_layer().group_send)(worker_group(worker_id), {"type": WORKER_REVOKED})


_relay: Relay | None = None


def get_relay() -> Relay:
    """Return this process's relay, built from settings on first use."""
    global _relay
    if _relay is None:
        _relay = Relay(state=InMemoryRelayState(), flush_window=settings.TEAMTRACK_FLUSH_WINDOW)
    return _relay


def reset_relay() -> None:
    """Forget the relay and everything it holds (tests, settings changes)."""
    global _relay
    _relay = None
