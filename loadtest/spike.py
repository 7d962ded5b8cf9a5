"""A seasonal spike on the local cluster, scaled as the autoscaler would: devices ramp from a base
to 4x and back while replicas are added when sockets per replica pass a target and drained when
they fall, and the run reports what that did to live traffic.

    python -m loadtest.spike [--quick] [--base 300] [--minutes 6] [--target 400]

The rule is the HorizontalPodAutoscaler's (deploy/k8s): desired replicas = ceil(open sockets /
target), within --min-replicas and --max-replicas, ignored within 10% of the target; up at once
to the desired count; down only after --down-stable seconds of wanting fewer, one at a time, the
newest first (as a ReplicaSet picks), by draining (deploy/cluster.py remove_replica: out of nginx, then
SIGTERM; its sockets close with 4012 and the devices and maps reconnect through nginx).

Devices send one position a second with a `seq` and reconnect at once when closed; maps
reconnect too. Every second it records devices, replicas, p50/p99 latency, reconnects and the
longest time a map of a team that reports throughout went without positions; at the end it
checks that every acknowledged position is in the history, and that every worker's latest
position reached its map. Results: loadtest/results/spike[-quick].{json,md,png}.
"""

import argparse
import math
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from deploy.cluster import LocalCluster
from deploy.processes import manage
from loadtest.fleet import Generators, delivery, watch_entries
from loadtest.generator import latency_histogram, ms, percentile
from loadtest.runs import (
    begin_run,
    flush_window,
    log,
    provision_teams,
    run_facts,
    save_results,
    start_broker,
)

