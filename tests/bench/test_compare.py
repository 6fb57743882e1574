"""`reparam-zoo compare`: outputs, consistency, determinism, data errors, DDP (gloo, 2 processes)."""

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reparam_zoo.bench.data import load_data
from reparam_zoo.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--net", "tiny_vgg", "--data", "digits", "--epochs", "4", "--seeds", "1", "--limit", "512",
         "--latency-runs", "2", "--latency-batch", "8", "--quiet"]


def _run(tmp_path, *args):
    out = tmp_path / "out"
    code = main(["compare", *args, *QUICK, "--out", str(out)])
    return code, out


def test_short_compare_writes_consistent_outputs(tmp_path, capsys):
    code, out = _run(tmp_path, "repvgg", "acb")
    assert code == 0
    printed = capsys.readouterr().out
    assert "| repvgg |" in printed and "| acb |" in printed and "| plain |" in printed
    result = json.loads((out / "results.json").read_text())
    runs, summary = result["runs"], result["summary"]
    assert [r["block"] for r in runs] == ["plain", "repvgg", "acb"]  # the control first, by default
    for r in runs:
        assert r["val_acc"] == r["deploy_val_acc"] and r["same_predictions"]
        assert r["max_logit_diff"] <= 1e-5 * max(1.0, r["max_logit"])
        assert r["deploy_macs"] <= r["train_macs"] and r["folded_blocks"] == 5
        assert r["train_step_ms_q1"] <= r["train_step_ms"] <= r["train_step_ms_q3"] and r["saved_activations_mb"] > 0
        assert "deploy_ms_b1" not in r  # latency is measured once per distinct deployed net, not per run
    assert runs[1]["deploy_params"] < runs[1]["train_params"]
    assert result["config"]["train_images"] == 512 and result["config"]["data"] == "digits"
    assert result["config"]["control"] == "plain"
    # plain, repvgg and acb fold to the same convs: one deployed net, measured once
    (group,) = result["deploy_groups"]
    assert group["blocks"] == ["plain", "repvgg", "acb"] and group["deploy_ms_b1_q1"] <= group["deploy_ms_b1"]
    assert {r["deploy_group"] for r in summary} == {"A"}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [row["block"] for row in rows] == ["plain", "repvgg", "acb"]
    assert float(rows[2]["val_acc"]) == runs[2]["val_acc"]
    md = (out / "results.md").read_text()
    assert md.splitlines()[2].startswith("At this budget") and "nothing can be ranked" in md  # one seed
    assert f"{100 * summary[1]['val_acc']:.2f}" in md and result["conclusion"] in md
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "runs.partial.json").exists() and not (out / "results.partial.json").exists()


