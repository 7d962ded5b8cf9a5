"""deploy/processes.py: stopping what we started, and waiting for what must answer."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy import processes
from deploy.processes import free_port, terminate, wait_for

pytestmark = pytest.mark.timeout(30)

IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"


def start(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout.readline()  # it is running its code
    return process


def test_terminate_kills_what_ignores_its_signal_within_one_shared_timeout():
    stubborn = [start(IGNORES_SIGTERM) for _ in range(3)]
    started = time.monotonic()
    terminate(None, *stubborn, timeout=1.0)
    assert all(process.poll() is not None for process in stubborn)
    assert time.monotonic() - started < 2.5  # one timeout for all, not one each


def test_terminate_stops_a_polite_process_with_its_signal():
    polite = start("import time; print(1, flush=True); time.sleep(60)")
    terminate(polite)
    assert polite.returncode == -15  # SIGTERM, not a kill


def test_wait_for_says_so_when_the_process_exits_before_answering():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_for(f"http://127.0.0.1:{free_port()}/healthz", process, timeout=10)


def test_a_free_port_is_below_the_ports_outgoing_connections_take_and_nothing_holds_it():
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < lowest_ephemeral for port in ports), ports
    assert len(ports) > 1  # picked at random, not one fixed port
    for port in ports:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))


def test_with_no_port_below_the_outgoing_range_the_os_picks_one(monkeypatch):
    monkeypatch.setattr(processes, "_lowest_ephemeral_port", lambda: 1024)
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
