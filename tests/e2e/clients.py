"""Real WebSocket clients for end-to-end tests: devices that report, managers that record."""

import asyncio
import contextlib
import json
import random
import time

import websockets


def close_code(error: BaseException) -> int | str:
    """Name how a socket ended: the close code the server sent, 1006 when the connection dropped
    without one, or why the handshake failed ("http 502", "ConnectionRefusedError")."""
    if isinstance(error, websockets.ConnectionClosed):
        return error.rcvd.code if error.rcvd is not None else 1006
    if isinstance(error, websockets.InvalidStatus):
        return f"http {error.response.status_code}"
    return type(error).__name__


class Device:
    """A worker device that reports a known position every `interval` s and reconnects."""

    def __init__(self, ws_base: str, token: str, *, lat: float, interval: float = 0.2):
        self.url = f"{ws_base}/ws/worker/"
        self.token = token
        self.lat = lat
        self.interval = interval
        self.seq = 0
        self.connections = 0
        self.acked = 0  # the highest seq the server acknowledged
        self.sent: dict[int, float] = {}  # seq -> the ts of the position it carried
        self.acked_seqs: set[int] = set()  # every seq an ack covered
        self.on_socket: list[int] = []  # seqs sent on the socket open now, not yet acknowledged
        self.errors: list[dict] = []  # every frame from the server but acks
        self.closes: list[int | str] = []  # how each socket ended (see close_code)
        self.connected_at: float | None = None  # monotonic time of the last handshake
        self.connected = False  # a socket is open now
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def position(self) -> dict:
        self.seq += 1
        self.sent[self.seq] = time.time()
        return {"lat": self.lat, "lng": self.seq / 1000, "ts": self.sent[self.seq], "seq": self.seq}

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with websockets.connect(
                    self.url, additional_headers={"Authorization": f"Bearer {self.token}"}
                ) as socket:
                    self.connections += 1
                    self.connected_at = time.monotonic()
                    self.connected = True
                    self.on_socket = []
                    delay = 0.1
                    reader = asyncio.ensure_future(self._read(socket))
                    try:
                        while True:
                            position = self.position()
                            self.on_socket.append(position["seq"])
                            await socket.send(json.dumps(position))
                            await asyncio.sleep(self.interval)
                    finally:
                        reader.cancel()
            except (OSError, websockets.WebSocketException) as error:
                self.connected = False
                self.closes.append(close_code(error))
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 2.0)

    async def _read(self, socket) -> None:
        with contextlib.suppress(websockets.WebSocketException):
            async for text in socket:
                frame = json.loads(text)
                if frame.get("type") == "ack":
                    # Cumulative: it covers every seq up to its own sent on this socket.
                    self.acked = max(self.acked, frame["seq"])
                    covered = [seq for seq in self.on_socket if seq <= frame["seq"]]
                    self.acked_seqs.update(covered)
                    self.on_socket = [seq for seq in self.on_socket if seq > frame["seq"]]
                else:
                    self.errors.append(frame)


class ManagerClient:
    """What both manager clients share: stopping, and who they believe is online."""

    snapshot: dict | None
    presence: list[dict]
    task: asyncio.Task | None

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def online(self) -> set[int]:
        """Who this manager currently believes is online: the snapshot, then presence frames."""
        online = {w["id"] for w in self.snapshot["workers"] if w["online"]}
        for event in self.presence:
            (online.add if event["online"] else online.discard)(event["id"])
        return online


class ManagerWatch(ManagerClient):
    """A manager socket that records the snapshot, every position and every presence change."""

    def __init__(self, ws_base: str, slug: str, headers: dict[str, str]):
        self.url = f"{ws_base}/ws/teams/{slug}/"
        self.headers = headers
        self.snapshot: dict | None = None
        self.latest: dict[int, dict] = {}  # worker id -> newest position seen
        self.received_at: dict[int, float] = {}  # worker id -> when its last position arrived
        self.longest_gap: dict[int, float] = {}  # worker id -> longest wait between positions
        self.presence: list[dict] = []
        self.frames = 0
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()

    async def start(self) -> "ManagerWatch":
        self.task = asyncio.ensure_future(self._run())
        async with asyncio.timeout(10):
            await self.ready.wait()
        return self

    async def _run(self) -> None:
        async with websockets.connect(self.url, additional_headers=self.headers) as socket:
            async for text in socket:
                frame = json.loads(text)
                self.frames += 1
                if frame["type"] == "snapshot":
                    self.snapshot = frame
                    self.ready.set()
                elif frame["type"] == "positions":
                    now = time.monotonic()
                    for position in frame["positions"]:
                        worker_id = position["id"]
                        if worker_id in self.received_at:
                            gap = now - self.received_at[worker_id]
                            self.longest_gap[worker_id] = max(
                                gap, self.longest_gap.get(worker_id, 0)
                            )
                        self.latest[worker_id] = position
                        self.received_at[worker_id] = now
                elif frame["type"] == "presence":
                    self.presence.append(frame)


