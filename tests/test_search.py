"""Search spaces: choice points, reproducible sampling, exact folds of every candidate, costs."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reparam_zoo as rz
from reparam_zoo.cli import main
from reparam_zoo.search import Geometry, SearchSpace, candidate_cost, spec_hash

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


def test_supernet_with_gates_on_a_subset_equals_the_sub_spec():
    from reparam_zoo.primitives.gate import BranchGate
    from reparam_zoo.search import build_supernet

    torch.manual_seed(0)
    sn = rz.randomize_norms(build_supernet(SPACE)).double()
    keep = {"branches.0", "branches.2", "branches.4"}  # kxk (ungated), 1xk, identity
    with torch.no_grad():
        for module, info in zip(sn.branches, sn.branch_info):
            for m in module:
                if isinstance(m, BranchGate):
                    m.weight.fill_(1.0 if info.name in keep else 0.0)
    sub = rz.build_block({"name": "sub", "act": "relu", "branches": [
        {"type": "kxk"}, {"type": "1xk"}, {"type": "identity", "optional": True}]}, 64, 64).double()
    state = {}
    for j, src in enumerate(["branches.0", "branches.2", "branches.4"]):
        for k, v in sn.state_dict().items():
            if k.startswith(src + ".") and not k.endswith(".2.weight"):  # step 2 is the gate
                state[f"branches.{j}." + k[len(src) + 1:]] = v
    sub.load_state_dict(state, strict=True)
    x = torch.randn(2, 64, 7, 6, dtype=torch.float64)
    for mode in ("eval", "train"):
        getattr(sn, mode)()
        getattr(sub, mode)()
        assert torch.allclose(sn(x), sub(x), rtol=0, atol=1e-12 * sn(x).abs().max().item())
    assert rz.verify(sn, (2, 64, 7, 6), dtype=torch.float64, randomize=True).ok  # any gate values fold exactly


def test_derive_round_trips_through_yaml_and_folds():
    from reparam_zoo.search import build_supernet, derive, gate_values

    torch.manual_seed(0)
    sn = rz.randomize_norms(build_supernet(SPACE)).double().eval()
    with torch.no_grad():
        for i, module in enumerate(sn.branches):
            if len(module) and hasattr(module[-1], "weight") and module[-1].weight.dim() == 0:
                module[-1].weight.fill_(0.1 * i)
    spec, deployed = derive(sn, top_k=2)
    assert [b.type for b in spec.branches] == ["kxk", "identity", "avgpool"]  # the two largest gates
    assert rz.load_spec(spec.to_yaml()) == spec
    assert rz.verify(rz.build_block(spec, 64, 64), (1, 64, 8, 8), dtype=torch.float64, randomize=True).ok
    pruned = build_supernet(SPACE).double().eval()
    pruned.load_state_dict(sn.state_dict())
    with torch.no_grad():
        for module, info in zip(pruned.branches, pruned.branch_info):
            if info.name in gate_values(pruned) and info.name not in ("branches.4", "branches.5"):
                module[-1].weight.zero_()
    x = torch.randn(1, 64, 9, 9, dtype=torch.float64)
    assert torch.allclose(deployed(x), pruned(x), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="exactly one"):
        derive(sn)


def test_pareto_front():
    from reparam_zoo.search import pareto_front

    rows = [{"h": 1, "val_acc": 0.9, "deploy_ms": 1.0}, {"h": 2, "val_acc": 0.95, "deploy_ms": 2.0},
            {"h": 3, "val_acc": 0.9, "deploy_ms": 1.5}, {"h": 4, "val_acc": 0.97, "deploy_ms": 2.0}]
    assert [r["h"] for r in pareto_front(rows)] == [1, 4]


def test_search_cli_writes_leaderboard_plot_and_best_yaml(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["search", "repvgg_acb", "--budget", "2", "--epochs", "1", "--limit", "128", "--latency-runs", "2",
                 "--latency-batch", "4", "--quiet", "--out", str(out)]) == 0
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
    assert main(["search", "tiny_nets", "--budget", "2", "--epochs", "1", "--limit", "128", "--latency-runs", "2",
                 "--latency-batch", "4", "--quiet", "--out", str(out)]) == 0
    import json

    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert all("input_size: 16" in r["net"] for r in rows)


def test_supernet_search_cli_derives_an_exactly_folding_spec(tmp_path, capsys):
    out = tmp_path / "sn"
    assert main(["search", "repvgg_acb", "--supernet", "--top-k", "2", "--epochs", "1", "--limit", "128",
                 "--latency-runs", "2", "--latency-batch", "4", "--quiet", "--out", str(out)]) == 0
    import json

    result = json.loads((out / "supernet.json").read_text())
    assert len(result["gate_ranking"]) == 5
    derived = rz.load_spec((out / "best.yaml").read_text())
    assert len(derived.branches) == 3 and all(b.gate == "none" for b in derived.branches)
    assert result["derived_val_acc_without_retraining"] == result["derived_folded_val_acc"]
    assert result["derived_max_logit_diff"] < 1e-4
