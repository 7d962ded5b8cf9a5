"""Memory of one daphne replica over many device connects and disconnects.

    python -m loadtest.reconnects [--cycles 12500] [--step 1500] [--debug]

The soak (`loadtest.soak`) showed each replica's RSS rising with reconnects over 25 minutes.
This tells a leak (RSS keeps rising with every cycle) from memory that settles (caches and the
allocator's arenas fill, then RSS stays flat): it opens a device socket, sends a position and
closes, over and over, against one replica, and records RSS after every step. Results go to
loadtest/results/reconnects.{json,md}.
"""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import websockets

from deploy.cluster import LocalCluster
from loadtest.machine import git_revision, process_rss

RESULTS = Path(__file__).with_name("results")
SECRET = "reconnects-benchmark-only-not-a-secret-key-0123456789"


async def cycles(url: str, tokens: list[str], count: int) -> None:
    for index in range(count):
        headers = {"Authorization": f"Bearer {tokens[index % len(tokens)]}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.send(json.dumps({"lat": 1.0, "lng": 1.0, "ts": time.time()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=12_500)
    parser.add_argument("--step", type=int, default=1_500)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--debug", action="store_true", help="run with DEBUG on (query log)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    revision = git_revision()  # of the code that runs, read before anyone edits the tree
    env = {
        "DEBUG": "true" if args.debug else "false",
        "SECRET_KEY": SECRET,
        # Memory under churn, not the login limit: each of the 20 devices logs in every second.
        "WORKER_LOGINS_PER_MINUTE": "1000000",
    }
    cluster = LocalCluster(replicas=1, layer="memory", env=env, workdir=Path(tempfile.mkdtemp()))
    cluster.manage("migrate", "--verbosity", "0")
    cluster.manage("addteam", "reconnects")
    tokens = [
        cluster.manage("addworker", "reconnects", f"device {n}").splitlines()[-1] for n in range(20)
    ]
    samples = []
    try:
        cluster.start_replica(0)
        pid = cluster.replicas[0].pid
        url = f"{cluster.replica_url(0).replace('http', 'ws')}/ws/worker/"
        asyncio.run(cycles(url, tokens, args.warmup))
        done = args.warmup
        samples.append({"cycles": done, "rss_mb": round(process_rss(pid) / 2**20, 1)})
        while done < args.cycles:
            asyncio.run(cycles(url, tokens, args.step))
            done += args.step
            samples.append({"cycles": done, "rss_mb": round(process_rss(pid) / 2**20, 1)})
            print(f"{done} connects: {samples[-1]['rss_mb']} MB", flush=True)
    finally:
        cluster.stop()
    name = "reconnects-debug" if args.debug else "reconnects"
    result = {"revision": revision, "debug": args.debug, "samples": samples}
    (args.output_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    rows = "\n".join(f"| {s['cycles']} | {s['rss_mb']} |" for s in samples)
    (args.output_dir / f"{name}.md").write_text(
        f"# One replica's memory over device reconnects (DEBUG {env['DEBUG']})\n\n"
        f"Revision `{result['revision']}`. Written by `python -m loadtest.reconnects"
        f"{' --debug' if args.debug else ''}`: each cycle opens a device socket, sends one "
        "position and closes it.\n\n| connects | daphne RSS MB |\n|---|---|\n" + rows + "\n"
    )


if __name__ == "__main__":
    main()
