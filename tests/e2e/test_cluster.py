"""The local cluster: two daphne replicas behind nginx, relayed through the real Redis."""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import websockets
from redis import asyncio as aioredis

from tests.e2e.clients import Device, ManagerWatch, next_frame, wait_until
from tests.e2e.conftest import PASSWORD, login, provision

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def ws(url: str) -> str:
    return url.replace("http", "ws", 1)


@pytest.mark.parametrize("cluster", ["redis", "kafka"], indirect=True)
def test_worker_on_one_replica_is_seen_by_managers_on_the_other(cluster):
    (team,) = provision(cluster, teams=1, workers=2)
    alice, arno = team["workers"]
    replica_a, replica_b = cluster.replica_url(0), cluster.replica_url(1)

    async def scenario():
        on_b = await ManagerWatch(ws(replica_b), team["slug"], login(replica_b, team["managers"][0], PASSWORD)).start()  # fmt: skip
        device = Device(ws(replica_a), alice["token"], lat=10.0)
        device.start()
        await wait_until(
            lambda: alice["id"] in on_b.latest, 5, "position from replica A never reached B"
        )
        assert on_b.presence[0] == {"type": "presence", "id": alice["id"], "name": alice["name"], "online": True}  # fmt: skip
        # A manager connecting later, on A, gets the complete snapshot from the shared state.
        on_a = await ManagerWatch(ws(replica_a), team["slug"], login(replica_a, team["managers"][0], PASSWORD)).start()  # fmt: skip
        by_id = {w["id"]: w for w in on_a.snapshot["workers"]}
        assert by_id[alice["id"]]["online"] is True and by_id[alice["id"]]["lat"] == 10.0
        assert by_id[arno["id"]]["online"] is False and by_id[arno["id"]]["lat"] is None
        await device.stop()
        await wait_until(lambda: alice["id"] not in on_b.online(), 5, "offline never reached B")
        await wait_until(lambda: alice["id"] not in on_a.online(), 5, "offline never reached A")
        await on_a.stop()
        await on_b.stop()

    asyncio.run(scenario())


def test_a_team_costs_one_broker_message_per_window_and_reaches_only_interested_replicas(
    cluster,
):
    watched, unwatched = provision(cluster, teams=2, workers=10)
    replica_a, replica_b = cluster.replica_url(0), cluster.replica_url(1)
    channel = f"{cluster.env['REDIS_PREFIX']}-layer__group__team.{{}}"

    async def scenario():
        redis = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        headers = login(replica_b, watched["managers"][0], PASSWORD)
        watch = await ManagerWatch(ws(replica_b), watched["slug"], headers).start()
        devices = [
            Device(ws(replica_a), worker["token"], lat=1.0, interval=0.05)
            for team in (watched, unwatched)
            for worker in team["workers"]
        ]
        for device in devices:
            device.start()
        await wait_until(lambda: len(watch.latest) == 10, 5, "positions never arrived")
        subscribers = dict(
            await redis.pubsub_numsub(
                channel.format(watched["id"]), channel.format(unwatched["id"])
            )
        )
        sent_before = sum(device.seq for device in devices)
        publishes_before = (await redis.info("commandstats"))["cmdstat_publish"]["calls"]
        frames_before = watch.frames
        await asyncio.sleep(3)
        publishes = (await redis.info("commandstats"))["cmdstat_publish"][
            "calls"
        ] - publishes_before
        sent = sum(device.seq for device in devices) - sent_before
        frames = watch.frames - frames_before
        for device in devices:
            await device.stop()
        await watch.stop()
        await redis.aclose()
        return subscribers, publishes, sent, frames

    subscribers, publishes, sent, frames = asyncio.run(scenario())
    # Only replica B, which holds a manager of the watched team, hears that team at all.
    assert list(subscribers.values()) == [1, 0]
    windows = 3 / 0.1
    assert sent > 500  # 20 devices at 20 Hz
    assert publishes <= 2 * windows * 1.3, f"{publishes} publishes for {sent} positions"
    assert frames <= windows * 1.3, f"the manager got {frames} frames in {windows:g} windows"
    print(f"{sent} positions in 3 s became {publishes} broker messages and {frames} frames")


