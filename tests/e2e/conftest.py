"""Real server processes for end-to-end tests: daphne (or the demo) on a free port, own database."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from deploy.cluster import LocalCluster, free_port, login, manage, wait_for
from tracking.tests.kafka_broker import kafka_broker  # noqa: F401 - a fixture for the cluster

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "e2e-password-123"  # of every manager the end-to-end tests create


class Server:
    """A TeamTrack process of our own, its environment, and the commands to provision it."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "server.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "CHANNEL_LAYER": "memory",
            "DJANGO_SETTINGS_MODULE": "teamtrack.settings",
            "PYTHONUNBUFFERED": "1",
        }
        self.process = None

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def start(self, *command: str):
        self.log = open(self.log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            wait_for(f"{self.base}/healthz", self.process)
        except RuntimeError as error:
            raise AssertionError(f"{error}\n{self.output()}") from None

    def start_daphne(self, **teams: str) -> dict[str, str]:
        """Create teams (slug=manager) with one worker each, start daphne; return the tokens."""
        self.manage("migrate", "--verbosity", "0")
        tokens = {}
        for slug, manager in teams.items():
            self.manage("addteam", slug, "--manager", manager, "--password", PASSWORD)
            tokens[slug] = self.manage("addworker", slug, f"{slug} worker").splitlines()[-1]
        self.start(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                   "teamtrack.asgi:application")  # fmt: skip
        return tokens

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.log.close()

    def login(self, username: str, password: str) -> dict[str, str]:
        return login(self.base, username, password)


@pytest.fixture
def cluster(tmp_path, request):
    """Two daphne replicas behind nginx, relayed through the real Redis (or a Kafka broker,
    with `@pytest.mark.parametrize("cluster", ["kafka"], indirect=True)`), with short leases."""
    layer = getattr(request, "param", "redis")
    env = {"PRESENCE_TTL_SECONDS": "3", "REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}"}
    if layer == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    cluster = LocalCluster(replicas=2, layer=layer, workdir=tmp_path, env=env)
    cluster.start()
    yield cluster
    cluster.stop()


def provision(
    target, *, teams: int, workers: int, managers: int = 1, prefix: str = "load"
) -> list[dict]:
    """Create teams PREFIX-1..N in a cluster's or server's database, with workers and managers;
    return them with tokens and logins."""
    out = target.workdir / f"{prefix}.json"
    target.manage(
        "provision", "--teams", str(teams), "--workers", str(workers), "--managers",
        str(managers), "--prefix", prefix, "--password", PASSWORD, "--output", str(out),
    )  # fmt: skip
    return json.loads(out.read_text())["teams"]


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    yield server
    server.stop()
