"""The benchmark: TeamTrack's relay beside the stock Channels pattern and daphne's bare floor,
on the real local cluster (nginx, N daphne replicas, Redis or Kafka), measured in one run.

    python -m loadtest.bench [--layer redis|redis-core|kafka] [--replicas 2] [--quick]

    python -m loadtest.bench --database postgres --modes batched,live-only   # history's cost

For each mode (bare: frames received and dropped; stock: one group_send per position and one
encode per manager, loadtest/stock.py; batched: TeamTrack's relay, storing every position;
live-only: the same with HISTORY=false; batched-no-acks: batched with devices that send no
`seq`, so that nothing is acknowledged; batched-acks-1s: batched with ACK_INTERVAL_SECONDS=1)
it starts the cluster, then:
- idle (not live-only): holds idle device sockets on one replica and reports its memory per
  connection;
- steps: raises the number of devices sending one position a second until a step is not
  sustained (p99 latency above 250 ms, a latest position missing, an error, or the generator
  or server falling behind), reporting rates, latency, delivery, and server CPU per position
  (daphne, its event loops apart, nginx, the broker and PostgreSQL, from /proc) and positions
  stored per second;
- fan-out (stock and batched): one team of many workers watched by many manager sockets.
Devices send a `seq` with every position and count acks, as real devices do (--no-acks: none,
in every mode); a position of a relaying mode not acknowledged within 5 s is an error. The load
generator runs in several processes (loadtest/generator.py); its CPU is reported too.
Results go to loadtest/results/bench-<layer>.{json,md} (or --output-dir), with the machine's
cores and the git revision. It also writes the provisioned tokens for the locustfile.
"""

import argparse
import contextlib
import json
import math
import sqlite3
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

from deploy.cluster import LocalCluster, manage
from loadtest.fleet import Generators, delivery, watch_entries
from loadtest.generator import ms, percentile
from loadtest.machine import children, main_thread_cpu, process_cpu, process_rss
from loadtest.runs import (
    PASSWORD,
    add_database_arguments,
    begin_run,
    flush_window,
    log,
    postgres_cpu_seconds,
    postgres_database,
    provision_teams,
    redis_pid,
    redis_url,
    run_facts,
    save_results,
    start_broker,
)

RESULTS = Path(__file__).with_name("results")
# Device counts a mode steps through until one is not sustained; the bare floor sustains every
# one here, and the local cluster's nginx holds about 19,000 sockets.
DEFAULT_STEPS = "100,250,500,1000,2000,3000,4000,5000,6000,8000,10000,12000"
# batched: the relay as shipped, history on; live-only: the same with HISTORY=false, so that the
# run reports what storing every position costs.
# batched-kafka: the relay as shipped on the Kafka layer, beside batched on --layer in one run.
# batched-no-acks: the relay as shipped, its devices asking for no acks (what acks cost).
# batched-acks-1s: the relay with ACK_INTERVAL_SECONDS=1, the default before 3 s (what the
# longer interval saves).
MODES = (
    "bare", "stock", "batched", "live-only", "batched-no-acks", "batched-acks-1s", "batched-kafka"
)  # fmt: skip
P99_LIMIT_MS = 250
SENT_SHARE = 0.98  # below this share of the offered rate, the generator (or machine) fell behind


# ---------------------------------------------------------------- processes and /proc


