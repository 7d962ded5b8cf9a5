"""Load test of both sockets with locust: field workers' devices report, managers watch the map.

    locust -f loadtest/locustfile.py --headless -u 92 -r 10 -t 2m --host http://127.0.0.1:8000

(from the repository root, so that `tracking` imports; it needs no Django set-up.)

Worker users walk Barcelona's street grid (tracking.simulator.StreetWalker) and send a position
frame over /ws/worker/ (Bearer token in the handshake) every --update-delay seconds. They are
devices as docs/protocol.md asks: each position has a `seq` and stays queued until an ack covers
it (an "ack" request, timed from its first send); a new socket gets the queue, oldest first, in
one batch frame, and no other frame until its first ack; an error frame replaces the socket (2 s
later after rate_limited); no ack for ACK_DEADLINE seconds with frames in flight is an "ack
timeout" failure and a new socket. Manager users
log in through the login form, open /ws/teams/<slug>/ and report every position they receive as
a "position latency" request whose response time is the receive time minus the position's ts.
Error frames and sockets the server closes count as failures.

Teams come from --provision FILE (TEAMTRACK_PROVISION): the JSON of `manage.py provision` plus
"password" (every manager's) and optionally "url" (the host). Without a file, this runs
`manage.py provision` itself, in this environment (so it must share the server's DATABASE_URL):
one new team with --field-workers workers and --managers-per-team managers. Manager users are
fixed at --managers-per-team per team; all other users are workers, each with the next token.
Distributed runs (--master/--worker) need a provision file. Latencies are only true when the
workers' and managers' clocks agree: run both in one process, or on machines kept in step by NTP.
"""

import itertools
import json
import random
import secrets
import struct
import subprocess
import sys
import time
from pathlib import Path

import gevent
import websocket
from locust import HttpUser, User, constant, events, task
from locust.runners import LocalRunner

from deploy.cluster import LoopbackCookiePolicy
from tracking.protocol import MAX_BATCH_POSITIONS
from tracking.simulator import StreetWalker

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKERS = 90  # provisioned when neither --field-workers nor -u says how many
# Seconds a device waits for an ack before it takes its socket for dead (docs/protocol.md).
ACK_DEADLINE = 20.0
# Seconds before a new socket after a frame refused as rate_limited.
RATE_LIMITED_WAIT = 2.0


class ServerError(Exception):
    """An error frame, or a close, from the server."""


@events.init_command_line_parser.add_listener
def add_options(parser):
    parser.add_argument(
        "--provision",
        env_var="TEAMTRACK_PROVISION",
        default="",
        help='JSON of `manage.py provision` plus "password"; without it, provision a team',
    )
    parser.add_argument(
        "--field-workers",
        type=int,
        env_var="TEAMTRACK_WORKERS",
        default=0,
        help="workers to provision without a provision file (default: -u minus the managers, or 90)",
    )
    parser.add_argument(
        "--update-delay",
        type=float,
        env_var="TEAMTRACK_UPDATE_DELAY",
        default=0.55,
        help="seconds between two positions of a worker (0.55)",
    )
    parser.add_argument(
        "--managers-per-team",
        type=int,
        env_var="TEAMTRACK_MANAGERS",
        default=1,
        help="manager users per team (1)",
    )


@events.init.add_listener
def load_teams(environment, **kwargs):
    options = environment.parsed_options
    if options.provision:
        data = json.loads(Path(options.provision).read_text())
    elif isinstance(environment.runner, LocalRunner):
        managers, users = options.managers_per_team, options.num_users
        workers = options.field_workers or (max(1, users - managers) if users else DEFAULT_WORKERS)
        data = provision(workers=workers, managers=managers)
    else:
        # Every process would provision a team of its own.
        sys.exit("Distributed runs need --provision FILE (or TEAMTRACK_PROVISION).")
    environment.host = environment.host or data.get("url")
    if environment.host:
        # Our paths start with a slash, and Django serves no //accounts/login/.
        environment.host = environment.host.rstrip("/")
    teams = data["teams"]
    logins = [
        (team["slug"], username)
        for team in teams
        for username in team["managers"][: options.managers_per_team]
    ]
    tokens = [worker["token"] for team in teams for worker in team["workers"]]
    if not logins or not tokens:
        sys.exit("The teams need at least one manager and one worker each.")
    ManagerUser.fixed_count = len(logins)
    ManagerUser.password = data["password"]
    # One shared iterator per kind: next() on it is atomic, for greenlets and threads alike.
    ManagerUser.logins = itertools.cycle(logins)
    WorkerUser.tokens = itertools.cycle(tokens)