@pytest.mark.parametrize("cluster", ["redis", "kafka"], indirect=True)
def test_through_nginx_every_manager_gets_every_latest_position_of_its_team_only(cluster):
    teams = provision(cluster, teams=3, workers=15, managers=2)

    async def scenario():
        watches = {}
        for team in teams:
            for username in team["managers"]:
                for _ in range(2):  # two browser tabs each, spread over the replicas by nginx
                    headers = login(cluster.url, username, PASSWORD)
                    watches.setdefault(team["slug"], []).append(
                        await ManagerWatch(ws(cluster.url), team["slug"], headers).start()
                    )
        devices = {}
        for number, team in enumerate(teams):
            for worker in team["workers"]:
                device = Device(
                    ws(cluster.url), worker["token"], lat=number * 10 + 1, interval=0.25
                )
                devices[worker["id"]] = device
                device.start()
        await asyncio.sleep(3)
        for device in devices.values():
            await device.stop()
        final = {worker_id: device.seq for worker_id, device in devices.items()}

        for team in teams:
            mine = {worker["id"] for worker in team["workers"]}
            for watch in watches[team["slug"]]:
                await wait_until(
                    lambda w=watch, m=mine: all(
                        w.latest.get(i, {}).get("lng") == final[i] / 1000 for i in m
                    ),
                    5,
                    f"a manager of {team['slug']} missed a latest position",
                )
                assert set(watch.latest) == mine, "positions of another team leaked"
                assert {e["id"] for e in watch.presence} <= mine, "presence of another team leaked"
                assert {w["id"] for w in watch.snapshot["workers"]} == mine
        assert not any(device.errors for device in devices.values())
        for team_watches in watches.values():
            for watch in team_watches:
                await watch.stop()

    asyncio.run(scenario())
    logs = "".join(path.read_text() for path in cluster.workdir.glob("*.log"))
    assert '"GET /ws/worker/ HTTP/1.1" 101' in logs  # the logs are the ones that saw the traffic
    for team in teams:
        for worker in team["workers"]:
            assert worker["token"] not in logs


@pytest.mark.parametrize("cluster", ["redis", "kafka"], indirect=True)
def test_sigkill_of_a_replica_loses_nothing_for_managers_on_the_survivor(cluster):
    (team,) = provision(cluster, teams=1, workers=12)
    survivor = cluster.replica_url(1)

    async def scenario():
        headers = login(survivor, team["managers"][0], PASSWORD)
        watch = await ManagerWatch(ws(survivor), team["slug"], headers).start()
        devices = {w["id"]: Device(ws(cluster.url), w["token"], lat=5.0) for w in team["workers"]}
        for device in devices.values():
            device.start()
        await wait_until(
            lambda: len(watch.latest) == 12, 10, "not every worker reached the survivor"
        )
        assert watch.online() == set(devices)

        watch.longest_gap.clear()
        cluster.signal_replica(0)  # a crash: no goodbye from replica 0
        killed_at = time.monotonic()
        await wait_until(
            lambda: all(watch.received_at[i] > killed_at + 0.5 for i in devices),
            15,
            "some workers never came back through nginx to the survivor",
        )
        recovered = max(watch.received_at[i] for i in devices) - killed_at
        assert all(device.connections >= 1 for device in devices.values())
        assert sum(device.connections for device in devices.values()) > 12, (
            "no device was on the killed replica; the test proved nothing"
        )
        # Workers that were on the survivor all along never paused for its managers.
        stayed = [i for i, device in devices.items() if device.connections == 1]
        assert stayed, "every device was on the killed replica"
        assert max(watch.longest_gap[i] for i in stayed) < 1.0
        # Leases of the dead replica expire (3 s here) without showing anyone offline,
        # because every worker holds a live lease on the survivor by then.
        await asyncio.sleep(4.5)
        assert watch.online() == set(devices), "a reconnected worker was shown offline"
        late = await ManagerWatch(ws(survivor), team["slug"], headers).start()
        assert {w["id"] for w in late.snapshot["workers"] if w["online"]} == set(devices)

        for device in devices.values():
            await device.stop()
        await wait_until(lambda: watch.online() == set(), 10, "ghost workers stayed online")
        await watch.stop()
        await late.stop()
        return recovered

    recovered = asyncio.run(scenario())
    print(f"workers of the killed replica were back on the survivor {recovered:.1f} s later")


