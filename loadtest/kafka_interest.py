"""Measure how much a replica of the Kafka layer reads against what its managers want, by team
count, partition count and how managers are placed on replicas.

    python -m loadtest.kafka_interest [--teams 10 100 1000] [--partitions 32 256 1024]
        [--placement least-conn team partition] [--replicas 4] [--managers 2] [--rounds 5]

A replica reads every record of the partitions of the teams it watches, other teams' included
(tracking/layers/kafka.py). Here R layer instances stand for R replicas, each with its own
clients, and one more layer publishes; all run in one event loop against tansu (started here),
on a fresh topic per configuration. Team ids are 1..T, as a database hands them out. Each
replica holds one relay channel, added to the group of every team with a manager there (as
tracking.watchers does). The publisher sends one positions.batch of 10 positions
(tracking.feed.positions_messages) per team per round; the layers' own counters give each
replica's read and wanted bytes over those rounds.

Placements (how the load balancer puts a team's manager sockets on replicas):
- least-conn: nginx `least_conn`, as deploy/nginx-*.conf have it. It balances every socket,
  devices' too, which come and go between managers' and outnumber them: for a team, the
  replica a manager lands on is any replica. Modelled as uniform and independent (seeded), so
  a team's managers are on different replicas unless they collide (1/R).
- team: nginx `hash $team consistent`, the team's slug as key, on nginx's own ring (crc32,
  160 points per replica). A team's managers share one replica, but the replica's teams still
  scatter over the partitions.
- partition: `hash $arg_p consistent`, where the page puts the team's partition
  (tracking.layers.utils.partition_for) in the socket's URL: a replica's teams are the teams of
  its partitions, so what it reads is what it wants.

Besides the measured ratio, each row gives two predictions: "exact", the bytes of every team in
the partitions the replica really read (from the assignment, the hashes and its inbox), which
must equal the measurement; and "expected", the analytic expectation for a replica watching w
of the T teams at random, on the real hash layout: a partition is read whole if one of its
teams is watched (probability 1 - (1 - w/T)^n for n teams) or it is the inbox (1/P); under the
partition placement whole partitions are watched and only the inbox adds others. The JSON also
has the closed form for teams hashed at random, 1 + (T - w)/w * (1 - (1 - 1/P)^(w + 1)), which
overstates the collisions: crc32 spreads sequential team ids more evenly than chance.

The publisher sends each round as the relay sends a window, with group_send_many (acknowledged
by the broker): fire-and-forget group_send of 1,000 records a round overran tansu at 1,024
partitions (requests timed out after message.timeout.ms and the records were lost).
Results go to loadtest/results/kafka-interest.{json,md}.
"""

import argparse
import asyncio
import bisect
import os
import random
import statistics
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from deploy.tansu import KafkaBroker
from loadtest.machine import cpu_model, git_revision, process_cpu
from loadtest.runs import log, save_results
from tracking.feed import positions_messages, team_group
from tracking.layers.kafka import KafkaChannelLayer
from tracking.layers.utils import partition_for
from tracking.positions import TeamPositions

RESULTS = Path(__file__).with_name("results")
PLACEMENTS = ("least-conn", "team", "partition")
WORKERS = 10  # positions in one team's window
WINDOW = 0.1  # seconds between rounds, like the relay's flush window
CAPACITY = 100_000  # of a relay channel: a round may bring it hundreds of messages at once
POINTS = 160  # ketama points per replica, as nginx's `hash ... consistent` puts them
DELIVERY_TIMEOUT = 30.0  # seconds for the rounds to reach every relay channel
QUIET = 0.5  # seconds without a new byte read before a replica's counters are taken
BROKER_TIMEOUT = 10.0
PUBLISH_TIMEOUT_MS = 60_000


# ------------------------------------------------------------------ placement


