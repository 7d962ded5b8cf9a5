"""The benchmark's load generator: one process of asyncio device and manager sockets.

loadtest/bench.py and loadtest/soak.py start several of these and drive each over a pipe with
commands (connect devices, connect managers, run, pause, churn, collect, close). Devices send one
position per period, each in its own time slot so that the load is even; managers record the
latency of every position they receive (receive time minus the position's `ts`) and the newest
`ts` per worker, so that the bench can check that every worker's latest position reached every
manager of its team. With `acks`, each position carries a `seq` and the device records how long
its ack took (an ack of N covers every seq up to N, docs/protocol.md), and counts a position
not acknowledged within ACK_DEADLINE as late: the bench takes that for an error. With
`reconnect` (loadtest/spike.py), sockets the server closes (a drained replica's 4012) open again
at once, as the apps do, every acknowledged position is remembered (worker, ts) so that the run
can find each in the history, and each manager socket reports the longest time it went without
positions. Counters and the latency histograms are per collect, never per position.
"""

import asyncio
import gc
import json
import math
import random
import resource
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from deploy.processes import raise_open_file_limit
from teamtrack.serve import GC_YOUNG_THRESHOLD

SLOT_SECONDS = 0.02
LATENCY_BINS = 10_001  # 1 ms bins; the last one holds everything from 10 s up
CONNECT_CONCURRENCY = 64
ACK_DEADLINE = 5.0  # seconds: a position not acknowledged by then counts as late


def latency_histogram() -> list[int]:
    return [0] * LATENCY_BINS


class Device:
    __slots__ = (
        "index", "worker_id", "token", "socket", "lat", "lng", "last_ts", "seq", "unacked", "sent_ts"
    )  # fmt: skip

    def __init__(self, index: int, worker_id: int, token: str, rng: random.Random):
        self.index = index
        self.worker_id = worker_id
        self.token = token
        self.socket = None
        self.lat = 41.3925 + rng.uniform(-0.02, 0.02)
        self.lng = 2.1640 + rng.uniform(-0.02, 0.02)
        self.last_ts = None
        self.seq = 0
        self.unacked: dict[int, float] = {}  # seq -> when it was sent (monotonic), with acks
        self.sent_ts: dict[int, float] = {}  # seq -> the position's ts, with reconnect


class Watch:
    """A manager socket on one team, and what it received."""

    __slots__ = (
        "team_id", "slug", "headers", "socket", "seen", "frames", "first", "last", "last_at", "gap"
    )  # fmt: skip

    def __init__(self, team_id: int, slug: str, headers: dict[str, str]):
        self.team_id = team_id
        self.slug = slug
        self.headers = headers
        self.socket = None
        self.seen: dict[int, float] = {}
        self.last_at: float | None = None  # monotonic time of the last positions frame
        self.gap = 0.0  # the longest time without positions since the last collect
        # Positions frames, and the first and last flush window (wall clock) they arrived in.
        self.frames = self.first = self.last = 0


async def open_watch(base_url: str, watch: Watch):
    """Open a manager socket on the watch's team."""
    return await connect(
        f"{base_url}/ws/teams/{watch.slug}/",
        additional_headers=watch.headers,
        compression=None,
        ping_interval=None,
        open_timeout=60,
        max_size=None,
        max_queue=None,
    )


