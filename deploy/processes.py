"""The processes deploy/, the load tools and the tests start on this machine: a free port to give
one, waiting until it answers, stopping it (politely, then by force), the open-file limit.

Nothing here knows TeamTrack: deploy.cluster (nginx and daphne), deploy.tansu (the Kafka broker)
and the tests' own servers all use it, and it imports none of them.
"""

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
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