@pytest.mark.parametrize("cluster", ["redis", "kafka"], indirect=True)
def test_a_dead_replicas_workers_turn_offline_when_they_do_not_come_back(cluster):
    (team,) = provision(cluster, teams=1, workers=1)
    (worker,) = team["workers"]

    async def scenario():
        headers = login(cluster.replica_url(1), team["managers"][0], PASSWORD)
        watch = await ManagerWatch(ws(cluster.replica_url(1)), team["slug"], headers).start()
        # The device talks to replica 0 directly, so it cannot reconnect anywhere once 0 dies.
        device = Device(ws(cluster.replica_url(0)), worker["token"], lat=1.0)
        device.start()
        await wait_until(lambda: worker["id"] in watch.online(), 5, "worker never came online")
        cluster.signal_replica(0)
        killed_at = time.monotonic()
        await wait_until(lambda: worker["id"] not in watch.online(), 10, "ghost worker")
        took = time.monotonic() - killed_at
        await device.stop()
        await watch.stop()
        return took

    took = asyncio.run(scenario())
    assert took < 3 + 3 / 3 + 2  # lease TTL + one renewal period + slack
    print(f"the dead replica's worker was shown offline {took:.1f} s after the kill")


def test_a_worker_s_last_position_survives_its_replica_being_killed_through_acks(cluster):
    """The device keeps what was not acknowledged and resends it after reconnecting: a last
    position sent to a replica that died before relaying it still reaches the maps."""
    (team,) = provision(cluster, teams=1, workers=1)
    (worker,) = team["workers"]
    dying, survivor = cluster.replica_url(0), cluster.replica_url(1)
    bearer = {"Authorization": f"Bearer {worker['token']}"}

    async def scenario():
        headers = login(survivor, team["managers"][0], PASSWORD)
        watch = await ManagerWatch(ws(survivor), team["slug"], headers).start()
        unacked = {}
        async with websockets.connect(
            f"{ws(dying)}/ws/worker/", additional_headers=bearer
        ) as device:
            unacked[1] = {"lat": 1.0, "lng": 1.0, "ts": time.time(), "seq": 1}
            await device.send(json.dumps(unacked[1]))
            del unacked[(await next_frame(device, "ack"))["seq"]]
            # The replica hangs, takes the worker's last position into its socket buffer, dies.
            cluster.replicas[0].send_signal(signal.SIGSTOP)
            unacked[2] = {"lat": 2.0, "lng": 1.0, "ts": time.time(), "seq": 2}
            await device.send(json.dumps(unacked[2]))
            cluster.signal_replica(0)
            with pytest.raises(websockets.ConnectionClosed):
                await next_frame(device, "ack")
        assert list(unacked) == [2]
        async with websockets.connect(
            f"{ws(survivor)}/ws/worker/", additional_headers=bearer
        ) as device:
            await device.send(json.dumps({"type": "batch", "positions": list(unacked.values())}))
            assert await next_frame(device, "ack") == {"type": "ack", "seq": 2}
            await wait_until(
                lambda: watch.latest.get(worker["id"], {}).get("lat") == 2.0, 5, "the last position"
            )
        await watch.stop()

    asyncio.run(scenario())


def test_a_killed_replica_leaves_no_group_membership_or_lease_behind(cluster):
    (team,) = provision(cluster, teams=1, workers=2)
    (on_dead, on_survivor) = team["workers"]
    prefix = cluster.env["REDIS_PREFIX"]
    team_channel = f"{prefix}-layer__group__team.{team['id']}"
    relays_channel = f"{prefix}-layer__group__relays"
    leases = f"{prefix}:state:leases:{team['id']}"

    async def scenario():
        redis = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))

        async def subscribers():
            return dict(await redis.pubsub_numsub(team_channel, relays_channel))

        watches, devices = [], []
        for index, worker in enumerate((on_dead, on_survivor)):
            replica = cluster.replica_url(index)
            headers = login(replica, team["managers"][0], PASSWORD)
            watches.append(await ManagerWatch(ws(replica), team["slug"], headers).start())
            # Each device talks to its replica directly: the dead one's cannot come back.
            devices.append(Device(ws(replica), worker["token"], lat=1.0 + index))
        for device in devices:
            device.start()
        survivor_watch = watches[1]
        await wait_until(lambda: len(survivor_watch.online()) == 2, 5, "both workers online")
        assert await subscribers() == {team_channel.encode(): 2, relays_channel.encode(): 2}
        assert await redis.zcard(leases) == 2

        cluster.signal_replica(0)
        for _ in range(100):  # Redis drops a dead connection's subscriptions as it notices
            if await subscribers() == {team_channel.encode(): 1, relays_channel.encode(): 1}:
                break
            await asyncio.sleep(0.1)
        assert await subscribers() == {team_channel.encode(): 1, relays_channel.encode(): 1}
        # Its worker's lease expires and is reaped: shown offline, and gone from Redis.
        await wait_until(
            lambda: survivor_watch.online() == {on_survivor["id"]}, 10, "a ghost worker stayed"
        )
        assert await redis.zcard(leases) == 1
        for client in [*devices, survivor_watch]:
            await client.stop()
        assert isinstance(watches[0].task.exception(), websockets.ConnectionClosed)
        await redis.aclose()

    asyncio.run(scenario())