def test_paired_seeds_give_intervals_and_a_time_budget_keeps_rounds_whole(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "repvgg", "--net", "tiny_vgg", "--data", "digits", "--epochs", "4", "--seeds", "2",
            "--limit", "512", "--latency-runs", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    (row,) = [r for r in result["summary"] if r["block"] == "repvgg"]
    v = row["vs_control"]
    accs = {r["seed"]: r["val_acc"] for r in result["runs"] if r["block"] == "repvgg"}
    ctrl = {r["seed"]: r["val_acc"] for r in result["runs"] if r["block"] == "plain"}
    assert v["n"] == 2 and abs(v["mean"] - 50 * sum(accs[s] - ctrl[s] for s in (0, 1))) < 1e-9
    assert v["low"] <= v["mean"] <= v["high"] and v["verdict"] in ("better", "worse", "no detectable difference")
    assert [r["seed"] for r in result["runs"]] == [0, 0, 1, 1]  # seeds in rounds: every block has the same seeds
    # a budget smaller than one round: the run stops after the first round, says so, and every block has seed 0
    assert main([*argv[:-1], str(tmp_path / "budget"), "--seeds", "3", "--time-budget", "0.01"]) == 0
    result = json.loads((tmp_path / "budget" / "results.json").read_text())
    assert result["config"]["seeds_done"] == 1 and result["config"]["stopped_early"] is True
    assert sorted((r["block"], r["seed"]) for r in result["runs"]) == [("plain", 0), ("repvgg", 0)]
    assert "time budget ended the run after 1 of 3 seeds" in result["conclusion"]
    # without the control nothing is compared
    assert main([*argv[:-1], str(tmp_path / "nc"), "--no-control"]) == 0
    result = json.loads((tmp_path / "nc" / "results.json").read_text())
    assert [r["block"] for r in result["runs"]] == ["repvgg", "repvgg"] and "no control" in result["conclusion"]


def test_compare_is_deterministic_on_cpu(tmp_path):
    a = _run(tmp_path / "a", "dbb")[1]
    b = _run(tmp_path / "b", "dbb")[1]
    ra, rb = (json.loads((p / "results.json").read_text())["runs"][0] for p in (a, b))
    for key in ("train_loss", "train_acc", "val_acc", "max_logit_diff"):
        assert ra[key] == rb[key], key


@pytest.mark.parametrize("data,message", [
    ("mnsit", "unknown --data 'mnsit'"),
    ("mnist:{empty}", "lacks the IDX files"),
    ("cifar10:/nonexistent/dir", "cifar10: no such directory"),
    ("cifar10:{empty}", "lacks data_batch_1"),
    ("imagefolder:{empty}", "needs one sub-folder per class"),
    ("cifar10:", "needs a directory"),
])
def test_bad_data_exits_2_with_one_line(tmp_path, capsys, data, message):
    (tmp_path / "empty").mkdir()
    code = main(["compare", "repvgg", *QUICK, "--data", data.format(empty=tmp_path / "empty"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_bad_net_exits_2(tmp_path, capsys):
    bad = tmp_path / "net.yaml"
    bad.write_text("name: n\ninput_size: 16\nstem: {width: 8}\nstages: [{width: 8, depht: 1}]\n")
    assert main(["compare", "repvgg", "--net", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "stages.0.depht: unknown key" in err and str(bad) in err


def test_cifar10_batches_are_read(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 20))}
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(batch, fh)
    d = load_data(f"cifar10:{tmp_path}", 16)
    assert d.train_x.shape == (100, 3, 16, 16) and d.val_x.shape == (20, 3, 16, 16) and d.num_classes == 10


def test_imagefolder_is_read(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_data(f"imagefolder:{tmp_path}", 16)
    assert d.num_classes == 2 and d.in_channels == 3
    assert len(d.train_x) + len(d.val_x) == 10 and d.train_x.shape[-2:] == (16, 16)


def test_ddp_two_processes_with_gloo_train_and_fold(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "reparam_zoo", "compare", "repvgg", *QUICK, "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["world_size"] == 2
    run = result["runs"][0]
    assert run["sync_batchnorm"] == 0  # SyncBatchNorm is CUDA-only in torch; tests/engine/test_fold.py folds it
    assert run["same_predictions"] and run["folded_blocks"] == 5
    assert run["train_acc"] > 0.1


def test_ddp_with_uneven_shards_finishes(tmp_path):
    # 129 images on 2 ranks, batch 64: unpadded, rank 0 would run 2 steps and rank 1 one, and the
    # ranks' collectives would wait for each other until gloo's timeout (the subprocess timeout
    # below only guards the test run; it is not a speed assertion)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
         "-m", "reparam_zoo", "compare", "repvgg", "--data", "digits", "--epochs", "1", "--seeds", "2",
         "--time-budget", "0.01", "--limit", "129",
         "--batch-size", "64", "--latency-runs", "1", "--quiet", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["world_size"] == 2
    # the time budget is decided by rank 0 and shared: both ranks stop after the same round (no hang)
    assert config["seeds_done"] == 1 and config["stopped_early"] is True


def test_progress_off_a_terminal_is_one_line_per_epoch(tmp_path, capsys):
    """stderr is not a terminal here (a log file, a pipe): no carriage-return bars, one line per epoch."""
    args = [a for a in QUICK if a != "--quiet"]
    assert main(["compare", "repvgg", *args, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    epochs = [ln for ln in err.splitlines() if " epoch " in ln]
    assert len(epochs) == 2 * 4 and all(ln.strip().startswith(("plain seed 0 epoch", "repvgg seed 0 epoch"))
                                        for ln in epochs), epochs
