"""What a run of the benchmark (loadtest/bench.py) or the soak (loadtest/soak.py) begins with and
says of itself: the revision, the command line, the work folder and its environment, the Kafka
broker, the provisioned teams, the relay's settings, and the facts every results file carries."""

import contextlib
import json
import os
import secrets
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import psycopg
import redis

from deploy.cluster import manage
from deploy.processes import raise_open_file_limit
from deploy.tansu import KafkaBroker
from loadtest.machine import cpu_model, git_revision, process_cpu

PASSWORD = "bench-password-123"  # of every manager a run provisions
# Where --database postgres makes its throwaway database (a superuser; trust authentication).
POSTGRES_ADMIN_URL = os.environ.get(
    "TEAMTRACK_BENCH_POSTGRES",
    os.environ.get("TEAMTRACK_PHONES_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"),
)


def log(message: str) -> None:
    print(message, flush=True)


def begin_run(tool: str, argv, workdir: Path | None) -> tuple[str, str, Path, dict[str, str]]:
    """Start a run of `python -m loadtest.<tool>`: return the revision of the code that runs
    (read before anyone edits the tree), the command line, the work folder and the cluster's
    environment; lift the open-file limit."""
    revision = git_revision()
    raise_open_file_limit()
    command = f"python -m loadtest.{tool} " + " ".join(sys.argv[1:] if argv is None else argv)
    workdir = Path(workdir or tempfile.mkdtemp(prefix=f"teamtrack-{tool}-"))
    return revision, command, workdir, environment(workdir)


def environment(workdir: Path) -> dict:
    """The environment of manage.py and the cluster: a SQLite database in the work folder, and
    production settings with one key for the whole run (sessions made on one mode's cluster are
    used on the next's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "teamtrack.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "BENCH_DIR": str(workdir),
        "LOG_LEVEL": "WARNING",
    }


def add_database_arguments(parser) -> None:
    """--database and --postgres-admin-url, for the tools that can run on PostgreSQL."""
    parser.add_argument(
        "--database",
        default="sqlite",
        choices=["sqlite", "postgres"],
        help="postgres: a throwaway database on --postgres-admin-url, its server's CPU counted",
    )
    parser.add_argument("--postgres-admin-url", default=POSTGRES_ADMIN_URL)


def start_broker(layer: str, env: dict) -> KafkaBroker | None:
    """On Kafka with no broker named, start tansu and name it in `env`; return it (or None)."""
    if layer != "kafka" or "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        return None
    broker = KafkaBroker().start()
    env.update(broker.layer_env())
    return broker


def provision_teams(env: dict, *, teams: int, workers: int, prefix: str, name: str) -> list[dict]:
    """Create teams PREFIX-1..N of `workers` each (one manager each), written to BENCH_DIR/name."""
    output = Path(env["BENCH_DIR"]) / name
    manage(env, "provision", "--teams", str(teams), "--workers", str(workers),
           "--prefix", prefix, "--password", PASSWORD, "--output", str(output))  # fmt: skip
    return json.loads(output.read_text())["teams"]


def flush_window() -> float:
    """The relay's flush window in seconds, as the cluster's replicas read it."""
    return int(os.environ.get("FLUSH_WINDOW_MS", 100)) / 1000


def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_pid(url: str) -> int:
    """The pid of the Redis server at `url`, whose CPU and memory count as the server's."""
    return redis.Redis.from_url(url).info("server")["process_id"]


def run_facts(args, revision: str, command: str) -> dict:
    """What every results file says of its run: how it was started, on what code and machine."""
    return {
        "command": command,
        "revision": revision,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "layer": args.layer,
        "replicas": args.replicas,
    }


def save_results(output_dir: Path, name: str, result: dict, markdown: str) -> None:
    """Write a run's figures as NAME.json and its report as NAME.md."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (output_dir / f"{name}.md").write_text(markdown)


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of the whole PostgreSQL server: the postmaster, its live processes and those it
    reaped (a backend per connection: one that ends within a window still counts)."""
    try:
        process = psutil.Process(postmaster)
        times = process.cpu_times()
        live = process.children()
    except psutil.NoSuchProcess:
        return 0.0
    reaped = times.children_user + times.children_system
    return times.user + times.system + reaped + sum(process_cpu(child.pid) for child in live)


@contextlib.contextmanager
def postgres_database(admin_url: str):
    """A throwaway PostgreSQL database: yield its URL and the postmaster's pid; drop it after."""
    admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    name = f"teamtrack_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        data = admin.execute("SHOW data_directory").fetchone()[0]
        postmaster = int((Path(data) / "postmaster.pid").read_text().split()[0])
        info = admin.info
        yield f"postgres://{info.user}@{info.host}:{info.port}/{name}", postmaster
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
