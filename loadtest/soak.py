"""Soak mode: the local cluster under steady, modest load for hours, watching for leaks.

    python -m loadtest.soak [--hours H | --minutes M] [--layer redis|kafka] [--replicas 2]
        [--devices 300] [--team-size 50] [--managers-per-team 2] [--sample-seconds 30]
        [--churn 0.05] [--warmup 120] [--generators 2] [--workdir DIR] [--output-dir DIR]

It starts the cluster as loadtest/bench.py does (nginx, N daphne replicas, Redis or Kafka),
provisions the teams, and drives devices at one position a second each with manager sockets on
every team (loadtest/generator.py). Every minute a share of the devices (--churn) disconnects and
reconnects, so that a leak per connection would show beside a leak per message. Every sample it
records the resident memory and CPU seconds of every process involved (each daphne replica,
nginx's master and workers, the Redis server, which is the machine's shared one, or also tansu on
Kafka, the load generator processes and this driver) and the interval's delivery: positions
delivered, p50/p99 latency, the share of workers' latest positions at their managers, error frames
and closes. The sends pause for a second at each sample so that the latest-position check is
exact, as in the benchmark. The generators keep counters and a latency histogram per interval,
never a list per position.

Results: loadtest/results/soak-<layer>.{json,md} (or --output-dir), rewritten after every sample
so that an interrupted run leaves its data. The summary fits each process's memory growth, in MB
per hour, over the samples after warm-up.
"""

import argparse
import json
import math
import os
import signal
import time
import uuid
from pathlib import Path

from deploy.cluster import LocalCluster, manage
from loadtest.fleet import Generators, delivery, watch_entries
from loadtest.generator import LATENCY_BINS, latency_histogram, percentile
from loadtest.machine import children, process_cpu, process_rss
from loadtest.runs import (
    begin_run,
    flush_window,
    log,
    provision_teams,
    redis_pid,
    redis_url,
    run_facts,
    start_broker,
)

RESULTS = Path(__file__).with_name("results")
CHURN_SECONDS = 60
SERVER = ("daphne", "nginx", "redis-server", "tansu")  # name prefixes of the server's processes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    duration = parser.add_mutually_exclusive_group()
    duration.add_argument("--hours", type=float)
    duration.add_argument("--minutes", type=float, help="default 240 (4 hours)")
    parser.add_argument("--layer", default="redis", choices=["redis", "redis-core", "kafka"])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--team-size", type=int, default=50)
    parser.add_argument("--managers-per-team", type=int, default=2, help="manager sockets")
    parser.add_argument("--sample-seconds", type=float, default=30)
    parser.add_argument(
        "--churn", type=float, default=0.05, help="share of devices that reconnect every minute"
    )
    parser.add_argument(
        "--warmup", type=float, default=120, help="seconds before the memory baseline"
    )
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, help="database and logs (default: temporary)")
    parser.add_argument("--note", default="", help="a sentence for the results (what was run)")
    args = parser.parse_args(argv)
    args.seconds = 3600 * args.hours if args.hours else 60 * (args.minutes or 240)
    if args.sample_seconds < 5 or args.seconds < 2 * args.sample_seconds:
        parser.error("samples need at least 5 s each, and the run at least two samples")
    return args


# ---------------------------------------------------------------- processes


class Processes:
    """Every process the soak follows, by name: the cluster's, the broker, the generators."""

    def __init__(self, cluster: LocalCluster, broker, generators: Generators):
        self.nginx = cluster.nginx.pid
        self.pids = {f"daphne {i}": p.pid for i, p in enumerate(cluster.replicas)}
        self.pids["nginx master"] = self.nginx
        self.pids["redis-server"] = redis_pid(redis_url())
        if broker is not None:
            self.pids["tansu"] = broker.process.pid
        self.pids |= {f"generator {i}": p.pid for i, p in enumerate(generators.processes)}
        self.pids["soak driver"] = os.getpid()

    def sample(self) -> dict[str, dict]:
        """RSS (MB) and CPU seconds of each; nginx's workers are looked up again every time."""
        pids = dict(self.pids)
        workers = sorted(children(self.nginx))
        pids |= {f"nginx worker {n}": pid for n, pid in enumerate(workers)}
        return {name: read_process(pid) for name, pid in sorted(pids.items(), key=order)}


