"""The load generator processes (loadtest/generator.py), driven over pipes by the benchmark and
the soak, and what their reports say about delivery."""

import math
import multiprocessing
from concurrent.futures import ThreadPoolExecutor

from deploy.cluster import login
from loadtest import generator
from loadtest.generator import percentile
from loadtest.runs import PASSWORD, log


class Generators:
    """Load generator processes, each with a share of the devices (round robin)."""

    def __init__(
        self,
        url: str,
        devices: list[tuple[int, str]],
        count: int,
        period: float,
        window: float,
        *,
        acks: bool = False,
        reconnect: bool = False,
    ):
        context = multiprocessing.get_context("spawn")
        self.count = count
        self.pipes, self.processes = [], []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=generator.main,
                args=(theirs,),
                kwargs={
                    "base_url": url.replace("http", "ws", 1),
                    "devices": devices[index::count],
                    "period": period,
                    "seed": index,
                    "window": window,
                    "acks": acks,
                    "reconnect": reconnect,
                },
                daemon=True,
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def ask_all(self, commands: list) -> list:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        return [pipe.recv() for pipe in self.pipes]

    def local_counts(self, devices: int) -> list[int]:
        """How many of each process's devices make the first `devices` overall."""
        return [max(0, math.ceil((devices - index) / self.count)) for index in range(self.count)]

    def connect_devices(self, devices: int, url: str | None = None) -> int:
        extra = {"url": url.replace("http", "ws", 1)} if url else {}
        replies = self.ask_all(
            [("connect_devices", {"count": n, **extra}) for n in self.local_counts(devices)]
        )
        failures = [f for reply in replies for f in reply["failures"]]
        if failures:
            log(f"    connect failures, e.g. {failures[:2]}")
        return sum(reply["open"] for reply in replies)

    def churn(self, fraction: float) -> dict:
        """Close and reopen a `fraction` of each process's active device sockets."""
        replies = self.ask_all([("churn", {"fraction": fraction})] * self.count)
        return {
            "churned": sum(r["churned"] for r in replies),
            "open": sum(r["open"] for r in replies),
            "failures": [f for r in replies for f in r["failures"]],
        }

    def connect_watches(self, watches: list) -> int:
        replies = self.ask_all(
            [("connect_watches", watches[index :: self.count]) for index in range(self.count)]
        )
        failures = [f for reply in replies for f in reply["failures"]]
        if failures:
            raise RuntimeError(f"manager sockets failed: {failures[:2]}")
        return sum(reply["open"] for reply in replies)

    def run(self, devices: int) -> None:
        self.ask_all([("run", n) for n in self.local_counts(devices)])

    def set_open(self, devices: int, keep: int = 0) -> int:
        """Have `devices` devices online in all, spread evenly over the processes; the first
        `keep` stay online."""
        commands = zip(self.local_counts(devices), self.local_counts(keep), strict=True)
        replies = self.ask_all([("set_open", (n, k)) for n, k in commands])
        return sum(reply["open"] for reply in replies)

    def acked_positions(self) -> list[tuple[int, float]]:
        """Every position the server acknowledged, as (worker, ts), with reconnect on."""
        return [
            tuple(p)
            for reply in self.ask_all([("acked_positions", None)] * self.count)
            for p in reply
        ]

    def collect(self) -> dict:
        """Merge what every process saw since the last collect."""
        reports = self.ask_all([("collect", None)] * self.count)
        merged = {
            key: sum(r[key] for r in reports)
            for key in (
                "sent",
                "sent_total",
                "send_failures",
                "error_frames",
                "closed",
                "positions_received",
                "acked",
                "ack_frames",
                "acks_late",
                "reconnects",
                "reconnects_failed",
            )  # fmt: skip
        }
        # Cores the generator processes used together since the last collect.
        merged["cpu_cores"] = sum(r["cpu"] for r in reports) / max(r["seconds"] for r in reports)
        merged["latency"] = [
            sum(bins) for bins in zip(*(r["latency"] for r in reports), strict=True)
        ]
        merged["ack_latency"] = [
            sum(bins) for bins in zip(*(r["ack_latency"] for r in reports), strict=True)
        ]
        merged["last_sent"] = {k: v for r in reports for k, v in r["last_sent"].items()}
        merged["watches"] = [w for r in reports for w in r["watches"]]
        merged["gaps"] = {}
        for r in reports:
            for team_id, gap in r["gaps"].items():
                merged["gaps"][team_id] = max(merged["gaps"].get(team_id, 0.0), gap)
        return merged

    def close(self) -> None:
        try:
            self.ask_all([("close", None)] * self.count)
        finally:
            for process in self.processes:
                process.join(10)
                if process.is_alive():
                    process.kill()


def watch_entries(
    url: str, sessions: dict, teams: list[dict], sockets_per_team: int = 1, *, login_at: str = ""
) -> list:
    """Manager sockets for these teams: log in (once per manager, at `login_at` if given) and
    build their headers."""
    missing = [t["managers"][0] for t in teams if t["managers"][0] not in sessions]
    with ThreadPoolExecutor(4) as pool:
        logins = pool.map(lambda u: login(login_at or url, u, PASSWORD, timeout=60), missing)
        sessions.update(zip(missing, logins, strict=True))
    # A session outlives the cluster it was made on (the modes share one database), but a map's
    # Origin must be the site it connects to.
    return [
        (team["id"], team["slug"], {**sessions[team["managers"][0]], "Origin": url})
        for team in teams
        for _ in range(sockets_per_team)
    ]


def delivery(report: dict, team_workers: dict, active: set[int], elapsed: float) -> dict:
    """Delivered rate, latency, and the share of active workers' latest positions at managers."""
    last_sent = report["last_sent"]
    expected = matched = 0
    for watch in report["watches"]:
        for worker_id in team_workers[watch["team_id"]]:
            if worker_id in active:
                expected += 1
                matched += watch["seen"].get(worker_id) == last_sent.get(worker_id)
    histogram = report["latency"]
    return {
        "delivered_per_s": round(report["positions_received"] / elapsed),
        "latency_ms": {
            name: percentile(histogram, q)
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "latest_delivered_pct": round(100 * matched / max(expected, 1), 2),
    }
