"""A local cluster without Docker: nginx load-balancing N daphne replicas over one channel layer.

    python -m deploy.cluster --replicas 2 --layer redis --port 8080 [--demo 25]

It prints the URL and stops everything on Ctrl-C. The end-to-end tests and the benchmark use
LocalCluster from Python to start, kill and restart replicas, and to scale it while it runs: add
a replica, or drain one and take it out, with nginx following (as an autoscaler does). The replicas run production
settings (DEBUG off, collected static files), over plain HTTP on 127.0.0.1.
"""

import argparse
import http.cookiejar
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from deploy.processes import (
    ROOT,
    free_port,
    manage,
    raise_open_file_limit,
    terminate,
    wait_for,
)
from deploy.static import collect_static, static_root
from deploy.tansu import KafkaBroker

NGINX_TEMPLATE = Path(__file__).with_name("nginx-local.conf.template")
# Above the application's own frame limit, so that the application answers with an error frame;
# daphne drops the connection of anything larger (no close frame: clients see 1006).
DAPHNE_MAX_MESSAGE_BYTES = 512 * 1024


class LoopbackCookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """Send Secure cookies to http://127.0.0.1 and http://localhost, as browsers do (loopback
    counts as a secure context): the local cluster runs production settings, whose cookies are
    Secure, over plain HTTP."""

    LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

    def return_ok_secure(self, cookie, request) -> bool:
        if urllib.parse.urlsplit(request.get_full_url()).hostname in self.LOOPBACK:
            return True
        return super().return_ok_secure(cookie, request)


def login(base: str, username: str, password: str, timeout: float = 5) -> dict[str, str]:
    """Log in through the login form; return the headers a manager socket needs."""
    jar = http.cookiejar.CookieJar(LoopbackCookiePolicy())
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/accounts/login/", timeout=timeout)
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf}
    ).encode()
    opener.open(f"{base}/accounts/login/", data=form, timeout=timeout)
    session = next((c.value for c in jar if c.name == "sessionid"), None)
    if not session:
        raise RuntimeError(f"login as {username} failed")
    return {"Cookie": f"sessionid={session}", "Origin": base}


