"""Compare the two channels-redis layers on TeamTrack's traffic shape, to choose the default.

    python -m loadtest.layers [--seconds 5] [--managers 1 10 50]

The relay sends one pre-encoded frame per team per flush window to the team's group. Two layer
instances stand in for two replicas: replica A sends, replica B holds the manager channels.
For each layer and manager count, this reports Redis commands and bytes per group message,
delivery latency to the last manager, and this process's CPU per delivered message.
Results go to loadtest/results/layers.{json,md}.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamtrack.settings")
django.setup()

from channels_redis.core import RedisChannelLayer  # noqa: E402
from channels_redis.pubsub import RedisPubSubChannelLayer  # noqa: E402
from django.conf import settings  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402

LAYERS = {"redis (pub/sub)": RedisPubSubChannelLayer, "redis-core": RedisChannelLayer}
RESULTS = Path(__file__).with_name("results")
# A positions frame of about 100 workers: what one team's batch looks like at 1 Hz.
FRAME = json.dumps(
    {"type": "positions", "positions": [
        {"id": i, "lat": 41.39 + i / 1e4, "lng": 2.16, "ts": 1.8e9, "acc": 5.0} for i in range(100)
    ]}
)  # fmt: skip
WINDOW = 0.1  # one group message per window, like one team's flush


async def redis_counters(client) -> tuple[int, int]:
    info = await client.info("stats")
    return info["total_commands_processed"], info["total_net_input_bytes"] + info[
        "total_net_output_bytes"
    ]


async def measure(layer_class, managers: int, seconds: float) -> dict:
    prefix = f"bench{os.getpid()}{managers}"
    config = {"hosts": [settings.REDIS_URL], "prefix": prefix}
    sender, holder = layer_class(**config), layer_class(**config)
    channels = [await holder.new_channel() for _ in range(managers)]
    for channel in channels:
        await holder.group_add("team.1", channel)
    latencies, delivered = [], 0

    async def drain(channel):
        nonlocal delivered
        while True:
            message = await holder.receive(channel)
            latencies.append(time.perf_counter() - message["sent"])
            delivered += 1

    readers = [asyncio.ensure_future(drain(channel)) for channel in channels]
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    await asyncio.sleep(0.5)
    commands_before, bytes_before = await redis_counters(client)
    cpu_before, sent = time.process_time(), 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        await sender.group_send(
            "team.1", {"type": "positions.batch", "text": FRAME, "sent": time.perf_counter()}
        )
        sent += 1
        await asyncio.sleep(WINDOW)
    await asyncio.sleep(0.5)
    cpu = time.process_time() - cpu_before
    commands_after, bytes_after = await redis_counters(client)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for layer in (sender, holder):
        await layer.flush()
    await client.aclose()
    latencies.sort()
    return {
        "managers": managers,
        "group_messages": sent,
        "delivered": delivered,
        "delivered_pct": round(100 * delivered / (sent * managers), 1),
        "redis_commands_per_message": round((commands_after - commands_before - 2) / sent, 1),
        "redis_kb_per_message": round((bytes_after - bytes_before) / sent / 1024, 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
        "cpu_us_per_delivery": round(1e6 * cpu / max(delivered, 1)),
    }


async def run(seconds: float, manager_counts: list[int]) -> dict:
    results = {}
    for name, layer_class in LAYERS.items():
        results[name] = []
        for managers in manager_counts:
            row = await measure(layer_class, managers, seconds)
            print(name, row, flush=True)
            results[name].append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--managers", type=int, nargs="+", default=[1, 10, 50])
    args = parser.parse_args()
    results = asyncio.run(run(args.seconds, args.managers))
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    meta = {"cores": os.cpu_count(), "python": platform.python_version(), "revision": revision,
            "seconds": args.seconds, "frame_bytes": len(FRAME), "window_s": WINDOW}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layers.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [
        "# channels-redis layers on TeamTrack's traffic",
        "",
        f"`python -m loadtest.layers --seconds {args.seconds:g}`: {meta['cores']} cores, Python "
        f"{meta['python']}, revision {revision}. One {len(FRAME)}-byte group message every "
        f"{WINDOW * 1000:g} ms from replica A to a group whose channels all live on replica B.",
        "",
        "| layer | managers | delivered | Redis commands / message | Redis KB / message | p50 ms | p99 ms | CPU µs / delivery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for row in rows:
            lines.append(
                f"| {name} | {row['managers']} | {row['delivered_pct']}% | {row['redis_commands_per_message']} | "
                f"{row['redis_kb_per_message']} | {row['latency_p50_ms']} | {row['latency_p99_ms']} | {row['cpu_us_per_delivery']} |"
            )
    (RESULTS / "layers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
