"""Smoke test: every benchmark script runs in --quick mode and writes its JSON (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("name", ["deploy", "fold", "fold_dbb", "fold_error", "train_offline", "train_online",
                                  "train_repopt", "search_throughput"])
def test_benchmark_runs_quick(name, tmp_path):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == name and result["rows"]
    if name == "deploy":
        assert all(r["bitwise equal"] for r in result["rows"])
    if name == "fold_dbb":  # our fold equals DBB's own conversion and the dilated block
        assert all(r["max |diff|"] <= 1e-4 for r in result["rows"])
    if name == "fold_error":
        assert all(r["float64 fold"] <= 1e-12 and r["float32 fold"] <= 1e-6 for r in result["rows"])


def test_supernet_gates_and_search_study_run_small(tmp_path):
    """The two scripts behind docs/search.md's tables, on the digits at toy size (no numbers asserted
    beyond what the code guarantees: a derived net without retraining equals the eliminated supernet)."""
    out = tmp_path / "gates.json"
    proc = subprocess.run([sys.executable, str(BENCH / "supernet_gates.py"), "--data", "digits", "--train-limit", "128",
                           "--epochs", "3", "--seeds", "1", "--runs", "group-lasso:0.03:elim,gate-l1:0.01",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    elim = rows[0]
    assert elim["scheme"] == "group-lasso+elimination" and elim["top2"]["acc"] == elim["supernet_acc"]
    assert len(elim["top2"]["branches"]) == 3 and rows[1]["zero_gates"] == 0
    runs = tmp_path / "runs"
    common = ["--data", "digits", "--limit", "96", "--holdout", "40", "--epochs", "1", "--reevaluate", "0", "--quiet",
              "--latency-runs", "1", "--latency-batch", "2"]
    for args in (["--sampler", "random", "--budget", "2", "--out", str(runs / "random-0")],
                 ["--supernet", "--epochs", "2", "--out", str(runs / "sn-group-lasso-0")]):
        r = subprocess.run([sys.executable, "-m", "reparam_zoo", "search", "repvgg_acb", *common, *args],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.run([sys.executable, str(BENCH / "search_study.py"), str(runs), "--data", "digits",
                           "--train-limit", "96", "--holdout", "40", "--epochs", "1", "--seeds", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((runs / "summary" / "search_study.json").read_text())
    assert report["studies"]["random-0"]["trained"] == 2 and len(report["supernets"]) == 1
    assert {s["block"] for s in report["reevaluation"]} >= {"plain"} and report["test_images"] == 359
