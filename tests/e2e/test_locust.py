"""The locust load test (loadtest/locustfile.py) run against a real daphne: both kinds of user
report what they did, without failures, and the workers' devices have their positions acked."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

LOCUST = Path(sys.executable).with_name("locust")


def run_locust(server, tmp_path, seconds: int) -> subprocess.Popen:
    provision = tmp_path / "provision.json"
    server.manage("provision", "--workers", "10", "--managers", "2", "--prefix", "locust",
                  "--password", PASSWORD, "--output", str(provision))  # fmt: skip
    teams = json.loads(provision.read_text())
    provision.write_text(json.dumps({**teams, "password": PASSWORD}))
    env = {**server.env, "TEAMTRACK_PROVISION": str(provision), "TEAMTRACK_MANAGERS": "2"}
    return subprocess.Popen(
        [LOCUST, "-f", "loadtest/locustfile.py", "--headless", "-u", "12", "-r", "12",
         "-t", f"{seconds}s", "--host", server.base, "--csv", str(tmp_path / "stats"),
         "--only-summary"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def locust_stats(locust: subprocess.Popen, tmp_path) -> dict[str, dict]:
    _, stderr = locust.communicate(timeout=60)
    assert locust.returncode in (0, 1), stderr  # 1: some requests failed
    with open(tmp_path / "stats_stats.csv") as file:
        return {row["Name"]: row for row in csv.DictReader(file)}


def stored(server, where: str = "") -> int:
    code = (
        "from tracking.models import StoredPosition; "
        f"print(StoredPosition.objects.filter({where}).count())"
    )
    return int(server.manage("shell", "--no-imports", "-c", code))


def test_locust_reports_worker_sends_acks_and_manager_latency(server, tmp_path):
    server.start_daphne()
    locust = run_locust(server, tmp_path, seconds=8)
    stats = locust_stats(locust, tmp_path)

    assert locust.returncode == 0
    assert {"/ws/worker/", "/ws/teams/<slug>/", "position", "ack", "position latency"} <= set(stats)
    assert int(stats["/ws/worker/"]["Request Count"]) == 10  # each worker user connected once
    assert int(stats["/ws/teams/<slug>/"]["Request Count"]) == 2
    assert int(stats["position"]["Request Count"]) > 10
    latency = stats["position latency"]
    assert int(latency["Request Count"]) > 10
    assert 0 < float(latency["Median Response Time"]) < 5000
    # Workers send a seq with every position, and acks cover them within the ack interval.
    acked = int(stats["ack"]["Request Count"])
    assert acked > 10
    assert float(stats["ack"]["Max Response Time"]) < 10_000
    assert {name: int(row["Failure Count"]) for name, row in stats.items()} == dict.fromkeys(
        stats, 0
    )
    # An ack is a promise: every position one covered is in the history.
    assert stored(server) >= acked
    assert not [token for token in tokens(tmp_path) if token in server.output()]


def test_locust_workers_resend_what_a_killed_server_did_not_acknowledge(server, tmp_path):
    """SIGKILL the server under the workers and start it again: each worker reconnects and
    resends its queue, so the positions made while the server was down are stored, and acked."""
    server.start_daphne()
    locust = run_locust(server, tmp_path, seconds=14)
    time.sleep(6)
    server.process.kill()
    server.process.wait()
    down_from = time.time()
    server.start(*server.daphne)
    up_again = time.time()
    stats = locust_stats(locust, tmp_path)

    # Positions made while the server was down reached it only in the resent batches.
    assert up_again - down_from > 0.5
    assert stored(server, f"ts__gt={down_from + 0.1}, ts__lt={up_again - 0.1}") > 0
    assert int(stats["ack"]["Request Count"]) > 20
    assert int(stats["ack"]["Failure Count"]) == 0
    assert "ack timeout" not in stats  # no socket waited 20 s for an ack
    assert int(stats["/ws/worker/"]["Request Count"]) > 10  # workers connected again
    assert stored(server) >= int(stats["ack"]["Request Count"])


def tokens(tmp_path) -> list[str]:
    teams = json.loads((tmp_path / "provision.json").read_text())
    return [worker["token"] for team in teams["teams"] for worker in team["workers"]]
