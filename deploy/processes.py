"""The processes deploy/, the load tools and the tests start on this machine: a free port to give
one, waiting until it answers, stopping it (politely, then by force), the open-file limit.

Nothing here knows TeamTrack: deploy.cluster (nginx and daphne), deploy.tansu (the Kafka broker)
and the tests' own servers all use it, and it imports none of them.
"""

import random
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STOP_TIMEOUT = 10.0  # seconds a process gets to stop on its signal before it is killed


ROOT = Path(__file__).resolve().parent.parent


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run a manage.py command in this environment; return its output, raise if it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses now, below the range the kernel gives outgoing
    connections: a port from that range (the OS's own pick) can be taken by a client's
    connection before the server binds it, which killed a benchmark run with tens of thousands
    of sockets open ("bind() ... Address already in use")."""
    lowest_ephemeral = _lowest_ephemeral_port()
    lowest = max(1024, lowest_ephemeral - 12_000)
    for _ in range(100 if lowest < lowest_ephemeral else 0):  # none below a range from 1024
        port = random.randrange(lowest, lowest_ephemeral)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:  # crowded: let the OS pick
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lowest_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def wait_for(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until `url` answers with a success; raise RuntimeError if `process` exits first or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:  # refused, timed out, or an error status (HTTPError is an OSError)
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def terminate(
    *processes: subprocess.Popen | None,
    timeout: float = STOP_TIMEOUT,
    signum: int = signal.SIGTERM,
) -> None:
    """Stop processes: send each still running `signum`, then kill those that have not exited
    `timeout` seconds later; reap them all. None (never started) is skipped.

    All are signalled before any is waited for, so that they stop side by side (a daphne replica
    drains its sockets on SIGTERM) and the whole takes at most `timeout`, not one per process.
    """
    started = [process for process in processes if process is not None]
    for process in started:
        if process.poll() is None:
            process.send_signal(signum)
    deadline = time.monotonic() + timeout
    for process in started:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard limit; every socket is a file. Processes
    started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
