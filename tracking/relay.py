"""A replica's relay: its one channel, its clock, and the device and manager sides it drives.

Consumers talk only to `get_relay()`. Each replica's relay has one channel of its own, which is
in the relays group (teamtrack.control) and in the group of every team with a manager socket
here (tracking.watchers), and one clock that ticks once per flush window, at the same wall-clock
moments on every replica:
- on the tick, the device side (tracking.devices) hands each team's newest positions received
  here to the team's group and to the shared state, and acknowledges them once both took them;
- DELIVERY_DELAY windows later, when every replica's message of that tick has arrived, the
  manager side delivers each team watched here one frame, encoded once for all its sockets.
So the channel layer carries one message per team, window and sending replica, and a manager
gets at most one positions frame per window, however many workers, replicas and managers.

The relay also renews this replica's presence leases and reaps dead replicas' (tracking.state),
and drains on SIGTERM (tracking.drain). docs/architecture.md follows one position through it.
"""

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict

from channels.layers import get_channel_layer
from django.conf import settings

from teamtrack import control
from tracking import drain, feed, metrics, protocol
from tracking.acks import DueAcks
from tracking.clock import Clock, WallClock
from tracking.devices import DeviceSide, DeviceSocket, TeamBatch
from tracking.history_writer import HistoryWriter
from tracking.outage import Outage
from tracking.positions import Position
from tracking.state import InMemoryRelayState, RedisRelayState, RelayState
from tracking.uploads import HttpDevices
from tracking.watchers import ManagerSide, ManagerSocket, RelayUnavailable, close_quietly

logger = logging.getLogger(__name__)

__all__ = ["Relay", "RelayUnavailable", "build_relay", "get_relay", "reset_relay", "set_relay"]

# How far into a window a replica delivers what arrived for its managers, as a fraction of the
# window. Measured on 2 loaded cores, a tick's messages from the other replica arrive within 30 ms
# (p90) of the tick; a message later than this waits for the next window's frame.
DELIVERY_DELAY = 0.6

# Seconds a draining replica keeps trying to store what its devices sent before it closes their
# sockets: within Kubernetes' default 30 s grace, and unacknowledged frames are resent anyway.
DRAIN_STORE_TIMEOUT = 10.0

# Workers whose newest login a replica remembers (about 50 bytes each), to refuse a login that a
# newer one overtook on its way here.
MAX_REMEMBERED_LOGINS = 100_000