RESULTS = Path(__file__).with_name("results")
TOLERANCE = 0.1  # the HPA's: no change while sockets per replica are within 10% of the target
EVENT_SECONDS = 5  # a scale event's seconds: from its start to this long after it finished
GAP_LIMIT_S = 2.0
P99_LIMIT_MS = 250


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="redis", choices=["redis", "kafka"])
    parser.add_argument("--base", type=int, default=300, help="devices at the start and the end")
    parser.add_argument("--factor", type=float, default=4.0, help="the peak, times the base")
    parser.add_argument("--minutes", type=float, default=6.0, help="the whole ramp, up and down")
    parser.add_argument("--target", type=int, default=300, help="open sockets per replica")
    parser.add_argument("--min-replicas", type=int, default=2, help="the HPA's minReplicas")
    parser.add_argument("--max-replicas", type=int, default=6)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between decisions")
    parser.add_argument("--down-stable", type=float, default=30.0, help="seconds before a drain")
    parser.add_argument("--team-size", type=int, default=50)
    parser.add_argument("--generators", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="about two minutes (the e2e tests)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.base, args.minutes, args.target, args.min_replicas = 40, 1.25, 60, 1
        args.interval, args.down_stable, args.team_size = 2.0, 4.0, 10
    args.replicas = args.min_replicas  # for run_facts: where it starts
    return args


def devices_at(seconds: float, args) -> int:
    """The ramp: from the base up to the peak over the first 30% of the run, held for 20%, down
    over 30%, and the base again for the last 20% (so that the drains it calls for happen)."""
    total = args.minutes * 60
    peak = round(args.base * args.factor)
    share = min(max(seconds / total, 0.0), 1.0)
    if share < 0.3:
        rise = share / 0.3
    elif share < 0.5:
        rise = 1.0
    elif share < 0.8:
        rise = (0.8 - share) / 0.3
    else:
        rise = 0.0
    return round(args.base + (peak - args.base) * rise)


class Autoscaler:
    """The HPA's rule on the local cluster, one scale operation at a time (on a thread)."""

    def __init__(self, cluster: LocalCluster, args):
        self.cluster = cluster
        self.args = args
        self.pool = ThreadPoolExecutor(1)
        self.running: Future | None = None
        self.wanting_fewer_since: float | None = None
        self.events: list[dict] = []
        self.started_at = time.monotonic()  # the run's clock starts here (reset by the run)

    def sockets(self) -> dict[int, int]:
        return {i: sum(self.cluster.open_sockets(i).values()) for i in self.cluster.active()}

    def decide(self, now: float) -> None:
        if self.running is not None and not self.running.done():
            return
        if self.running is not None:
            self.running.result()  # raise what went wrong
            self.running = None
        sockets = self.sockets()
        replicas = len(sockets)
        per_replica = sum(sockets.values()) / replicas
        desired = math.ceil(sum(sockets.values()) / self.args.target)
        desired = min(max(desired, self.args.min_replicas), self.args.max_replicas)
        if abs(per_replica / self.args.target - 1) <= TOLERANCE:
            desired = replicas
        if desired > replicas:
            self.wanting_fewer_since = None
            added = desired - replicas

            def add():
                for _ in range(added):
                    self.cluster.add_replica()

            self._scale(now, "up", sockets, add)
        elif desired < replicas:
            self.wanting_fewer_since = self.wanting_fewer_since or now
            if now - self.wanting_fewer_since >= self.args.down_stable:
                self.wanting_fewer_since = now  # the next one waits again
                newest = max(sockets)
                self._scale(now, "down", sockets, lambda: self.cluster.remove_replica(newest))
        else:
            self.wanting_fewer_since = None

    def _scale(self, now: float, direction: str, before: dict, operation) -> None:
        event = {"direction": direction, "started": now, "sockets_before": before}
        self.events.append(event)
        log(f"  {now:6.1f} s: scale {direction} from {len(before)} replicas, sockets {before}")

        def run():
            operation()
            event["finished"] = time.monotonic() - self.started_at
            time.sleep(3)  # the reconnects land
            event["sockets_after"] = self.sockets()
            log(f"          sockets per replica after: {event['sockets_after']}")

        self.running = self.pool.submit(run)

    def settle(self) -> None:
        if self.running is not None:
            self.running.result()
        self.pool.shutdown()


def in_event(seconds: float, events: list[dict]) -> bool:
    return any(
        e["started"] <= seconds <= e.get("finished", e["started"]) + EVENT_SECONDS for e in events
    )


def stored_positions(database: Path) -> set[tuple[int, float]]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT worker_id, ts FROM tracking_storedposition")
        return {(worker_id, ts) for worker_id, ts in rows}


def run(args, env: dict, workdir: Path) -> dict:
    peak = round(args.base * args.factor)
    teams_needed = math.ceil(peak / args.team_size)
    log(f"Provisioning {teams_needed} teams of {args.team_size} ...")
    manage(env, "migrate", "--verbosity", "0")
    teams = provision_teams(
        env, teams=teams_needed, workers=args.team_size, prefix="spike", name="teams.json"
    )
    devices = [(w["id"], w["token"]) for t in teams for w in t["workers"]]
    team_workers = {t["id"]: [w["id"] for w in t["workers"]] for t in teams}
    # Teams whose devices report from start to end (the base's; the spike's devices go off duty
    # in random order): their maps' gaps are what scale events cost.
    steady = {t["id"] for t in teams[: args.base // args.team_size]}
    cluster = LocalCluster(
        replicas=args.min_replicas,
        layer=args.layer,
        workdir=workdir / "cluster",
        database_url=env["DATABASE_URL"],
        env=env,
    )
    samples, sample_bins = [], []
    with cluster:
        generators = Generators(
            cluster.url, devices, args.generators, 1.0, flush_window(), acks=True, reconnect=True
        )
        try:
            scaler = Autoscaler(cluster, args)
            watches = watch_entries(cluster.url, {}, teams, login_at=cluster.replica_url(0))
            generators.connect_watches(watches)
            generators.connect_devices(0)  # where the devices connect (none yet)
            active = generators.set_open(devices_at(0, args), keep=args.base)
            generators.collect()
            started = scaler.started_at = time.monotonic()
            next_decision = 0.0
            log(f"== spike: {args.base} -> {peak} -> {args.base} devices over {args.minutes:g} min,"
                f" target {args.target} sockets a replica ==")  # fmt: skip
            while (now := time.monotonic() - started) < args.minutes * 60:
                wanted = devices_at(now, args)
                if wanted != active:
                    generators.set_open(wanted, keep=args.base)
                    active = wanted
                if now >= next_decision:
                    scaler.decide(now)
                    next_decision = now + args.interval
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started - now)))
                report = generators.collect()
                seconds = time.monotonic() - started
                bins = report["latency"]
                sample_bins.append(bins)
                gaps = [gap for team_id, gap in report["gaps"].items() if team_id in steady]
                samples.append(
                    {
                        "seconds": round(seconds, 1),
                        "devices": active,
                        "replicas": len(cluster.active()),
                        "sent": report["sent"],
                        "acked": report["acked"],
                        "p50_ms": percentile(bins, 0.5),
                        "p99_ms": percentile(bins, 0.99),
                        "reconnects": report["reconnects"],
                        "reconnects_failed": report["reconnects_failed"],
                        "longest_gap_s": round(max(gaps, default=0.0), 2),
                    }
                )
            scaler.settle()
            generators.run(0)  # the last positions arrive, are acknowledged and stored
            time.sleep(2)
            final = generators.collect()
            acked = generators.acked_positions()
        finally:
            generators.close()
        lost = set(acked) - stored_positions(Path(env["DATABASE_URL"].removeprefix("sqlite:///")))
        latest = delivery(final, team_workers, set(final["last_sent"]), 1.0)["latest_delivered_pct"]
    # Which seconds belong to a scale event is known once each event has finished.
    histogram, outside = latency_histogram(), latency_histogram()
    for sample, bins in zip(samples, sample_bins, strict=True):
        sample["scale_event"] = in_event(sample["seconds"], scaler.events)
        histogram = [a + b for a, b in zip(histogram, bins, strict=True)]
        if not sample["scale_event"]:
            outside = [a + b for a, b in zip(outside, bins, strict=True)]
    during = [s for s in samples if s["scale_event"]]
    event_gaps = [s["longest_gap_s"] for s in during]
    return {
        "settings": {
            key: getattr(args, key)
            for key in (
                "base",
                "factor",
                "minutes",
                "target",
                "min_replicas",
                "max_replicas",
                "interval",
                "down_stable",
                "team_size",
                "generators",
            )  # fmt: skip
        },
        "peak_devices": peak,
        "events": scaler.events,
        "samples": samples,
        "summary": {
            "acknowledged": len(acked),
            "acknowledged_not_stored": len(lost),
            "latest_delivered_pct": latest,
            "most_replicas": max(s["replicas"] for s in samples),
            "scale_ups": sum(e["direction"] == "up" for e in scaler.events),
            "scale_downs": sum(e["direction"] == "down" for e in scaler.events),
            "reconnects": sum(s["reconnects"] for s in samples),
            "reconnects_failed": sum(s["reconnects_failed"] for s in samples),
            "longest_gap_s": max((s["longest_gap_s"] for s in samples), default=0.0),
            "longest_gap_at_scale_events_s": max(event_gaps, default=0.0),
            "p99_ms": percentile(histogram, 0.99),
            "p99_outside_scale_events_ms": percentile(outside, 0.99),
            "seconds_in_scale_events": len(during),
        },
    }


