"""SIGTERM drains a replica: in-flight positions go out, sockets close 4012, clients move on."""

import asyncio
import json
import signal
import time

import pytest
import websockets

from tests.e2e.clients import (
    Device,
    ManagerSession,
    ManagerWatch,
    Silences,
    close_code,
    next_frame,
    wait_until,
)
from tests.e2e.conftest import PASSWORD, login, provision

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def ws(url: str) -> str:
    return url.replace("http", "ws", 1)


async def closed_with(socket, timeout: float = 5) -> int | str:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await socket.recv()
        except websockets.ConnectionClosed as closed:
            return close_code(closed)


def test_sigterm_flushes_in_flight_positions_then_closes_every_socket_4012(cluster):
    team = provision(cluster, teams=1, workers=1)[0]
    worker = team["workers"][0]
    draining, staying = cluster.replica_url(0), cluster.replica_url(1)

    async def scenario():
        elsewhere = await ManagerWatch(
            ws(staying), team["slug"], login(staying, team["managers"][0], PASSWORD)
        ).start()
        async with (
            websockets.connect(
                f"{ws(draining)}/ws/worker/",
                additional_headers={"Authorization": f"Bearer {worker['token']}"},
            ) as device,
            websockets.connect(
                f"{ws(draining)}/ws/teams/{team['slug']}/",
                additional_headers=login(draining, team["managers"][0], PASSWORD),
            ) as manager_here,
        ):
            await next_frame(manager_here, "snapshot")
            await device.send(json.dumps({"lat": 1.0, "lng": 1.0, "ts": time.time(), "seq": 1}))
            assert await next_frame(device, "ack") == {"type": "ack", "seq": 1}
            await wait_until(lambda: worker["id"] in elsewhere.latest, 5, "first position")
            presence_before = len(elsewhere.presence)
            # The last report, then SIGTERM within the same flush window.
            await device.send(json.dumps({"lat": 2.0, "lng": 1.0, "ts": time.time(), "seq": 2}))
            cluster.replicas[0].send_signal(signal.SIGTERM)
            assert await next_frame(device, "ack") == {"type": "ack", "seq": 2}
            assert await closed_with(device) == 4012
            assert await closed_with(manager_here) == 4012
        await wait_until(
            lambda: elsewhere.latest[worker["id"]]["lat"] == 2.0, 5, "the in-flight position"
        )
        # The device would reconnect elsewhere at once: its worker does not blink offline.
        await asyncio.sleep(1)
        assert elsewhere.presence[presence_before:] == []
        await elsewhere.stop()

    asyncio.run(scenario())
    assert cluster.replicas[0].wait(10) == 0
    log = cluster.log_path("replica-0").read_text()
    assert "Drained" in log and "Traceback" not in log


def test_a_rolling_restart_leaves_no_manager_without_positions_for_long(cluster):
    team = provision(cluster, teams=1, workers=8, managers=2)[0]

    async def scenario():
        managers = []
        for username in team["managers"]:
            for _ in range(2):  # two maps each, spread over the replicas by nginx
                headers = login(cluster.url, username, PASSWORD)
                managers.append(ManagerSession(ws(cluster.url), team["slug"], headers).start())
        for manager in managers:
            await manager.started()
        devices = [
            # 4 frames a second each, under WORKER_FRAMES_PER_SECOND (5): a device that moves
            # replica brings one frame's budget there, not a fresh burst (tracking.limits).
            Device(ws(cluster.url), w["token"], lat=20 + n, interval=0.25)
            for n, w in enumerate(team["workers"])
        ]
        for device in devices:
            device.start()
        await wait_until(
            lambda: all(len(m.latest) == len(devices) for m in managers), 10, "every worker seen"
        )
        silences = Silences(managers).start()
        for index in range(len(cluster.replicas)):
            cluster.replicas[index].send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(cluster.replicas[index].wait, 10) == 0
            await asyncio.to_thread(cluster.start_replica, index)
            await asyncio.sleep(1)  # the next replica goes once this one is back and ready
        worst = await silences.stop()
        for client in [*managers, *devices]:
            await client.stop()
        print(f"longest time a map went without positions during the restart: {worst:.2f} s")
        assert worst < 3.0, silences.longest
        # Every socket that ended ended with the restart's code, never dropped or refused.
        closes = [code for client in [*managers, *devices] for code in client.closes]
        assert closes and set(closes) == {4012}, closes
        assert not any(device.errors for device in devices)
        assert not any(manager.errors for manager in managers)

    asyncio.run(scenario())
    for index in range(len(cluster.replicas)):
        assert "Traceback" not in cluster.log_path(f"replica-{index}").read_text()
