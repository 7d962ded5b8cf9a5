"""An ack is a promise, on real processes: a position sent while Redis is down is not
acknowledged; once Redis is back the device's resend is acknowledged and on the map."""

import asyncio
import json
import time

import pytest
import websockets

from deploy.cluster import LocalCluster
from tests.e2e.clients import ManagerWatch, next_frame, wait_until
from tests.e2e.conftest import PASSWORD, login, provision

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

OUTAGE_SILENCE = 3.0  # seconds without an ack while Redis is down (30 windows)


def ws(url: str) -> str:
    return url.replace("http", "ws", 1)


async def acks_within(device, seconds: float) -> list[int]:
    acks = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                frame = json.loads(await device.recv())
                if frame["type"] == "ack":
                    acks.append(frame["seq"])
    except TimeoutError:
        pass
    return acks


async def first_snapshot(url: str, slug: str, headers: dict) -> dict:
    async with websockets.connect(f"{ws(url)}/ws/teams/{slug}/", additional_headers=headers) as s:
        return await next_frame(s, "snapshot")


def test_a_position_sent_while_redis_is_down_is_acknowledged_only_after_its_resend_is_taken(
    private_redis, tmp_path
):
    env = {"REDIS_URL": private_redis.url, "REDIS_PREFIX": "e2e-acks", "PRESENCE_TTL_SECONDS": "3"}
    cluster = LocalCluster(replicas=1, layer="redis", workdir=tmp_path, env=env)
    cluster.start()
    try:
        (team,) = provision(cluster, teams=1, workers=1)
        (worker,) = team["workers"]
        replica = cluster.replica_url(0)
        headers = login(replica, team["managers"][0], PASSWORD)
        bearer = {"Authorization": f"Bearer {worker['token']}"}

        async def scenario():
            watch = await ManagerWatch(ws(replica), team["slug"], headers).start()
            async with websockets.connect(
                f"{ws(replica)}/ws/worker/", additional_headers=bearer
            ) as device:
                await device.send(json.dumps({"lat": 1.0, "lng": 1.0, "ts": time.time(), "seq": 1}))
                assert await acks_within(device, 2.0) == [1]

                private_redis.stop()
                lost = {"lat": 2.0, "lng": 1.0, "ts": time.time(), "seq": 2}
                await device.send(json.dumps(lost))
                assert await acks_within(device, OUTAGE_SILENCE / 2) == []
                await device.send(json.dumps(lost))  # resent while still down
                assert await acks_within(device, OUTAGE_SILENCE / 2) == []

                private_redis.start()  # back, and empty
                deadline = time.monotonic() + 20
                acked = []
                while 2 not in acked and time.monotonic() < deadline:
                    await device.send(json.dumps(lost))  # the device resends until acked
                    acked += await acks_within(device, 1.0)
                assert 2 in acked, "the resend was never acknowledged after Redis came back"
            await wait_until(
                lambda: watch.latest.get(worker["id"], {}).get("lat") == 2.0,
                10,
                "the acknowledged position never reached the map",
            )
            await watch.stop()
            snapshot = await first_snapshot(replica, team["slug"], headers)
            (entry,) = [w for w in snapshot["workers"] if w["id"] == worker["id"]]
            assert (entry["lat"], entry["ts"]) == (2.0, lost["ts"])

        asyncio.run(scenario())
        assert cluster.replicas[0].poll() is None  # nothing was restarted
    finally:
        cluster.stop()