def ring(replicas: int) -> list[tuple[int, int]]:
    """Return nginx's consistent-hash ring of the replicas "replica-N:8000", as sorted (point,
    replica) pairs: 160 points per replica, each the crc32 of its host, a NUL, its port and the
    previous point (ngx_http_upstream_init_chash)."""
    points = []
    for replica in range(replicas):
        base = f"replica-{replica + 1}".encode() + b"\0" + b"8000"
        point = 0
        for _ in range(POINTS):
            point = zlib.crc32(base + point.to_bytes(4, "little"))
            points.append((point, replica))
    return sorted(points)


def on_ring(points: list[tuple[int, int]], key: str) -> int:
    """Return the replica nginx picks for a key: the first point at or after the key's crc32,
    wrapping round."""
    index = bisect.bisect_left(points, (zlib.crc32(key.encode()), -1))
    return points[index % len(points)][1]


def place(
    placement: str, *, teams: int, partitions: int, replicas: int, managers: int, seed: int
) -> list[set[int]]:
    """Return, for each replica, the ids of the teams it has a manager of."""
    watched = [set() for _ in range(replicas)]
    if placement == "least-conn":
        # Devices' sockets come and go between managers' (and outnumber them), so the replica
        # with the fewest sockets when a manager connects is, for the team, any replica.
        chance = random.Random(seed)
        for team in range(1, teams + 1):
            for _ in range(managers):
                watched[chance.randrange(replicas)].add(team)
        return watched
    points = ring(replicas)
    for team in range(1, teams + 1):
        # The manager's socket is /ws/teams/<slug>/: nginx can hash the slug, not the group's
        # partition, which the page would have to put in the socket's URL (?p=...).
        key = f"team-{team}"
        if placement == "partition":
            key = str(partition_for(team_group(team), partitions))
        watched[on_ring(points, key)].add(team)
    return watched


def random_hash_ratio(placement: str, *, teams: int, watched: int, partitions: int):
    """The closed-form read/wanted ratio of a replica watching `watched` of `teams` teams, were
    the teams hashed to partitions at random."""
    if not watched:
        return None
    if placement == "partition":
        collide = 1 / partitions  # only the inbox's partition holds teams of other replicas
    else:
        collide = 1 - (1 - 1 / partitions) ** (watched + 1)
    return 1 + (teams - watched) / watched * collide


def expected_ratio(placement: str, *, watched: int, teams: int, layout: dict[int, list[int]]):
    """The read/wanted ratio expected of a replica watching `watched` teams, on the real layout
    (partition -> its teams' value bytes) but not knowing which teams it watches: each team is
    watched with probability f = watched / teams, a partition is read if one of its teams is
    watched or it is the inbox (one partition at random), and is then read whole."""
    if not watched:
        return None
    total = sum(sum(sizes) for sizes in layout.values())
    partitions, f = len(layout), watched / teams
    if placement == "partition":
        # Whole partitions are watched; of the others only the inbox's, if it falls there.
        return 1 + (1 - f) * total / partitions / (f * total)
    read = sum(
        sum(sizes) * (1 - (1 - f) ** len(sizes) * (1 - 1 / partitions)) for sizes in layout.values()
    )
    return read / (f * total)


# ------------------------------------------------------------------ traffic


def window(team: int, round_: int) -> TeamPositions:
    """Return one team's newest positions of one window: 10 workers, every field a phone sends."""
    return {
        team * 1000 + worker: {
            "lat": 41.38 + team / 1e4 + worker / 1e5 + round_ / 1e6,
            "lng": 2.17 + worker / 1e5,
            "ts": 1.8e9 + round_ * WINDOW + worker / 1e3,
            "acc": 4.0 + worker,
            "speed": 1.3,
            "heading": 12.0 * worker,
            "batt": 80.0,
        }
        for worker in range(WORKERS)
    }


def delete_topic(broker: KafkaBroker, topic: str) -> None:
    # Only once every consumer is closed: tansu's clients crash on a topic deleted under them.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([topic])[topic].result(BROKER_TIMEOUT)


