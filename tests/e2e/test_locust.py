"""The locust load test (loadtest/locustfile.py) run against a real daphne: both kinds of user
report what they did, without failures, and the workers' devices have their positions acked."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

LOCUST = Path(sys.executable).with_name("locust")


def test_locust_reports_worker_sends_acks_and_manager_latency(server, tmp_path):
    server.start_daphne()
    provision = tmp_path / "provision.json"
    server.manage("provision", "--workers", "10", "--managers", "2", "--prefix", "locust",
                  "--password", PASSWORD, "--output", str(provision))  # fmt: skip
    teams = json.loads(provision.read_text())
    provision.write_text(json.dumps({**teams, "password": PASSWORD}))
    env = {**server.env, "TEAMTRACK_PROVISION": str(provision), "TEAMTRACK_MANAGERS": "2"}

    result = subprocess.run(
        [LOCUST, "-f", "loadtest/locustfile.py", "--headless", "-u", "12", "-r", "12", "-t", "8s",
         "--host", server.base, "--csv", str(tmp_path / "stats"), "--only-summary"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    with open(tmp_path / "stats_stats.csv") as file:
        stats = {row["Name"]: row for row in csv.DictReader(file)}
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
    assert float(stats["ack"]["Max Response Time"]) < 5000
    assert {name: int(row["Failure Count"]) for name, row in stats.items()} == dict.fromkeys(
        stats, 0
    )
    # An ack is a promise: every position one covered is in the history.
    code = "from tracking.models import StoredPosition; print(StoredPosition.objects.count())"
    assert int(server.manage("shell", "--no-imports", "-c", code)) >= acked
    tokens = [worker["token"] for team in teams["teams"] for worker in team["workers"]]
    assert not [token for token in tokens if token in server.output()]