class ServerProcesses:
    """The processes whose CPU counts as the server's: replicas, nginx, and the brokers."""

    def __init__(
        self, cluster: LocalCluster, brokers: dict[str, list[int]], postmaster: int | None
    ):
        self.replicas = [p.pid for p in cluster.replicas]
        self.nginx = [cluster.nginx.pid, *children(cluster.nginx.pid)]
        self.brokers = brokers
        self.postmaster = postmaster

    def cpu(self) -> dict[str, float]:
        return {
            "daphne": sum(map(process_cpu, self.replicas)),
            "nginx": sum(map(process_cpu, self.nginx)),
            # Redis (the layer on redis, and the relay's state on either layer), then Kafka
            "broker": sum(map(process_cpu, self.brokers["redis"])),
            "kafka": sum(map(process_cpu, self.brokers.get("kafka", []))),
            # PostgreSQL, the whole server (SQLite's work is inside daphne's figure)
            "database": postgres_cpu_seconds(self.postmaster) if self.postmaster else 0.0,
        }

    def event_loop_cpu(self) -> float:
        """The replicas' event loops: their share of "daphne" (the rest is the history writer's
        thread, and the pool's that looks tokens up at connect)."""
        return sum(map(main_thread_cpu, self.replicas))

    def replica_rss(self) -> int:
        return sum(map(process_rss, self.replicas))


def stored_positions(database_url: str) -> int:
    """Positions in the history table now (the writer's commits, counted in the database)."""
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            query = "SELECT count(*) FROM tracking_storedposition"
            return db.execute(query).fetchone()[0]
    with psycopg.connect(database_url) as db:
        return db.execute("SELECT count(*) FROM tracking_storedposition").fetchone()[0]


def cpu_delta(after: dict, before: dict) -> dict:
    return {name: after[name] - before[name] for name in after}


# ---------------------------------------------------------------- one mode on one cluster


