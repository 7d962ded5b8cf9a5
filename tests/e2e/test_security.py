"""Hostile input and credential handling on real processes: daphne alone, and nginx over replicas.

What a client can get wrong or try on purpose, over real sockets: bad frames get their documented
error code and relay nothing, messages over daphne's limit are cut off by daphne, never a 1011 or a
traceback; tokens never reach a log; /metrics is not served through nginx; neither socket takes
the other's credentials; and every production start of daphne sets its size limits.
"""

import asyncio
import http.client
import importlib.metadata
import json
import re
import secrets
import time
import uuid
from pathlib import Path

import pytest
import websockets
from django.conf import settings
from packaging.version import Version

from deploy import cluster as cluster_module
from deploy.cluster import DAPHNE_MAX_MESSAGE_BYTES, LocalCluster, login
from tests.e2e.conftest import PASSWORD
from tracking import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def ws(url: str) -> str:
    return url.replace("http", "ws", 1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def next_frame(socket, timeout: float = 5) -> dict:
    """Return the next frame from the server but acks (positions with a seq are acknowledged)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            if frame.get("type") != "ack":
                return frame


async def closed_with(socket, timeout: float = 5, frames: list | None = None) -> int | None:
    """Wait for the server to close the socket; return its close code (None: no close frame)."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                text = await socket.recv()
                if frames is not None:
                    frames.append(text)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


async def handshake_status(url: str, headers: dict[str, str]) -> int:
    """Try to open a socket; return the HTTP status of a refused handshake (101 if it opened)."""
    try:
        async with websockets.connect(url, additional_headers=headers):
            return 101
    except websockets.InvalidStatus as refused:
        return refused.response.status_code


async def ignored_or_refused(url: str) -> int | None:
    """Open a socket and wait, sending nothing; return its close code or refused HTTP status."""
    try:
        async with websockets.connect(url) as socket:
            return await closed_with(socket, timeout=protocol.AUTH_TIMEOUT + 5)
    except websockets.InvalidStatus as refused:
        return refused.response.status_code


class Recorder:
    """A manager socket that keeps every frame it receives, from a task of its own."""

    def __init__(self, socket):
        self.socket = socket
        self.frames: list[dict] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            async for text in self.socket:
                self.frames.append(json.loads(text))
        except websockets.ConnectionClosed:
            pass

    def positions(self) -> list[dict]:
        return [p for f in self.frames if f["type"] == "positions" for p in f["positions"]]

    async def wait_for_positions(self, timeout: float = 5) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not self.positions():
            assert time.monotonic() < deadline, f"no positions frame in {timeout} s"
            await asyncio.sleep(0.05)
        return self.positions()


# ---------------------------------------------------------------- bad input on real daphne


# How long a worker's spent frame budget takes to refill (tracking.limits, default settings).
REFILL_SECONDS = settings.TEAMTRACK_WORKER_FRAME_BURST / settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND


def bad_frames(now: float) -> list[list[tuple[str, object, str]]]:
    """(what, frame, expected error code), in two rounds that each stay inside the device
    socket's frame burst (tracking.limits), so that the rate limit does not answer instead."""
    position = {"lat": 41.39, "lng": 2.16, "ts": now}
    head = '{"lat": 95, "lng": 2.16, "ts": 1700000000, "pad": "'
    return [
        [
            ("binary frame", b"\x00\x01\x02{}", "binary_frame"),
            ("malformed JSON", '{"lat": 41.39, "lng":', "invalid_json"),
            ("deep nesting", "[" * 100_000, "invalid_json"),
            (
                "deep nesting inside a position",
                json.dumps(position)[:-1] + ', "x": ' + "[" * 60_000 + "]" * 60_000 + "}",
                "invalid_json",
            ),
            ("not an object", "[41.39, 2.16]", "invalid_frame"),
            ("unknown type", {"type": "teleport", **position}, "invalid_frame"),
            ("lat as a string", {**position, "lat": "41.39"}, "invalid_field"),
            ("lat as a boolean", {**position, "lat": True}, "invalid_field"),
            ("no ts", {"lat": 41.39, "lng": 2.16}, "invalid_field"),
            ("seq as a float", {**position, "seq": 1.5}, "invalid_field"),
        ],
        [
            ("NaN literal", '{"lat": NaN, "lng": 2.16, "ts": 1700000000}', "not_finite"),
            ("Infinity literal", '{"lat": 1, "lng": -Infinity, "ts": 1700000000}', "not_finite"),
            ("number too large for a float", '{"lat": 1e400, "lng": 2, "ts": 1}', "not_finite"),
            ("lat out of range", {**position, "lat": 90.000001}, "out_of_range"),
            ("lng out of range", {**position, "lng": -180.5}, "out_of_range"),
            ("negative ts", {**position, "ts": -1}, "out_of_range"),
            ("ts an hour ahead", {**position, "ts": now + 3600}, "invalid_ts"),
            (
                "batch of 501",
                {"type": "batch", "positions": [position] * (protocol.MAX_BATCH_POSITIONS + 1)},
                "batch_too_large",
            ),
            (
                "batch with one bad position",
                {"type": "batch", "positions": [position, position, {**position, "lat": 91}]},
                "out_of_range",
            ),
            ("frame over the application's limit", "x" * 200_000, "frame_too_large"),
            (
                # Within the limit in characters but 4 bytes each: daphne still lets it through.
                "frame at the limit in 4-byte characters",
                head + "\U0001f600" * (protocol.MAX_FRAME_CHARS - len(head) - 2) + '"}',
                "out_of_range",
            ),
        ],
    ]


def test_bad_input_gets_its_error_code_keeps_the_socket_and_relays_nothing(server):
    token = server.start_daphne(alpha="ann")["alpha"]
    good_token = server.manage("addworker", "alpha", "good worker").splitlines()[-1]
    ann = server.login("ann", PASSWORD)
    close_codes, cut_codes = [], []

    async def scenario():
        async with websockets.connect(
            f"{server.ws_base}/ws/teams/alpha/", additional_headers=ann
        ) as manager_socket:
            snapshot = await next_frame(manager_socket)
            ids = {worker["name"]: worker["id"] for worker in snapshot["workers"]}
            manager = Recorder(manager_socket)
            for round_number, frames in enumerate(bad_frames(time.time())):
                if round_number:  # a worker's frame budget outlives its sockets until refilled
                    await asyncio.sleep(REFILL_SECONDS)
                async with websockets.connect(
                    f"{server.ws_base}/ws/worker/", additional_headers=bearer(token)
                ) as worker:
                    for what, frame, code in frames:
                        await worker.send(
                            frame if isinstance(frame, str | bytes) else json.dumps(frame)
                        )
                        reply = await next_frame(worker)
                        assert (reply["type"], reply["code"]) == ("error", code), what
                        assert reply["detail"], what
                    # Still open and answering: a second auth frame is refused, not relayed.
                    await worker.send(json.dumps({"type": "auth", "token": token}))
                    assert (await next_frame(worker))["code"] == "invalid_frame"
                close_codes.append(worker.close_code)

            # Over daphne's own limit, in one frame or in fragments: daphne cuts the connection
            # (see test_daphne_closes_a_message_over_its_limit_with_1009 for how).
            for message in over_daphnes_limit():
                async with websockets.connect(
                    f"{server.ws_base}/ws/worker/", additional_headers=bearer(token)
                ) as worker:
                    cut_codes.append(await send_until_closed(worker, message))
            assert cut_codes == [None, None] or cut_codes == [1009, 1009], cut_codes

            # Before authentication, any bad first frame closes the socket as unauthenticated.
            for first in (b"\x00", "[" * 100_000, '{"lat": NaN}', json.dumps({"lat": 1})):
                async with websockets.connect(f"{server.ws_base}/ws/worker/") as stranger:
                    await stranger.send(first)
                    close_codes.append(await closed_with(stranger))
            assert close_codes[-4:] == [protocol.CLOSE_UNAUTHENTICATED] * 4

            await asyncio.sleep(0.5)  # five flush windows: anything relayed would be here
            assert manager.positions() == []
            async with websockets.connect(
                f"{server.ws_base}/ws/worker/", additional_headers=bearer(good_token)
            ) as good:
                await good.send(json.dumps({"lat": 12.5, "lng": 2.5, "ts": time.time(), "seq": 1}))
                positions = await manager.wait_for_positions()
            assert [(p["id"], p["lat"]) for p in positions] == [(ids["good worker"], 12.5)]
            assert {f["type"] for f in manager.frames} == {"presence", "positions"}
            await manager_socket.close()
            await manager.task

    asyncio.run(scenario())
    assert 1011 not in close_codes and None not in close_codes, close_codes
    assert 1011 not in cut_codes
    output = server.output()
    assert "Traceback" not in output, output[-3000:]
    assert token not in output and good_token not in output


def over_daphnes_limit() -> list:
    """A message just over daphne's limit in one frame, and one over it in three fragments."""
    return ["x" * (DAPHNE_MAX_MESSAGE_BYTES + 1), ["x" * (DAPHNE_MAX_MESSAGE_BYTES // 2)] * 3]


async def send_until_closed(socket, message) -> int | None:
    """Send a message the server will not take; return the close code (None: no close frame)."""
    try:
        await socket.send(message)
    except websockets.ConnectionClosed:
        pass
    return await closed_with(socket, timeout=3)


def test_auth_frame_with_a_token_that_is_not_utf8_is_refused_4401(server):
    # A lone surrogate, sent as the JSON escape \ud800, once reached the token's hash, whose
    # UnicodeEncodeError closed the socket with 1011 and logged a traceback.
    server.start_daphne(alpha="ann")

    async def scenario():
        async with websockets.connect(f"{server.ws_base}/ws/worker/") as stranger:
            await stranger.send('{"type": "auth", "token": "tt_\\ud800"}')
            return await closed_with(stranger)

    assert asyncio.run(scenario()) == protocol.CLOSE_UNAUTHENTICATED
    assert "Traceback" not in server.output()


# ---------------------------------------------------------------- through nginx


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """nginx over two replicas on Redis, logging at DEBUG, shared by the tests below; each test
    makes a team of its own."""
    env = {"LOG_LEVEL": "DEBUG", "REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}"}
    cluster = LocalCluster(replicas=2, workdir=tmp_path_factory.mktemp("proxied"), env=env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def add_team(cluster, slug: str, *workers: str) -> dict[str, str]:
    """Create a team managed by `<slug>-boss`; return its workers' tokens by name."""
    cluster.manage("addteam", slug, "--manager", f"{slug}-boss", "--password", PASSWORD)
    return {name: cluster.manage("addworker", slug, name).splitlines()[-1] for name in workers}


def shell(cluster, code: str) -> str:
    """Run Python in `manage.py shell` against the cluster (there is no command for it)."""
    return cluster.manage("shell", "--no-imports", "-c", code).strip()


def test_tokens_never_appear_in_any_log(proxied):
    tokens = add_team(proxied, "logs", "header", "frame", "query", "rotated", "revoked")
    boss = login(proxied.url, "logs-boss", PASSWORD)
    secrets_seen = {*tokens.values(), PASSWORD, boss["Cookie"].partition("=")[2]}
    worker_url = f"{ws(proxied.url)}/ws/worker/"
    unknown = "tt_" + secrets.token_urlsafe(32)
    secrets_seen.add(unknown)

    async def open_by_header(token):
        socket = await websockets.connect(worker_url, additional_headers=bearer(token))
        await socket.send(json.dumps({"lat": 1.0, "lng": 1.0, "ts": time.time(), "seq": 1}))
        return socket

    async def open_by_frame(token):
        socket = await websockets.connect(worker_url)
        await socket.send(json.dumps({"type": "auth", "token": token}))
        await socket.send(json.dumps({"lat": 2.0, "lng": 2.0, "ts": time.time(), "seq": 1}))
        return socket

    def rotate(name: str) -> str:
        return shell(
            proxied,
            "from teams.models import Worker; from teams import services; "
            f"print(services.worker_token_rotate(worker=Worker.objects.get(name={name!r})))",
        )

    def revoke(name: str) -> None:
        shell(
            proxied,
            "from teams.models import Worker; from teams import services; "
            f"services.worker_token_revoke(worker=Worker.objects.get(name={name!r}))",
        )

    async def scenario():
        async with websockets.connect(
            f"{ws(proxied.url)}/ws/teams/logs/", additional_headers=boss
        ) as manager_socket:
            await next_frame(manager_socket)
            manager = Recorder(manager_socket)
            header = await open_by_header(tokens["header"])
            frame = await open_by_frame(tokens["frame"])
            rotated = await open_by_header(tokens["rotated"])
            revoked = await open_by_frame(tokens["revoked"])
            await manager.wait_for_positions()
            # A valid token in the query string is ignored: no auth frame follows, so 4401 in 5 s.
            # A valid token in the query string is ignored: no auth frame follows, so 4401 in 5 s
            # (or nginx refuses the URL outright, which keeps it out of its error log).
            in_query = [
                asyncio.ensure_future(ignored_or_refused(f"{worker_url}?{query}"))
                for query in (f"token={tokens['query']}", f"access_token={tokens['query']}&x=1")
            ]
            bad_header = await websockets.connect(worker_url, additional_headers=bearer(unknown))
            bad_frame = await websockets.connect(worker_url)
            await bad_frame.send(json.dumps({"type": "auth", "token": unknown}))
            assert await closed_with(bad_header) == protocol.CLOSE_UNAUTHENTICATED
            assert await closed_with(bad_frame) == protocol.CLOSE_UNAUTHENTICATED

            new_token = await asyncio.to_thread(rotate, "rotated")
            assert new_token.startswith("tt_") and new_token != tokens["rotated"]
            secrets_seen.add(new_token)
            assert await closed_with(rotated) == protocol.CLOSE_UNAUTHENTICATED
            await asyncio.to_thread(revoke, "revoked")
            assert await closed_with(revoked) == protocol.CLOSE_UNAUTHENTICATED
            again = await open_by_header(new_token)
            for outcome in await asyncio.gather(*in_query):
                assert outcome in (protocol.CLOSE_UNAUTHENTICATED, 400), outcome
            for socket in (header, frame, again):
                await socket.close()
            await manager_socket.close()
            await manager.task

    asyncio.run(scenario())
    time.sleep(0.5)  # nginx writes a socket's access line when it closes

    files = [path for path in proxied.workdir.rglob("*") if path.is_file()]
    logs = {path.name for path in files if path.suffix == ".log"}
    assert {"nginx-access.log", "nginx-error.log", "replica-0.log", "replica-1.log"} <= logs
    access = (proxied.workdir / "nginx-access.log").read_text()
    assert re.search(r'"GET /ws/worker/ HTTP/1\.1" 101', access), access[-2000:]
    assert "/ws/worker/?" not in access and "token=" not in access
    device_tokens = {secret for secret in secrets_seen if secret.startswith("tt_")}
    for path in files:
        content = path.read_bytes()
        # The database holds session keys by design, and only hashes of device tokens.
        for secret in device_tokens if path.name.startswith("db.sqlite3") else secrets_seen:
            if path.name == "nginx-error.log" and secret == tokens["query"]:
                continue  # test_a_token_in_a_url_stays_out_of_the_nginx_error_log
            assert secret.encode() not in content, f"a secret is in {path.name}"


def test_a_token_in_a_url_stays_out_of_the_nginx_error_log(proxied):
    token = add_team(proxied, "urltoken", "device")["device"]

    async def scenario():
        try:
            async with websockets.connect(f"{ws(proxied.url)}/ws/worker/?token={token}") as socket:
                await socket.send(json.dumps({"lat": 1, "lng": 1, "ts": time.time()}))
                assert await closed_with(socket) == protocol.CLOSE_UNAUTHENTICATED
        except websockets.InvalidStatus as refused:  # refusing such URLs in nginx is fine too
            assert refused.response.status_code == 400

    asyncio.run(scenario())
    time.sleep(0.5)
    assert token not in (proxied.workdir / "nginx-error.log").read_text()


def test_a_token_in_an_http_url_stays_out_of_the_replica_logs(proxied):
    token = add_team(proxied, "httptoken", "device")["device"]
    for path in (f"/healthz?token={token}", f"/?token={token}"):
        connection = http.client.HTTPConnection("127.0.0.1", proxied.port, timeout=5)
        connection.request("GET", path)
        connection.getresponse().read()
        connection.close()
    access = (proxied.workdir / "nginx-access.log").read_text()
    assert "GET /healthz HTTP/1.1" in access and token not in access
    for index in range(len(proxied.replicas)):
        assert token not in proxied.log_path(f"replica-{index}").read_text()


@pytest.mark.parametrize(
    "path", ["/metrics", "/metrics?format=text", "/metrics/", "//metrics", "/%6Detrics"]
)
def test_metrics_is_never_served_through_nginx(proxied, path):
    connection = http.client.HTTPConnection("127.0.0.1", proxied.port, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    assert response.status == 404
    assert "<center>nginx" in body, "the 404 came from a replica, not from nginx"
    # Each replica serves it to the internal network (here: this machine), for Prometheus.
    connection = http.client.HTTPConnection("127.0.0.1", proxied.replica_ports[0], timeout=5)
    connection.request("GET", "/metrics")
    direct = connection.getresponse()
    direct.read()
    connection.close()
    assert direct.status == 200


def test_manager_socket_refuses_foreign_origins_even_with_a_valid_session(proxied):
    add_team(proxied, "origin")
    boss = login(proxied.url, "origin-boss", PASSWORD)
    url = f"{ws(proxied.url)}/ws/teams/origin/"

    async def scenario():
        async with websockets.connect(url, additional_headers=boss) as manager:
            assert (await next_frame(manager))["type"] == "snapshot"
        cookie = {"Cookie": boss["Cookie"]}
        for origin in (
            "http://evil.example",
            "https://evil.example",
            "http://127.0.0.1.evil.example",
            "http://evil.example:" + str(proxied.port),
            "null",
        ):
            status = await handshake_status(url, {**cookie, "Origin": origin})
            assert status == 403, origin
        assert await handshake_status(url, cookie) == 403  # no Origin at all

    asyncio.run(scenario())


def test_a_device_token_is_no_credential_on_the_manager_socket(proxied):
    tokens = add_team(proxied, "tokenonly", "device")
    origin = {"Origin": proxied.url}

    async def scenario():
        url = f"{ws(proxied.url)}/ws/teams/tokenonly/"
        frames = []
        headers = {**origin, **bearer(tokens["device"])}
        async with websockets.connect(url, additional_headers=headers) as socket:
            assert await closed_with(socket, frames=frames) == protocol.CLOSE_UNAUTHENTICATED
        assert frames == []
        # In the URL, nginx refuses it before any replica sees it.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{url}?token={tokens['device']}", additional_headers=origin)
        assert refused.value.response.status_code == 400

    asyncio.run(scenario())


def test_a_manager_session_is_no_credential_on_the_worker_socket(proxied):
    add_team(proxied, "cookieonly", "device")
    boss = login(proxied.url, "cookieonly-boss", PASSWORD)
    session = boss["Cookie"].partition("=")[2]
    url = f"{ws(proxied.url)}/ws/worker/"

    async def waits_for_the_auth_timeout():
        frames = []
        started = time.monotonic()
        async with websockets.connect(url, additional_headers=boss) as socket:
            code = await closed_with(socket, timeout=protocol.AUTH_TIMEOUT + 5, frames=frames)
        return code, time.monotonic() - started, frames

    async def sends_a_position():
        async with websockets.connect(url, additional_headers=boss) as socket:
            await socket.send(json.dumps({"lat": 1, "lng": 1, "ts": time.time()}))
            return await closed_with(socket)

    async def session_as_bearer():
        async with websockets.connect(url, additional_headers={**boss, **bearer(session)}) as s:
            return await closed_with(s)

    async def scenario():
        return await asyncio.gather(
            waits_for_the_auth_timeout(), sends_a_position(), session_as_bearer()
        )

    (code, waited, frames), sent, as_bearer = asyncio.run(scenario())
    assert (code, frames) == (protocol.CLOSE_UNAUTHENTICATED, [])
    assert protocol.AUTH_TIMEOUT - 0.5 <= waited <= protocol.AUTH_TIMEOUT + 3, waited
    assert sent == as_bearer == protocol.CLOSE_UNAUTHENTICATED


def test_a_client_cannot_pick_its_address_with_x_forwarded_for(tmp_path):
    cluster = LocalCluster(
        replicas=2, workdir=tmp_path, env={"REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}"}
    )
    cluster.start()
    try:
        add_team(cluster, "spoof")
        url = f"{ws(cluster.url)}/ws/worker/"
        limit = 30  # FAILED_LOGINS_PER_MINUTE's default, across the replicas

        async def attempt(address: str) -> int | None:
            headers = {**bearer("tt_" + secrets.token_urlsafe(8)), "X-Forwarded-For": address}
            async with websockets.connect(url, additional_headers=headers) as socket:
                return await closed_with(socket)

        async def scenario():
            for index in range(limit):  # spread over both replicas by nginx
                await attempt(f"198.51.100.{index}")
            return [await attempt("203.0.113.9") for _ in range(4)]

        assert asyncio.run(scenario()) == [protocol.CLOSE_RATE_LIMITED] * 4
    finally:
        cluster.stop()


def test_a_client_reaching_a_replica_directly_cannot_pose_as_the_proxy_or_its_networks(
    tmp_path,
):
    # 127.0.0.2 is another host on the replica's network; only nginx's 127.0.0.1 is trusted.
    env = {"TRUSTED_PROXIES": "127.0.0.1", "METRICS_ALLOWED_NETWORKS": "127.0.0.1/32"}
    cluster = LocalCluster(replicas=1, workdir=tmp_path, layer="memory", env=env)
    cluster.start_replica(0)
    try:
        port = cluster.replica_ports[0]

        def get(source: str, headers: dict) -> int:
            connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=10, source_address=(source, 0)
            )
            connection.request("GET", "/metrics", headers=headers)
            status = connection.getresponse().status
            connection.close()
            return status

        assert get("127.0.0.1", {}) == 200  # the allowed network itself is served
        assert get("127.0.0.2", {"X-Forwarded-For": "127.0.0.1"}) == 404
        assert get("127.0.0.2", {"X-Forwarded-For": "127.0.0.1, 127.0.0.1"}) == 404
        # Through the trusted proxy, the forwarded client counts, not the proxy's address.
        assert get("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}) == 404
    finally:
        cluster.stop()


def test_limits_hold_across_replicas(tmp_path):
    """Two replicas on Redis allow what one would: failed logins, a worker's logins, its frames
    and its uploads are counted once, whichever replica each lands on."""
    env = {
        "REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
        "FAILED_LOGINS_PER_MINUTE": "4",
        "WORKER_LOGINS_PER_MINUTE": "6",
        "WORKER_FRAMES_PER_SECOND": "0.2",
        "WORKER_FRAME_BURST": "3",
        # Each safe frame acknowledged at once: `acked` counts the acks until 1.5 s of silence.
        "ACK_INTERVAL_SECONDS": "0",
    }
    cluster = LocalCluster(replicas=2, workdir=tmp_path, env=env)
    cluster.start()
    try:
        tokens = add_team(cluster, "shared", "socket", "phone")
        replicas = [f"{ws(cluster.replica_url(i))}/ws/worker/" for i in range(2)]

        async def login(index: int, token: str):
            return await websockets.connect(replicas[index % 2], additional_headers=bearer(token))

        async def failed_logins() -> list[int | None]:
            codes = []
            for index in range(6):
                async with await login(index, "tt_" + secrets.token_urlsafe(8)) as socket:
                    codes.append(await closed_with(socket))
            return codes

        async def acked(socket, first_seq: int, count: int) -> int:
            """Send `count` frames at once; return how many of them acks covered (cumulative)."""
            for seq in range(first_seq, first_seq + count):
                await socket.send(
                    json.dumps({"lat": 1.0, "lng": 2.0, "ts": time.time(), "seq": seq})
                )
            highest = first_seq - 1
            try:
                while True:
                    frame = json.loads(await asyncio.wait_for(socket.recv(), 1.5))
                    if frame["type"] == "ack":
                        highest = max(highest, frame["seq"])
            except (TimeoutError, websockets.ConnectionClosed):
                return highest - first_seq + 1

        async def logins_and_frames():
            first = await login(0, tokens["socket"])
            burst = await acked(first, 1, 3)
            second = await login(1, tokens["socket"])  # the other replica: it takes over
            replaced = await closed_with(first)
            after_moving = await acked(second, 10, 3)
            codes, previous = [], second
            for index in range(4):  # logins 3 to 6 of the minute, on both replicas
                socket = await login(index, tokens["socket"])
                codes.append(await closed_with(previous, timeout=3))
                previous = socket
            refused = await login(0, tokens["socket"])  # the 7th
            codes.append(await closed_with(refused, timeout=3))
            await previous.close()
            return burst, replaced, after_moving, codes

        assert (
            asyncio.run(failed_logins())
            == [protocol.CLOSE_UNAUTHENTICATED] * 4 + [protocol.CLOSE_RATE_LIMITED] * 2
        )
        burst, replaced, after_moving, codes = asyncio.run(logins_and_frames())
        assert (burst, replaced) == (3, protocol.CLOSE_REPLACED)
        assert after_moving == 1, "a login on another replica bought a fresh burst"
        # Each login replaces the one before, wherever it is; the 7th of the minute is refused.
        assert codes == [protocol.CLOSE_REPLACED] * 4 + [protocol.CLOSE_RATE_LIMITED], codes

        statuses = []
        for index in range(5):  # OsmAnd uploads, alternating between the replicas
            query = f"id={tokens['phone']}&lat=1&lon=2&timestamp={1_764_149_000 + index}"
            connection = http.client.HTTPConnection("127.0.0.1", cluster.replica_ports[index % 2])
            connection.request("GET", f"/osmand/?{query}")
            statuses.append(connection.getresponse().status)
            connection.close()
        assert statuses == [200] * 3 + [429] * 2
    finally:
        cluster.stop()


# ---------------------------------------------------------------- daphne version and limits


def size_flags(command: list[str]) -> dict[str, int]:
    flags = {}
    for flag in ("--websocket-max-message-size", "--websocket-max-frame-size"):
        assert flag in command, f"{flag} missing from {command}"
        flags[flag] = int(command[command.index(flag) + 1])
    return flags


def check_size_flags(command: list[str]) -> None:
    for flag, value in size_flags(command).items():
        # Every frame within the application's limit (characters of up to 4 UTF-8 bytes) reaches
        # the application, which answers frame_too_large rather than daphne closing with 1009.
        assert value >= 4 * protocol.MAX_FRAME_CHARS, (flag, value)
        assert value == DAPHNE_MAX_MESSAGE_BYTES, (flag, value)  # the e2e tests see production


def test_daphne_is_recent_and_every_production_start_sets_its_size_limits(monkeypatch, tmp_path):
    assert Version(importlib.metadata.version("daphne")) >= Version("4.2.2")

    # The image's command (compose's web service runs it).
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    command = json.loads(cmd.removeprefix("CMD "))
    assert command[:3] == ["python", "-m", "teamtrack.serve"]  # daphne, on uvloop
    check_size_flags(command)
    # daphne's --proxy-headers believes X-Forwarded-For from anyone (teamtrack.proxies does not).
    assert "--proxy-headers" not in command

    # compose.yaml: no service overrides that command to start daphne without the limits.
    services = compose_services((ROOT / "compose.yaml").read_text())
    assert "build: ." in services["web"] and "nginx" in services
    for name, block in services.items():
        override = re.search(r"^    (command|entrypoint):(.*(?:\n      .*)*)", block, re.M)
        if override and ("daphne" in override.group(2) or "teamtrack.serve" in override.group(2)):
            check_size_flags(re.findall(r"[\w./:-]+", override.group(2)))
        assert name != "web" or override is None, "web must run the image's daphne command"

    # deploy/cluster.py, as LocalCluster really starts a replica.
    started = []
    monkeypatch.setattr(cluster_module, "wait_for", lambda *args, **kwargs: None)
    monkeypatch.setattr(LocalCluster, "_spawn", lambda self, name, command: started.append(command))
    LocalCluster(replicas=1, workdir=tmp_path).start_replica(0)
    (command,) = started
    assert command[1:3] == ["-m", "teamtrack.serve"]
    check_size_flags(command)
    assert "--proxy-headers" not in command


def compose_services(text: str) -> dict[str, str]:
    """Return each service's block of compose.yaml by name (two-space indented keys)."""
    section = text.split("\nservices:\n", 1)[1]
    section = re.split(r"\n(?=\S)", section, maxsplit=1)[0]  # up to the next top-level key
    parts = re.split(r"^  (\w[\w-]*):\n", section, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_nginx_refuses_and_never_logs_a_token_in_a_url_and_hides_readyz_and_its_version(proxied):
    secret = "tt_" + secrets.token_urlsafe(32)
    for path in (f"/ws/worker/%3Ftoken={secret}", f"/teams/?x=1&access_token%3D{secret}"):
        connection = http.client.HTTPConnection("127.0.0.1", proxied.port, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 400, path
        assert response.getheader("Server") == "nginx", "nginx tells its version"
        connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", proxied.port, timeout=10)
    connection.request("GET", "/readyz")
    assert connection.getresponse().status == 404, "/readyz is public through the proxy"
    connection.close()
    replica = http.client.HTTPConnection("127.0.0.1", proxied.replica_ports[0], timeout=10)
    replica.request("GET", "/readyz")
    assert replica.getresponse().status == 200, "probes on the replica itself lost /readyz"
    replica.close()
    time.sleep(0.5)
    logs = "".join(path.read_text() for path in proxied.workdir.glob("nginx-*.log"))
    assert "/ws/worker/?" in logs, "the refused request was not logged at all"
    assert secret not in logs
