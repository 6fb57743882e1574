"""Search spaces: choice points, reproducible sampling, exact folds of every candidate, costs."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reparam_zoo as rz
from reparam_zoo.cli.app import main
from reparam_zoo.search.space import Geometry, SearchSpace, candidate_cost, spec_hash

SPACE = SearchSpace.load("repvgg_acb")


def test_size_and_enumeration_agree():
    assert SPACE.size() == 2 * 2 * 2 * 2 ** 5  # kernel, act, count, five optional branches
    cands = SPACE.enumerate()
    assert len(cands) == SPACE.size() and len({spec_hash(c) for c in cands}) == len(cands)


def test_sampling_is_reproducible_per_seed():
    a = [spec_hash(SPACE.sample(random.Random(7))) for _ in range(3)]
    b = [spec_hash(SPACE.sample(random.Random(7))) for _ in range(3)]
    assert a == b
    assert len({spec_hash(SPACE.sample(s)) for s in range(20)}) > 5


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_every_sampled_candidate_validates_and_folds_exactly(seed):
    spec = SPACE.sample(seed)
    assert rz.load_spec(spec.to_yaml()) == spec
    torch.manual_seed(seed)
    block = rz.build_block(spec, 8, 8)
    assert rz.verify(block, (2, 8, 9, 9), dtype=torch.float64, randomize=True).ok


def test_invalid_resolutions_are_filtered_not_returned():
    space = SearchSpace("f", {"kernel": 3, "branches": [{"type": "kxk"},
                                                         {"choice": [{"type": "conv", "kernel": 5},
                                                                     {"type": "conv", "kernel": 1}]}]})
    assert space.size() == 2
    (only,) = space.enumerate()  # the 5x5 branch does not fit a 3x3 block
    assert only.branches[1].kernel == 1
    assert space.sample(0).branches[1].kernel == 1


@pytest.mark.parametrize("block,message", [
    ({"branches": [{"type": "kxk", "count": {"choice": []}}]}, "block.branches.0.count.choice: 'choice' needs a non-empty"),
    ({"kernel": {"choice": [3], "other": 1}, "branches": []}, "block.kernel: a choice point is a mapping"),
])
def test_bad_spaces_raise_spec_errors_with_locations(block, message):
    with pytest.raises(rz.SpecError) as info:
        SearchSpace("bad", block)
    assert message in str(info.value)


def test_no_valid_candidate_is_a_spec_error():
    space = SearchSpace("none", {"kernel": 3, "branches": [{"type": "conv", "kernel": 7}]})
    with pytest.raises(rz.SpecError, match="no valid candidate"):
        space.sample(0, tries=5)


def test_candidate_cost_counts_both_forms():
    spec = rz.get_spec("repvgg")
    c = candidate_cost(spec, Geometry(16, 16), size=8)
    assert c["train_params"] > c["deploy_params"] == 16 * 16 * 9 + 16
    assert c["deploy_macs"] == 8 * 8 * 16 * 16 * 9 and c["train_act_mb"] > 0 and c["deploy_ms"] > 0


def test_space_cli(capsys):
    assert main(["space", "repvgg_acb", "--sample", "3", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= 5 and "deploy ms" in out
    assert main(["space", "repvgg_acb", "--enumerate"]) == 0
    assert "256 valid distinct candidates" in capsys.readouterr().out


@pytest.mark.parametrize("scheme", ["gate-l1", "group-lasso", "scale-lasso"])
def test_supernet_with_zero_gates_equals_the_sub_spec(scheme):
    """Any gate state folds exactly, and a branch whose gate is zero is removed exactly: the pruned
    supernet equals the derived spec's block carrying the same weights (eval mode, float64)."""
    from reparam_zoo.search import supernet as snm

    torch.manual_seed(0)
    sn = snm.supernet_spec(SPACE, scheme)
    assert sn.optional == (1, 2, 3, 4, 5) and sn.mode == ("online" if scheme == "scale-lasso" else "offline")
    block = rz.randomize_norms(snm.build_supernet(SPACE, scheme)).double().eval()
    for i, module in enumerate(block.branches):  # distinct gate values, so the ranking is known
        params = snm.gate_groups(block, sn).get(block.branch_info[i].name)
        if params:
            with torch.no_grad():
                for p in params:
                    p.mul_(0.1 * i)
    assert rz.verify(block, (2, 64, 7, 6), dtype=torch.float64).ok  # any gate values fold exactly
    spec, ranking, pruned = snm.derive(block, sn, top_k=2)
    assert [n for n, _ in ranking][:2] == ["branches.5", "branches.4"]
    assert [b.type for b in spec.branches] == ["kxk", "identity", "avgpool"]
    assert rz.load_spec(spec.to_yaml()) == spec
    x = torch.randn(2, 64, 9, 9, dtype=torch.float64)
    want = pruned(x)
    deployed = rz.fold_model(pruned)
    assert torch.allclose(deployed(x), want, rtol=0, atol=1e-10 * want.abs().max().item())
    if scheme != "scale-lasso":  # offline: the derived spec's own block with the kept branches' weights
        sub = rz.build_block(spec, 64, 64).double().eval()
        kept = {"branches.0": "branches.0", "branches.4": "branches.1", "branches.5": "branches.2"}
        state = {}
        for k, v in pruned.state_dict().items():
            src = ".".join(k.split(".")[:2])
            if src in kept:
                state[kept[src] + k[len(src):]] = v
        if scheme == "gate-l1":  # the gate steps (value 0.4/0.5 here) are not in the derived spec
            state = {k: v for k, v in state.items() if v.dim() > 0 or "running" in k or "num_batches" in k}
            with torch.no_grad():
                g = {n: float(ps[0]) for n, ps in snm.gate_groups(pruned, sn).items()}
            sub_out = None
        sub.load_state_dict(state, strict=scheme != "gate-l1")
        if scheme == "group-lasso":
            sub_out = sub(x)
            assert torch.allclose(sub_out, want, rtol=0, atol=1e-12 * want.abs().max().item())
        else:
            assert g["branches.1"] == 0.0 and g["branches.4"] > 0