class ManagerSession(ManagerClient):
    """A manager's map as the page keeps it (static/js/socket.js): it reconnects with exponential
    backoff and full jitter, takes a fresh snapshot after every reconnect, and records how each
    socket ended. It gives up only on the close codes after which retrying cannot help."""

    FINAL_CODES = frozenset({4401, 4403, 4404})

    def __init__(
        self,
        ws_base: str,
        slug: str,
        headers: dict[str, str],
        *,
        backoff_start: float = 0.5,
        backoff_cap: float = 2.0,
    ):
        self.url = f"{ws_base}/ws/teams/{slug}/"
        self.headers = headers
        self.backoff_start = backoff_start
        self.backoff_cap = backoff_cap
        self.snapshot: dict | None = None  # the snapshot of the current (or last) socket
        self.snapshot_at: float | None = None  # monotonic time it arrived
        self.snapshots = 0
        self.presence: list[dict] = []  # presence frames since the current snapshot
        self.latest: dict[int, dict] = {}  # worker id -> newest position seen, over all sockets
        self.received_at: dict[int, float] = {}  # worker id -> when its last position arrived
        self.closes: list[int | str] = []  # how each socket ended (see close_code)
        self.errors: list[dict] = []  # error frames, and frames of an unknown type
        self.live = False  # a socket is open and its snapshot arrived
        self.task: asyncio.Task | None = None

    def start(self) -> "ManagerSession":
        self.task = asyncio.ensure_future(self._run())
        return self

    async def started(self, timeout: float = 10) -> "ManagerSession":
        """Wait for the first snapshot."""
        await wait_until(lambda: self.live, timeout, f"no snapshot from {self.url}")
        return self

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                async with websockets.connect(self.url, additional_headers=self.headers) as socket:
                    while True:
                        if self._take(json.loads(await socket.recv())):
                            attempt = 0  # only a snapshot proves the server took us
            except (OSError, websockets.WebSocketException) as error:
                self.live = False
                code = close_code(error)
                self.closes.append(code)
                if code in self.FINAL_CODES:
                    return
            ceiling = min(self.backoff_cap, self.backoff_start * 2**attempt)
            attempt += 1
            await asyncio.sleep(random.uniform(0, ceiling))

    def _take(self, frame: dict) -> bool:
        """Record one frame; return whether it was a snapshot."""
        kind = frame.get("type")
        if kind == "snapshot":
            self.snapshot, self.snapshot_at = frame, time.monotonic()
            self.snapshots += 1
            self.presence = []
            self.live = True
            return True
        if kind == "positions":
            now = time.monotonic()
            for position in frame["positions"]:
                known = self.latest.get(position["id"])
                if known is None or position["ts"] >= known["ts"]:  # as the map does
                    self.latest[position["id"]] = position
                    self.received_at[position["id"]] = now
        elif kind == "presence":
            self.presence.append(frame)
        else:
            self.errors.append(frame)
        return False


class Silences:
    """The longest time each of some managers went without positions, sampled every 50 ms
    while running (a map's silence across a scale event or a restart)."""

    def __init__(self, managers: list):
        self.managers = managers
        self.longest = {id(m): 0.0 for m in managers}
        self.task: asyncio.Task | None = None

    def start(self) -> "Silences":
        self.task = asyncio.ensure_future(self._sample())
        return self

    async def stop(self) -> float:
        """Stop sampling; return the longest silence of any of them, in seconds."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return max(self.longest.values())

    async def _sample(self) -> None:
        while True:
            now = time.monotonic()
            for manager in self.managers:
                silence = now - max(manager.received_at.values())
                self.longest[id(manager)] = max(self.longest[id(manager)], silence)
            await asyncio.sleep(0.05)


async def next_frame(socket, frame_type: str, timeout: float = 5) -> dict:
    """Return the next frame of this type from a websockets connection, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            if frame["type"] == frame_type:
                return frame


async def wait_until(condition, timeout: float, message: str, step: float = 0.1) -> None:
    """Poll a condition until it holds; fail the test with `message` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"{message} (after {timeout:g} s)")