class Generator:
    def __init__(
        self,
        *,
        devices: list,
        period: float,
        seed: int,
        window: float = 0.1,
        acks: bool = False,
        reconnect: bool = False,
    ):
        rng = random.Random(seed)
        self.acks = acks
        self.reconnect = reconnect
        self.acked_positions: list[tuple[int, float]] = []  # (worker, ts), with reconnect
        self.reconnects = 0
        self.reconnects_failed = 0
        self.base_url = ""
        self.devices = [Device(i, w, t, rng) for i, (w, t) in enumerate(devices)]
        self.watches: list[Watch] = []
        self.slot_count = max(1, round(period / SLOT_SECONDS))
        self.slots = [[] for _ in range(self.slot_count)]
        for device in self.devices:
            self.slots[rng.randrange(self.slot_count)].append(device)
        self.rng = rng
        self.flush_window = window
        self.active = 0  # devices with index below this send
        self.sent_total = 0  # never reset: the bare floor compares it with frames received
        self.tasks: set[asyncio.Task] = set()
        self.reset()

    def reset(self) -> None:
        self.cpu_mark, self.time_mark = process_cpu_seconds(), time.monotonic()
        self.sent = 0
        self.send_failures = 0
        self.error_frames = 0
        self.closed = 0
        self.positions_received = 0
        self.latency = latency_histogram()
        self.acked = 0
        self.ack_frames = 0
        self.acks_late = 0
        self.ack_latency = latency_histogram()
        self.reconnects = 0
        self.reconnects_failed = 0
        for watch in self.watches:
            watch.frames = 0
            watch.gap = 0.0

    # ------------------------------------------------------------ connections

    async def connect_devices(self, base_url: str, count: int, only: Device | None = None) -> dict:
        """Open the sockets of the first `count` devices (those not open yet), or of `only`."""
        self.base_url = base_url
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failures = []

        async def open_one(device):
            async with limit:
                try:
                    device.socket = await connect(
                        f"{base_url}/ws/worker/",
                        additional_headers={"Authorization": f"Bearer {device.token}"},
                        compression=None,
                        ping_interval=None,
                        open_timeout=60,
                        max_queue=None,
                    )
                except Exception as error:
                    failures.append(repr(error))
                    return
            self.spawn(self.read_device(device))

        chosen = [only] if only is not None else self.devices[:count]
        await asyncio.gather(*(open_one(d) for d in chosen if d.socket is None))
        return {"open": sum(d.socket is not None for d in self.devices), "failures": failures[:5]}

    async def churn(self, base_url: str, fraction: float) -> dict:
        """Close a random `fraction` of the active devices' sockets, then open them again."""
        open_now = [d for d in self.devices[: self.active] if d.socket is not None]
        leaving = self.rng.sample(open_now, round(fraction * len(open_now)))
        sockets = []
        for device in leaving:
            # Forget the socket first: its reader and sender then know this close was ours.
            sockets.append(device.socket)
            device.socket = None
        await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
        reply = await self.connect_devices(base_url, self.active)
        return {"churned": len(leaving), **reply}

    async def connect_watches(self, base_url: str, watches: list) -> dict:
        """Open manager sockets, (team id, slug, headers) each, and wait for their snapshots."""
        failures = []
        for team_id, slug, headers in watches:
            watch = Watch(team_id, slug, headers)
            try:
                watch.socket = await open_watch(base_url, watch)
                snapshot = json.loads(await watch.socket.recv())
                assert snapshot["type"] == "snapshot", snapshot
            except Exception as error:
                failures.append(repr(error))
                continue
            self.watches.append(watch)
            self.spawn(self.read_watch(watch))
        return {"open": sum(w.socket is not None for w in self.watches), "failures": failures[:5]}

    # ------------------------------------------------------------ traffic

    async def send_forever(self) -> None:
        """Every slot, send one position from each active device of that slot."""
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            delay = start + tick * SLOT_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for device in self.slots[tick % self.slot_count]:
                if device.index < self.active and device.socket is not None:
                    await self.send_position(device)

    async def send_position(self, device: Device) -> None:
        device.lat += self.rng.uniform(-1e-4, 1e-4)
        device.lng += self.rng.uniform(-1e-4, 1e-4)
        ts = time.time()
        seq = ""
        if self.acks:
            seq = f',"seq":{device.seq}'
            device.unacked[device.seq] = time.monotonic()
            if self.reconnect:
                device.sent_ts[device.seq] = ts
            device.seq += 1
        frame = f'{{"type":"position","lat":{device.lat!r},"lng":{device.lng!r},"ts":{ts!r},"acc":5.0{seq}}}'
        socket = device.socket
        try:
            await socket.send(frame)
        except ConnectionClosed:
            if device.socket is socket:  # not closed by churn
                self.send_failures += 1
                device.socket = None
            return
        device.last_ts = ts
        self.sent += 1
        self.sent_total += 1

    async def read_device(self, device: Device) -> None:
        socket = device.socket
        try:
            async for text in socket:
                frame = json.loads(text)
                kind = frame.get("type")
                if kind == "error":
                    self.error_frames += 1
                elif kind == "ack":
                    self.ack_frames += 1
                    self.acknowledged(device, frame["seq"])
        except ConnectionClosed:
            pass
        # Closed by the server, not by churn (which forgets the socket first) or by close().
        if device.socket is socket and not self.closing:
            self.closed += 1
            device.socket = None
            if self.reconnect:
                await self.reconnect_device(device)

    async def reconnect_device(self, device: Device) -> None:
        """Open a closed device's socket again as the apps do: at once, with jitter, and with
        backoff while it fails."""
        delay = 0.2
        while device.socket is None and not self.closing:
            await asyncio.sleep(self.rng.uniform(0, delay))
            self.reconnects += 1
            await self.connect_devices(self.base_url, 0, only=device)
            if device.socket is None:
                self.reconnects_failed += 1
                delay = min(delay * 2, 2.0)

    def acknowledged(self, device: Device, seq: int) -> None:
        """Count the positions an ack covers (every seq up to its own) and their latency."""
        now = time.monotonic()
        for sent_seq in [s for s in device.unacked if s <= seq]:
            sent_at = device.unacked.pop(sent_seq)
            self.acked += 1
            self.ack_latency[min(int((now - sent_at) * 1000), LATENCY_BINS - 1)] += 1
        if self.reconnect:
            for sent_seq in [s for s in device.sent_ts if s <= seq]:
                self.acked_positions.append((device.worker_id, device.sent_ts.pop(sent_seq)))

    def count_late_acks(self) -> None:
        """Count (once) the positions still waiting for their ack after ACK_DEADLINE."""
        deadline = time.monotonic() - ACK_DEADLINE
        for device in self.devices:
            late = [seq for seq, sent_at in device.unacked.items() if sent_at < deadline]
            for seq in late:
                del device.unacked[seq]
            self.acks_late += len(late)

    async def set_open(self, count: int, keep: int = 0) -> dict:
        """Have `count` devices online: open the first ones that are not, or close a random
        choice of the open ones past the first `keep` (workers go off duty in no order; nor do
        their sockets sit on any one replica)."""
        self.active = len(self.devices)  # every open socket sends
        open_now = [d for d in self.devices if d.socket is not None]
        if len(open_now) < count:
            closed = [d for d in self.devices if d.socket is None][: count - len(open_now)]
            await asyncio.gather(*(self.connect_devices(self.base_url, 0, only=d) for d in closed))
        elif len(open_now) > count:
            sockets = []
            may_leave = [d for d in open_now if d.index >= keep]
            for device in self.rng.sample(may_leave, min(len(may_leave), len(open_now) - count)):
                sockets.append(device.socket)
                device.socket = None  # ours, not the server's: no reconnect
            await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
        return {"open": sum(d.socket is not None for d in self.devices)}

    async def read_watch(self, watch: Watch) -> None:
        while True:
            await self._read_watch(watch)
            if self.closing or not self.reconnect:
                return
            # A drained replica closed the map (4012): open it again, as the page does.
            await asyncio.sleep(self.rng.uniform(0, 0.2))
            self.reconnects += 1
            try:
                watch.socket = await open_watch(self.base_url, watch)
            except Exception:
                watch.socket = None
                self.reconnects_failed += 1
                await asyncio.sleep(0.5)

    async def _read_watch(self, watch: Watch) -> None:
        if watch.socket is None:
            return
        try:
            async for text in watch.socket:
                now = time.time()
                frame = json.loads(text)
                if frame["type"] != "positions":
                    continue
                arrived = time.monotonic()
                if watch.last_at is not None:
                    watch.gap = max(watch.gap, arrived - watch.last_at)
                watch.last_at = arrived
                window = int(now / self.flush_window)
                if not watch.frames:
                    watch.first = window
                watch.frames += 1
                watch.last = window
                self.positions_received += len(frame["positions"])
                seen, latency = watch.seen, self.latency
                for position in frame["positions"]:
                    ts = position["ts"]
                    latency[min(int((now - ts) * 1000), LATENCY_BINS - 1)] += 1
                    if ts > seen.get(position["id"], 0):
                        seen[position["id"]] = ts
        except ConnectionClosed:
            pass
        if not self.closing:
            self.closed += 1

    # ------------------------------------------------------------ reporting

    def longest_gaps(self) -> dict[int, float]:
        """Per team watched here, the longest time one of its maps went without positions
        since the last collect, counting the time since the last frame as well."""
        now = time.monotonic()
        gaps: dict[int, float] = {}
        for watch in self.watches:
            open_gap = now - watch.last_at if watch.last_at is not None else 0.0
            gaps[watch.team_id] = max(gaps.get(watch.team_id, 0.0), watch.gap, open_gap)
        return gaps

    def collect(self) -> dict:
        """Return what happened since the last collect, and reset the counters."""
        if self.acks:
            self.count_late_acks()
        report = {
            "sent": self.sent,
            "sent_total": self.sent_total,
            "send_failures": self.send_failures,
            "error_frames": self.error_frames,
            "closed": self.closed,
            "positions_received": self.positions_received,
            "latency": self.latency,
            "acked": self.acked,
            "ack_frames": self.ack_frames,
            "acks_late": self.acks_late,
            "ack_latency": self.ack_latency,
            "reconnects": self.reconnects,
            "reconnects_failed": self.reconnects_failed,
            "gaps": self.longest_gaps(),
            # This process's CPU seconds, and the wall-clock seconds, since the last collect.
            "cpu": process_cpu_seconds() - self.cpu_mark,
            "seconds": time.monotonic() - self.time_mark,
            "last_sent": {d.worker_id: d.last_ts for d in self.devices if d.last_ts is not None},
            "watches": [
                {
                    "team_id": w.team_id,
                    "frames": w.frames,
                    "windows": w.last - w.first + 1 if w.frames else 0,
                    "seen": dict(w.seen),
                }
                for w in self.watches
                if w.socket is not None
            ],
        }
        self.reset()
        return report

    def spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    closing = False

    async def close(self) -> None:
        self.closing = True
        sockets = [d.socket for d in self.devices] + [w.socket for w in self.watches]
        await asyncio.gather(*(s.close() for s in sockets if s is not None), return_exceptions=True)


