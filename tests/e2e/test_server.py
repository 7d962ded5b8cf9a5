"""The real server (daphne, and the demo command) driven over real WebSockets."""

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
import websockets

from tests.e2e.clients import next_frame
from tests.e2e.conftest import PASSWORD, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def close_code(socket, timeout: float = 5) -> int:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await socket.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code


def test_daphne_serves_both_sockets(server):
    tokens = server.start_daphne(alpha="ann", bravo="bob")
    token, other_token = tokens["alpha"], tokens["bravo"]
    ann = server.login("ann", PASSWORD)

    async def scenario():
        async with websockets.connect(
            f"{server.ws_base}/ws/teams/alpha/", additional_headers=ann
        ) as manager:
            snapshot = await next_frame(manager, "snapshot")
            assert [(w["name"], w["online"], w["lat"]) for w in snapshot["workers"]] == [
                ("alpha worker", False, None)
            ]
            async with (
                websockets.connect(
                    f"{server.ws_base}/ws/worker/",
                    additional_headers={"Authorization": f"Bearer {token}"},
                ) as worker,
                websockets.connect(f"{server.ws_base}/ws/worker/") as other,
            ):
                assert (await next_frame(manager, "presence"))["online"] is True
                await other.send(json.dumps({"type": "auth", "token": other_token}))
                await other.send(json.dumps({"lat": 1.0, "lng": 1.0, "ts": time.time()}))
                await worker.send(json.dumps({"lat": 91, "lng": 2.0, "ts": time.time()}))
                assert (await next_frame(worker, "error"))["code"] == "out_of_range"
                await worker.send(json.dumps({"lat": 41.4, "lng": 2.17, "ts": time.time()}))
                positions = (await next_frame(manager, "positions"))["positions"]
                assert [(p["lat"], p["lng"]) for p in positions] == [(41.4, 2.17)]
            offline = await next_frame(manager, "presence")
            assert offline["online"] is False
        async with websockets.connect(
            f"{server.ws_base}/ws/teams/alpha/", additional_headers={"Origin": server.base}
        ) as anonymous:
            assert await close_code(anonymous) == 4401

    asyncio.run(scenario())
    assert token not in server.output() and other_token not in server.output()


def test_demo_command_moves_a_team_on_the_map(server):
    server.start(sys.executable, "manage.py", "demo", f"127.0.0.1:{server.port}",
                 "--workers", "3", "--interval", "0.3", "--password", "pw-demo-123")  # fmt: skip
    assert "Log in as 'demo'" in server.output()
    demo = server.login("demo", "pw-demo-123")

    async def scenario():
        async with websockets.connect(
            f"{server.ws_base}/ws/teams/demo/", additional_headers=demo
        ) as manager:
            snapshot = await next_frame(manager, "snapshot")
            ids = {worker["id"] for worker in snapshot["workers"]}
            assert len(ids) == 3
            moved = {}
            async with asyncio.timeout(15):
                while len(moved) < 3 or len({p["lat"] for p in moved.values()}) < 2:
                    for position in (await next_frame(manager, "positions"))["positions"]:
                        moved[position["id"]] = position
            assert set(moved) == ids
            assert all(41.3 < p["lat"] < 41.5 and 2.0 < p["lng"] < 2.3 for p in moved.values())

    asyncio.run(scenario())


def test_demo_exits_at_once_when_its_port_is_taken(server, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        demo = subprocess.run(
            [sys.executable, "manage.py", "demo", f"127.0.0.1:{port}", "--workers", "2"],
            cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        holder.setblocking(False)
        with pytest.raises(BlockingIOError):
            holder.accept()  # no simulated device came knocking at what holds the port
    assert demo.returncode != 0
    assert demo.stderr.strip().splitlines()[-1] == (
        f"CommandError: Port {port} on 127.0.0.1 is in use; stop what holds it or run "
        f"`.venv/bin/python manage.py demo 127.0.0.1:{port + 1}`."
    )
    assert not (tmp_path / "db.sqlite3").exists()  # checked before it started anything


def test_demo_prints_each_socket_line_once(server):
    server.start(sys.executable, "manage.py", "demo", f"127.0.0.1:{server.port}",
                 "--workers", "2", "--interval", "0.3", "--password", "pw-demo-123")  # fmt: skip
    deadline = time.monotonic() + 15
    while server.output().count("WebSocket CONNECT /ws/worker/") < 2:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)
    server.stop()  # every line written, the devices' disconnections too
    output = server.output()
    assert re.search(
        r"^\S+ \S+ INFO django.channels.server WebSocket CONNECT /ws/worker/", output, re.M
    )
    # A connection's lines name its client's address and port: each may appear only once.
    counts = Counter(re.findall(r"WebSocket \w+ /ws/worker/ .*", output))
    assert counts and [line for line, count in counts.items() if count > 1] == []


def test_daphne_closes_sockets_4503_when_redis_is_unreachable(server):
    server.env.update(CHANNEL_LAYER="redis", REDIS_URL="redis://127.0.0.1:1/0")
    token = server.start_daphne(alpha="ann")["alpha"]
    ann = server.login("ann", PASSWORD)

    async def scenario():
        async with websockets.connect(
            f"{server.ws_base}/ws/worker/", additional_headers={"Authorization": f"Bearer {token}"}
        ) as worker:
            assert await close_code(worker) == 4503
        async with websockets.connect(
            f"{server.ws_base}/ws/teams/alpha/", additional_headers=ann
        ) as manager:
            assert await close_code(manager) == 4503

    asyncio.run(scenario())
    assert "Traceback" not in server.output()
