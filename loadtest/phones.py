"""Server CPU per position for the phone apps' HTTP endpoints (OsmAnd at /osmand/, OwnTracks at
/owntracks/) beside the worker socket, on one cluster, in one run.

    python -m loadtest.phones [--devices 300] [--seconds 30] [--rounds 2] [--quick]

It starts the local cluster (nginx, 2 daphne replicas, Redis), provisions three equal sets of
workers (teams of 100, one manager socket each), and then takes turns: N devices send one
position a second each for a measured window, first over the worker socket (loadtest/generator.py,
with `seq`, so that every position is acknowledged as a phone's HTTP upload is), then as OsmAnd
phones, then as OwnTracks phones (loadtest/http_phones.py: keep-alive connections, each phone
waiting for its answer before the next upload), and again for each round. Every device of every
kind stays connected (sockets open, HTTP devices within their timeout) from the warm-up on, so
that the only difference between turns is which kind sends.

Over each window it reads the CPU of both daphne replicas, nginx (master and workers) and Redis
(psutil) and divides it by the positions answered (an ack, or a 200); it reports answers by
status, answer latency, the managers' latency and latest positions, the generators' CPU and the
CPU of everything else on the machine (how quiet it was). Each HTTP kind is put beside the socket
measured in the same round. Results go to loadtest/results/phones-<layer>.{json,md}.
"""

import argparse
import contextlib
import math
import os
import statistics
import time
import uuid
from pathlib import Path

import psutil

from deploy.cluster import LocalCluster, manage
from loadtest.fleet import Generators, delivery, watch_entries
from loadtest.generator import ms, percentile
from loadtest.http_phones import KINDS, HttpPhones
from loadtest.machine import children, process_cpu
from loadtest.runs import (
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
)

RESULTS = Path(__file__).with_name("results")
SOCKET, IDLE = "socket", "idle"
ALL_KINDS = (SOCKET, *KINDS)


# ---------------------------------------------------------------- CPU of the machine


class Processes:
    """CPU seconds of the server's processes, one by one, and of the whole machine."""

    def __init__(self, cluster: LocalCluster, broker_pid: int, postmaster: int | None):
        self.server = {
            **{f"daphne-{i}": [p.pid] for i, p in enumerate(cluster.replicas)},
            "nginx": [cluster.nginx.pid, *children(cluster.nginx.pid)],
            "redis": [broker_pid],
        }
        self.postmaster = postmaster

    def cpu(self) -> dict[str, float]:
        seconds = {name: sum(map(process_cpu, pids)) for name, pids in self.server.items()}
        if self.postmaster is not None:
            seconds["postgres"] = postgres_cpu_seconds(self.postmaster)
        seconds["machine"] = busy_cpu_seconds()
        seconds["this"] = process_cpu(os.getpid())
        return seconds