class Relay:
    """One replica's relay."""

    def __init__(
        self,
        *,
        state: RelayState,
        flush_window: float,
        lease_renewal: float | None = None,
        slow_manager_timeout: float = 30.0,
        http_device_timeout: float = 600.0,
        offline_grace: float = 0.0,
        history: HistoryWriter | None = None,
        clock: Clock | None = None,
    ):
        self.state = state
        self.history = history
        self.flush_window = flush_window
        self.lease_renewal = lease_renewal
        self.clock = clock or WallClock()
        self.layer_outage, self.state_outage = Outage("channel layer"), Outage("state")
        outages = {"layer_outage": self.layer_outage, "state_outage": self.state_outage}
        self.devices = DeviceSide(
            state=state,
            steps=[self.publish, self.store_latest],
            history=history,
            clock=self.clock,
            offline_grace=offline_grace,
            **outages,
        )
        self.devices.spawn = self._spawn
        self.managers = ManagerSide(
            state=state, slow_manager_timeout=slow_manager_timeout, **outages
        )
        self.managers.spawn = self._spawn
        self.uploads = HttpDevices(self, clock=self.clock, timeout=http_device_timeout)
        self.due_acks = DueAcks()
        for outage in outages.values():
            outage.on_recovery = lambda: self._spawn(self._catch_up())
        # worker id -> the newest login seq heard of, least recently heard first
        self.newest_logins: OrderedDict[int, int] = OrderedDict()
        self.channel: str | None = None
        self.opened_channel: str | None = None
        self.channel_lock = asyncio.Lock()
        self.ticking: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------ what consumers call

    async def worker_connected(
        self,
        socket: DeviceSocket,
        *,
        team_id: int,
        worker_id: int,
        name: str,
        login_seq: int | None = None,
    ) -> None:
        """Record a device socket; tell managers if the worker came online. A socket's login
        (`login_seq`) closes the worker's older sockets on every replica: one device reports
        for a worker, and its frame budget is not multiplied by the number of replicas."""
        await self._ensure_running()
        await self.devices.worker_connected(socket, team_id=team_id, worker_id=worker_id, name=name)
        if login_seq is not None:
            if self._newer_login_seen(worker_id, login_seq):
                # A newer login's message overtook this one's registration: it lost already.
                await close_quietly(socket, protocol.CLOSE_REPLACED)
                return
            message = {"type": control.WORKER_LOGGED_IN, "worker_id": worker_id, "seq": login_seq}
            await self.layer_outage.guard(
                get_channel_layer().group_send(control.RELAYS_GROUP, message)
            )

    async def worker_disconnected(
        self, socket: DeviceSocket, *, team_id: int, worker_id: int
    ) -> None:
        """Hand on what the worker sent, then tell managers if it went offline."""
        await self.devices.worker_disconnected(socket, team_id=team_id, worker_id=worker_id)

    def positions_received(
        self,
        socket: DeviceSocket,
        *,
        team_id: int,
        worker_id: int,
        positions: list[Position],
        ack_seq: int | None = None,
    ) -> None:
        """Queue a frame's positions for the next tick; its ack waits on that tick."""
        self.devices.positions_received(
            socket, team_id=team_id, worker_id=worker_id, positions=positions, ack_seq=ack_seq
        )

    async def sign_off(self, worker_id: int) -> None:
        """End a worker's HTTP devices on every replica: its app said it stops reporting."""
        await self.layer_outage.guard(
            get_channel_layer().group_send(
                control.RELAYS_GROUP, {"type": control.WORKER_SIGNED_OFF, "worker_id": worker_id}
            )
        )

    async def latest_positions(self, team_id: int) -> dict[int, Position]:
        """Return a team's last-known positions (none while the state cannot be reached)."""
        team_state = await self.state_outage.guard(self.state.team_state(team_id))
        return team_state.latest if team_state is not None else {}

    async def watch_team(
        self, socket: ManagerSocket, *, team_id: int, team_slug: str, roster: list[tuple[int, str]]
    ) -> None:
        """Send a manager socket its team's snapshot, then every frame of the team."""
        await self._ensure_running()
        await self.managers.watch_team(socket, team_id=team_id, team_slug=team_slug, roster=roster)

    async def unwatch_team(self, socket: ManagerSocket, *, team_id: int) -> None:
        """Stop sending a manager socket its team's frames."""
        await self.managers.unwatch_team(socket, team_id=team_id)

    # ------------------------------------------------------------ the steps of a hand-off

    async def publish(self, batches: dict[int, TeamBatch]) -> None:
        """Send each team's newest positions to its group, one message per team; return once
        the channel layer took them all (on Kafka: once the broker acknowledged them)."""
        messages = [
            (feed.team_group(team_id), message)
            for team_id, batch in batches.items()
            for message in feed.positions_messages(team_id, batch.positions)
        ]
        started = time.perf_counter()
        await _reporting(self.layer_outage, feed.group_send_many(get_channel_layer(), messages))
        metrics.RELAY_FLUSH_SECONDS.labels("publish").observe(time.perf_counter() - started)

    async def store_latest(self, batches: dict[int, TeamBatch]) -> None:
        """Write each team's newest positions to the shared state, for managers' snapshots."""
        positions = {team_id: b.positions for team_id, b in batches.items() if b.positions}
        if positions:
            await _reporting(self.state_outage, self.state.store_latest(positions))

    # ------------------------------------------------------------ the clock

    async def tick(self) -> None:
        """Hand on what devices sent here (tracking.devices), and send the acks whose interval
        ended (tracking.acks)."""
        await self.devices.hand_off()
        await self.due_acks.send_due(self.clock.time())

    async def deliver(self) -> None:
        """Deliver what arrived for managers here (tracking.watchers)."""
        await self.managers.deliver_all()

    async def _tick_forever(self) -> None:
        """Tick on every window boundary and deliver DELIVERY_DELAY later. Boundaries are
        wall-clock multiples of the window, so every replica's messages of a tick arrive before
        the managers' replicas deliver it."""
        window = self.flush_window
        while True:
            await self.clock.sleep_until((math.floor(self.clock.time() / window) + 1) * window)
            try:
                await self.tick()
                delivery = (math.floor(self.clock.time() / window) + DELIVERY_DELAY) * window
                await self.clock.sleep_until(delivery)
                await self.deliver()
            except Exception:
                logger.exception("A relay tick failed; the next one goes on")

    async def _catch_up(self) -> None:
        """When an outage ends, bring the maps here up to date from the shared state: positions
        now, and positions and presence once every live replica has renewed its leases (a
        Redis that restarted empty holds none until then, and its workers are not offline)."""
        await self.managers.catch_up(presence=False)
        renewal = self.lease_renewal or self.flush_window
        await self.clock.sleep_until(self.clock.time() + 1.5 * renewal)
        await self.managers.catch_up()

    # ------------------------------------------------------------ leases

    async def _maintain(self) -> None:
        """Renew this replica's leases and reap those of dead replicas, for as long as we run."""
        while True:
            await self.clock.sleep_until(self.clock.time() + self.lease_renewal)
            try:
                await self.renew_and_reap()
            except Exception:
                self.state_outage.failed()

    async def renew_and_reap(self) -> None:
        """Renew the leases of local sockets; report workers that came back or whose replica died."""
        for team_id, worker_ids in self.devices.workers_by_team().items():
            for worker_id, version in await self.state.renew(team_id, worker_ids):
                await self.devices.send_presence(team_id, worker_id, online=True, version=version)
        for team_id, worker_id, version in await self.state.reap():
            await self.devices.send_presence(team_id, worker_id, online=False, version=version)
        self.state_outage.recovered()

    # ------------------------------------------------------------ the relay's channel

    async def _ensure_running(self) -> None:
        """Start the clock and the lease upkeep, and open the relay's channel, once."""
        if self.ticking is None:
            self.ticking = asyncio.ensure_future(self._tick_forever())
            drain.install(self)
            if self.history is not None:
                self._spawn(self.history.run_forever())
            if self.lease_renewal:
                # Replicas with managers reap dead replicas' leases, even with no device here.
                self._spawn(self._maintain())
        try:
            await self._ensure_channel()
        except Exception as error:
            raise RelayUnavailable from error

    async def _ensure_channel(self) -> None:
        """Open the relay's channel and join it to the relays group, once."""
        async with self.channel_lock:  # sockets connecting at once must make only one
            if self.channel is None:
                layer = get_channel_layer()
                # Kept for the next attempt if the join fails (a layer outage): a new channel
                # each time would leave a queue behind for every socket that tried.
                if self.opened_channel is None:
                    self.opened_channel = await layer.new_channel()
                await layer.group_add(control.RELAYS_GROUP, self.opened_channel)
                self.channel = self.managers.channel = self.opened_channel
                self._spawn(self._receive_forever())

    async def _receive_forever(self) -> None:
        """Take every message sent to this replica's relay, for as long as we run."""
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.channel)
            except Exception:
                self.layer_outage.failed()
                await asyncio.sleep(1)
                continue
            try:
                await self.dispatch(message)
            except Exception:
                logger.exception("The relay could not handle a %s message", message.get("type"))

    async def dispatch(self, message: dict) -> None:
        """Act on one message of the relay's channel: a control message, or a team's."""
        message_type = message.get("type")
        if message_type == control.WORKER_REVOKED:
            # Each socket checks its own token: the message may arrive after the device came
            # back with the new one (the Kafka layer can deliver it seconds late).
            for socket in self.devices.sockets_of(message.get("worker_id")):
                try:
                    await socket.token_revoked()
                except Exception:  # one socket's trouble must not spare the others
                    logger.exception("Could not check a revoked worker's socket")
                    await close_quietly(socket, protocol.CLOSE_UNAUTHENTICATED)
            await self.uploads.end_worker(message.get("worker_id"))  # one still connecting
        elif message_type == control.WORKER_LOGGED_IN:
            self._newer_login_seen(message["worker_id"], message["seq"])
            for socket in self.devices.sockets_of(message.get("worker_id")):
                older = getattr(socket, "login_seq", None)  # HTTP devices never log in
                if older is not None and older < message["seq"]:
                    await close_quietly(socket, protocol.CLOSE_REPLACED)
        elif message_type == control.WORKER_SIGNED_OFF:
            await self.uploads.end_worker(message.get("worker_id"))
        elif message_type == control.WATCHER_REVOKED:
            await self.managers.close_user(message.get("user_id"), message.get("team_id"))
        else:
            await self.managers.take_message(message)

    def _newer_login_seen(self, worker_id: int, seq: int) -> bool:
        """Record a login of a worker; return whether a newer one of it was seen already."""
        newest = self.newest_logins.pop(worker_id, 0)
        self.newest_logins[worker_id] = max(newest, seq)
        while len(self.newest_logins) > MAX_REMEMBERED_LOGINS:
            self.newest_logins.popitem(last=False)
        return newest > seq

    # ------------------------------------------------------------ shutdown

    async def drain(self) -> None:
        """Hand everything in flight on, then close every socket with 4012 so that its client
        reconnects to another replica at once (SIGTERM; tracking.drain)."""
        self.devices.draining = True
        await self.tick()
        if self.history is not None:
            await self.history.flush_all(DRAIN_STORE_TIMEOUT)
        await self.deliver()
        for socket in [*self.devices.all_sockets(), *self.managers.sockets()]:
            await close_quietly(socket, protocol.CLOSE_SERVICE_RESTART)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def stop(self) -> None:
        """Cancel background work (tests, shutdown)."""
        for task in [*self.tasks, self.ticking]:
            if task is not None:
                task.cancel()
        self.ticking = None
        self.uploads.stop()
        if self.history is not None:
            self.history.stop()


