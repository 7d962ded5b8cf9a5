"""Devices that upload over HTTP (the OsmAnd and OwnTracks protocols), as the relay sees them.

To the relay's device side (tracking.devices), each worker uploading to this replica is one
device connection, an `HttpDevice`, and each upload is a frame that waits for its ack: the
request is answered 200 only once its position was handed on as a socket frame's would be
before its ack. So a 200 makes the same promise as an ack.

An HTTP device never says goodbye. It stays connected here (online, its lease renewed) until
no upload arrived for `timeout` seconds, then disconnects as a socket would; the map shows it
stale long before, from its last position's age. Every replica that the load balancer sent an
upload to holds a lease of its own, and the worker goes offline when the last one ends. An
OwnTracks `lwt` ends the worker's HTTP device on every replica at once.
"""

import asyncio
import logging

from tracking.clock import Clock
from tracking.positions import Position

logger = logging.getLogger(__name__)

# Seconds a request waits for its ack. While the relay cannot hand positions on, the request is
# answered 503 after this and the device retries; the position stays queued meanwhile.
ACK_TIMEOUT = 10.0


class DeviceEnded(Exception):
    """The device was ended (revoked) while its upload waited to connect."""


class HttpDevice:
    """One worker's uploads to this replica: a device connection to the relay."""

    def __init__(self, owner: "HttpDevices", *, team_id: int, worker_id: int, now: float):
        self.owner = owner
        self.team_id = team_id
        self.worker_id = worker_id
        self.last_upload = now
        self.next_seq = 0
        self.waiting: dict[int, asyncio.Future] = {}  # seq -> the request waiting for its ack
        self.connecting: asyncio.Future | None = None
        self.carded: set[int] = set()  # teammates an OwnTracks app was sent a card of

    async def acknowledge(self, seq: int) -> None:
        future = self.waiting.pop(seq, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def close_with(self, code: int) -> None:
        """The worker's token was revoked, or the replica drains: end the device here. Uploads
        already taken are still acknowledged; the next one authenticates afresh."""
        await self.owner.end(self)

    async def token_revoked(self) -> None:
        """End it: the next upload logs in again, with whatever token it carries."""
        await self.owner.end(self)


class HttpDevices:
    """The HTTP devices of this replica's relay."""

    def __init__(self, relay, *, clock: Clock, timeout: float):
        self.relay = relay
        self.clock = clock
        self.timeout = timeout
        self.devices: dict[int, HttpDevice] = {}  # worker id -> its device here
        self.sweeping: asyncio.Task | None = None

    async def upload(
        self, *, team_id: int, worker_id: int, name: str, positions: list[Position]
    ) -> HttpDevice | None:
        """Take a device's positions (none: it only says it is there); return its device here
        once they were handed on, or None if that took longer than ACK_TIMEOUT. Raises
        RelayUnavailable if the device cannot connect."""
        device = await self._connected(team_id, worker_id, name)
        device.last_upload = self.clock.time()
        if not positions:
            return device
        seq = device.next_seq
        device.next_seq += 1
        acked = device.waiting[seq] = asyncio.get_running_loop().create_future()
        self.relay.positions_received(
            device, team_id=team_id, worker_id=worker_id, positions=positions, ack_seq=seq
        )
        try:
            async with asyncio.timeout(ACK_TIMEOUT):
                await acked
        except TimeoutError:
            return None
        finally:  # also when the client went away: a forgotten wait would keep it online
            device.waiting.pop(seq, None)
        return device

    async def end(self, device: HttpDevice) -> None:
        """Disconnect a device here (revoked, gone quiet, or its app said it stops)."""
        if self.devices.get(device.worker_id) is device:
            del self.devices[device.worker_id]
            await self.relay.worker_disconnected(
                device, team_id=device.team_id, worker_id=device.worker_id
            )

    async def end_worker(self, worker_id: int) -> None:
        """Disconnect a worker's device here, if it has one."""
        device = self.devices.get(worker_id)
        if device is not None:
            await self.end(device)

    async def _connected(self, team_id: int, worker_id: int, name: str) -> HttpDevice:
        """Return the worker's device here, connecting it to the relay first if it is new."""
        device = self.devices.get(worker_id)
        if device is not None and device.team_id != team_id:
            await self.end(device)  # the worker moved to another team
            device = None
        if device is None:
            device = HttpDevice(self, team_id=team_id, worker_id=worker_id, now=self.clock.time())
            self.devices[worker_id] = device
            # Uploads that arrive while it connects wait for the same connection.
            device.connecting = asyncio.ensure_future(
                self.relay.worker_connected(device, team_id=team_id, worker_id=worker_id, name=name)
            )
            self._ensure_sweeping()
        try:
            await asyncio.shield(device.connecting)
        except Exception:
            if self.devices.get(worker_id) is device:
                del self.devices[worker_id]
            raise
        if self.devices.get(worker_id) is not device:
            # Ended while it connected (its token revoked before the relay knew of it): undo
            # the connection, which nothing else would end. The app's retry is refused.
            await self.relay.worker_disconnected(device, team_id=team_id, worker_id=worker_id)
            raise DeviceEnded
        return device

    def _ensure_sweeping(self) -> None:
        if self.sweeping is None or self.sweeping.done():
            self.sweeping = asyncio.ensure_future(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        """End the devices that went quiet, for as long as any is connected here."""
        interval = max(1.0, self.timeout / 10)
        while self.devices:
            await self.clock.sleep_until(self.clock.time() + interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("Ending quiet HTTP devices failed; the next sweep goes on")

    async def sweep(self) -> None:
        """End every device with no upload for `timeout` seconds and no upload waiting."""
        horizon = self.clock.time() - self.timeout
        for device in list(self.devices.values()):
            if device.last_upload <= horizon and not device.waiting:
                await self.end(device)

    def stop(self) -> None:
        if self.sweeping is not None:
            self.sweeping.cancel()
