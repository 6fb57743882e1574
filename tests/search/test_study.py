"""Search with Optuna underneath: choice points as distributions, the grid, no candidate trained
twice, two real `reparam-zoo search` processes on one SQLite study, and a killed search resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

import reparam_zoo as rz  # noqa: E402
from reparam_zoo.cli.app import main  # noqa: E402
from reparam_zoo.search.space import SearchSpace  # noqa: E402
from reparam_zoo.search.study import grid_candidates, storage_url, suggest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# 8 distinct candidates: a kxk branch and three optional ones
SPACE_YAML = """\
name: small
geometry: {in_channels: 16, out_channels: 16}
block:
  kernel: 3
  branches:
    - type: kxk
    - {choice: [null, {type: conv, kernel: 1}]}
    - {choice: [null, {type: identity, optional: true}]}
    - {choice: [null, {type: 1xk}]}
"""


@pytest.fixture()
def space_file(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text(SPACE_YAML)
    return p


def _study(out: Path, name: str = "small"):
    return optuna.load_study(study_name=name, storage=storage_url(None, out))


def _trained_hashes(study) -> Counter:
    """How often each candidate was trained (trials that started training, in any state)."""
    return Counter(t.user_attrs["hash"] for t in study.get_trials() if t.user_attrs.get("training"))


def test_choice_points_become_named_categorical_parameters():
    space = SearchSpace.load("repvgg_acb")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    data = suggest(trial, space.template, "block")
    assert set(trial.params) == {"block.kernel", "block.act", "block.branches.0.count", "block.branches.1",
                                 "block.branches.2", "block.branches.3", "block.branches.4", "block.branches.5"}
    assert data["kernel"] == [3, 5][trial.params["block.kernel"]]
    assert len(data["branches"]) == 1 + sum(trial.params[f"block.branches.{i}"] for i in range(1, 6))
    assert space.candidate(data) is not None


def test_grid_covers_every_valid_candidate_once(space_file):
    space = SearchSpace.load(space_file)
    grid = grid_candidates(space)
    assert len(grid) == 8 and all(net is None for _, net in grid)
    assert len({rz.search.spec_hash(s) for s, _ in grid}) == 8
    nets = grid_candidates(SearchSpace.load("tiny_nets"))
    assert len(nets) == 8 * 2 * 4 * 4 and all(n is not None for _, n in nets)


def _args(space_file, out, *extra):
    return ["search", str(space_file), "--data", "digits", "--limit", "96", "--holdout", "40", "--epochs", "1",
            "--latency-runs", "1", "--latency-batch", "2", "--reevaluate", "0", "--quiet", "--out", str(out), *extra]


def test_the_grid_trains_every_candidate_once_and_ends(space_file, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(_args(space_file, out, "--sampler", "grid", "--budget", "20")) == 0
    study = _study(out)
    trained = _trained_hashes(study)
    assert len(trained) == 8 and set(trained.values()) == {1}  # the whole grid, each candidate once
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["summary"]["complete"] == 8 and len(board["rows"]) == 8
    assert main(_args(space_file, out, "--sampler", "grid", "--budget", "8")) == 0  # done: nothing retrained
    assert _trained_hashes(_study(out)) == trained


def test_duplicate_draws_reuse_the_result_instead_of_training(space_file, tmp_path, capsys):
    out = tmp_path / "random"
    # random draws from 8 candidates until all 8 are trained: the coupon collector draws some twice
    assert main(_args(space_file, out, "--sampler", "random", "--pruner", "none", "--budget", "8")) == 0
    study = _study(out)
    trained = _trained_hashes(study)
    assert len(trained) == 8 and set(trained.values()) == {1}
    reused = [t for t in study.get_trials() if "duplicate_of" in t.user_attrs]
    assert reused and all(t.state == optuna.trial.TrialState.COMPLETE for t in reused)
    first = {t.number: t for t in study.get_trials()}
    assert all(t.values == first[t.user_attrs["duplicate_of"]].values for t in reused)
    assert "duplicates reused" in capsys.readouterr().err


def test_a_study_started_with_other_settings_is_refused(space_file, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_args(space_file, out, "--sampler", "random", "--budget", "1")) == 0
    capsys.readouterr()
    assert main(_args(space_file, out, "--sampler", "random", "--budget", "1", "--epochs", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "epochs 1 (now 2)" in err[0]


def test_nsga2_needs_a_cost_and_finds_a_front(space_file, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(_args(space_file, out, "--sampler", "nsga2", "--budget", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cost" in err[0]
    assert main(_args(space_file, out, "--sampler", "nsga2", "--cost", "train_macs", "--budget", "3")) == 0
    study = _study(out)
    assert len(study.directions) == 2 and study.best_trials
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["cost"] == "train_macs" and all(r["train_macs"] > 0 for r in board["rows"])


def _cli(*args):
    return [sys.executable, "-m", "reparam_zoo", *map(str, args)]


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_two_processes_share_one_study_and_never_train_a_candidate_twice(space_file, tmp_path):
    out = tmp_path / "shared"
    cmd = _cli(*_args(space_file, out, "--sampler", "random", "--budget", "6", "--epochs", "2"))
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    study = _study(out)
    trained = _trained_hashes(study)
    assert sum(trained.values()) == len(trained) >= 6  # no candidate trained twice
    owners = Counter(t.user_attrs["owner"] for t in study.get_trials() if t.user_attrs.get("training"))
    assert len(owners) == 2, owners  # both processes trained candidates of the one study
    done = [t for t in study.get_trials() if t.state in (optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.PRUNED)
            and "duplicate_of" not in t.user_attrs]
    assert len(done) >= 6  # the budget: trained to the end or pruned (median pruner, after epoch 1)
    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board["summary"]["processes"]) == 2


def test_a_killed_search_resumes_where_it_stopped(space_file, tmp_path):
    out = tmp_path / "resume"
    # trials of a few seconds (500 images, 4 epochs), so that the kill lands inside one
    cmd = _cli(*_args(space_file, out, "--sampler", "tpe", "--budget", "5", "--epochs", "4", "--limit", "500",
                      "--pruner", "none"))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 300
    first = []
    while time.monotonic() < deadline:  # kill it during its third training, after two finished
        time.sleep(0.3)
        if not (out / "study.db").exists():
            continue
        try:
            trials = _study(out).get_trials()
        except Exception:  # noqa: BLE001 - the study is being created right now
            continue
        first = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(first) >= 2 and any(t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("training")
                                   for t in trials):
            break
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert len(first) >= 2, "the search did not get to its third trial"
    study = _study(out)
    left = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    assert left, "SIGKILL leaves the trial it was training marked running"
    kept = {t.number: t.user_attrs["hash"] for t in study.get_trials()
            if t.state == optuna.trial.TrialState.COMPLETE}

    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "left running by a process that is gone" in r.stderr
    study = _study(out)
    states = {t.number: t.state for t in study.get_trials()}
    assert all(states[t.number] == optuna.trial.TrialState.FAIL for t in left)  # the killed trial
    assert all(states[n] == optuna.trial.TrialState.COMPLETE for n in kept)  # kept, not redone
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE
            and "duplicate_of" not in t.user_attrs]
    assert len(done) == 5
    finished = Counter(t.user_attrs["hash"] for t in done)
    assert set(finished.values()) == {1}
    # the resumed process trained only what was missing
    assert sum(1 for t in done if t.number not in kept) == 5 - len(kept)


def test_hyperband_pruning_and_an_explicit_storage_file(space_file, tmp_path):
    db = tmp_path / "elsewhere" / "my.db"
    db.parent.mkdir()
    out = tmp_path / "hb"
    assert main(_args(space_file, out, "--sampler", "random", "--pruner", "hyperband", "--budget", "3", "--epochs",
                      "3", "--storage", str(db), "--study", "hb")) == 0
    study = optuna.load_study(study_name="hb", storage=f"sqlite:///{db}")
    assert sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
               for t in study.get_trials()) == 3
    assert all(t.intermediate_values for t in study.get_trials()
               if t.state == optuna.trial.TrialState.COMPLETE)  # epochs 1 and 2 reported to the pruner
    assert not (out / "study.db").exists()


@pytest.mark.parametrize("storage", ["nosuchdriver://x/y", "{tmp}/no/such/folder/s.db"])
def test_a_bad_storage_is_one_line(space_file, tmp_path, capsys, storage):
    out = tmp_path / "bad"
    assert main(_args(space_file, out, "--budget", "1", "--storage", storage.format(tmp=tmp_path))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reparam-zoo: error: --storage"), err


def test_top_candidates_are_reevaluated_with_seeds_against_plain_on_the_test_set(space_file, tmp_path):
    out = tmp_path / "re"
    args = _args(space_file, out, "--sampler", "random", "--budget", "2", "--epochs", "2")
    args[args.index("--reevaluate") + 1] = "1"
    assert main(args + ["--reeval-seeds", "2"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    re = {s["block"]: s for s in board["reevaluation"]}
    best = f"small-{board['rows'][0]['hash']}"
    assert set(re) == {"plain", best} and re[best]["seeds"] == 2 and re["plain"]["seeds"] == 2
    results = json.loads((out / "reevaluate" / "results.json").read_text())
    assert results["config"]["val_images"] == 359  # the digits' test split, not the held-out training images
    assert "vs_control" in re[best] or re["plain"]["failed_seeds"]
    assert "re-evaluated" in (out / "leaderboard.md").read_text()


def test_the_duplicate_rule_lets_exactly_one_of_two_racing_trials_train():
    """The interleaving that beat a check-then-mark rule: B writes its hash and looks (nothing),
    A (lower-numbered) writes the same hash and looks (B is not training yet), then both mark
    themselves training and look again: exactly one keeps the candidate."""
    from reparam_zoo.search.study import candidate_holder

    S = optuna.trial.TrialState
    study = optuna.create_study()
    a, b = study.ask(), study.ask()
    for t in (a, b):
        t.set_user_attr("owner", "elsewhere:1")
    b.set_user_attr("hash", "h")
    assert candidate_holder(study, b, "h", S, lambda t: t.user_attrs.get("training") or t.number < b.number) is None
    a.set_user_attr("hash", "h")
    assert candidate_holder(study, a, "h", S, lambda t: t.user_attrs.get("training") or t.number < a.number) is None
    a.set_user_attr("training", True)
    b.set_user_attr("training", True)
    keeps_a = candidate_holder(study, a, "h", S, lambda t: t.number < a.number) is None
    keeps_b = candidate_holder(study, b, "h", S, lambda t: t.number < b.number) is None
    assert (keeps_a, keeps_b) == (True, False)


def test_supernet_on_a_net_space_and_its_one_line_refusals(tmp_path, capsys):
    out = tmp_path / "sn"
    common = ["--data", "digits", "--limit", "96", "--holdout", "40", "--quiet", "--out", str(out)]
    assert main(["search", "tiny_nets", "--supernet", "--epochs", "2", "--reevaluate", "1", "--reeval-seeds", "1",
                 *common]) == 0
    result = json.loads((out / "supernet.json").read_text())
    assert {s["block"] for s in result["reevaluation"]} == {"plain", "tiny_nets-derived"}
    capsys.readouterr()
    assert main(["search", "tiny_nets", "--supernet", "--epochs", "1", "--reevaluate", "0", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--epochs 2 or more" in err[0]


def test_copies_of_an_optional_branch_are_one_gate():
    from reparam_zoo.search import supernet as snm

    space = SearchSpace("copies", {"kernel": 3, "branches": [{"type": "kxk"}, {
        "choice": [None, {"type": "conv", "kernel": 1, "count": 2}]}, {"choice": [None, {"type": "1xk"}]}]},
        geometry=rz.search.Geometry(8, 8))
    sn = snm.supernet_spec(space, "group-lasso")
    block = snm.build_supernet(space, "group-lasso")
    groups = snm.gate_groups(block, sn)
    assert set(groups) == {"branches.1", "branches.2"} and len(groups["branches.1"]) == 4
    spec, ranking, _ = snm.derive(block, sn, top_k=1)
    assert len(ranking) == 2 and len(spec.branches) == 2