class Bench:
    def __init__(self, args, world: dict, cluster: LocalCluster, brokers: dict, mode):
        self.args = args
        self.world = world
        self.cluster = cluster
        self.mode = mode
        self.server = ServerProcesses(cluster, brokers, world.get("postmaster"))
        self.sessions: dict[str, dict] = world.setdefault("sessions", {})

    @property
    def delivers(self) -> bool:
        return self.mode != "bare"

    @property
    def acks(self) -> bool:
        """Whether devices send `seq` (bare's too, so that frames are alike; it acknowledges
        nothing, and is not asked to)."""
        return not self.args.no_acks and self.mode != "batched-no-acks"

    def generators(self, devices: list) -> Generators:
        return Generators(
            self.cluster.url,
            devices,
            self.args.generators,
            1.0,
            self.world["flush_window"],
            acks=self.acks,
        )

    def bare_frames(self) -> int:
        """Frames the bare app's replicas received so far."""
        return sum(
            int(urllib.request.urlopen(f"{self.cluster.replica_url(i)}/frames", timeout=5).read())
            for i in range(len(self.cluster.replicas))
        )

    def watch_entries(self, teams: list[dict], sockets_per_team: int = 1) -> list:
        # Logging in at a replica: nginx takes 10 login POSTs a minute from this machine.
        login_at = self.cluster.replica_url(0)
        return watch_entries(
            self.cluster.url, self.sessions, teams, sockets_per_team, login_at=login_at
        )

    # ------------------------------------------------------------ idle sockets

    def idle(self) -> dict:
        count = self.args.idle
        log(f"  idle: {count} device sockets on replica 0")
        devices = self.world["devices"][:count]
        generators = self.generators(devices)
        try:
            replica = self.cluster.replicas[0].pid
            before = process_rss(replica)
            started = time.monotonic()
            opened = generators.connect_devices(count, url=self.cluster.replica_url(0))
            connect_seconds = time.monotonic() - started
            time.sleep(2)
            after = process_rss(replica)
        finally:
            generators.close()
        self.wait_until_quiet()
        result = {
            "sockets": opened,
            "connect_seconds": round(connect_seconds, 1),
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "kb_per_connection": round((after - before) / max(opened, 1) / 1024, 1),
        }
        log(f"    {opened} open in {connect_seconds:.1f} s; {result['kb_per_connection']} KB each")
        return result

    def wait_until_quiet(self, limit: float = 180) -> None:
        """Wait until the replicas have digested a storm of disconnects (under 10% of a core)."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            before = self.server.cpu()["daphne"]
            time.sleep(1)
            if self.server.cpu()["daphne"] - before < 0.1:
                return
        log("    the replicas are still busy; going on")

    # ------------------------------------------------------------ steps of rising load

    def steps(self) -> list[dict]:
        generators = self.generators(self.world["devices"])
        rss_base = self.server.replica_rss()
        results = []
        try:
            watched = 0
            for step in self.args.steps:
                if self.delivers:
                    teams = self.world["teams"][watched : math.ceil(step / self.args.team_size)]
                    generators.connect_watches(self.watch_entries(teams))
                    watched += len(teams)
                result = self.step(generators, step, watched, rss_base)
                results.append(result)
                if not result["sustained"]:
                    break
        finally:
            generators.close()
        return results

    def step(self, generators: Generators, devices: int, watches: int, rss_base: int) -> dict:
        args = self.args
        opened = generators.connect_devices(devices)
        generators.run(devices)
        log(f"  {devices} devices ({opened} open), {watches} manager sockets: warming up")
        time.sleep(args.warmup)
        generators.collect()
        stored_before = stored_positions(self.world["database_url"])
        cpu_before, started = self.server.cpu(), time.monotonic()
        loop_before = self.server.event_loop_cpu()  # within daphne's window: never more
        for second in range(int(args.seconds)):
            time.sleep(1)
            if second % 10 == 9:
                log(f"    {second + 1} s")
        time.sleep(args.seconds - int(args.seconds))
        event_loop = self.server.event_loop_cpu() - loop_before
        cpu = cpu_delta(self.server.cpu(), cpu_before)
        stored = stored_positions(self.world["database_url"]) - stored_before
        generators.run(0)
        elapsed = time.monotonic() - started
        time.sleep(self.world["flush_window"] + 1.0)
        report = generators.collect()
        sent = report["sent"]
        result = {
            "devices": devices,
            "manager_sockets": watches,
            "offered_per_s": devices,
            "sent_per_s": round(sent / elapsed),
            "errors": errors(report, self.acks and self.delivers),
            "server_cpu_us_per_position": {
                name: round(seconds * 1e6 / max(sent, 1)) for name, seconds in cpu.items()
            },
            "server_cpu_cores": round(sum(cpu.values()) / elapsed, 2),
            "generator_cpu_cores": round(report["cpu_cores"], 2),
            "stored_per_s": round(stored / elapsed),
            "rss_kb_per_connection": round(
                (self.server.replica_rss() - rss_base) / (devices + watches) / 1024, 1
            ),
        }
        result["server_cpu_us_per_position"]["total"] = round(
            sum(cpu.values()) * 1e6 / max(sent, 1)
        )
        result["event_loop_us_per_position"] = round(event_loop * 1e6 / max(sent, 1))
        kept_up = sent >= SENT_SHARE * devices * elapsed and result["errors"] == 0
        if self.delivers:
            active = {worker_id for worker_id, _ in self.world["devices"][:devices]}
            result.update(self.delivery(report, active, elapsed))
            if self.acks:
                result["acks"] = ack_figures(report, elapsed)
            result["sustained"] = (
                kept_up
                and result["latency_ms"]["p99"] is not None
                and result["latency_ms"]["p99"] <= P99_LIMIT_MS
                and result["latest_delivered_pct"] == 100.0
            )
        else:
            result.update(self.bare_delivery(report["sent_total"]))
            result["sustained"] = (
                kept_up and result["received_pct"] == 100.0 and result["drain_ms"] <= P99_LIMIT_MS
            )
        log(f"    {summary(result)}")
        return result

    def delivery(self, report: dict, active: set[int], elapsed: float) -> dict:
        return delivery(report, self.world["team_workers"], active, elapsed)

    def bare_delivery(self, sent: int) -> dict:
        """The bare app delivers nothing: check it received every frame ever sent, and how soon."""
        started = time.monotonic()
        received = self.bare_frames()
        while received < sent and time.monotonic() - started < 10:
            time.sleep(0.02)
            received = self.bare_frames()
        # The sends stopped flush_window + 1 s before this loop began.
        drain = 0 if received >= sent else (time.monotonic() - started) * 1000
        return {"received_pct": round(100 * received / max(sent, 1), 2), "drain_ms": round(drain)}

    # ------------------------------------------------------------ fan-out

    def fanout(self) -> dict:
        args = self.args
        team = self.world["fanout_team"]
        log(f"  fan-out: {args.fanout_workers} workers, {args.fanout_managers} manager sockets")
        devices = [(w["id"], w["token"]) for w in team["workers"]]
        generators = self.generators(devices)
        try:
            generators.connect_watches(self.watch_entries([team], args.fanout_managers))
            generators.connect_devices(len(devices))
            generators.run(len(devices))
            time.sleep(args.warmup)
            generators.collect()
            cpu_before, started = self.server.cpu(), time.monotonic()
            time.sleep(args.seconds)
            cpu = cpu_delta(self.server.cpu(), cpu_before)
            generators.run(0)
            elapsed = time.monotonic() - started
            time.sleep(self.world["flush_window"] + 1.0)
            report = generators.collect()
        finally:
            generators.close()
        frames = [w["frames"] for w in report["watches"]]
        delivered = report["positions_received"]
        result = {
            "workers": len(devices),
            "manager_sockets": len(frames),
            "sent_per_s": round(report["sent"] / elapsed),
            "delivered_per_s": round(delivered / elapsed),
            # Positions frames a manager received per flush window it received them over.
            "frames_per_window": round(
                max(w["frames"] / max(w["windows"], 1) for w in report["watches"]), 3
            ),
            "positions_per_frame": round(delivered / max(sum(frames), 1), 1),
            "server_cpu_us_per_delivered": round(sum(cpu.values()) * 1e6 / max(delivered, 1), 1),
            "server_cpu_cores": round(sum(cpu.values()) / elapsed, 2),
            "generator_cpu_cores": round(report["cpu_cores"], 2),
            "errors": errors(report, self.acks),
            **self.delivery(report, {worker_id for worker_id, _ in devices}, elapsed),
        }
        log(f"    {result}")
        return result


def errors(report: dict, acked: bool) -> int:
    """Failed sends, error frames, closes, and with acks, positions not acknowledged in 5 s."""
    late = report["acks_late"] if acked else 0
    return report["send_failures"] + report["error_frames"] + report["closed"] + late


def ack_figures(report: dict, elapsed: float) -> dict:
    """How many positions acks covered, how late, and how many ack frames that took."""
    histogram = report["ack_latency"]
    return {
        "acked_per_s": round(report["acked"] / elapsed),
        "ack_frames_per_s": round(report["ack_frames"] / elapsed),
        "late": report["acks_late"],
        "p50_ms": percentile(histogram, 0.5),
        "p99_ms": percentile(histogram, 0.99),
    }


def summary(step: dict) -> str:
    cpu = step["server_cpu_us_per_position"]["total"]
    parts = [
        f"sent {step['sent_per_s']}/s",
        f"server {cpu} µs/position",
        f"errors {step['errors']}",
    ]
    if "latency_ms" in step:
        latency = step["latency_ms"]
        parts += [
            f"p50/p99 {latency['p50']}/{latency['p99']} ms",
            f"latest {step['latest_delivered_pct']}%",
        ]
    else:
        parts += [f"received {step['received_pct']}%", f"drain {step['drain_ms']} ms"]
    if "acks" in step:
        acks = step["acks"]
        parts += [
            f"acked {acks['acked_per_s']}/s in {acks['ack_frames_per_s']} acks/s",
            f"ack p99 {acks['p99_ms']} ms",
        ]
    verdict = "sustained" if step["sustained"] else "NOT sustained"
    return ", ".join(parts) + f" -> {verdict}"


# ---------------------------------------------------------------- the run


def provision(env: dict, args) -> dict:
    """Create the benchmark's teams once; every mode's cluster shares this database."""
    most = max(max(args.steps), args.idle)
    team_count = math.ceil(most / args.team_size)
    log(f"Provisioning {team_count} teams of {args.team_size} and a fan-out team ...")
    out = Path(env["BENCH_DIR"])
    manage(env, "migrate", "--verbosity", "0")
    teams = provision_teams(
        env, teams=team_count, workers=args.team_size, prefix="bench", name="teams.json"
    )
    fanout = provision_teams(
        env, teams=1, workers=args.fanout_workers, prefix="fanout", name="fanout.json"
    )[0]
    # For loadtest/locustfile.py: the same teams and tokens (TEAMTRACK_PROVISION=<this file>).
    (out / "provision.json").write_text(json.dumps({"teams": teams, "password": PASSWORD}))
    return {
        "teams": teams,
        "fanout_team": fanout,
        "devices": [(w["id"], w["token"]) for t in teams for w in t["workers"]],
        "team_workers": {t["id"]: [w["id"] for w in t["workers"]] for t in teams}
        | {fanout["id"]: [w["id"] for w in fanout["workers"]]},
    }


def run_mode(mode: str, args, world: dict, base_env: dict, brokers: dict) -> dict:
    layer = "kafka" if mode == "batched-kafka" else args.layer
    if layer != "kafka":
        brokers = {"redis": brokers["redis"]}  # an idle Kafka broker is no part of this server
    log(f"\n== {mode} ({layer}, {args.replicas} replicas) ==")
    env = {**base_env, "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"}
    if mode == "live-only":
        env["HISTORY"] = "false"
    if mode == "batched-acks-1s":
        env["ACK_INTERVAL_SECONDS"] = "1"
    application = {
        "bare": "loadtest.bare:application",
        "stock": "loadtest.stock:application",
    }.get(mode, "teamtrack.asgi:application")
    workdir = Path(base_env["BENCH_DIR"]) / mode
    cluster = LocalCluster(
        replicas=args.replicas,
        layer=layer,
        workdir=workdir,
        database_url=base_env["DATABASE_URL"],
        env=env,
        application=application,
    )
    with cluster:
        bench = Bench(args, world, cluster, brokers, mode)
        # live-only is there to price the history, which idle sockets and the fan-out (no
        # positions stored beyond the steps') do not show: its steps only.
        steps_only = mode == "live-only"
        result = {"idle": bench.idle() if args.idle and not steps_only else None}
        result["steps"] = bench.steps()
        if bench.delivers and args.fanout_workers and not steps_only:
            result["fanout"] = bench.fanout()
    sustained = [s["devices"] for s in result["steps"] if s["sustained"]]
    result["sustained_devices"] = max(sustained, default=0)
    return result


def ratios(modes: dict) -> list[str]:
    """Say how the relay compares with the baselines measured in this run."""
    lines = []
    batched, stock, bare = modes.get("batched"), modes.get("stock"), modes.get("bare")
    if batched and bare:
        common = {s["devices"] for s in batched["steps"]} & {s["devices"] for s in bare["steps"]}
        for devices in sorted(common):  # issue 18's goal is at 2,000
            steps = [
                next(s for s in m["steps"] if s["devices"] == devices) for m in (batched, bare)
            ]
            cpu = [step["server_cpu_us_per_position"] for step in steps]
            lines.append(
                f"Server CPU per position at {devices} devices, batched / bare: "
                f"{cpu[0]['total']} / {cpu[1]['total']} µs = {cpu[0]['total'] / cpu[1]['total']:.2f}"
            )
            loops = [step.get("event_loop_us_per_position") for step in steps]
            if None not in loops:
                lines.append(
                    f"Where, at {devices} devices: the replicas' event loops {loops[0]} / "
                    f"{loops[1]} µs; their other threads (the history's) {cpu[0]['daphne'] - loops[0]}"
                    f" / {cpu[1]['daphne'] - loops[1]}; nginx {cpu[0]['nginx']} / {cpu[1]['nginx']};"
                    f" Redis {cpu[0]['broker']} / {cpu[1]['broker']}"
                )
    live_only = modes.get("live-only")
    if batched and live_only:
        lines += history_cost(batched, live_only)
    for other in ("batched-no-acks", "batched-acks-1s"):
        if batched and modes.get(other):
            lines += acks_cost(batched, modes[other], other)
    if batched and modes.get("batched-kafka"):
        lines += kafka_cost(batched, modes["batched-kafka"])
    for name, baseline in (("stock", stock), ("bare", bare)):
        if not (batched and baseline):
            continue
        mine, theirs = batched["sustained_devices"], baseline["sustained_devices"]
        line = f"Sustained devices, batched / {name}: {mine} / {theirs}"
        if theirs:
            line += f" = {mine / theirs:.2f}"
        else:
            line += f" ({name} sustained none of its steps, the lowest being {baseline['steps'][0]['devices']})"
        if baseline["steps"][-1]["sustained"]:
            line += f" ({name} sustained its highest step: its limit is higher)"
        lines.append(line)
    return lines


def sustained_against(title: str, mine: dict, base: dict, base_name: str) -> str:
    """One mode's sustained devices against another's of the same run."""
    ours, theirs = mine["sustained_devices"], base["sustained_devices"]
    return (
        f"{title}: {ours} / {theirs}"
        + (f" = {ours / theirs:.2f}" if theirs else "")
        + (f" ({base_name} sustained its highest step)" if base["steps"][-1]["sustained"] else "")
    )


def same_steps(mine: dict, base: dict):
    """Yield (devices, our CPU per position, the base's, our step) for steps both ran."""
    by_devices = {s["devices"]: s for s in base["steps"]}
    for step in mine["steps"]:
        other = by_devices.get(step["devices"])
        if other is not None:
            cpu, base_cpu = step["server_cpu_us_per_position"], other["server_cpu_us_per_position"]
            yield step["devices"], cpu, base_cpu, step


def kafka_cost(batched: dict, on_kafka: dict) -> list[str]:
    """The relay on the Kafka layer against the same relay on Redis pub/sub, and the broker's
    share of its CPU."""
    title = "Sustained devices, batched-kafka / batched"
    lines = [sustained_against(title, on_kafka, batched, "batched")]
    for devices, cpu, base, _ in same_steps(on_kafka, batched):
        lines.append(
            f"Server CPU per position at {devices} devices, batched-kafka / batched: "
            f"{cpu['total']} / {base['total']} µs = {cpu['total'] / base['total']:.2f}; of it the "
            f"Kafka broker {cpu['kafka']} µs, Redis {cpu['broker']} against {base['broker']} µs"
        )
    return lines


def acks_cost(batched: dict, other: dict, name: str) -> list[str]:
    """What acknowledging every position costs: the relay with acks (at the default interval)
    against the same without acks, or with a longer interval."""
    title = f"Acks' cost in sustained devices, batched / {name}"
    lines = [sustained_against(title, batched, other, name)]
    for devices, cpu, base, _ in same_steps(batched, other):
        lines.append(
            f"Server CPU per position at {devices} devices, batched / {name}: "
            f"{cpu['total']} / {base['total']} µs = {cpu['total'] / base['total']:.2f}"
        )
    return lines


def history_cost(batched: dict, live_only: dict) -> list[str]:
    """What storing every position costs: the relay with its history against the same without."""
    title = "History's cost in sustained devices, batched / live-only"
    lines = [sustained_against(title, batched, live_only, "live-only")]
    for devices, cpu, base, step in same_steps(batched, live_only):
        lines.append(
            f"Server CPU per position at {devices} devices, database included, batched / "
            f"live-only: {cpu['total']} / {base['total']} µs = {cpu['total'] / base['total']:.2f}; "
            f"the writer committed {step['stored_per_s']} positions/s"
        )
    return lines


def markdown(result: dict) -> str:
    lines = [
        f"# Benchmark: {result['layer']} layer, {result['replicas']} replicas behind nginx",
        "",
        f"{result['date']}, revision `{result['revision']}`, {result['cores']} cores "
        f"({result['cpu_model']}), load generator on the same machine in "
        f"{result['generators']} processes. Each step runs {result['seconds']} s after "
        f"{result['warmup']} s of warm-up. Written by `{result['command']}`.",
        "",
        "Server CPU counts every daphne replica, nginx, the broker (Redis, and the Kafka "
        "broker on Kafka) and the database server (PostgreSQL; SQLite works inside daphne), "
        f"from /proc, per position sent; event loops: the replicas' main threads, part of "
        "daphne's figure (the rest is the history writer's thread). "
        f"Database: {result.get('database', 'sqlite')}; "
        "stored/s: positions the history writers committed per second. Sustained: no errors, at least 98% of "
        f"the offered rate sent, p99 at most {P99_LIMIT_MS} ms and every worker's latest "
        "position at every manager of its team (bare: every frame received, backlog drained "
        f"within {P99_LIMIT_MS} ms). "
        + (
            "Devices send no `seq` (--no-acks)."
            if result.get("no_acks")
            else "Devices send a `seq` with every position (but in batched-no-acks); errors "
            "include positions not acknowledged within 5 s; acked/s: positions acks covered, "
            "acks/s: ack frames, ack p99: from a position's send to the ack that covered it."
        ),
        "",
        *([f"Note: {result['notes']}", ""] if result.get("notes") else []),
        "## Ratios",
        "",
    ]
    lines += [f"- {line}" for line in result["ratios"]]
    lines += ["", "## Steps", "",
              "| mode | devices | sent/s | delivered/s | p50 ms | p95 ms | p99 ms | latest % | "
              "errors | server µs/position (daphne+nginx+redis+kafka+database) | event loops µs | "
              "server cores | "
              "generator cores | stored/s | acked/s | acks/s | ack p99 ms | KB/conn | sustained |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, data in result["modes"].items():
        for s in data["steps"]:
            latency = s.get("latency_ms", {})
            cpu = s["server_cpu_us_per_position"]
            delivered = s.get("delivered_per_s", f"({s.get('received_pct')}% received)")
            acks = s.get("acks", {})
            lines.append(
                f"| {mode} | {s['devices']} | {s['sent_per_s']} | {delivered} | "
                f"{ms(latency.get('p50'))} | {ms(latency.get('p95'))} | "
                f"{ms(latency['p99']) if latency else 'drain ' + str(s['drain_ms'])} | "
                f"{s.get('latest_delivered_pct', '–')} | {s['errors']} | "
                f"{cpu['total']} ({cpu['daphne']}+{cpu['nginx']}+{cpu['broker']}"
                f"+{cpu.get('kafka', 0)}+{cpu.get('database', 0)}) | "
                f"{s.get('event_loop_us_per_position', '–')} | "
                f"{s['server_cpu_cores']} | {s['generator_cpu_cores']} | "
                f"{s.get('stored_per_s', '–')} | {acks.get('acked_per_s', '–')} | "
                f"{acks.get('ack_frames_per_s', '–')} | {ms(acks.get('p99_ms'))} | "
                f"{s['rss_kb_per_connection']} | {'yes' if s['sustained'] else 'no'} |"
            )
    lines += ["", "Highest sustained device count (1 position/s each): " + ", ".join(
        f"{mode} {data['sustained_devices']}" for mode, data in result["modes"].items())]  # fmt: skip
    lines += ["", "## Idle sockets on one replica", "",
              "| mode | sockets | connect s | RSS before MB | RSS after MB | KB/connection |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for mode, data in result["modes"].items():
        i = data["idle"]
        if i is None:
            continue
        lines.append(
            f"| {mode} | {i['sockets']} | {i['connect_seconds']} | {i['rss_before_mb']} | "
            f"{i['rss_after_mb']} | {i['kb_per_connection']} |"
        )
    fanouts = {m: d["fanout"] for m, d in result["modes"].items() if "fanout" in d}
    if fanouts:
        lines += ["", "## Fan-out: one team, many manager sockets", "",
                  "| mode | workers | manager sockets | delivered/s | frames per window | "
                  "positions per frame | p50 ms | p99 ms | latest % | server µs per delivered "
                  "position | server cores |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for mode, f in fanouts.items():
            lines.append(
                f"| {mode} | {f['workers']} | {f['manager_sockets']} | {f['delivered_per_s']} | "
                f"{f['frames_per_window']} | {f['positions_per_frame']} | "
                f"{ms(f['latency_ms']['p50'])} | {ms(f['latency_ms']['p99'])} | "
                f"{f['latest_delivered_pct']} | {f['server_cpu_us_per_delivered']} | "
                f"{f['server_cpu_cores']} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="redis", choices=["redis", "redis-core", "kafka"])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--modes",
        default="bare,stock,batched,live-only,batched-no-acks",
        help="comma-separated, of " + ", ".join(MODES),
    )
    parser.add_argument(
        "--steps", help="device counts, comma-separated (default 100,250,500,1000,…,12000)"
    )
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--team-size", type=int, default=100)
    parser.add_argument("--generators", type=int, default=3, help="load generator processes")
    parser.add_argument("--idle", type=int, default=10_000, help="idle sockets on one replica")
    parser.add_argument("--fanout-workers", type=int, default=1000)
    parser.add_argument("--fanout-managers", type=int, default=50)
    parser.add_argument(
        "--no-acks", action="store_true", help="devices send no seq, so nothing is acknowledged"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of under 2 minutes")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", help="results file name (default bench-<layer>[-quick])")
    parser.add_argument("--workdir", type=Path, help="databases and logs (default: temporary)")
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.idle = 3, 1.5, 300
        args.fanout_workers, args.fanout_managers = 200, 10
        args.steps = args.steps or "200"
    args.steps = [int(n) for n in (args.steps or DEFAULT_STEPS).split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    revision, command, workdir, env = begin_run("bench", argv, args.workdir)
    with contextlib.ExitStack() as stack:
        postmaster = None
        if args.database == "postgres":
            url, postmaster = stack.enter_context(postgres_database(args.postgres_admin_url))
            env["DATABASE_URL"] = url
        result = run(args, env, revision, command, workdir, postmaster)
    log("\n" + markdown(result))
    log(f"Results: {args.output_dir}/{result_name(args)}.{{json,md}}")
    log(f"Teams and tokens for loadtest/locustfile.py: {workdir}/provision.json")
    return result


def run(args, env: dict, revision: str, command: str, workdir: Path, postmaster) -> dict:
    broker = None
    try:
        uses_kafka = args.layer == "kafka" or "batched-kafka" in args.modes
        broker = start_broker("kafka" if uses_kafka else args.layer, env)
        world = provision(env, args)
        world["flush_window"] = flush_window()
        world["database_url"], world["postmaster"] = env["DATABASE_URL"], postmaster
        brokers = {
            "redis": [redis_pid(redis_url())],
            "kafka": [broker.process.pid] if broker else [],
        }
        modes = {}
        for mode in args.modes:
            modes[mode] = run_mode(mode, args, world, env, brokers)
            write_results(args, revision, command, modes, workdir)  # so far, in case of a crash
    finally:
        if broker is not None:
            broker.stop()
    return write_results(args, revision, command, modes, workdir)


def result_name(args) -> str:
    return args.name or f"bench-{args.layer}" + ("-quick" if args.quick else "")


def write_results(args, revision: str, command: str, modes: dict, workdir: Path) -> dict:
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **run_facts(args, revision, command),
        "generators": args.generators,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "quick": args.quick,
        "database": args.database,
        "no_acks": args.no_acks,
        "modes": modes,
        "ratios": ratios(modes),
    }
    save_results(args.output_dir, result_name(args), result, markdown(result))
    return result


if __name__ == "__main__":
    main()