def busy_cpu_seconds() -> float:
    """CPU seconds every core of the machine spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def server_names(cpu: dict) -> list[str]:
    return [name for name in cpu if name not in ("machine", "this")]


# ---------------------------------------------------------------- turns


class Phones:
    """The cluster, its three sets of devices, and one turn of one kind at a time."""

    def __init__(self, args, world: dict, cluster: LocalCluster, processes: Processes):
        self.args = args
        self.world = world
        self.cluster = cluster
        self.processes = processes
        window = world["flush_window"]
        self.sockets = Generators(
            cluster.url, world["devices"][SOCKET], args.generators, 1.0, window, acks=True
        )
        http = [(w, t, kind) for kind in KINDS for w, t in world["devices"][kind]]
        self.http = HttpPhones(cluster.url, http, args.http_processes, 1.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.sockets.close()
        finally:
            self.http.close()

    def connect(self) -> None:
        teams = [team for kind in ALL_KINDS for team in self.world["teams"][kind]]
        # Logging in at a replica: nginx takes 10 login POSTs a minute from this machine.
        login_at = self.cluster.replica_url(0)
        self.sockets.connect_watches(watch_entries(self.cluster.url, {}, teams, login_at=login_at))
        opened = self.sockets.connect_devices(self.args.devices)
        log(f"  {len(teams)} manager sockets, {opened} device sockets open")

    def start(self, kind: str) -> None:
        if kind == IDLE:
            return
        if kind == SOCKET:
            self.sockets.run(self.args.devices)
        else:
            self.http.start(kind)

    def stop(self, kind: str) -> None:
        if kind == IDLE:
            return
        if kind == SOCKET:
            self.sockets.run(0)
        else:
            self.http.stop()

    def warm_up(self) -> None:
        """Send every kind for a while: the HTTP devices connect to the relay on both replicas,
        and every replica has met every worker before anything is measured."""
        for kind in ALL_KINDS:
            log(f"  warm-up: {kind}")
            self.start(kind)
            time.sleep(self.args.settle)
            self.stop(kind)
        time.sleep(self.world["flush_window"] + 1.0)
        self.sockets.collect()
        self.http.collect()

    def turn(self, kind: str, round_number: int) -> dict:
        """Run one kind for the measured window; return what it cost and what it delivered.
        The idle turn sends nothing: what the servers spend with every device connected."""
        args = self.args
        self.start(kind)
        time.sleep(args.settle if kind != IDLE else 1.0)
        self.sockets.collect()
        self.http.collect()
        load_before = os.getloadavg()[0]
        cpu_before, started = self.processes.cpu(), time.monotonic()
        time.sleep(args.seconds)
        cpu = {name: after - cpu_before[name] for name, after in self.processes.cpu().items()}
        elapsed = time.monotonic() - started
        sockets, http = self.sockets.collect(), self.http.collect()
        self.stop(kind)
        time.sleep(self.world["flush_window"] + 1.0)
        sockets_after, http_after = self.sockets.collect(), self.http.collect()

        if kind == IDLE:
            answered, answers, errors = 0, {}, 0
            latency, last_sent = sockets["ack_latency"], {}
        elif kind == SOCKET:
            answered, answers = sockets["acked"], {"acked": sockets["acked"]}
            errors = sockets["send_failures"] + sockets["error_frames"] + sockets["closed"]
            latency, last_sent = sockets["ack_latency"], sockets_after["last_sent"]
        else:
            statuses = http["statuses"]
            answered = statuses.get(200, 0)
            answers = {str(status): count for status, count in sorted(statuses.items())}
            errors = http["failures"] + sum(c for s, c in statuses.items() if s != 200)
            latency, last_sent = http["latency"], http_after["last_ok"]
        server = {name: cpu[name] for name in server_names(cpu)}
        server_total = sum(server.values())
        generator_cores = sockets["cpu_cores"] + http["cpu_cores"]
        active = {worker_id for worker_id, _ in self.world["devices"].get(kind, [])}
        managers = delivery(
            {
                "last_sent": last_sent,
                "watches": sockets_after["watches"],
                "positions_received": sockets["positions_received"],
                "latency": [
                    a + b for a, b in zip(sockets["latency"], sockets_after["latency"], strict=True)
                ],
            },
            self.world["team_workers"],
            active,
            elapsed,
        )
        result = {
            "kind": kind,
            "round": round_number,
            "devices": args.devices,
            "seconds": round(elapsed, 1),
            "answered": answered,
            "answered_per_s": round(answered / elapsed, 1),
            "answers": answers,
            "errors": errors,
            "failure_samples": http["failure_samples"] if kind != SOCKET else [],
            "slowest_answer_ms": http["slowest_ms"] if kind != SOCKET else None,
            "connections_opened": http["connections"] if kind != SOCKET else None,
            "answer_latency_ms": {
                "p50": percentile(latency, 0.5),
                "p99": percentile(latency, 0.99),
            },
            "manager_latency_ms": managers["latency_ms"],
            "latest_delivered_pct": managers["latest_delivered_pct"] if active else None,
            "server_cpu_us_per_position": {
                name: round(seconds * 1e6 / max(answered, 1)) for name, seconds in server.items()
            }
            | {"total": round(server_total * 1e6 / max(answered, 1))},
            "server_cpu_seconds": {name: round(v, 3) for name, v in server.items()},
            "server_cpu_cores": round(server_total / elapsed, 3),
            "generator_cpu_cores": round(generator_cores, 3),
            # Everything else the machine ran meanwhile: other people's tests, say.
            "other_cpu_cores": round(
                max(0.0, cpu["machine"] - server_total - generator_cores * elapsed - cpu["this"])
                / elapsed,
                2,
            ),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        log(f"    {summary(result)}")
        return result


def summary(turn: dict) -> str:
    latency = turn["answer_latency_ms"]
    return (
        f"{turn['kind']}: {turn['answered_per_s']}/s answered {turn['answers']}, "
        f"errors {turn['errors']}, answer p50/p99 {latency['p50']}/{latency['p99']} ms, "
        f"server {turn['server_cpu_us_per_position']['total']} µs/position "
        f"({turn['server_cpu_cores']} cores), latest {turn['latest_delivered_pct']}%, "
        f"other load {turn['other_cpu_cores']} cores"
    )


# ---------------------------------------------------------------- figures


def net_of_idle(turn: dict, turns: list[dict]) -> int | None:
    """Server CPU per position above what the servers spent idle (with every device connected)
    in the same round: the cost of the positions themselves."""
    idle = next((t for t in turns if t["kind"] == IDLE and t["round"] == turn["round"]), None)
    if idle is None or not turn["answered"]:
        return None
    spent = sum(turn["server_cpu_seconds"].values()) - idle["server_cpu_cores"] * turn["seconds"]
    return round(spent * 1e6 / turn["answered"])


def ratios(turns: list[dict]) -> dict:
    """Per kind over every round: server CPU per position, all of it and net of idle, and its
    ratio to the socket's, pooled (all CPU over all positions) and per round (against the same
    round's socket turn)."""
    figures = {}
    for kind in (IDLE, *ALL_KINDS):
        mine = [t for t in turns if t["kind"] == kind]
        if not mine:
            continue
        if kind == IDLE:
            cores = [t["server_cpu_cores"] for t in mine]
            figures[kind] = {
                "turns": len(mine),
                "server_cpu_cores": round(statistics.mean(cores), 3),
            }
            continue
        positions = max(sum(t["answered"] for t in mine), 1)
        seconds = {
            name: sum(t["server_cpu_seconds"][name] for t in mine)
            for name in mine[0]["server_cpu_seconds"]
        }
        per_position = {name: round(v * 1e6 / positions) for name, v in seconds.items()}
        per_position["total"] = round(sum(seconds.values()) * 1e6 / positions)
        figure = {"turns": len(mine), "server_cpu_us_per_position": per_position}
        idle = {t["round"]: t["server_cpu_cores"] for t in turns if t["kind"] == IDLE}
        if all(t["round"] in idle for t in mine):
            background = sum(idle[t["round"]] * t["seconds"] for t in mine)
            figure["net_us_per_position"] = round(
                (sum(seconds.values()) - background) * 1e6 / positions
            )
        figures[kind] = figure
    socket = figures.get(SOCKET)
    for kind, figure in figures.items():
        if kind in (SOCKET, IDLE) or socket is None:
            continue
        total = figure["server_cpu_us_per_position"]["total"]
        figure["ratio_to_socket"] = round(
            total / max(socket["server_cpu_us_per_position"]["total"], 1), 2
        )
        if "net_us_per_position" in figure and "net_us_per_position" in socket:
            figure["net_ratio_to_socket"] = round(
                figure["net_us_per_position"] / max(socket["net_us_per_position"], 1), 2
            )
        per_round = []
        for turn in turns:
            base = next(
                (t for t in turns if t["kind"] == SOCKET and t["round"] == turn["round"]), None
            )
            if turn["kind"] == kind and base is not None:
                per_round.append(
                    turn["server_cpu_us_per_position"]["total"]
                    / max(base["server_cpu_us_per_position"]["total"], 1)
                )
        figure["ratio_to_socket_per_round"] = [round(r, 2) for r in per_round]
        figure["extra_us_per_position"] = total - socket["server_cpu_us_per_position"]["total"]
    return figures