def test_threshold_zero_keeps_exactly_the_branches_whose_gate_is_not_zero():
    from reparam_zoo.search import supernet as snm

    sn = snm.supernet_spec(SPACE, "group-lasso")
    block = snm.build_supernet(SPACE, "group-lasso", in_channels=16, out_channels=16)
    with torch.no_grad():
        for p in snm.gate_groups(block, sn)["branches.2"]:
            p.zero_()
    spec, _, _ = snm.derive(block, sn, threshold=0.0)
    assert [b.type for b in spec.branches] == ["kxk", "conv", "kx1", "identity", "avgpool"]
    with pytest.raises(ValueError, match="exactly one"):
        snm.derive(block, sn)
    with pytest.raises(rz.SpecError, match="no optional branch"):
        snm.supernet_spec(SearchSpace("fixed", {"kernel": 3, "branches": [{"type": "kxk"}]}))


def test_proximal_step_reaches_exact_zero_and_elimination_freezes_it():
    from reparam_zoo.search import supernet as snm

    sn = snm.supernet_spec(SPACE, "group-lasso")
    block = snm.build_supernet(SPACE, "group-lasso", in_channels=8, out_channels=8)
    groups = snm.gate_groups(block, sn)
    with torch.no_grad():
        groups["branches.1"][0].fill_(0.01)
        groups["branches.1"][1].zero_()
    snm.proximal_step(sn, 1.0)(block, 0.01)  # shrink 0.01 * 1 * sqrt(16) = 0.04 > norm 0.028: exactly zero
    assert snm.gate_value(groups["branches.1"]) == 0.0 and abs(float(groups["branches.2"][0][0].detach()) - (1 - 0.04 / 8 ** 0.5)) < 1e-6
    elim = snm.eliminator(sn, top_k=2, epochs=4)
    elim(0, block)  # 4 alive, 2 to keep, 2 hooks left (after epochs 1 and 2): one switched off now
    table = snm.gate_table(block, sn)
    assert sum(v[0] == 0 for v in table.values()) == 2
    off = [n for n, v in table.items() if v[0] == 0 and n != "branches.1"]  # branches.1: zeroed by the lasso
    assert len(off) == 1 and not any(p.requires_grad for p in snm.gate_groups(block, sn)[off[0]])
    elim(1, block)
    assert sum(v[0] > 0 for v in snm.gate_table(block, sn).values()) == 2


