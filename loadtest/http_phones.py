"""The phone apps' load generator: processes of asyncio phones that upload over HTTP, as OsmAnd
(Traccar Client) and OwnTracks do, and the driver that runs them over pipes (loadtest/phones.py).

Each phone keeps one HTTP/1.1 keep-alive connection to the cluster (nginx) and sends one position
per period on its own phase, strictly one after another as the apps do: the next only after the
answer to the previous (late answers push the next send back; nothing is sent to catch up).
- osmand: `GET /osmand/?id=<token>&lat=..&lon=..&timestamp=<ms>&speed=<knots>&...`, answered 200
  with an empty body;
- owntracks: `POST /owntracks/` with a `location` message and `Authorization: Basic`, answered 200
  with `[]`.
A process counts its answers by status, the latency of each 200 (send to last byte, 1 ms bins),
failures (connection errors, timeouts) and, per worker, the `ts` of its last position answered
200, so that the run can check that it reached the managers. Per collect, never per position.

The client is asyncio's streams and a minimal HTTP/1.1 reader (Content-Length or chunked), not an
HTTP library: none is installed that is both asyncio and light enough to share the 2 cores with
the servers it measures.
"""

import asyncio
import base64
import json
import multiprocessing
import random
import time
import urllib.parse

from deploy.processes import raise_open_file_limit
from loadtest.generator import LATENCY_BINS, latency_histogram, process_cpu_seconds

OSMAND, OWNTRACKS = "osmand", "owntracks"
KINDS = (OSMAND, OWNTRACKS)
# Longer than the server's own limits (a 1 s wait for the rate, 10 s for the ack): an answer
# later than this is a stuck request, counted as a failure, and the connection is dropped.
REQUEST_TIMEOUT = 20.0
KNOTS = 3600 / 1852  # per m/s


class HttpError(Exception):
    """The server broke the HTTP exchange (closed the connection, or answered nonsense)."""