@pytest.mark.skipif(
    not (shutil.which("docker-compose") or shutil.which("docker")),
    reason="no docker client on this machine to parse compose.yaml",
)
def test_compose_file_is_valid():
    commands = [["docker-compose", "config"], ["docker", "compose", "config"]]
    for command in commands:
        if shutil.which(command[0]):
            env = {**os.environ, "SECRET_KEY": "compose-config-check-only"}
            env.pop("POSTGRES_PASSWORD", None)
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            if "is not a docker command" in result.stderr:
                continue  # the docker client without its compose plugin
            assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr, (
                "compose starts PostgreSQL with a default password"
            )
            env["POSTGRES_PASSWORD"] = "compose-config-check-only"
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            for service in (
                "nginx:",
                "web:",
                "migrate:",
                "prune-history:",
                "redis:",
                "postgres:",
                "kafka:",
            ):
                assert f"  {service}" in result.stdout
            assert "replicas: 3" in result.stdout
            # With the kafka profile too; its broker keeps its data in a volume and is healthy
            # only when it answers a client.
            kafka = [*command[:-1], "--profile", "kafka", "config"]
            result = subprocess.run(kafka, cwd=ROOT, env=env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            for needle in ("kafka-data", "/var/lib/kafka/data", "CLUSTER_ID", "kafka-broker-api"):
                assert needle in result.stdout, needle
            # docker-compose 1.29 has no optional dependency (`required: false`): web depending
            # on the profiled kafka service makes `up` without the profile fail.
            text = (ROOT / "compose.yaml").read_text()
            web = re.search(r"^  web:\n((?:    .*\n|\n)*)", text, re.M)[1]
            depends_on = re.search(r"^    depends_on:\n((?:      .*\n)*)", web, re.M)[1]
            assert "kafka" not in depends_on
            return
    pytest.skip("neither docker-compose nor the docker compose plugin is installed")


@pytest.mark.parametrize("cluster", ["kafka"], indirect=True)
def test_kafka_broker_restart_under_load_recovers_without_restarting_replicas(
    cluster, kafka_broker
):
    (team,) = provision(cluster, teams=1, workers=6)
    replica_a, replica_b = cluster.replica_url(0), cluster.replica_url(1)

    async def scenario():
        headers = login(replica_b, team["managers"][0], PASSWORD)
        watch = await ManagerWatch(ws(replica_b), team["slug"], headers).start()
        devices = [Device(ws(replica_a), w["token"], lat=3.0) for w in team["workers"]]
        for device in devices:
            device.start()
        await wait_until(lambda: len(watch.latest) == 6, 10, "positions never crossed replicas")
        kafka_broker.stop()
        await asyncio.sleep(3)
        kafka_broker.start()
        back_at = time.monotonic()
        await wait_until(
            lambda: all(watch.received_at[w["id"]] > back_at for w in team["workers"]),
            30,
            "managers never got positions again after the broker came back",
        )
        recovered = max(watch.received_at.values()) - back_at
        for device in devices:
            await device.stop()
        await watch.stop()
        return recovered

    recovered = asyncio.run(scenario())
    assert all(process.poll() is None for process in cluster.replicas), "a replica died"
    print(f"managers saw every worker again {recovered:.1f} s after the broker came back")