@dataclass
class Relay:
    """A replica's relay channel, the messages it should get and those it got."""

    layer: KafkaChannelLayer
    channel: str
    expected: int
    received: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Take every message of the channel, counting them."""
        if self.expected == 0:
            self.done.set()
        while True:
            await self.layer.receive(self.channel)
            self.received += 1
            if self.received >= self.expected:
                self.done.set()


async def settle(relays: list[Relay]) -> None:
    """Wait until every relay channel has its messages, then until no replica reads more."""
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            await asyncio.gather(*(relay.done.wait() for relay in relays))
    except TimeoutError:
        counts = [(relay.received, relay.expected) for relay in relays]
        log(f"  delivery incomplete after {DELIVERY_TIMEOUT:g} s: (received, expected) {counts}")
    last, quiet_since = None, time.monotonic()
    while time.monotonic() - quiet_since < QUIET:
        now = [relay.layer.metrics["read_bytes"] for relay in relays]
        if now != last:
            last, quiet_since = now, time.monotonic()
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ one configuration


async def measure(
    broker: KafkaBroker, *, teams: int, partitions: int, placement: str, args
) -> dict:
    """Run one configuration on a fresh topic and return its row."""
    topic = f"interest-{partitions}-{teams}-{placement}-{uuid.uuid4().hex[:6]}"
    watched = place(
        placement,
        teams=teams,
        partitions=partitions,
        replicas=args.replicas,
        managers=args.managers,
        seed=args.seed,
    )

    def make(**config) -> KafkaChannelLayer:
        return KafkaChannelLayer(
            broker.bootstrap, topic=topic, partitions=partitions, capacity=CAPACITY, **config
        )

    # The publisher waits out a slow broker (tansu takes seconds a round at 1,024 partitions, past
    # the layer's 3 s message timeout): bytes are measured here, the wait is reported.
    publisher = make(producer_config={"message.timeout.ms": PUBLISH_TIMEOUT_MS})
    layers = [make() for _ in watched]
    relays: list[Relay] = []
    tasks: list[asyncio.Task] = []
    try:
        # The publisher starts first and makes the topic, so that the replicas do not race to.
        await publisher.ping()
        for layer, teams_here in zip(layers, watched, strict=True):
            relay = Relay(layer, await layer.new_channel(), args.rounds * len(teams_here))
            # All at once, as a replica whose managers are already connected would.
            await asyncio.gather(
                *(layer.group_add(team_group(team), relay.channel) for team in teams_here)
            )
            assert layer._layer().partitions == partitions, "the topic's partitions differ"
            relays.append(relay)
            tasks.append(asyncio.ensure_future(relay.run()))
        await asyncio.sleep(QUIET)  # whatever joining the groups wrote is read before counting
        before = [(layer.metrics["read_bytes"], layer.metrics["wanted_bytes"]) for layer in layers]
        broker_before = process_cpu(broker.process.pid)
        sent = dict.fromkeys(range(1, teams + 1), 0)  # team -> value bytes published
        writes = []  # seconds the broker took to acknowledge each round
        for round_ in range(args.rounds):
            messages = [
                (team_group(team), positions_messages(team, window(team, round_))[0])
                for team in sent
            ]
            for team, (_, message) in zip(sent, messages, strict=True):
                sent[team] += len(publisher.serialize(message))
            started = time.monotonic()
            # As the relay sends a window (tracking.feed.group_send_many): acknowledged, so that
            # a round is written before the next begins.
            await publisher.group_send_many(messages)
            writes.append(time.monotonic() - started)
            await asyncio.sleep(WINDOW)
        await settle(relays)
        broker_cpu = process_cpu(broker.process.pid) - broker_before
        measured = [
            (layer.metrics["read_bytes"] - read, layer.metrics["wanted_bytes"] - wanted)
            for layer, (read, wanted) in zip(layers, before, strict=True)
        ]
        read_sets = [layer._layer().read_partitions() for layer in layers]
        dropped = sum(
            layer.metrics[name]
            for layer in (publisher, *layers)
            for name in ("group_send_dropped", "group_receive_dropped", "delivery_failed")
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for layer in (publisher, *layers):
            await layer.flush()
    delete_topic(broker, topic)

    total = sum(sent.values())
    layout: dict[int, list[int]] = {partition: [] for partition in range(partitions)}
    for team, size in sent.items():
        layout[partition_for(team_group(team), partitions)].append(size)
    rows = []
    for teams_here, (read, wanted), read_set in zip(watched, measured, read_sets, strict=True):
        exact_read = sum(sum(layout[partition]) for partition in read_set)
        exact_wanted = sum(sent[team] for team in teams_here)
        rows.append(
            {
                "watched_teams": len(teams_here),
                "read_partitions": len(read_set),
                "read_bytes": read,
                "wanted_bytes": wanted,
                "exact_read_bytes": exact_read,
                "exact_wanted_bytes": exact_wanted,
                "ratio": read / wanted if wanted else None,
                "exact_ratio": exact_read / exact_wanted if exact_wanted else None,
                "expected_ratio": expected_ratio(
                    placement, watched=len(teams_here), teams=teams, layout=layout
                ),
                "random_hash_ratio": random_hash_ratio(
                    placement, teams=teams, watched=len(teams_here), partitions=partitions
                ),
                "share_of_traffic": read / total,
            }
        )
    return summarize(rows, teams=teams, partitions=partitions, placement=placement) | {
        "published_bytes": total,
        "message_bytes": round(total / teams / args.rounds),
        "partitions_used_by_teams": sum(bool(sizes) for sizes in layout.values()),
        "round_write_s_mean": statistics.mean(writes),
        "round_write_s_max": max(writes),
        "broker_cpu_s": broker_cpu,
        "dropped_or_failed": dropped,
        "replicas": rows,
    }


def summarize(rows: list[dict], *, teams: int, partitions: int, placement: str) -> dict:
    """The figures of a configuration over its replicas (those watching no team have no ratio)."""

    def values(key: str) -> list[float]:
        return [row[key] for row in rows if row[key] is not None]

    ratios = values("ratio")
    watched = [row["watched_teams"] / teams for row in rows]
    return {
        "teams": teams,
        "partitions": partitions,
        "placement": placement,
        "watched_fraction_mean": statistics.mean(watched),
        "watched_fraction_min": min(watched),
        "watched_fraction_max": max(watched),
        "idle_replicas": sum(not row["watched_teams"] for row in rows),
        "read_partitions_fraction_mean": statistics.mean(
            row["read_partitions"] / partitions for row in rows
        ),
        "ratio_mean": statistics.mean(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "exact_ratio_mean": statistics.mean(values("exact_ratio")) if ratios else None,
        "expected_ratio_mean": statistics.mean(values("expected_ratio")) if ratios else None,
        "random_hash_ratio_mean": statistics.mean(values("random_hash_ratio")) if ratios else None,
        "share_of_traffic_mean": statistics.mean(row["share_of_traffic"] for row in rows),
        "share_of_traffic_max": max(row["share_of_traffic"] for row in rows),
        "fleet_ratio": sum(row["read_bytes"] for row in rows)
        / max(1, sum(row["wanted_bytes"] for row in rows)),
        "matches_exact": all(
            row["read_bytes"] == row["exact_read_bytes"]
            and row["wanted_bytes"] == row["exact_wanted_bytes"]
            for row in rows
        ),
    }


async def run(args) -> list[dict]:
    results = []
    with KafkaBroker() as broker:
        for partitions in args.partitions:
            for teams in args.teams:
                for placement in args.placement:
                    started = time.monotonic()
                    row = await measure(
                        broker, teams=teams, partitions=partitions, placement=placement, args=args
                    )
                    log(
                        f"P={partitions} T={teams} {placement}: watched "
                        f"{row['watched_fraction_mean']:.0%}, reads "
                        f"{row['read_partitions_fraction_mean']:.0%} of partitions, ratio "
                        f"{fmt(row['ratio_mean'])} (max {fmt(row['ratio_max'])}, exact "
                        f"{fmt(row['exact_ratio_mean'])}, expected "
                        f"{fmt(row['expected_ratio_mean'])}), exact match "
                        f"{row['matches_exact']}, {time.monotonic() - started:.1f} s"
                    )
                    results.append(row)
    return results


# ------------------------------------------------------------------ report


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def pick(results: list[dict], **match) -> dict | None:
    for row in results:
        if all(row[key] == value for key, value in match.items()):
            return row
    return None


def findings(results: list[dict], args) -> str:
    """One paragraph on what the table says, its figures read off the results."""
    most, fewest, largest = max(args.teams), min(args.partitions), max(args.partitions)
    counts = "/".join(f"{teams:,}" for teams in args.teams)

    def ratios(partitions: int, placement: str) -> str:
        rows = [
            pick(results, teams=t, partitions=partitions, placement=placement) for t in args.teams
        ]
        return "/".join(fmt(row and row["ratio_mean"]) for row in rows)

    spread = pick(results, teams=most, partitions=fewest, placement="least-conn")
    if spread is None:
        return "Run the least-conn placement (the default) to compare partition counts."
    watched = spread["watched_fraction_mean"]
    text = [
        f"With {args.managers} managers a team spread by least connections over "
        f"{args.replicas} replicas, a replica watches {watched:.0%} of the teams, not "
        f"1/{args.replicas} (1 - (1 - 1/{args.replicas})^{args.managers} = "
        f"{1 - (1 - 1 / args.replicas) ** args.managers:.0%}): a team's managers land on "
        f"different replicas. So the ratio's ceiling is 1/{watched:.2f} = {1 / watched:.2f}, "
        f"reached when a replica reads every partition, and no mapping of teams to partitions "
        f"brings a replica below {watched:.0%} of all team traffic. At {fewest} partitions the "
        f"ratio is poor once teams outnumber partitions: {ratios(fewest, 'least-conn')} at "
        f"{counts} teams, "
        f"and at {most:,} teams every replica reads "
        f"{spread['read_partitions_fraction_mean']:.0%} of the partitions, as if it read "
        "everything."
    ]
    more = [p for p in args.partitions if p != fewest]
    if more:
        text.append(
            " More partitions push the collisions out to more teams, not away: "
            + "; ".join(f"{p} partitions give {ratios(p, 'least-conn')}" for p in more)
            + f", climbing back to the ceiling once teams outnumber partitions (crc32 spreads "
            f"sequential team ids more evenly than chance: {most:,} teams use "
            f"{pick(results, teams=most, partitions=largest, placement='least-conn')['partitions_used_by_teams']}"
            f" of {largest} partitions)."
        )
    team = pick(results, teams=most, partitions=largest, placement="team")
    if team is not None:
        high = pick(results, teams=most, partitions=largest, placement="least-conn")
        text.append(
            f" Keeping a team's managers together (hash of the team) cuts what a replica wants "
            f"to {team['watched_fraction_mean']:.0%} of the teams but not the collisions (ratio "
            f"{ratios(fewest, 'team')} at {fewest} partitions); what it buys is absolute: at "
            f"{largest} partitions and {most:,} teams a replica reads "
            f"{team['share_of_traffic_mean']:.0%} of the traffic against "
            f"{high['share_of_traffic_mean']:.0%}."
        )
    aligned = [row for row in results if row["placement"] == "partition" and row["ratio_max"]]
    if aligned:
        many = [row for row in aligned if row["teams"] > min(args.teams)] or aligned
        worst = max(many, key=lambda row: row["ratio_max"])
        balance = ", ".join(
            f"{row['watched_fraction_min']:.0%}-{row['watched_fraction_max']:.0%} at "
            f"{row['partitions']}"
            for row in aligned
            if row["teams"] == most
        )
        text.append(
            f" Routing managers by the team's partition makes a replica's teams those of its "
            f"partitions: the ratio is at most {fmt(worst['ratio_max'])} from "
            f"{min(row['teams'] for row in many):,} teams on, at any partition count (what is "
            f"left is the replica's inbox partition, shared with 1/P of the teams; at "
            f"{min(args.teams)} teams it can double the read of a replica watching one), and a "
            f"replica reads about 1/{args.replicas} of the traffic. Its "
            f"cost is balance, which wants many partitions a replica: at {most:,} teams the "
            f"replicas watch {balance} partitions."
        )
    slow = pick(results, teams=most, partitions=largest, placement="least-conn")
    text.append(
        f" On tansu, partitions cost time: acknowledging one round of {most:,} records took "
        f"{spread['round_write_s_mean']:.2f} s at {fewest} partitions and "
        f"{slow['round_write_s_mean']:.2f} s at {largest} (the broker used "
        f"{spread['broker_cpu_s']:.1f} against {slow['broker_cpu_s']:.1f} CPU seconds), past the "
        f"relay's {WINDOW * 1000:g} ms window; fire-and-forget sends at that rate timed out "
        "and were lost, hence the acknowledged sends here."
    )
    return "".join(text)


def markdown(results: list[dict], meta: dict, args) -> str:
    lines = [
        "# Reading by interest: a Kafka replica's read against wanted bytes",
        "",
        f"`{meta['command']}`: {meta['cores']} cores ({meta['cpu_model']}), revision "
        f"{meta['revision']}, tansu. {args.replicas} replicas (layer instances), "
        f"{args.managers} managers per team, {args.rounds} rounds of one "
        f"{meta['message_bytes']}-byte positions.batch ({WORKERS} positions) per team. "
        "Watched: teams with a manager on the replica. Ratio: value bytes the replica consumed "
        "over bytes of its watched teams (mean and max over replicas watching a team). "
        "Exact: predicted from the hashes and the partitions read; expected: analytic, for a "
        "replica watching as many teams at random (see the module's docstring). Share: a "
        "replica's read bytes over all published bytes. Round ack: seconds tansu took to "
        "acknowledge one round (group_send_many).",
        "",
        "| partitions | teams | placement | watched (min–max) | partitions read | ratio mean | "
        "ratio max | exact | expected | share of traffic | round ack s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        idle = f", {row['idle_replicas']} idle" if row["idle_replicas"] else ""
        exact = fmt(row["exact_ratio_mean"]) + ("" if row["matches_exact"] else " (differs)")
        lines.append(
            f"| {row['partitions']} | {row['teams']} | {row['placement']} | "
            f"{row['watched_fraction_mean']:.0%} ({row['watched_fraction_min']:.0%}–"
            f"{row['watched_fraction_max']:.0%}{idle}) | "
            f"{row['read_partitions_fraction_mean']:.0%} | {fmt(row['ratio_mean'])} | "
            f"{fmt(row['ratio_max'])} | {exact} | {fmt(row['expected_ratio_mean'])} | "
            f"{row['share_of_traffic_mean']:.0%} | {row['round_write_s_mean']:.2f} |"
        )
    return "\n".join([*lines, "", findings(results, args), ""])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teams", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--partitions", type=int, nargs="+", default=[32, 256, 1024])
    parser.add_argument(
        "--placement",
        nargs="+",
        choices=PLACEMENTS,
        default=["least-conn"],
        help="team and partition keep a team's managers on one replica (consistent hashing)",
    )
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--managers", type=int, default=2, help="per team")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    revision = git_revision()
    started = time.monotonic()
    results = asyncio.run(run(args))
    meta = {
        "command": "python -m loadtest.kafka_interest " + " ".join(argv or sys.argv[1:]),
        "revision": revision,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "seconds": round(time.monotonic() - started, 1),
        "message_bytes": results[0]["message_bytes"],
        "window_s": WINDOW,
        **{key: getattr(args, key) for key in ("replicas", "managers", "rounds", "seed")},
    }
    text = markdown(results, meta, args)
    save_results(args.output, "kafka-interest", {"meta": meta, "results": results}, text)
    print(text)


if __name__ == "__main__":
    main()