def test_pareto_front():
    from reparam_zoo.search.space import pareto_front

    rows = [{"h": 1, "val_acc": 0.9, "deploy_ms": 1.0}, {"h": 2, "val_acc": 0.95, "deploy_ms": 2.0},
            {"h": 3, "val_acc": 0.9, "deploy_ms": 1.5}, {"h": 4, "val_acc": 0.97, "deploy_ms": 2.0}]
    assert [r["h"] for r in pareto_front(rows)] == [1, 4]


def test_search_cli_writes_leaderboard_plot_and_best_yaml(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["search", "repvgg_acb", "--data", "digits", "--budget", "2", "--epochs", "1", "--limit", "128",
                 "--latency-runs", "2", "--latency-batch", "4", "--reevaluate", "0", "--quiet", "--out", str(out)]) == 0
    import json

    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board["rows"]) == 2 and len({r["hash"] for r in board["rows"]}) == 2
    best = rz.load_spec((out / "best.yaml").read_text())
    assert spec_hash(best) == board["rows"][0]["hash"]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert all(r["same_predictions"] for r in board["rows"])


def test_net_templates_are_searched_too(tmp_path):
    space = SearchSpace.load("tiny_nets")
    assert space.size() == 8 * 2 * 4 * 4
    net = space.sample_net(3)
    assert net.stem.width in (8, 16) and net.stages[1].width in (32, 64)
    assert space.sample_net(3) == net
    rz.build_model(net, 10, block=space.sample(3))
    out = tmp_path / "s"
    assert main(["search", "tiny_nets", "--data", "digits", "--budget", "2", "--epochs", "1", "--limit", "128",
                 "--latency-runs", "2", "--latency-batch", "4", "--reevaluate", "0", "--quiet", "--out", str(out)]) == 0
    import json

    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert all("input_size: 16" in r["net"] for r in rows)


def test_supernet_search_cli_derives_an_exactly_folding_spec(tmp_path, capsys):
    out = tmp_path / "sn"
    assert main(["search", "repvgg_acb", "--supernet", "--scheme", "group-lasso", "--top-k", "2", "--epochs", "3",
                 "--data", "digits", "--limit", "128", "--reevaluate", "0", "--quiet", "--out", str(out)]) == 0
    import json

    result = json.loads((out / "supernet.json").read_text())
    assert len(result["gate_ranking"]) == 5
    derived = rz.load_spec((out / "best.yaml").read_text())
    assert len(derived.branches) == 3 and all(b.gate == "none" for b in derived.branches)
    # progressive elimination: at the end the supernet IS the derived net (exact zeros), so cutting costs nothing
    assert sum(v == 0 for _, v in result["gate_ranking"]) == 3
    assert result["derived_val_acc_without_retraining"] == result["supernet_val_acc"] == result["derived_folded_val_acc"]
    assert result["derived_max_logit_diff"] < 1e-4



def test_gate_groups_of_a_line_branch_with_one_line_per_axis():
    """``line`` with ``axis: all`` is one gate over its parts (``branches.N:axis<a>``), as a ``count``."""
    from reparam_zoo.search import supernet as snm

    space = SearchSpace("lines", {"kernel": 3, "branches": [{"type": "kxk"}, {"choice": [None, {"type": "line",
                                                                                               "axis": "all"}]}]})
    sn = snm.supernet_spec(space, "group-lasso")
    block = snm.build_supernet(space, "group-lasso", in_channels=4, out_channels=4)
    assert [i.name for i in block.branch_info] == ["branches.0", "branches.1:axis0", "branches.1:axis1"]
    groups = snm.gate_groups(block, sn)
    assert list(groups) == ["branches.1"] and len(groups["branches.1"]) == 4  # each line's BN weight and bias
