"""Compare the channel layers on TeamTrack's traffic shape, to choose the default and to put
the Kafka layer beside its broker's own floor.

    python -m loadtest.layers [--seconds 5] [--managers 1 10 50]

The Kafka rows run on the development broker (tansu, started here); "kafka floor" is a bare
confluent-kafka producer and consumer (manual assignment, the layer's fetch settings) sending
the same records at the same rate, measured in the same run.

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
import time
import uuid
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamtrack.settings")
# Only the layers' settings are read, in this process: nothing is served, signed or logged by
# Django, so the development settings (which need no SECRET_KEY) do.
os.environ.setdefault("DEBUG", "true")
django.setup()

from channels_redis.core import RedisChannelLayer  # noqa: E402
from channels_redis.pubsub import RedisPubSubChannelLayer  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from django.conf import settings  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402

from deploy.tansu import KafkaBroker  # noqa: E402
from loadtest.machine import git_revision, process_cpu  # noqa: E402
from tracking.layers.kafka import KafkaChannelLayer  # noqa: E402

LAYERS = {
    "redis (pub/sub)": lambda prefix, broker: RedisPubSubChannelLayer(
        hosts=[settings.REDIS_URL], prefix=prefix
    ),
    "redis-core": lambda prefix, broker: RedisChannelLayer(
        hosts=[settings.REDIS_URL], prefix=prefix
    ),
    "kafka": lambda prefix, broker: KafkaChannelLayer(**broker.layer_config(), topic=prefix),
}
RESULTS = Path(__file__).with_name("results")
# A positions frame of about 100 workers: what one team's batch looks like at 1 Hz.
FRAME = json.dumps(
    {"type": "positions", "positions": [
        {"id": i, "lat": 41.39 + i / 1e4, "lng": 2.16, "ts": 1.8e9, "acc": 5.0} for i in range(100)
    ]}
)  # fmt: skip
WINDOW = 0.1  # one group message per window, like one team's flush


async def broker_cpu(client, broker) -> float:
    """Return the CPU seconds of the broker this row runs on: Redis, or the Kafka broker."""
    if broker is not None:
        return process_cpu(broker.process.pid)
    info = await client.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


async def redis_counters(client) -> tuple[int, int]:
    info = await client.info("stats")
    return info["total_commands_processed"], info["total_net_input_bytes"] + info[
        "total_net_output_bytes"
    ]


async def measure(make_layer, broker, managers: int, seconds: float) -> dict:
    prefix = f"bench{os.getpid()}-{uuid.uuid4().hex[:6]}"
    sender, holder = make_layer(prefix, broker), make_layer(prefix, broker)
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
    broker_before = await broker_cpu(client, broker)
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
    cpu += await broker_cpu(client, broker) - broker_before
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
        # Not Redis's to count when the row runs on Kafka.
        "redis_commands_per_message": None
        if broker
        else round((commands_after - commands_before - 2) / sent, 1),
        "redis_kb_per_message": None
        if broker
        else round((bytes_after - bytes_before) / sent / 1024, 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
        "cpu_us_per_delivery": round(1e6 * cpu / max(delivered, 1)),
    }


def kafka_floor(broker, seconds: float) -> dict:
    """Send the same records with bare clients, each received before the next is sent."""
    topic = f"floor-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(5)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2, "acks": 1})
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": topic, "enable.auto.commit": False,
         "fetch.wait.max.ms": 10}
    )  # fmt: skip
    partition = TopicPartition(topic, 0)
    _, high = consumer.get_watermark_offsets(partition, timeout=5, cached=False)
    consumer.assign([TopicPartition(topic, 0, high)])
    latencies = []
    broker_before, cpu_before = process_cpu(broker.process.pid), time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        producer.produce(topic, value=FRAME.encode(), key=b"g:team.1")
        producer.poll(0)
        record = None
        while record is None or record.error():
            record = consumer.poll(2)
        latencies.append(time.perf_counter() - sent)
        time.sleep(WINDOW)
    cpu = time.process_time() - cpu_before + process_cpu(broker.process.pid) - broker_before
    consumer.close()
    latencies.sort()
    return {
        "managers": 1,
        "group_messages": len(latencies),
        "delivered": len(latencies),
        "delivered_pct": 100.0,
        "redis_commands_per_message": None,
        "redis_kb_per_message": None,
        "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
        "cpu_us_per_delivery": round(1e6 * cpu / len(latencies)),
    }


async def run(seconds: float, manager_counts: list[int]) -> dict:
    results = {}
    with KafkaBroker() as broker:
        results["kafka floor (bare clients)"] = [kafka_floor(broker, seconds)]
        print("kafka floor", results["kafka floor (bare clients)"][0], flush=True)
        for name, make_layer in LAYERS.items():
            results[name] = []
            for managers in manager_counts:
                on = broker if name == "kafka" else None
                row = await measure(make_layer, on, managers, seconds)
                print(name, row, flush=True)
                results[name].append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--managers", type=int, nargs="+", default=[1, 10, 50])
    args = parser.parse_args()
    results = asyncio.run(run(args.seconds, args.managers))
    revision = git_revision()
    meta = {"cores": os.cpu_count(), "python": platform.python_version(), "revision": revision,
            "seconds": args.seconds, "frame_bytes": len(FRAME), "window_s": WINDOW}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layers.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [
        "# Channel layers on TeamTrack's traffic",
        "",
        f"`python -m loadtest.layers --seconds {args.seconds:g}`: {meta['cores']} cores, Python "
        f"{meta['python']}, revision {revision}. One {len(FRAME)}-byte group message every "
        f"{WINDOW * 1000:g} ms from replica A to a group whose channels all live on replica B. "
        "CPU counts this process (both layer instances, their threads) and the broker "
        "(Redis, or the tansu Kafka broker). The Kafka floor is bare clients, one record at a "
        "time, received before the next is sent.",
        "",
        "| layer | managers | delivered | Redis commands / message | Redis KB / message | p50 ms | p99 ms | CPU µs / delivery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for row in rows:
            commands, kilobytes = (
                "–" if row[key] is None else row[key]
                for key in ("redis_commands_per_message", "redis_kb_per_message")
            )
            lines.append(
                f"| {name} | {row['managers']} | {row['delivered_pct']}% | {commands} | "
                f"{kilobytes} | {row['latency_p50_ms']} | {row['latency_p99_ms']} | {row['cpu_us_per_delivery']} |"
            )
    (RESULTS / "layers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