class Connection:
    """One keep-alive HTTP/1.1 connection; opened on first use and again after a close."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0  # connections opened, the first included

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and return the status and body of its answer. A connection the
        server closed while idle is opened again once (the request never reached it)."""
        for _attempt in (0, 1):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.opened += 1
            self.writer.write(head + body)
            try:
                status_line = await self.reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                return await self._answer(status_line)
            self.close()
            if not reused:
                break
        raise HttpError("the server closed the connection without answering")

    async def _answer(self, status_line: bytes) -> tuple[int, bytes]:
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"not an HTTP status line: {status_line[:80]!r}") from None
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.read()  # ends with the connection
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        chunks = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readline()
        while await self.reader.readline() not in (b"\r\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Phone:
    __slots__ = ("worker_id", "token", "kind", "connection", "lat", "lng", "last_ok_ts", "task")

    def __init__(self, worker_id: int, token: str, kind: str, connection: Connection, rng):
        self.worker_id = worker_id
        self.token = token
        self.kind = kind
        self.connection = connection
        self.lat = 41.3925 + rng.uniform(-0.02, 0.02)
        self.lng = 2.1640 + rng.uniform(-0.02, 0.02)
        self.last_ok_ts: float | None = None
        self.task: asyncio.Task | None = None


class PhoneGenerator:
    """One process's phones, and what their answers were since the last collect."""

    def __init__(self, *, base_url: str, phones: list, period: float, seed: int):
        address = urllib.parse.urlsplit(base_url)
        self.host_header = address.netloc
        self.rng = random.Random(seed)
        self.period = period
        self.phones = [
            Phone(worker_id, token, kind, Connection(address.hostname, address.port), self.rng)
            for worker_id, token, kind in phones
        ]
        self.running = False
        self.reset()

    def reset(self) -> None:
        self.cpu_mark, self.time_mark = process_cpu_seconds(), time.monotonic()
        self.statuses: dict[int, int] = {}
        self.failures = 0
        self.failure_samples: list[str] = []
        self.latency = latency_histogram()
        self.slowest = 0.0

    # ------------------------------------------------------------ requests

    def osmand_request(self, phone: Phone, ts_ms: int) -> bytes:
        query = (
            f"id={phone.token}&lat={phone.lat:.6f}&lon={phone.lng:.6f}&timestamp={ts_ms}"
            f"&speed={3.0 * KNOTS:.1f}&bearing=90&altitude=30&accuracy=5&batt=80"
        )
        return (
            f"GET /osmand/?{query} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            "User-Agent: Traccar Client (loadtest)\r\nAccept: */*\r\n\r\n"
        ).encode()

    def owntracks_request(self, phone: Phone, tst: float) -> tuple[bytes, bytes]:
        body = json.dumps(
            {"_type": "location", "lat": round(phone.lat, 6), "lon": round(phone.lng, 6),
             "tst": tst, "acc": 5, "alt": 30, "vel": 11, "cog": 90, "batt": 80, "tid": "ab",
             "conn": "m", "t": "u"}, separators=(",", ":"),
        ).encode()  # fmt: skip
        credentials = base64.b64encode(f"loadtest:{phone.token}".encode()).decode()
        head = (
            f"POST /owntracks/ HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Authorization: Basic {credentials}\r\nContent-Type: application/json\r\n"
            f"User-Agent: Owntracks-Android (loadtest)\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head, body

    async def upload(self, phone: Phone) -> None:
        """Send the phone's next position and wait for the answer."""
        phone.lat += self.rng.uniform(-1e-4, 1e-4)
        phone.lng += self.rng.uniform(-1e-4, 1e-4)
        # The position's ts as the server will read it, so that the managers' copy compares equal.
        if phone.kind == OSMAND:
            ts_ms = int(time.time() * 1000)
            ts, head, body = ts_ms / 1000, self.osmand_request(phone, ts_ms), b""
        else:
            ts = round(time.time(), 3)
            head, body = self.owntracks_request(phone, ts)
        started = time.monotonic()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, _ = await phone.connection.request(head, body)
        except (OSError, HttpError, TimeoutError, asyncio.IncompleteReadError) as error:
            phone.connection.close()
            self.failures += 1
            if len(self.failure_samples) < 5:
                self.failure_samples.append(f"{phone.kind}: {error!r}")
            return
        elapsed = time.monotonic() - started
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.slowest = max(self.slowest, elapsed)
        if status == 200:
            self.latency[min(int(elapsed * 1000), LATENCY_BINS - 1)] += 1
            phone.last_ok_ts = ts

    async def run_phone(self, phone: Phone) -> None:
        """Upload once per period, on the phone's own phase, until the run stops."""
        next_at = time.monotonic() + self.rng.uniform(0, self.period)
        while self.running:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                if not self.running:
                    return
            await self.upload(phone)
            next_at = max(next_at + self.period, time.monotonic())

    # ------------------------------------------------------------ commands

    def start(self, kind: str) -> int:
        self.running = True
        started = 0
        for phone in self.phones:
            if phone.kind == kind and (phone.task is None or phone.task.done()):
                phone.task = asyncio.ensure_future(self.run_phone(phone))
                started += 1
        return started

    async def stop(self) -> None:
        """Stop sending; return once every request in flight has its answer."""
        self.running = False
        tasks = [phone.task for phone in self.phones if phone.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def collect(self) -> dict:
        report = {
            "statuses": self.statuses,
            "failures": self.failures,
            "failure_samples": self.failure_samples,
            "latency": self.latency,
            "slowest_ms": round(self.slowest * 1000),
            "connections": sum(phone.connection.opened for phone in self.phones),
            "cpu": process_cpu_seconds() - self.cpu_mark,
            "seconds": time.monotonic() - self.time_mark,
            "last_ok": {p.worker_id: p.last_ok_ts for p in self.phones if p.last_ok_ts is not None},
        }
        self.reset()
        return report

    def close(self) -> None:
        for phone in self.phones:
            phone.connection.close()


async def serve(pipe, generator: PhoneGenerator) -> None:
    loop = asyncio.get_running_loop()
    while True:
        command, argument = await loop.run_in_executor(None, pipe.recv)
        if command == "start":
            pipe.send(generator.start(argument))
        elif command == "stop":
            await generator.stop()
            pipe.send(None)
        elif command == "collect":
            pipe.send(generator.collect())
        elif command == "close":
            await generator.stop()
            generator.close()
            pipe.send(None)
            return


def main(pipe, *, base_url: str, phones: list, period: float, seed: int) -> None:
    """Entry point of a phone generator process."""
    raise_open_file_limit()
    generator = PhoneGenerator(base_url=base_url, phones=phones, period=period, seed=seed)
    asyncio.run(serve(pipe, generator))


class HttpPhones:
    """Phone generator processes, each with a share of every kind's phones (round robin)."""

    def __init__(self, url: str, phones: list[tuple[int, str, str]], count: int, period: float):
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=main,
                args=(theirs,),
                kwargs={
                    "base_url": url,
                    "phones": phones[index::count],
                    "period": period,
                    "seed": 1000 + index,
                },
                daemon=True,
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def ask_all(self, command: str, argument=None) -> list:
        for pipe in self.pipes:
            pipe.send((command, argument))
        return [pipe.recv() for pipe in self.pipes]

    def start(self, kind: str) -> int:
        """Start every phone of this kind; return how many started."""
        return sum(self.ask_all("start", kind))

    def stop(self) -> None:
        self.ask_all("stop")

    def collect(self) -> dict:
        """Merge what every process saw since the last collect."""
        reports = self.ask_all("collect")
        statuses: dict[int, int] = {}
        for report in reports:
            for status, count in report["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        return {
            "statuses": statuses,
            "failures": sum(r["failures"] for r in reports),
            "failure_samples": [s for r in reports for s in r["failure_samples"]][:5],
            "latency": [sum(bins) for bins in zip(*(r["latency"] for r in reports), strict=True)],
            "slowest_ms": max(r["slowest_ms"] for r in reports),
            "connections": sum(r["connections"] for r in reports),
            "cpu_cores": sum(r["cpu"] for r in reports) / max(r["seconds"] for r in reports),
            "last_ok": {k: v for r in reports for k, v in r["last_ok"].items()},
        }

    def close(self) -> None:
        try:
            self.ask_all("close")
        finally:
            for process in self.processes:
                process.join(10)
                if process.is_alive():
                    process.kill()