async def _reporting(outage: Outage, operation) -> None:
    """Await a step's operation, reporting its failure (and re-raising it) or its success."""
    try:
        await operation
    except Exception as error:
        metrics.RELAY_ERRORS.inc()
        outage.failed(error)
        raise
    outage.recovered()


def build_relay(relay_class: type[Relay] = Relay) -> Relay:
    """Build the relay the settings ask for: in-process state, or state shared through Redis."""
    timing = {
        "flush_window": settings.TEAMTRACK_FLUSH_WINDOW,
        "slow_manager_timeout": settings.TEAMTRACK_SLOW_MANAGER_SECONDS,
        "http_device_timeout": settings.TEAMTRACK_HTTP_DEVICE_TIMEOUT,
        "offline_grace": settings.TEAMTRACK_OFFLINE_GRACE,
    }
    if settings.TEAMTRACK_HISTORY:
        timing["history"] = HistoryWriter(
            window=settings.TEAMTRACK_FLUSH_WINDOW,
            max_pending=settings.TEAMTRACK_HISTORY_MAX_PENDING,
        )
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


def set_relay(relay: Relay) -> None:
    """Make `relay` this process's relay (an application serving another kind, such as the
    benchmark's baseline in loadtest/stock.py)."""
    global _relay
    _relay = relay


def reset_relay() -> None:
    """Forget the relay and everything it holds (tests, settings changes)."""
    global _relay
    if _relay is not None:
        _relay.stop()
    _relay = None