def read_process(pid: int) -> dict:
    try:
        rss = round(process_rss(pid) / 2**20, 2)
    except ProcessLookupError:  # gone
        return {"pid": pid, "rss_mb": None, "cpu_s": None}
    return {"pid": pid, "rss_mb": rss, "cpu_s": round(process_cpu(pid), 2)}


def order(item) -> tuple:
    name = item[0]
    prefixes = ("daphne", "nginx master", "nginx worker", "redis", "tansu", "generator", "soak")
    return next(i for i, p in enumerate(prefixes) if name.startswith(p)), name


# ---------------------------------------------------------------- the run


class Soak:
    def __init__(self, args, world: dict, cluster: LocalCluster, broker, generators: Generators):
        self.args = args
        self.world = world
        self.cluster = cluster
        self.generators = generators
        self.processes = Processes(cluster, broker, generators)
        self.samples: list[dict] = []
        self.histogram = latency_histogram()  # every interval after warm-up, summed
        self.devices_open = 0
        self.churned = self.reconnect_failures = 0  # since the last sample
        self.started = self.last_collect = 0.0

    def run(self, write) -> None:
        args, generators = self.args, self.generators
        # Logging in at a replica: nginx takes 10 login POSTs a minute from this machine.
        watches = watch_entries(
            self.cluster.url,
            {},
            self.world["teams"],
            args.managers_per_team,
            login_at=self.cluster.replica_url(0),
        )
        opened = generators.connect_watches(watches)
        self.devices_open = generators.connect_devices(args.devices)
        generators.run(args.devices)
        self.started = self.last_collect = time.monotonic()
        generators.collect()
        log(f"{self.devices_open} devices and {opened} manager sockets open; sampling every "
            f"{args.sample_seconds:g} s, warm-up {args.warmup:g} s")  # fmt: skip
        next_churn = self.started + CHURN_SECONDS
        for k in range(1, int(args.seconds // args.sample_seconds) + 1):
            due = self.started + k * args.sample_seconds
            while (wait := due - time.monotonic()) > 0:
                if next_churn < due:
                    time.sleep(max(0.0, next_churn - time.monotonic()))
                    self.churn()
                    next_churn += CHURN_SECONDS
                else:
                    time.sleep(wait)
            self.sample()
            write()
            gone = [p for p in (self.cluster.nginx, *self.cluster.replicas) if p.poll() is not None]
            if gone:
                raise RuntimeError(f"a cluster process exited: pids {[p.pid for p in gone]}")

    def churn(self) -> None:
        if not self.args.churn:
            return
        reply = self.generators.churn(self.args.churn)
        self.churned += reply["churned"]
        self.reconnect_failures += len(reply["failures"])
        self.devices_open = reply["open"]
        if reply["failures"]:
            log(f"    reconnect failures, e.g. {reply['failures'][:2]}")

    def sample(self) -> None:
        """Pause the sends, collect the interval, read every process, resume."""
        generators = self.generators
        generators.run(0)
        time.sleep(self.world["flush_window"] + 1.0)  # every position sent so far delivered
        report = generators.collect()
        processes = self.processes.sample()
        generators.run(self.args.devices)
        now = time.monotonic()
        elapsed, self.last_collect = now - self.last_collect, now
        active = {worker_id for worker_id, _ in self.world["devices"]}
        delivered = delivery(report, self.world["team_workers"], active, elapsed)
        seconds = now - self.started
        warm = seconds >= self.args.warmup
        if warm:
            self.histogram = [a + b for a, b in zip(self.histogram, report["latency"], strict=True)]
        sample = {
            "seconds": round(seconds, 1),
            "warm": warm,
            "interval_s": round(elapsed, 1),
            "devices_open": self.devices_open,
            "manager_sockets": len(report["watches"]),
            "sent": report["sent"],
            "sent_per_s": round(report["sent"] / elapsed),
            "delivered": report["positions_received"],
            **delivered,
            "error_frames": report["error_frames"],
            "send_failures": report["send_failures"],
            "closed": report["closed"],
            "churned": self.churned,
            "reconnect_failures": self.reconnect_failures,
            "generator_cpu_cores": round(report["cpu_cores"], 2),
            "processes": processes,
        }
        previous = self.samples[-1] if self.samples else None
        sample["server_cpu_cores"] = server_cores(previous, sample)
        self.samples.append(sample)
        self.churned = self.reconnect_failures = 0
        log(progress(sample))


def server_cores(previous: dict | None, sample: dict) -> float | None:
    """Cores the server's processes used together over the sample's interval."""
    if previous is None:
        return None
    used = 0.0
    for name, now in sample["processes"].items():
        before = previous["processes"].get(name)
        if (
            name.startswith(SERVER)
            and before
            and before["pid"] == now["pid"]
            and now["cpu_s"] is not None
        ):
            used += now["cpu_s"] - before["cpu_s"]
    return round(used / (sample["seconds"] - previous["seconds"]), 2)


def progress(s: dict) -> str:
    latency = s["latency_ms"]
    memory = ", ".join(
        f"{name} {p['rss_mb']:.1f}" for name, p in s["processes"].items() if p["rss_mb"] is not None
    )
    return (
        f"  {s['seconds'] / 60:5.1f} min{'' if s['warm'] else ' (warm-up)'}: "
        f"sent {s['sent_per_s']}/s, delivered {s['delivered_per_s']}/s, "
        f"p50/p99 {latency['p50']}/{latency['p99']} ms, latest {s['latest_delivered_pct']}%, "
        f"errors {s['error_frames'] + s['send_failures']}, closes {s['closed']}, "
        f"open {s['devices_open']}, server {s['server_cpu_cores']} cores | MB: {memory}"
    )


# ---------------------------------------------------------------- summary


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return None
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def summarize(samples: list[dict], histogram: list[int]) -> dict:
    warm = [s for s in samples if s["warm"]]
    processes = {}
    for name in samples[-1]["processes"] if samples else ():
        series = [(s["seconds"], s["processes"][name]) for s in samples if name in s["processes"]]
        alive = [(t, p) for t, p in series if p["rss_mb"] is not None]
        after = [(t, p) for t, p in alive if t >= warm[0]["seconds"]] if warm else []
        half = [(t, p) for t, p in after if t >= (after[0][0] + after[-1][0]) / 2] if after else []
        entry = {
            "pids": sorted({p["pid"] for _, p in series}),
            "rss_start_mb": after[0][1]["rss_mb"] if after else None,
            "rss_end_mb": alive[-1][1]["rss_mb"] if alive else None,
            "rss_max_mb": max((p["rss_mb"] for _, p in alive), default=None),
            "growth_mb_per_h": rounded(slope_per_hour([(t, p["rss_mb"]) for t, p in after])),
            "growth_mb_per_h_second_half": rounded(
                slope_per_hour([(t, p["rss_mb"]) for t, p in half])
            ),
            "cpu_cores": None,
        }
        if len(after) >= 2 and after[0][1]["pid"] == after[-1][1]["pid"]:
            (t0, p0), (t1, p1) = after[0], after[-1]
            entry["cpu_cores"] = round((p1["cpu_s"] - p0["cpu_s"]) / (t1 - t0), 3)
        processes[name] = entry
    seconds = sum(s["interval_s"] for s in warm)
    delivery = {
        "samples": len(warm),
        "seconds": round(seconds),
        "sent": sum(s["sent"] for s in warm),
        "sent_per_s": round(sum(s["sent"] for s in warm) / seconds) if seconds else None,
        "delivered": sum(s["delivered"] for s in warm),
        "delivered_per_s": round(sum(s["delivered"] for s in warm) / seconds) if seconds else None,
        "latency_ms": {name: percentile(histogram, q) for name, q in (("p50", 0.5), ("p99", 0.99))},
        "worst_interval_p99_ms": max(
            (s["latency_ms"]["p99"] or 0 for s in warm), default=None
        ),  # fmt: skip
        "latest_delivered_pct_lowest": min(
            (s["latest_delivered_pct"] for s in warm), default=None
        ),  # fmt: skip
        "intervals_with_every_latest": sum(s["latest_delivered_pct"] == 100.0 for s in warm),
        **{
            key: sum(s[key] for s in warm)
            for key in ("error_frames", "send_failures", "closed", "churned", "reconnect_failures")
        },
    }
    return {"processes": processes, "delivery": delivery}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def markdown(result: dict) -> str:
    args, summary = result["settings"], result["summary"]
    state = (
        "finished"
        if result["finished"]
        else f"**stopped early** after {result['elapsed_minutes']} min"
    )
    lines = [
        f"# Soak: {result['layer']} layer, {result['replicas']} replicas behind nginx, "
        f"{result['elapsed_minutes']} minutes",
        "",
        f"{result['date']}, revision `{result['revision']}`, {result['cores']} cores "
        f"({result['cpu_model']}); load generator on the same machine in "
        f"{args['generators']} processes. Run {state} (planned {result['planned_minutes']} min). "
        f"Written by `{result['command']}`.",
        "",
        f"{args['devices']} devices at one position a second in {result['teams']} teams of "
        f"{args['team_size']}, {result['manager_sockets']} manager sockets "
        f"({args['managers_per_team']} per team); every minute {args['churn']:.0%} of the devices "
        f"disconnect and reconnect. A sample every {args['sample_seconds']:g} s (sends pause "
        f"about a second for it, so that the latest-position check is exact); the first "
        f"{args['warmup']:g} s are warm-up. The Redis server is the machine's shared one: its "
        "memory includes whatever else it holds.",
        "",
        *([f"Note: {result['notes']}", ""] if result.get("notes") else []),
        "## Memory and CPU per process",
        "",
        "Growth is the least-squares slope of RSS over the samples after warm-up, and over "
        "their second half (a process that settles shows growth early and none late; a leak "
        "shows both).",
        "",
        "| process | RSS after warm-up MB | at end MB | max MB | growth MB/h | growth MB/h, "
        "second half | CPU cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in summary["processes"].items():
        lines.append(
            f"| {name} | {dash(p['rss_start_mb'])} | {dash(p['rss_end_mb'])} | "
            f"{dash(p['rss_max_mb'])} | {dash(p['growth_mb_per_h'])} | "
            f"{dash(p['growth_mb_per_h_second_half'])} | {dash(p['cpu_cores'])} |"
        )
    d = summary["delivery"]
    lines += [
        "",
        "## Delivery after warm-up",
        "",
        "| seconds | sent/s | delivered/s | p50 ms | p99 ms | worst interval p99 ms | "
        "latest % (lowest interval) | intervals with every latest | error frames | "
        "send failures | closes | reconnects (failed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {d['seconds']} | {dash(d['sent_per_s'])} | {dash(d['delivered_per_s'])} | "
        f"{ms(d['latency_ms']['p50'])} | {ms(d['latency_ms']['p99'])} | "
        f"{ms(d['worst_interval_p99_ms'])} | {dash(d['latest_delivered_pct_lowest'])} | "
        f"{d['intervals_with_every_latest']} of {d['samples']} | {d['error_frames']} | "
        f"{d['send_failures']} | {d['closed']} | {d['churned']} ({d['reconnect_failures']}) |",
        "",
        "Delivered counts each position once per manager socket that received it.",
    ]
    lines += time_series(result["samples"], args["sample_seconds"], result["planned_minutes"])
    return "\n".join(lines) + "\n"


def time_series(samples: list[dict], sample_seconds: float, minutes: float) -> list[str]:
    """One row every few minutes (every sample's figures are in the JSON)."""
    every = max(1, round(min(max(60 * minutes / 12, 120), 900) / sample_seconds))
    rows = [s for i, s in enumerate(samples, 1) if i % every == 0 or i == 1]
    if samples and rows[-1] is not samples[-1]:
        rows.append(samples[-1])
    lines = [
        "",
        "## Over time",
        "",
        "Each row is the sample ending at that minute (its interval is "
        f"{sample_seconds:g} s); RSS in MB.",
        "",
        "| minute | devices open | delivered/s | p50 ms | p99 ms | latest % | errors | closes "
        "| server cores | daphne | nginx | redis-server | generators |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        lines.append(
            f"| {s['seconds'] / 60:.1f}{'' if s['warm'] else ' (warm-up)'} | "
            f"{s['devices_open']} | {s['delivered_per_s']} | {ms(s['latency_ms']['p50'])} | "
            f"{ms(s['latency_ms']['p99'])} | {s['latest_delivered_pct']} | "
            f"{s['error_frames'] + s['send_failures']} | {s['closed']} | "
            f"{dash(s['server_cpu_cores'])} | {rss_of(s, 'daphne')} | {rss_of(s, 'nginx')} | "
            f"{rss_of(s, 'redis')} | {rss_of(s, 'generator')} |"
        )
    return lines


def rss_of(sample: dict, prefix: str) -> str:
    """The RSS of the sample's processes whose names start with `prefix`, joined by +."""
    values = [p["rss_mb"] for n, p in sample["processes"].items() if n.startswith(prefix)]
    return " + ".join(f"{v:.1f}" for v in values if v is not None) or "–"


def dash(value) -> str:
    return "–" if value is None else str(value)


def ms(value) -> str:
    if value is None:
        return "–"
    return f"≥{LATENCY_BINS - 1}" if value >= LATENCY_BINS else str(value)


# ---------------------------------------------------------------- main


def provision(env: dict, args) -> dict:
    team_count = math.ceil(args.devices / args.team_size)
    log(f"Provisioning {team_count} teams of {args.team_size} ...")
    manage(env, "migrate", "--verbosity", "0")
    teams = provision_teams(
        env, teams=team_count, workers=args.team_size, prefix="soak", name="teams.json"
    )
    return {
        "teams": teams,
        "devices": [(w["id"], w["token"]) for t in teams for w in t["workers"]][: args.devices],
        "team_workers": {t["id"]: [w["id"] for w in t["workers"]] for t in teams},
        "flush_window": flush_window(),
    }


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> dict:
    args = parse_args(argv)
    revision, command, workdir, env = begin_run("soak", argv, args.workdir)
    # A plain `kill` stops the run like Ctrl-C: the cluster is stopped and the results kept.
    signal.signal(signal.SIGTERM, interrupt)
    result = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **run_facts(args, revision, command),
        "planned_minutes": round(args.seconds / 60, 1),
        "settings": {
            key: getattr(args, key)
            for key in (
                "devices",
                "team_size",
                "managers_per_team",
                "sample_seconds",
                "churn",
                "warmup",
                "generators",
            )  # fmt: skip
        },
        "finished": False,
        "notes": args.note,
    }
    soak = None

    def write() -> None:
        if soak is None or not soak.samples:
            return
        result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result["elapsed_minutes"] = round(soak.samples[-1]["seconds"] / 60, 1)
        result["summary"] = summarize(soak.samples, soak.histogram)
        result["samples"] = soak.samples
        args.output_dir.mkdir(parents=True, exist_ok=True)
        name = f"soak-{args.layer}"
        (args.output_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.output_dir / f"{name}.md").write_text(markdown(result))

    broker = None
    try:
        broker = start_broker(args.layer, env)
        world = provision(env, args)
        result["teams"] = len(world["teams"])
        result["manager_sockets"] = len(world["teams"]) * args.managers_per_team
        log(f"\n== soak: {args.layer}, {args.replicas} replicas, {args.devices} devices, "
            f"{args.seconds / 60:g} min; work folder {workdir} ==")  # fmt: skip
        cluster = LocalCluster(
            replicas=args.replicas,
            layer=args.layer,
            workdir=workdir / "cluster",
            database_url=env["DATABASE_URL"],
            env={**env, "REDIS_PREFIX": f"soak-{uuid.uuid4().hex[:8]}"},
        )
        with cluster:
            generators = Generators(
                cluster.url, world["devices"], args.generators, 1.0, world["flush_window"]
            )
            try:
                soak = Soak(args, world, cluster, broker, generators)
                soak.run(write)
                result["finished"] = True
            finally:
                try:
                    generators.close()
                except (OSError, EOFError):  # after Ctrl-C they were interrupted too
                    pass
    except KeyboardInterrupt:
        result["notes"] = " ".join([args.note, "Interrupted before the planned end."]).strip()
        log("Interrupted; writing what was measured.")
    except Exception as error:
        result["notes"] = " ".join([args.note, f"Stopped by an error: {error!r}."]).strip()
        raise
    finally:
        if broker is not None:
            broker.stop()
        write()
    if soak and soak.samples:
        log("\n" + markdown(result))
        log(f"Results: {args.output_dir}/soak-{args.layer}.{{json,md}}")
    return result


if __name__ == "__main__":
    main()
