"""Smoke test: every benchmark script runs in --quick mode and writes its JSON (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("name", ["deploy", "fold", "fold_error", "train_offline", "train_online", "search_throughput"])
def test_benchmark_runs_quick(name, tmp_path):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == name and result["rows"]
    if name == "deploy":
        assert all(r["bitwise equal"] for r in result["rows"])
    if name == "fold_error":
        assert all(r["float64 fold"] <= 1e-12 and r["float32 fold"] <= 1e-6 for r in result["rows"])