def markdown(result: dict) -> str:
    args = result["args"]
    postgres = args["database"] == "postgres"
    lines = [
        f"# Phone apps over HTTP beside the worker socket: {result['layer']} layer, "
        f"{result['replicas']} replicas behind nginx",
        "",
        f"{result['date']}, revision `{result['revision']}`, {result['cores']} cores "
        f"({result['cpu_model']}), load generators on the same machine. Written by "
        f"`{result['command']}`.",
        "",
        f"{args['devices']} devices of each kind, one position a second each; every turn is "
        f"measured over {args['seconds']} s after {args['settle']} s of settling, kinds taking "
        f"turns, {args['rounds']} rounds. socket: the worker socket, each position with `seq` and "
        "acknowledged; osmand: `GET /osmand/?id=<token>&lat=..` on a keep-alive connection; "
        "owntracks: `POST /owntracks/` with a location message and Basic auth. Each HTTP phone "
        "waits for its answer before its next upload. Teams of "
        f"{args['team_size']} workers with one manager socket each, for every kind. Database: "
        f"{args['database']}.",
        "",
        "Server CPU counts both daphne replicas, nginx (master and workers) and Redis"
        f"{' and the whole PostgreSQL server' if postgres else ''}, from psutil, per position answered (socket: acked; HTTP: 200). *Net of idle* subtracts what "
        "the servers spent in the same round's idle turn (nothing sent, every device connected): "
        "the cost of the positions themselves. *Other* is the CPU of the rest of the machine "
        "meanwhile (not the servers, not the generators): how quiet it was.",
        "",
        *([f"Note: {result['notes']}", ""] if result.get("notes") else []),
        "## Per position, all rounds",
        "",
        f"| kind | turns | server µs/position | daphne | nginx | Redis |{' PostgreSQL |' * postgres}"
        " ratio to socket (pooled) | ratio per round | net of idle µs/position | net ratio to "
        "socket |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * postgres,
    ]
    for kind, f in result["figures"].items():
        if kind == IDLE:
            continue
        cpu = f["server_cpu_us_per_position"]
        daphne = sum(v for name, v in cpu.items() if name.startswith("daphne"))
        pg_column = f"{cpu['postgres']} | " if postgres else ""
        lines.append(
            f"| {kind} | {f['turns']} | {cpu['total']} | {daphne} | {cpu['nginx']} | "
            f"{cpu['redis']} | {pg_column}"
            f"{f.get('ratio_to_socket', '1 (baseline)')} | "
            f"{', '.join(map(str, f.get('ratio_to_socket_per_round', []))) or '–'} | "
            f"{f.get('net_us_per_position', '–')} | "
            f"{f.get('net_ratio_to_socket', '1 (baseline)' if kind == SOCKET else '–')} |"
        )
    if IDLE in result["figures"]:
        lines += [
            "",
            f"Idle (every device connected, nothing sent): "
            f"{result['figures'][IDLE]['server_cpu_cores']} server cores.",
        ]
    lines += [
        "",
        "## Turns",
        "",
        "| round | kind | answered/s | answers | errors | answer p50/p99 ms | manager p50/p99 ms "
        f"| latest % | server µs/position (daphne-0+daphne-1+nginx+Redis"
        f"{'+PostgreSQL' * postgres}) | net of idle | "
        "server cores | generator cores | other cores | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result["turns"]:
        cpu = t["server_cpu_us_per_position"]
        parts = "+".join(str(v) for name, v in cpu.items() if name != "total")
        spent = f"{cpu['total']} ({parts})" if t["answered"] else "–"
        answer, manager = t["answer_latency_ms"], t["manager_latency_ms"]
        answers = ", ".join(f"{status}: {count}" for status, count in t["answers"].items())
        lines.append(
            f"| {t['round']} | {t['kind']} | {t['answered_per_s']} | {answers} | {t['errors']} | "
            f"{ms(answer['p50'])}/{ms(answer['p99'])} | "
            f"{ms(manager['p50'])}/{ms(manager['p99'])} | "
            f"{t['latest_delivered_pct'] or '–'} | "
            f"{spent} | "
            f"{net_of_idle(t, result['turns']) or '–'} | {t['server_cpu_cores']} | "
            f"{t['generator_cpu_cores']} | {t['other_cpu_cores']} | "
            f"{t['load_average'][0]}–{t['load_average'][1]} |"
        )
    samples = [s for t in result["turns"] for s in t["failure_samples"]]
    if samples:
        lines += ["", "Failures, e.g.: " + "; ".join(f"`{s}`" for s in samples[:5])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the run


def provision(env: dict, args) -> dict:
    """Three equal sets of teams: one for each kind of device."""
    per_kind = math.ceil(args.devices / args.team_size)
    log(f"Provisioning {3 * per_kind} teams of {args.team_size} ...")
    manage(env, "migrate", "--verbosity", "0")
    teams = provision_teams(
        env, teams=3 * per_kind, workers=args.team_size, prefix="phones", name="teams.json"
    )
    world = {"teams": {}, "devices": {}}
    for index, kind in enumerate(ALL_KINDS):
        mine = teams[index * per_kind : (index + 1) * per_kind]
        world["teams"][kind] = mine
        workers = [(w["id"], w["token"]) for team in mine for w in team["workers"]]
        world["devices"][kind] = workers[: args.devices]
    world["team_workers"] = {t["id"]: [w["id"] for w in t["workers"]] for t in teams}
    return world


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="redis", choices=["redis", "redis-core"])
    parser.add_argument("--replicas", type=int, default=2)
    add_database_arguments(parser)
    parser.add_argument("--devices", type=int, default=100, help="devices of each kind")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per turn")
    parser.add_argument("--settle", type=float, default=5, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every kind")
    parser.add_argument(
        "--kinds",
        default=",".join((IDLE, *ALL_KINDS)),
        help="turns of each round, comma-separated, of " + ", ".join((IDLE, *ALL_KINDS)),
    )
    parser.add_argument("--team-size", type=int, default=100)
    parser.add_argument("--generators", type=int, default=2, help="socket generator processes")
    parser.add_argument("--http-processes", type=int, default=2, help="HTTP phone processes")
    parser.add_argument("--quick", action="store_true", help="a smoke run of under 40 s")
    parser.add_argument("--notes", help="a note for the results file")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", help="results file name (default phones-<layer>[-quick])")
    parser.add_argument("--workdir", type=Path, help="databases and logs (default: temporary)")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.seconds, args.settle, args.rounds = 20, 3, 1.5, 1
    args.team_size = min(args.team_size, args.devices)
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(args.kinds) - {IDLE, *ALL_KINDS}
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    revision, command, workdir, env = begin_run("phones", argv, args.workdir)
    with contextlib.ExitStack() as stack:
        postmaster = None
        if args.database == "postgres":
            url, postmaster = stack.enter_context(postgres_database(args.postgres_admin_url))
            env["DATABASE_URL"] = url
        turns = measure(args, env, workdir, postmaster, revision, command)
    result = write_results(args, revision, command, turns)
    log("\n" + markdown(result))
    log(f"Results: {args.output_dir}/{result_name(args)}.{{json,md}}")
    return result


def measure(args, env: dict, workdir: Path, postmaster, revision: str, command: str) -> list:
    """Provision, start the cluster and take every turn; return the turns."""
    world = provision(env, args)
    world["flush_window"] = flush_window()
    env["REDIS_PREFIX"] = f"phones-{uuid.uuid4().hex[:8]}"
    cluster = LocalCluster(
        replicas=args.replicas,
        layer=args.layer,
        workdir=workdir / "cluster",
        database_url=env["DATABASE_URL"],
        env=env,
    )
    turns: list[dict] = []
    log(f"Starting the cluster ({args.replicas} replicas, {args.layer}, {args.database}) ...")
    with cluster:
        processes = Processes(cluster, redis_pid(redis_url()), postmaster)
        with Phones(args, world, cluster, processes) as run:
            run.connect()
            run.warm_up()
            for round_number in range(1, args.rounds + 1):
                log(f"== round {round_number} of {args.rounds}")
                for kind in args.kinds:
                    turns.append(run.turn(kind, round_number))
                    write_results(args, revision, command, turns)  # so far, in case of a crash
    return turns


def result_name(args) -> str:
    database = "" if args.database == "sqlite" else f"-{args.database}"
    return args.name or f"phones-{args.layer}{database}" + ("-quick" if args.quick else "")


def write_results(args, revision: str, command: str, turns: list[dict]) -> dict:
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **run_facts(args, revision, command),
        "args": {
            name: getattr(args, name)
            for name in (
                "database",
                "devices",
                "seconds",
                "settle",
                "rounds",
                "kinds",
                "team_size",
                "generators",
                "http_processes",
                "quick",
            )
        },  # fmt: skip
        "notes": args.notes,
        "figures": ratios(turns),
        "turns": turns,
    }
    save_results(args.output_dir, result_name(args), result, markdown(result))
    return result


if __name__ == "__main__":
    main()
