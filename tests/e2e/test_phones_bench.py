"""loadtest/phones.py's --quick mode as a smoke test: the phone apps' HTTP endpoints and the worker
socket take turns on the real cluster and each gets its server CPU per position. Timings are not
asserted here; loadtest/results/phones-*.md holds the measured ones."""

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_quick_phones_benchmark_measures_each_kind_beside_the_socket(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.phones", "--quick",
         "--output-dir", str(tmp_path), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "phones-redis-quick.json").read_text())
    assert result["cores"] >= 1 and result["revision"]
    assert [t["kind"] for t in result["turns"]] == ["idle", "socket", "osmand", "owntracks"]
    assert "| osmand |" in (tmp_path / "phones-redis-quick.md").read_text()

    for turn in result["turns"][1:]:
        said = (turn["kind"], run.stdout[-2000:])
        assert turn["answered"] > 0 and turn["errors"] == 0, said
        assert turn["server_cpu_us_per_position"]["total"] > 0, said
        assert turn["latest_delivered_pct"] == 100.0, said  # every 200 reached the managers
        assert 0 < turn["answer_latency_ms"]["p50"] <= turn["answer_latency_ms"]["p99"], said
    assert result["turns"][2]["answers"] == {"200": result["turns"][2]["answered"]}

    figures = result["figures"]
    assert figures["idle"]["server_cpu_cores"] > 0
    for kind in ("osmand", "owntracks"):
        assert figures[kind]["ratio_to_socket"] > 0, kind
        assert len(figures[kind]["ratio_to_socket_per_round"]) == 1, kind
        assert "net_ratio_to_socket" in figures[kind], kind
