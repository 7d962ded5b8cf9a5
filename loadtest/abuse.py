"""The hardening audit's reconnect attack, replayed on 2 replicas behind nginx (Redis pub/sub).

    python -m loadtest.abuse [--seconds 3]

One device token reconnects as fast as it can for a few seconds, sending a frame with a seq on
every connection, while a manager watches the team's map. A second run holds one socket of the
token on each replica at once, each sending as fast as it can. The audit measured, before the
limits held across replicas: 1,260 reconnects in 3 s, 78 acknowledged frames a second against a
limit of 5, and 2,356 presence frames on one map. Results go to loadtest/results/abuse.{json,md}.
"""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import websockets

from deploy.cluster import LocalCluster, login
from loadtest.machine import git_revision
from loadtest.runs import save_results

RESULTS = Path(__file__).with_name("results")
SECRET = "abuse-benchmark-only-not-a-secret-key-0123456789abcdef"
PASSWORD = "abuse-benchmark-password-1"


async def reconnect_loop(url: str, token: str, seconds: float) -> dict:
    """Reconnect and send for `seconds`; count connections, close codes and acks."""
    counts = {"connections": 0, "acks": 0, "closes": {}}
    headers = {"Authorization": f"Bearer {token}"}
    seq = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        counts["connections"] += 1
        try:
            async with websockets.connect(url, additional_headers=headers) as socket:
                seq += 1
                await socket.send(
                    json.dumps({"lat": 1.0, "lng": 1.0, "ts": time.time(), "seq": seq})
                )
                try:
                    frame = json.loads(await asyncio.wait_for(socket.recv(), 0.3))
                    counts["acks"] += frame.get("type") == "ack"
                except TimeoutError:
                    pass
        except websockets.ConnectionClosed as closed:
            code = str(closed.rcvd.code if closed.rcvd else None)
            counts["closes"][code] = counts["closes"].get(code, 0) + 1
    return counts


async def hold_and_flood(url: str, token: str, seconds: float) -> dict:
    """Keep a socket open and send frames as fast as it will take them; count acks."""
    counts = {"frames": 0, "acks": 0, "closed_with": None}
    headers = {"Authorization": f"Bearer {token}"}
    end = time.monotonic() + seconds
    try:
        async with websockets.connect(url, additional_headers=headers) as socket:

            async def read():
                try:
                    async for message in socket:
                        counts["acks"] += json.loads(message).get("type") == "ack"
                except websockets.ConnectionClosed:
                    pass  # the sender sees why

            reader = asyncio.ensure_future(read())
            seq = 0
            while time.monotonic() < end:
                seq += 1
                frame = {"lat": 1.0, "lng": 1.0, "ts": time.time(), "seq": seq}
                await socket.send(json.dumps(frame))
                counts["frames"] += 1
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
            reader.cancel()
    except websockets.ConnectionClosed as closed:
        counts["closed_with"] = closed.rcvd.code if closed.rcvd else None
    return counts


async def watch(url: str, slug: str, headers: dict, stop: asyncio.Event) -> int:
    """Count the presence frames a map of the team receives until `stop`."""
    presence = 0
    async with websockets.connect(f"{url}/ws/teams/{slug}/", additional_headers=headers) as map_:
        while not stop.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(map_.recv(), 0.2))
            except TimeoutError:
                continue
            presence += frame.get("type") == "presence"
    return presence


async def attack(cluster: LocalCluster, token: str, headers: dict, seconds: float) -> dict:
    ws_url = cluster.url.replace("http", "ws", 1)
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(watch(ws_url, "abuse", headers, stop))
    await asyncio.sleep(1)
    started = time.monotonic()
    reconnects = await reconnect_loop(f"{ws_url}/ws/worker/", token, seconds)
    elapsed = time.monotonic() - started
    await asyncio.sleep(5)  # the offline grace, and what is on its way
    stop.set()
    presence = await watcher
    return {
        **reconnects,
        "seconds": round(elapsed, 2),
        "acks_per_second": round(reconnects["acks"] / elapsed, 1),
        "presence_frames_on_a_map": presence,
    }


async def both_replicas(cluster: LocalCluster, token: str, seconds: float) -> dict:
    urls = [f"{cluster.replica_url(i).replace('http', 'ws', 1)}/ws/worker/" for i in range(2)]
    results = await asyncio.gather(*(hold_and_flood(url, token, seconds) for url in urls))
    acks = sum(result["acks"] for result in results)
    return {"sockets": results, "acks_per_second": round(acks / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    revision = git_revision()
    env = {"DEBUG": "false", "SECRET_KEY": SECRET, "REDIS_PREFIX": f"abuse-{int(time.time())}"}
    cluster = LocalCluster(replicas=2, layer="redis", env=env, workdir=Path(tempfile.mkdtemp()))
    cluster.start()
    try:
        cluster.manage("addteam", "abuse", "--manager", "abuse-boss", "--password", PASSWORD)
        flapper = cluster.manage("addworker", "abuse", "flapper").splitlines()[-1]
        holder = cluster.manage("addworker", "abuse", "holder").splitlines()[-1]
        headers = login(cluster.url, "abuse-boss", PASSWORD)
        reconnects = asyncio.run(attack(cluster, flapper, headers, args.seconds))
        held = asyncio.run(both_replicas(cluster, holder, args.seconds))
    finally:
        cluster.stop()
    result = {
        "revision": revision,
        "command": f"python -m loadtest.abuse --seconds {args.seconds:g}",
        "limits": "the defaults of teamtrack/settings.py",
        "reconnect_loop": reconnects,
        "one_socket_on_each_replica": held,
    }
    markdown = "\n".join(
        [
            "# The reconnect attack, on 2 replicas behind nginx (Redis pub/sub)",
            "",
            f"`{result['command']}` at {revision}, with the default limits"
            " (WORKER_FRAMES_PER_SECOND, WORKER_FRAME_BURST, WORKER_LOGINS_PER_MINUTE,"
            " OFFLINE_GRACE_SECONDS in teamtrack/settings.py).",
            "",
            "| attack | audit, before | now |",
            "|---|---|---|",
            f"| reconnects from one token in {reconnects['seconds']} s | 1,260 in 3 s"
            f" | {reconnects['connections']} (closes: {reconnects['closes']}) |",
            f"| acknowledged frames a second, reconnecting | 78 | {reconnects['acks_per_second']}"
            " (the first login's burst of 20, then nothing: logins over the limit) |",
            f"| presence frames on one map | 2,356 | {reconnects['presence_frames_on_a_map']} |",
            f"| acknowledged frames a second, one socket on each replica | (not measured)"
            f" | {held['acks_per_second']} (closes: "
            f"{[s['closed_with'] for s in held['sockets']]}) |",
            "",
        ]
    )
    save_results(args.output_dir, "abuse", result, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
