"""Real server processes for end-to-end tests: daphne (or the demo) on a free port, own database."""

import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from deploy.cluster import DAPHNE_MAX_MESSAGE_BYTES, LocalCluster, login, manage
from deploy.processes import free_port, terminate, wait_for
from deploy.static import collect_static, static_root
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

    def use_production_settings(self) -> None:
        """Run as production does: DEBUG unset (the tests set DEBUG=true for every process they
        start), a real key, and static files collected for WhiteNoise's manifest storage."""
        self.env.pop("DEBUG", None)
        self.env["SECRET_KEY"] = secrets.token_urlsafe(50)
        self.env["STATIC_ROOT"] = str(collect_static(static_root()))

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
            self.stop()  # one that never answered must not outlive the test
            raise AssertionError(f"{error}\n{self.output()}") from None

    def start_daphne(self, **teams: str) -> dict[str, str]:
        """Create teams (slug=manager) with one worker each, start daphne; return the tokens."""
        self.manage("migrate", "--verbosity", "0")
        tokens = {}
        for slug, manager in teams.items():
            self.manage("addteam", slug, "--manager", manager, "--password", PASSWORD)
            tokens[slug] = self.manage("addworker", slug, f"{slug} worker").splitlines()[-1]
        # The size limits production passes (Dockerfile, deploy/cluster.py), so that frames
        # between the application's limit and daphne's get the same answer here as there.
        self.daphne = (sys.executable, "-m", "teamtrack.serve", "-b", "127.0.0.1", "-p", str(self.port),
                       "--websocket-max-message-size", str(DAPHNE_MAX_MESSAGE_BYTES),
                       "--websocket-max-frame-size", str(DAPHNE_MAX_MESSAGE_BYTES),
                       "teamtrack.asgi:application")  # fmt: skip
        self.start(*self.daphne)
        return tokens

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self):
        if self.process:
            terminate(self.process)
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
        env.update(broker.layer_env())
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


class RedisServer:
    """A private redis-server on a free port, without persistence: a restart comes back empty."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = directory / "redis.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        """Start it (again, on the same port) and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        with redis.Redis(port=self.port, socket_connect_timeout=1) as client:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    """A redis-server of the module's own, so that tests may stop it (and start it again, empty)
    and leave the shared one alone."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_redis_cluster(tmp_path_factory, private_redis):
    """Two daphne replicas behind nginx over the private Redis (pub/sub layer), short leases."""
    env = {
        "REDIS_URL": private_redis.url,
        "PRESENCE_TTL_SECONDS": "3",
        "REDIS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
    }
    workdir = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(replicas=2, layer="redis", workdir=workdir, env=env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# Where the PostgreSQL tests make their throwaway database (trust authentication).
POSTGRES_ADMIN_URL = os.environ.get(
    "TEAMTRACK_E2E_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class PostgresDatabase:
    """A throwaway database; `url` is its DATABASE_URL, `connections()` counts its sessions."""

    def __init__(self, admin: psycopg.Connection, name: str):
        self.admin = admin
        self.name = name
        info = admin.info
        self.url = f"postgres://{info.user}@{info.host}:{info.port}/{name}"

    def connections(self) -> int:
        """Count the server's connections to this database now (the caller's own is elsewhere)."""
        row = self.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.name]
        ).fetchone()
        return row[0]

    def sessions_opened(self) -> int:
        """Count the sessions ever opened to this database (PostgreSQL 14+)."""
        row = self.admin.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", [self.name]
        ).fetchone()
        return row[0]


@pytest.fixture(scope="module")
def postgres_database():
    """A PostgreSQL database made for this test and dropped after it. Fails, never skips, when
    PostgreSQL cannot be reached: a test that asks for it is about PostgreSQL."""
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL cannot be reached at {POSTGRES_ADMIN_URL} (set TEAMTRACK_E2E_POSTGRES "
            f"to a superuser's URL): {error}",
            pytrace=False,
        )
    name = f"teamtrack_e2e_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PostgresDatabase(admin, name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class PostgresServer:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, on a free port),
    which the test may stop, crash and start again: the machine's own keeps serving the other
    tests. Run as the `postgres` user when the tests run as root (initdb refuses root)."""

    def __init__(self):
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]).parent
        # Not under pytest's own temporary folders: those are private to root.
        self.directory = Path(tempfile.mkdtemp(prefix="teamtrack-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync")

    def _run(self, tool: str, *args) -> None:
        command = [str(self.bin / tool), *map(str, args)]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> "PostgresServer":
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run(
            "pg_ctl", "-D", self.data, "-l", self.directory / "log", "-o", options, "-w", "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop it: `fast` ends every session, `immediate` is a crash."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres():
    server = PostgresServer().start()
    yield server
    server.remove()