async def serve(pipe, generator: Generator, base_url: str) -> None:
    loop = asyncio.get_running_loop()
    generator.spawn(generator.send_forever())
    while True:
        command, argument = await loop.run_in_executor(None, pipe.recv)
        if command == "connect_devices":
            url = argument.get("url", base_url)
            pipe.send(await generator.connect_devices(url, argument["count"]))
        elif command == "connect_watches":
            pipe.send(await generator.connect_watches(base_url, argument))
        elif command == "churn":
            url = argument.get("url", base_url)
            pipe.send(await generator.churn(url, argument["fraction"]))
        elif command == "run":
            generator.active = argument
            pipe.send(None)
        elif command == "collect":
            pipe.send(generator.collect())
        elif command == "set_open":
            pipe.send(await generator.set_open(*argument))
        elif command == "acked_positions":
            pipe.send(generator.acked_positions)
        elif command == "close":
            await generator.close()
            pipe.send(None)
            return


def main(
    pipe,
    *,
    base_url: str,
    devices: list,
    period: float,
    seed: int,
    window: float,
    acks: bool = False,
    reconnect: bool = False,
) -> None:
    """Entry point of a generator process."""
    raise_open_file_limit()
    # As the replicas do (teamtrack/serve.py): a full collection over thousands of sockets
    # stopped a generator for 125-190 ms, which its managers measured as latency.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()
    generator = Generator(
        devices=devices, period=period, seed=seed, window=window, acks=acks, reconnect=reconnect
    )
    asyncio.run(serve(pipe, generator, base_url))


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(histogram: list[int], fraction: float) -> float | None:
    """Return the latency in ms below which `fraction` of the samples fall (1 ms resolution)."""
    total = sum(histogram)
    if not total:
        return None
    rank = math.ceil(fraction * total)
    running = 0
    for milliseconds, count in enumerate(histogram):
        running += count
        if running >= rank:
            return milliseconds + 1  # the bin's upper edge: never better than measured
    return LATENCY_BINS


def ms(value) -> str:
    """A latency for the tables: the histogram's last bin holds everything from 10 s up."""
    if value is None:
        return "–"
    return f"≥{LATENCY_BINS - 1}" if value >= LATENCY_BINS else str(value)
