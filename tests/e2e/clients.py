"""Real WebSocket clients for end-to-end tests: devices that report, managers that record."""

import asyncio
import contextlib
import json
import random
import time

import websockets


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
        self.errors: list[dict] = []  # every frame from the server but acks
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def position(self) -> dict:
        self.seq += 1
        return {"lat": self.lat, "lng": self.seq / 1000, "ts": time.time(), "seq": self.seq}

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with websockets.connect(
                    self.url, additional_headers={"Authorization": f"Bearer {self.token}"}
                ) as socket:
                    self.connections += 1
                    delay = 0.1
                    reader = asyncio.ensure_future(self._read(socket))
                    try:
                        while True:
                            await socket.send(json.dumps(self.position()))
                            await asyncio.sleep(self.interval)
                    finally:
                        reader.cancel()
            except (OSError, websockets.WebSocketException):
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 2.0)

    async def _read(self, socket) -> None:
        with contextlib.suppress(websockets.WebSocketException):
            async for text in socket:
                frame = json.loads(text)
                if frame.get("type") == "ack":
                    self.acked = max(self.acked, frame["seq"])
                else:
                    self.errors.append(frame)


class ManagerWatch:
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

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def online(self) -> set[int]:
        """Who this manager currently believes is online."""
        online = {w["id"] for w in self.snapshot["workers"] if w["online"]}
        for event in self.presence:
            (online.add if event["online"] else online.discard)(event["id"])
        return online

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


async def wait_until(condition, timeout: float, message: str, step: float = 0.1) -> None:
    """Poll a condition until it holds; fail the test with `message` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"{message} (after {timeout:g} s)")
