"""The benchmark's --quick mode as a smoke test: it runs end to end on the real cluster and
produces sane numbers. Timings are not asserted here; loadtest/results/ holds the measured ones."""

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_quick_benchmark_measures_every_mode_side_by_side(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--quick",
         "--output-dir", str(tmp_path), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "warming up" in run.stdout  # progress is shown while it runs
    result = json.loads((tmp_path / "bench-redis-quick.json").read_text())
    assert result["cores"] >= 1 and result["revision"]
    assert set(result["modes"]) == {"bare", "stock", "batched", "live-only", "batched-no-acks"}
    assert "| batched |" in (tmp_path / "bench-redis-quick.md").read_text()

    assert result["modes"]["live-only"]["idle"] is None  # steps only: it prices the history
    for mode, data in result["modes"].items():
        if mode != "live-only":
            assert data["idle"]["sockets"] == 300, mode
            assert data["idle"]["kb_per_connection"] > 0, mode
        first = data["steps"][0]
        assert first["errors"] == 0, mode
        assert first["sent_per_s"] >= 0.9 * first["offered_per_s"], mode
        assert first["server_cpu_us_per_position"]["total"] > 0, mode
        assert first["server_cpu_us_per_position"]["daphne"] > 0, mode
        # The replicas' event loops, a part of daphne's figure (to a clock tick, 10 ms, a thread).
        tick = 2 * 2 * 10_000 / (first["sent_per_s"] * result["seconds"])
        loops, daphne = first["event_loop_us_per_position"], first["server_cpu_us_per_position"]
        assert 0 < loops <= daphne["daphne"] + tick, mode

    assert result["modes"]["bare"]["steps"][0]["received_pct"] == 100.0
    for mode in ("stock", "batched", "live-only", "batched-no-acks"):
        first = result["modes"][mode]["steps"][0]
        assert first["latest_delivered_pct"] == 100.0, mode
        assert 0 < first["latency_ms"]["p50"] <= first["latency_ms"]["p99"], mode
        assert first["delivered_per_s"] > 0, mode
    # The relay stores every position it relays; with HISTORY=false it stores none.
    stored = result["modes"]["batched"]["steps"][0]["stored_per_s"]
    assert stored >= 0.9 * result["modes"]["batched"]["steps"][0]["sent_per_s"]
    assert result["modes"]["live-only"]["steps"][0]["stored_per_s"] == 0
    assert any("History's cost" in line for line in result["ratios"])
    assert any(line.startswith("Where, at 200 devices") for line in result["ratios"])
    assert result["modes"]["batched"]["steps"][0]["server_cpu_us_per_position"]["kafka"] == 0

    # Devices send a seq and count acks (cumulative: fewer ack frames than positions covered),
    # but in batched-no-acks; an ack later than 5 s would be an error.
    acks = result["modes"]["batched"]["steps"][0]["acks"]
    assert acks["late"] == 0 and 0 < acks["ack_frames_per_s"] <= acks["acked_per_s"]
    assert acks["acked_per_s"] >= 0.8 * result["modes"]["batched"]["steps"][0]["sent_per_s"]
    assert "acks" not in result["modes"]["batched-no-acks"]["steps"][0]
    assert any("Acks' cost" in line for line in result["ratios"])

    fanout = result["modes"]["batched"]["fanout"]
    assert fanout["manager_sockets"] == 10 and fanout["errors"] == 0
    assert fanout["latest_delivered_pct"] == 100.0
    # One frame per manager per flush window (30 windows here), carrying many workers' positions.
    assert fanout["frames_per_window"] <= 1.04
    assert fanout["positions_per_frame"] > 5
    # The stock pattern sends a frame per position instead.
    assert result["modes"]["stock"]["fanout"]["positions_per_frame"] == 1.0

    # The teams and tokens it used, for loadtest/locustfile.py.
    provision = json.loads((tmp_path / "work" / "provision.json").read_text())
    assert provision["password"] and provision["teams"][0]["workers"][0]["token"]