def goals(summary: dict) -> list[str]:
    """The issue's goals, each with what was measured."""
    p99 = summary["p99_outside_scale_events_ms"]
    return [
        f"No acknowledged position lost: {summary['acknowledged_not_stored']} of "
        f"{summary['acknowledged']} acknowledged positions missing from the history"
        f" ({'met' if summary['acknowledged_not_stored'] == 0 else 'NOT met'})",
        f"No map without positions for more than {GAP_LIMIT_S:g} s at any scale event: longest "
        f"{summary['longest_gap_at_scale_events_s']} s"
        f" ({'met' if summary['longest_gap_at_scale_events_s'] <= GAP_LIMIT_S else 'NOT met'})",
        f"p99 within {P99_LIMIT_MS} ms outside scale events: {ms(p99)} ms"
        f" ({'met' if p99 is not None and p99 <= P99_LIMIT_MS else 'NOT met'})",
    ]


def markdown(result: dict, plot: str) -> str:
    s = result["summary"]
    lines = [
        f"# Spike: {result['settings']['base']} -> {result['peak_devices']} devices and back, "
        f"{result['layer']} layer",
        "",
        f"{result['date']}, revision `{result['revision']}`, {result['cores']} cores "
        f"({result['cpu_model']}), load generator on the same machine. Written by "
        f"`{result['command']}`.",
        "",
        f"Rule: desired replicas = ceil(open sockets / {result['settings']['target']}), "
        f"{result['settings']['min_replicas']}-{result['settings']['max_replicas']} replicas, "
        f"decided every {result['settings']['interval']:g} s; down after "
        f"{result['settings']['down_stable']:g} s of wanting fewer, one at a time, by draining. "
        "Devices send a position a second with a seq, and reconnect at once; so do maps.",
        "",
        f"![devices, replicas and p99 over time]({plot})",
        "",
        "## Goals",
        "",
        *[f"- {line}" for line in goals(s)],
        "",
        "## Summary",
        "",
        f"- Scale events: {s['scale_ups']} up, {s['scale_downs']} down; at most "
        f"{s['most_replicas']} replicas; {s['seconds_in_scale_events']} s within "
        f"{EVENT_SECONDS} s of one.",
        f"- Latency p99: {ms(s['p99_ms'])} ms overall, {ms(s['p99_outside_scale_events_ms'])} ms "
        "outside scale events.",
        f"- Longest time a map of a steadily reporting team went without positions: "
        f"{s['longest_gap_s']} s (at scale events {s['longest_gap_at_scale_events_s']} s).",
        f"- Reconnects (devices and maps): {s['reconnects']}, of which {s['reconnects_failed']} "
        "failed once and were tried again.",
        f"- Acknowledged positions: {s['acknowledged']}, of which {s['acknowledged_not_stored']} "
        f"missing from the history; latest positions at their maps at the end: "
        f"{s['latest_delivered_pct']}%.",
        "",
        "## Sockets per replica at each scale event",
        "",
        "| at s | direction | before | 3 s after it finished |",
        "|---|---|---|---|",
    ]
    for e in result["events"]:
        lines.append(
            f"| {e['started']:.0f} | {e['direction']} | {e['sockets_before']} | "
            f"{e.get('sockets_after', '-')} |"
        )
    lines += ["", "## Over time (every 5th second)", "",
              "| s | devices | replicas | p50 ms | p99 ms | reconnects | longest gap s | event |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for sample in result["samples"][::5]:
        lines.append(
            f"| {sample['seconds']:.0f} | {sample['devices']} | {sample['replicas']} | "
            f"{ms(sample['p50_ms'])} | {ms(sample['p99_ms'])} | {sample['reconnects']} | "
            f"{sample['longest_gap_s']} | {'yes' if sample['scale_event'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Devices and replicas, and p99 latency, over time, scale events shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    samples = result["samples"]
    seconds = [s["seconds"] for s in samples]
    figure, (load, latency) = pyplot.subplots(2, 1, sharex=True, figsize=(9, 6))
    load.plot(seconds, [s["devices"] for s in samples], label="devices", color="tab:blue")
    load.set_ylabel("devices")
    replicas = load.twinx()
    replicas.step(seconds, [s["replicas"] for s in samples], where="post", color="tab:orange",
                  label="replicas")  # fmt: skip
    replicas.set_ylabel("replicas")
    replicas.set_ylim(0, max(s["replicas"] for s in samples) + 1)
    latency.plot(seconds, [s["p99_ms"] or 0 for s in samples], color="tab:red", label="p99")
    latency.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=0.8)
    latency.set_ylabel("p99 latency, ms")
    latency.set_xlabel("seconds")
    for axis in (load, latency):
        for e in result["events"]:
            axis.axvspan(e["started"], e.get("finished", e["started"]) + EVENT_SECONDS,
                         color="tab:green" if e["direction"] == "up" else "tab:purple",
                         alpha=0.15)  # fmt: skip
    load.legend(loc="upper left")
    replicas.legend(loc="upper right")
    figure.suptitle("Spike: devices, replicas (green: scale up, purple: drain) and p99")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    revision, command, workdir, env = begin_run("spike", argv, args.workdir)
    broker = start_broker(args.layer, env)
    try:
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **run_facts(args, revision, command),
            **run(args, env, workdir),
        }
    finally:
        if broker is not None:
            broker.stop()
    name = "spike-quick" if args.quick else "spike"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot(result, args.output_dir / f"{name}.png")
    save_results(args.output_dir, name, result, markdown(result, f"{name}.png"))
    log("\n" + markdown(result, f"{name}.png"))
    log(f"Results: {args.output_dir}/{name}.{{json,md,png}}")
    return result


if __name__ == "__main__":
    main()
