"""A manager that stops reading, on real daphne: held and conflated, then closed, others on time."""

import asyncio
import base64
import os
import socket
import time
import urllib.request

import pytest

from deploy.cluster import LocalCluster, login
from tests.e2e.clients import Device, ManagerWatch, wait_until
from tests.e2e.conftest import PASSWORD, provision

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rss_megabytes(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def open_unread_manager_socket(base: str, slug: str, headers: dict[str, str]) -> socket.socket:
    """Open a manager WebSocket with a tiny receive buffer, and never read from it."""
    host, port = base.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/teams/{slug}/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    )
    raw.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return raw


def test_a_manager_that_stops_reading_is_closed_4408_without_delaying_the_others(tmp_path):
    env = {"SLOW_MANAGER_SECONDS": "3", "WORKER_FRAMES_PER_SECOND": "20"}
    with LocalCluster(replicas=1, layer="memory", workdir=tmp_path, env=env) as cluster:
        team = provision(cluster, teams=1, workers=60)[0]
        base = cluster.replica_url(0)
        headers = login(base, team["managers"][0], PASSWORD)
        replica_pid = cluster.replicas[0].pid

        async def scenario():
            watch = await ManagerWatch(base.replace("http", "ws"), team["slug"], headers).start()
            devices = [
                Device(base.replace("http", "ws"), w["token"], lat=10 + n / 100, interval=0.1)
                for n, w in enumerate(team["workers"])
            ]
            for device in devices:
                device.start()
            await wait_until(lambda: len(watch.latest) == 60, 20, "every worker seen")
            rss_before = rss_megabytes(replica_pid)
            stalled = await asyncio.to_thread(
                open_unread_manager_socket, base, team["slug"], headers
            )
            watch.longest_gap.clear()
            # Its buffers fill within seconds at this rate (about 60 KB/s of frames), then it is
            # held for SLOW_MANAGER_SECONDS and closed.
            deadline = time.monotonic() + 60
            while metric(base, "teamtrack_slow_manager_disconnects_total") < 1:
                assert time.monotonic() < deadline, "the stalled manager was never closed"
                await asyncio.sleep(0.5)
            assert metric(base, "teamtrack_held_frames_total") > 0
            # Its close cannot get through its full buffer: daphne drops it after 1 s.
            await wait_until(
                lambda: metric(base, 'teamtrack_open_sockets{kind="manager"}') == 1, 10,
                "the stalled manager's socket is gone", step=0.5,
            )  # fmt: skip
            # The watching manager got every worker's positions on time throughout.
            assert max(watch.longest_gap.values()) < 1.5, watch.longest_gap
            assert rss_megabytes(replica_pid) - rss_before < 30
            for device in devices:
                await device.stop()
            await watch.stop()
            # The server is done with the stalled socket: reading it ends (close frame or reset).
            stalled.settimeout(10)
            try:
                while stalled.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            stalled.close()
            assert not any(device.errors for device in devices)

        asyncio.run(scenario())
