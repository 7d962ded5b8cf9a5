"""The phone apps' protocols on real processes: through nginx (its port for Traccar Client
too) to two replicas relayed through Redis, and a 200 that is a promise when Redis goes away."""

import asyncio
import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from deploy.cluster import LocalCluster
from tests.e2e.clients import ManagerWatch, wait_until
from tests.e2e.conftest import PASSWORD, login, provision

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def ws(url: str) -> str:
    return url.replace("http", "ws", 1)


def request(url: str, *, data: bytes | None = None, headers: dict | None = None, timeout=15):
    """Return the status and body of a request, whatever the status."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, headers=headers or {}), timeout=timeout
        ) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def osmand_query(token: str, lat: float, ts: float) -> str:
    return urllib.parse.urlencode(
        {"id": token, "lat": lat, "lon": 2.16, "timestamp": int(ts), "speed": 2.0, "batt": 80}
    )


def owntracks(base: str, token: str, message: dict):
    credentials = base64.b64encode(f"worker:{token}".encode()).decode()
    return request(
        f"{base}/owntracks/",
        data=json.dumps(message).encode(),
        headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
    )


def test_phone_apps_reach_every_map_through_nginx_and_no_token_reaches_a_log(cluster):
    (team,) = provision(cluster, teams=1, workers=3)
    traccar, traccar_json, phone = team["workers"]
    replicas = [cluster.replica_url(i) for i in range(2)]
    logins = [login(replica, team["managers"][0], PASSWORD) for replica in replicas]
    now = time.time()

    async def scenario():
        watches = [
            await ManagerWatch(ws(replica), team["slug"], headers).start()
            for replica, headers in zip(replicas, logins, strict=True)
        ]
        # Traccar Client on its default port: every parameter in the query string of an empty POST.
        status, body = await asyncio.to_thread(
            request,
            f"http://127.0.0.1:{cluster.osmand_port}/?{osmand_query(traccar['token'], 10.0, now)}",
            data=b"",
        )
        assert (status, body) == (200, b"")
        # Traccar Client 9's JSON body, through the main port.
        json_body = {
            "device_id": traccar_json["token"],
            "location": {
                "timestamp": "2025-11-26T09:39:50Z",
                "coords": {"latitude": 20.0, "longitude": 2.0, "speed": 1.0},
            },
        }
        status, _ = await asyncio.to_thread(
            request,
            f"{cluster.url}/osmand/",
            data=json.dumps(json_body).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert status == 200
        # OwnTracks, twice: nginx's least_conn sends the requests to either replica.
        for lat in (30.0, 30.5):
            location = {"_type": "location", "lat": lat, "lon": 2.0, "tst": int(now), "tid": "ph"}
            status, body = await asyncio.to_thread(owntracks, cluster.url, phone["token"], location)
            assert (status, json.loads(body)) == (200, [])
        expected = {traccar["id"]: 10.0, traccar_json["id"]: 20.0, phone["id"]: 30.0}
        for watch in watches:
            await wait_until(
                lambda watch=watch: (
                    {i: watch.latest.get(i, {}).get("lat") for i in expected} == expected
                ),
                10,
                "a map on one of the replicas missed a phone's position",
            )
        # An lwt takes the worker offline on every map, whichever replicas held its uploads.
        status, _ = await asyncio.to_thread(
            owntracks, cluster.url, phone["token"], {"_type": "lwt", "tst": int(now)}
        )
        assert status == 200
        for watch in watches:
            await wait_until(
                lambda watch=watch: any(
                    p["id"] == phone["id"] and not p["online"] for p in watch.presence
                ),
                10,
                "the lwt did not take the worker offline on a map",
            )
        for watch in watches:
            await watch.stop()

    asyncio.run(scenario())

    # Unknown devices: 403 (OsmAnd) and 401 (OwnTracks), and no token in any log.
    guess = "tt_guessed-token-never-issued"
    assert request(f"{cluster.url}/osmand/?{osmand_query(guess, 1.0, now)}")[0] == 403
    assert owntracks(cluster.url, guess, {"_type": "location"})[0] == 401
    assert request(f"{cluster.url}/osmand/?{osmand_query(traccar['token'], 95.0, now)}")[0] == 400
    logs = "".join(path.read_text() for path in cluster.workdir.glob("*.log"))
    assert "/osmand/" in logs, "the requests were not logged at all"
    for secret in (traccar["token"], traccar_json["token"], phone["token"], guess):
        assert secret not in logs


def test_an_upload_is_answered_200_only_once_redis_took_it(private_redis, tmp_path):
    """While Redis is away an upload is not answered 200 (the app keeps it); once Redis is
    back, the app's retry is answered 200 and the position is on the map and in snapshots."""
    env = {
        "REDIS_URL": private_redis.url,
        "REDIS_PREFIX": "e2e-phones",
        "PRESENCE_TTL_SECONDS": "3",
    }
    cluster = LocalCluster(replicas=1, layer="redis", workdir=tmp_path, env=env)
    cluster.start()
    try:
        (team,) = provision(cluster, teams=1, workers=1)
        (worker,) = team["workers"]
        replica = cluster.replica_url(0)
        now = time.time()
        assert request(f"{replica}/osmand/?{osmand_query(worker['token'], 1.0, now)}")[0] == 200

        private_redis.stop()
        lost = osmand_query(worker["token"], 2.0, now + 1)
        status, body = request(f"{replica}/osmand/?{lost}", timeout=30)
        assert status == 503, (status, body)

        private_redis.start()  # back, and empty
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the app retries until it is answered 200
            status, _ = request(f"{replica}/osmand/?{lost}", timeout=30)
            if status == 200:
                break
            time.sleep(1)
        assert status == 200, "the retry was never answered 200 after Redis came back"
        headers = login(replica, team["managers"][0], PASSWORD)

        async def snapshot():
            watch = await ManagerWatch(ws(replica), team["slug"], headers).start()
            await watch.stop()
            return watch.snapshot

        (entry,) = [w for w in asyncio.run(snapshot())["workers"] if w["id"] == worker["id"]]
        assert (entry["lat"], entry["ts"]) == (2.0, int(now + 1))
        assert cluster.replicas[0].poll() is None
    finally:
        cluster.stop()


def test_uploads_share_the_replicas_database_connection(postgres_database, tmp_path):
    """Each upload's token lookup runs on the replica's one database thread, as the sockets'
    do: a connection per request (Django's ASGI path) used up PostgreSQL's in a minute."""
    cluster = LocalCluster(
        replicas=1, layer="memory", workdir=tmp_path, database_url=postgres_database.url
    )
    cluster.start()
    try:
        (team,) = provision(cluster, teams=1, workers=2)
        osmand_phone, owntracks_phone = team["workers"]
        replica = cluster.replica_url(0)
        now = time.time()
        before = postgres_database.sessions_opened()
        for second in range(40):
            query = osmand_query(osmand_phone["token"], 1.0 + second / 1000, now - 100 + second)
            assert request(f"{replica}/osmand/?{query}")[0] == 200
            location = {"_type": "location", "lat": 1.0, "lon": 2.0, "tst": int(now) - 100 + second}
            assert owntracks(replica, owntracks_phone["token"], location)[0] == 200
        opened = postgres_database.sessions_opened() - before
        assert opened <= 2, f"80 uploads opened {opened} PostgreSQL sessions"
    finally:
        cluster.stop()