def provision(*, workers: int, managers: int) -> dict:
    """Create one team of our own with `manage.py provision`, in this environment's database."""
    password = secrets.token_urlsafe(12)
    command = [
        sys.executable, "manage.py", "provision", "--teams", "1", "--workers", str(workers),
        "--managers", str(managers), "--prefix", f"locust-{secrets.token_hex(4)}",
        "--password", password,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode:
        sys.exit(f"manage.py provision failed:\n{result.stderr}")
    return {**json.loads(result.stdout), "password": password}


def report(user, name: str, milliseconds: float, length: int = 0, error=None) -> None:
    user.environment.events.request.fire(
        request_type="WS",
        name=name,
        response_time=milliseconds,
        response_length=length,
        exception=error,
        context={},
    )


def since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


class SocketMixin:
    """One WebSocket per user, read by a greenlet of its own; error frames and closes fail."""

    socket = None
    reader = None

    def connect(self, path: str, **options) -> None:
        url = self.host.replace("http", "ws", 1) + path
        start = time.perf_counter()
        try:
            socket = websocket.create_connection(url, timeout=10, **options)
        except (OSError, websocket.WebSocketException) as error:
            report(self, self.socket_name, since(start), error=error)
            return
        report(self, self.socket_name, since(start))
        socket.settimeout(None)  # the reader waits for the next frame as long as it takes
        self.socket = socket
        self.reader = gevent.spawn(self.read, socket)

    def connected(self) -> bool:
        return self.socket is not None and self.socket.connected

    def read(self, socket) -> None:
        while True:
            try:
                opcode, data = socket.recv_data()
            except (OSError, websocket.WebSocketException) as error:
                report(self, "socket closed", 0, error=error)
                return
            received = time.time()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                report(self, "socket closed", 0, error=ServerError(f"closed with {code}"))
                socket.shutdown()
                return
            frame = json.loads(data)
            if frame.get("type") == "error":
                error = ServerError(f"{frame.get('code')}: {frame.get('detail')}")
                report(self, "error frame", 0, len(data), error=error)
                self.on_error(frame)
            else:
                self.on_frame(frame, received, len(data))

    def on_frame(self, frame: dict, received: float, length: int) -> None:
        pass

    def on_error(self, frame: dict) -> None:
        pass

    def disconnect(self) -> None:
        # Stop the reader first: two greenlets may not read one socket.
        if self.reader is not None:
            self.reader.kill()
        if self.socket is not None:
            self.socket.close(timeout=1)
        self.socket = self.reader = None

    def on_stop(self):
        self.disconnect()


class WorkerUser(SocketMixin, User):
    """A field worker's device, reporting its position along the street grid, as
    docs/protocol.md asks of a device: positions queued until an ack covers them, each new one
    sent at once in a frame of everything not yet sent on the socket, and on a new socket one
    frame (the queue, oldest first) until its first ack."""

    tokens = None  # set at init
    socket_name = "/ws/worker/"

    def on_start(self):
        self.delay = self.environment.parsed_options.update_delay
        self.token = next(self.tokens)
        self.walker = StreetWalker(random.Random())
        self.next_seq = 1  # kept with the queue, across sockets: a seq is never reused
        # seq -> (position, perf_counter of its first send or None), oldest first: not yet acked
        self.queued: dict[int, tuple[dict, float | None]] = {}
        self.sent_through = 0  # the highest seq sent on this socket
        self.logged_in = False  # an ack came on this socket: frames need not wait for one
        self.waiting_since = 0.0  # of the wait for the next ack, while frames are in flight
        self.replace_at: float | None = None  # an error frame came: a new socket from then

    def wait_time(self):
        # Jitter, as in the simulator, keeps the fleet from reporting in lockstep.
        return self.delay * random.uniform(0.9, 1.1)

    @task
    def send_position(self):
        self.walker.step(self.delay)
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self.queued[seq] = ({**self.walker.position(), "ts": time.time(), "seq": seq}, None)
        in_flight = (
            self.sent_through and self.queued and next(iter(self.queued)) <= self.sent_through
        )
        if in_flight and since(self.waiting_since) > ACK_DEADLINE * 1000:
            error = ServerError(f"no ack within {ACK_DEADLINE:.0f} s")
            report(self, "ack timeout", 0, error=error)
            self.disconnect()
        if self.replace_at is not None and self.socket is not None:
            self.disconnect()  # it acknowledges nothing more
        if not self.connected():
            if self.replace_at is None or time.perf_counter() >= self.replace_at:
                self.open_socket()
            return
        if self.logged_in or self.sent_through == 0:
            self.send_unsent()

    def open_socket(self):
        # Devices are not browsers: no Origin header.
        header = [f"Authorization: Bearer {self.token}"]
        self.connect("/ws/worker/", header=header, suppress_origin=True)
        self.sent_through, self.logged_in, self.replace_at = 0, False, None
        if self.connected():
            self.send_unsent()

    def send_unsent(self):
        """One frame of the queued positions not yet sent on this socket, oldest first."""
        unsent = [seq for seq in self.queued if seq > self.sent_through][:MAX_BATCH_POSITIONS]
        if not unsent:
            return
        positions = [self.queued[seq][0] for seq in unsent]
        frame = positions[0] if len(positions) == 1 else {"type": "batch", "positions": positions}
        text = json.dumps(frame)
        start = time.perf_counter()
        try:
            self.socket.send(text)
        except (OSError, websocket.WebSocketException) as error:
            report(self, "position", since(start), len(text), error=error)
            self.disconnect()
            return
        report(self, "position", since(start), len(text))
        if self.sent_through < next(iter(self.queued)):  # nothing was in flight
            self.waiting_since = start
        for seq in unsent:
            position, first_sent = self.queued[seq]
            self.queued[seq] = (position, start if first_sent is None else first_sent)
        self.sent_through = unsent[-1]

    def on_frame(self, frame: dict, received: float, length: int) -> None:
        if frame.get("type") != "ack":
            return
        covered = [seq for seq in self.queued if seq <= min(frame["seq"], self.sent_through)]
        for seq in covered:
            _, sent = self.queued.pop(seq)
            report(self, "ack", since(sent), length)
        if covered:
            self.logged_in = True
            self.waiting_since = time.perf_counter()

    def on_error(self, frame: dict) -> None:
        # The socket acknowledges nothing past this frame now: a new one, after a pause if the
        # frame was over the rate limit (it was dropped, and stays queued).
        wait = RATE_LIMITED_WAIT if frame.get("code") == "rate_limited" else 0.0
        self.replace_at = time.perf_counter() + wait


class ManagerUser(SocketMixin, HttpUser):
    """A manager with the team's map open: logs in, then measures how late positions arrive."""

    fixed_count = 1  # set at init: --managers-per-team for each team
    logins = None  # set at init
    password = ""
    socket_name = "/ws/teams/<slug>/"
    wait_time = constant(1)

    def on_start(self):
        self.slug, self.username = next(self.logins)
        # With DEBUG off the cookies are Secure; a browser sends them to a local server over plain
        # HTTP too (`make cluster`), and so must this.
        self.client.cookies.set_policy(LoopbackCookiePolicy())
        self.client.get("/accounts/login/")
        form = {
            "username": self.username,
            "password": self.password,
            "csrfmiddlewaretoken": self.client.cookies.get("csrftoken", ""),
        }
        # Django wants a Referer on HTTPS logins.
        referer = {"Referer": f"{self.host}/accounts/login/"}
        with self.client.post(
            "/accounts/login/", data=form, headers=referer, catch_response=True
        ) as response:
            if "sessionid" not in self.client.cookies:
                response.failure(f"login as {self.username} failed")

    @task
    def watch(self):
        """Open the team socket if it is not open; its reader does the measuring."""
        if not self.connected():
            self.connect(
                f"/ws/teams/{self.slug}/",
                cookie=f"sessionid={self.client.cookies.get('sessionid', '')}",
                origin=self.host,
            )

    def on_frame(self, frame: dict, received: float, length: int) -> None:
        if frame.get("type") != "positions":
            return  # the snapshot holds old positions; presence holds none
        positions = frame["positions"]
        for position in positions:
            # A clock that runs behind the workers' would make negative latencies.
            latency = max(0.0, (received - position["ts"]) * 1000)
            report(self, "position latency", latency, length // len(positions))
