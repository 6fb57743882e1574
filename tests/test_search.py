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
    assert rz.verify(block, (2, 8, 9, 9), dtype=torch.float64).ok


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