class LocalCluster:
    """nginx and N daphne replicas on this machine, sharing one database and channel layer."""

    def __init__(
        self,
        *,
        replicas: int = 2,
        layer: str = "redis",
        port: int | None = None,
        workdir: Path | None = None,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        application: str = "teamtrack.asgi:application",
    ):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="teamtrack-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Where nginx takes Traccar Client's requests as its default port 5055 does in compose.
        self.osmand_port = free_port()
        self.replica_ports = [free_port() for _ in range(replicas)]
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "teamtrack.settings",
            "CHANNEL_LAYER": layer,
            "DATABASE_URL": database_url or f"sqlite:///{self.workdir / 'db.sqlite3'}",
            "PYTHONUNBUFFERED": "1",
            # Production settings, whatever the calling shell says: DEBUG off, a key of the
            # cluster's own (its replicas share it), and static files collected for them.
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "STATIC_ROOT": str(static_root()),
            # But plain HTTP on loopback, with no HTTPS to redirect to (Secure cookies still
            # work: browsers send them to http://127.0.0.1, and so does login() above).
            "SECURE_SSL_REDIRECT": "false",
            **(env or {}),
        }
        self.application = application
        self.replicas: list[subprocess.Popen | None] = [None] * replicas
        self.leaving: set[int] = set()  # replicas being drained: out of nginx, still running
        self.nginx: subprocess.Popen | None = None
        self.logs: list = []

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.replica_ports[index]}"

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def manage(self, *args: str) -> str:
        """Run a manage.py command against the cluster's database and layer; return its output."""
        return manage(self.env, *args)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.log_path(name), "a")  # closed in stop()
        self.logs.append(log)
        return subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def start_replica(self, index: int) -> None:
        collect_static(Path(self.env["STATIC_ROOT"]))  # at once if collected already
        port = self.replica_ports[index]
        process = self._spawn(
            f"replica-{index}",
            [
                sys.executable, "-m", "teamtrack.serve",  # daphne, on uvloop
                "-b", "127.0.0.1", "-p", str(port),
                "--websocket-max-message-size", str(DAPHNE_MAX_MESSAGE_BYTES),
                "--websocket-max-frame-size", str(DAPHNE_MAX_MESSAGE_BYTES),
                # nginx keeps the access log, of paths only; daphne's would hold query strings.
                "--access-log", os.devnull,
                self.application,
            ],
        )  # fmt: skip
        self.replicas[index] = process
        wait_for(f"{self.replica_url(index)}/healthz", process)

    def active(self) -> list[int]:
        """The replicas nginx sends requests to: running, and not being drained."""
        return [i for i, p in enumerate(self.replicas) if p is not None and i not in self.leaving]

    def _write_nginx_config(self) -> Path:
        servers = "\n".join(
            f"        server 127.0.0.1:{self.replica_ports[i]} max_fails=0;" for i in self.active()
        )
        config = string.Template(NGINX_TEMPLATE.read_text()).substitute(
            workdir=self.workdir, port=self.port, osmand_port=self.osmand_port, servers=servers
        )
        config_path = self.workdir / "nginx.conf"
        config_path.write_text(config)
        return config_path

    def start_nginx(self) -> None:
        (self.workdir / "nginx-tmp").mkdir(exist_ok=True)
        config_path = self._write_nginx_config()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = self._spawn(
            "nginx", [nginx, "-p", str(self.workdir), "-c", str(config_path), "-g", "daemon off;"]
        )
        wait_for(f"{self.url}/healthz", self.nginx)

    def reload_nginx(self, timeout: float = 10) -> None:
        """Point nginx at the active replicas: new workers take new connections, the old ones
        keep theirs (open sockets stay on their replicas) until they end. The new workers start
        counting connections from zero, so least_conn spreads new sockets evenly at first."""
        self._write_nginx_config()
        master = psutil.Process(self.nginx.pid)
        old_workers = master.children()
        self.nginx.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        # The master starts the new workers, then (100 ms later) tells the old ones to stop
        # accepting: until then the old configuration still takes new connections.
        while not all(_stopped_accepting(worker) for worker in old_workers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not reload in {timeout:g} s; see its log")
            time.sleep(0.02)

    def add_replica(self) -> int:
        """Start one more replica and let nginx send it new connections; return its index."""
        self.replica_ports.append(free_port())
        self.replicas.append(None)
        index = len(self.replicas) - 1
        self.start_replica(index)
        self.reload_nginx()
        return index

    def remove_replica(self, index: int, grace: float = 45) -> int:
        """Scale in by one, as a Kubernetes pod goes: nginx stops sending it new connections,
        then SIGTERM drains it (its sockets close with 4012 and reconnect through nginx to the
        others); past `grace` (deploy/k8s's terminationGracePeriodSeconds) SIGKILL. Return its
        exit status (-9: killed)."""
        if self.active() == [index]:
            raise ValueError("the last replica: nginx would have nowhere to send anyone")
        self.leaving.add(index)
        try:
            self.reload_nginx()
            process = self.replicas[index]
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
        finally:
            self.replicas[index] = None
            self.leaving.discard(index)

    def open_sockets(self, index: int) -> dict[str, int]:
        """The sockets a replica holds now, by kind (worker, manager), from its /metrics."""
        with urllib.request.urlopen(f"{self.replica_url(index)}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        return {
            sample.labels["kind"]: int(sample.value)
            for family in text_string_to_metric_families(text)
            if family.name == "teamtrack_open_sockets"
            for sample in family.samples
        }

    def start(self) -> "LocalCluster":
        """Migrate, then start the replicas and nginx, each once the one before answers. If one
        fails to come up (or the start is interrupted), stop those started and raise."""
        raise_open_file_limit()
        self.manage("migrate", "--verbosity", "0")
        try:
            for index in range(len(self.replicas)):
                self.start_replica(index)
            self.start_nginx()
        except BaseException:  # Ctrl-C and SystemExit (main's SIGTERM) too: leave nothing behind
            self.stop()
            raise
        return self

    def signal_replica(self, index: int, signum: int = signal.SIGKILL) -> None:
        """Send a replica a signal (SIGKILL: a crash; SIGTERM: a graceful stop) and reap it."""
        process = self.replicas[index]
        process.send_signal(signum)
        process.wait(30)

    def stop(self) -> None:
        """Stop nginx and every replica (SIGTERM, then SIGKILL after 10 s); close the logs."""
        terminate(self.nginx, *self.replicas)
        for log in self.logs:
            log.close()
        self.logs.clear()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stopped_accepting(worker: psutil.Process) -> bool:
    """Whether an nginx worker has gone, or is finishing its connections after a reload."""
    try:
        return "shutting down" in " ".join(worker.cmdline())
    except psutil.NoSuchProcess:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--layer", default="redis", choices=["redis", "redis-core", "kafka", "memory"]
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--database-url", help="default: a SQLite file in the work directory")
    parser.add_argument("--workdir", type=Path, help="logs, nginx.conf, database (default: temp)")
    parser.add_argument(
        "--demo", type=int, metavar="WORKERS", help="also run the demo team with this many devices"
    )
    args = parser.parse_args()
    if args.layer == "memory" and args.replicas > 1:
        parser.error("the memory layer cannot relay between replicas; use redis")
    # A plain `kill` stops it like Ctrl-C, during the start too: what was started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    env, broker, cluster, demo = {}, None, None, None
    try:
        if args.layer == "kafka" and "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            # No broker named: run the development broker (tansu, in memory) for this cluster.
            broker = KafkaBroker().start()
            env.update(broker.layer_env())
            print(f"Started the tansu Kafka broker on {broker.bootstrap}")
        cluster = LocalCluster(
            replicas=args.replicas,
            layer=args.layer,
            port=args.port,
            workdir=args.workdir,
            database_url=args.database_url,
            env=env,
        )
        cluster.start()
        print(f"TeamTrack: {cluster.url}/  ({args.replicas} replicas, {args.layer} layer)")
        for index in range(args.replicas):
            print(f"  replica {index}: {cluster.replica_url(index)}/")
        print(f"  logs and nginx.conf: {cluster.workdir}")
        if args.demo:
            demo = cluster._spawn(
                "demo",
                [sys.executable, "manage.py", "demo", "--connect", cluster.url,
                 "--workers", str(args.demo)],
            )  # fmt: skip
            time.sleep(3)
            print(cluster.log_path("demo").read_text())
        print("Ctrl-C stops everything.")
        while all(p.poll() is None for p in [cluster.nginx, *cluster.replicas]):
            time.sleep(0.5)
        print("A process of the cluster exited; stopping.", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C (or kill) must not cut the clean-up short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        terminate(demo)
        if cluster is not None:
            cluster.stop()
        if broker is not None:
            broker.stop()
        print("Stopped.")


if __name__ == "__main__":
    main()
