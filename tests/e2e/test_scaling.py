"""Scaling the local cluster while devices report and managers watch: a replica added takes new
sockets, a replica drained and removed moves its sockets to the others, spread by least
connections, and no acknowledged position is lost (issue 17's local half of the autoscaler)."""

import asyncio
import sqlite3

import pytest

from tests.e2e.clients import Device, ManagerSession, Silences, wait_until
from tests.e2e.conftest import PASSWORD, login, provision

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def ws(url: str) -> str:
    return url.replace("http", "ws", 1)


def stored_ts(cluster, worker_id: int) -> set[float]:
    with sqlite3.connect(cluster.workdir / "db.sqlite3") as db:
        query = "SELECT ts FROM tracking_storedposition WHERE worker_id = ?"
        return {row[0] for row in db.execute(query, (worker_id,))}


def workers_per_replica(cluster) -> dict[int, int]:
    return {i: cluster.open_sockets(i).get("worker", 0) for i in cluster.active()}


def test_adding_and_draining_a_replica_moves_sockets_and_loses_nothing(cluster):
    team = provision(cluster, teams=1, workers=24, managers=2)[0]
    workers = team["workers"]

    async def scenario():
        managers = [
            ManagerSession(ws(cluster.url), team["slug"], login(cluster.url, name, PASSWORD))
            for name in team["managers"]
            for _ in range(2)
        ]
        for manager in managers:
            manager.start()
        for manager in managers:
            await manager.started()

        def start(batch):
            devices = [
                Device(ws(cluster.url), w["token"], lat=10 + n, interval=0.5)
                for n, w in enumerate(batch)
            ]
            for device in devices:
                device.start()
            return devices

        devices = start(workers[:12])
        await wait_until(lambda: all(len(m.latest) == 12 for m in managers), 10, "first 12")
        silences = Silences(managers).start()
        before = await asyncio.to_thread(workers_per_replica, cluster)

        # Scale out: the new replica takes the new sockets (it has the fewest connections).
        added = await asyncio.to_thread(cluster.add_replica)
        devices += start(workers[12:])
        await wait_until(lambda: all(len(m.latest) == 24 for m in managers), 10, "all 24")
        after_adding = await asyncio.to_thread(workers_per_replica, cluster)

        # Scale in: drain the first replica; its devices reconnect to the two others.
        status = await asyncio.to_thread(cluster.remove_replica, 0)
        await wait_until(lambda: all(d.connected for d in devices), 10, "every device back")
        await asyncio.sleep(2)
        after_draining = await asyncio.to_thread(workers_per_replica, cluster)
        silence = await silences.stop()
        for client in [*managers, *devices]:
            await client.stop()
        return (
            before,
            added,
            after_adding,
            status,
            after_draining,
            managers,
            devices,
            silence,
        )

    before, added, after_adding, status, after_draining, managers, devices, silence = asyncio.run(
        scenario()
    )
    print(
        f"worker sockets per replica: {before} -> added {after_adding} -> drained {after_draining}"
    )
    print(f"longest time a map went without positions: {silence:.2f} s")
    assert sum(before.values()) == 12
    # nginx's new workers count connections from zero after the reload: the new replica takes
    # an even share of the new sockets, not all of them (the old ones stay where they are).
    assert after_adding[added] >= 3, "the new replica takes new sockets"
    assert status == 0
    assert set(after_draining) == {1, added} and sum(after_draining.values()) == 24
    moved = after_adding[0]
    for index in (1, added):
        taken = after_draining[index] - after_adding[index]
        assert taken >= moved // 3, f"the drained replica's sockets piled up: {after_draining}"
    assert silence < 2.0, silence
    closes = [code for client in [*managers, *devices] for code in client.closes]
    assert closes and set(closes) == {4012}, closes
    assert not any(device.errors for device in devices)
    for device, worker in zip(devices, workers, strict=True):
        acknowledged = {device.sent[seq] for seq in device.acked_seqs}
        assert acknowledged, worker["id"]
        assert acknowledged <= stored_ts(cluster, worker["id"]), "an acknowledged position lost"
    for index in range(len(cluster.replicas)):
        assert "Traceback" not in cluster.log_path(f"replica-{index}").read_text()
