"""The spike benchmark's --quick mode as a smoke test: devices ramp up and down on the real
cluster while replicas are added and drained by the autoscaler's rule, and nothing that was
acknowledged is lost. Timings are reported, not asserted; loadtest/results/ holds them."""

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_quick_spike_scales_up_and_down_and_loses_no_acknowledged_position(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.spike", "--quick",
         "--output-dir", str(tmp_path), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "spike-quick.json").read_text())
    summary = result["summary"]
    assert summary["scale_ups"] >= 1 and summary["scale_downs"] >= 1
    assert summary["most_replicas"] >= 2
    assert summary["acknowledged"] > 1000
    assert summary["acknowledged_not_stored"] == 0
    assert summary["latest_delivered_pct"] == 100.0
    assert summary["longest_gap_at_scale_events_s"] <= 2.0
    for event in result["events"]:  # every drained replica's sockets went elsewhere
        if event["direction"] == "down":
            assert len(event["sockets_after"]) == len(event["sockets_before"]) - 1
    devices = [sample["devices"] for sample in result["samples"]]
    assert max(devices) == result["peak_devices"] and devices[-1] == result["settings"]["base"]
    assert (tmp_path / "spike-quick.png").read_bytes().startswith(b"\x89PNG")
    assert "## Goals" in (tmp_path / "spike-quick.md").read_text()
