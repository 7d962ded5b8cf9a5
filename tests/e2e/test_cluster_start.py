"""A local cluster whose start fails part-way stops what it had started: when a replica or nginx
cannot come up, no process of that cluster is left running."""

import re
import socket
from contextlib import contextmanager

import psutil
import pytest

from deploy.cluster import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@contextmanager
def occupied(port: int):
    """Hold 127.0.0.1:port bound, without listening: a server that binds it fails (address in
    use), and a client's connect is refused at once, so the start sees the server exit."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        yield


def left_running(cluster: LocalCluster) -> list[int]:
    """The pids of the cluster's processes (and their children) that are still running."""
    pids = [p.pid for p in (cluster.nginx, *cluster.replicas) if p is not None]
    running = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            family = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in family:
            try:
                if member.status() != psutil.STATUS_ZOMBIE:
                    running.append(member.pid)
            except psutil.NoSuchProcess:
                pass
    return running


def logged(cluster: LocalCluster, *names: str) -> str:
    paths = [cluster.workdir / name for name in names]
    return "".join(path.read_text() for path in paths if path.exists())


def test_a_replica_that_cannot_come_up_stops_the_replicas_started_before_it(tmp_path):
    cluster = LocalCluster(replicas=3, layer="memory", workdir=tmp_path)
    try:
        with occupied(cluster.replica_ports[1]):
            with pytest.raises(RuntimeError, match=re.escape(cluster.replica_url(1))):
                cluster.start()
        # Replica 0 had answered (the start waits for each), replica 1 failed as arranged, and
        # neither replica 2 nor nginx was started.
        first, second, third = cluster.replicas
        assert first is not None and second is not None and third is None
        assert cluster.nginx is None
        assert "Address already in use" in logged(cluster, "replica-1.log")
        assert left_running(cluster) == []
    finally:
        cluster.stop()


def test_nginx_that_cannot_come_up_stops_every_replica(tmp_path):
    cluster = LocalCluster(replicas=2, layer="memory", workdir=tmp_path)
    try:
        with occupied(cluster.port):
            with pytest.raises(RuntimeError, match=re.escape(cluster.url)):
                cluster.start()
        assert all(replica is not None for replica in cluster.replicas)
        assert cluster.nginx is not None
        assert "Address already in use" in logged(cluster, "nginx.log", "nginx-error.log")
        assert left_running(cluster) == []
    finally:
        cluster.stop()
