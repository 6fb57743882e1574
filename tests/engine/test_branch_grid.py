"""Every registered branch type folds exactly over a grid of geometries.

Each branch type is put alone in a block (and beside a kxk branch) for every block
kernel, stride, groups, dilation and padding mode of the grid, with random BN statistics,
and compared on inputs of sizes 1, 2, 7, 8 and 15. A combination either validates and
folds within tolerance (fp64 1e-12, fp32 1e-6) or is refused with a SpecError.
"""

import itertools
from collections import Counter

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo import SpecError

C = 4
KERNELS = [1, 3, 5, [1, 3], [3, 5]]
STRIDES = [1, 2]
GROUPS = [1, 2, C]
DILATIONS = [1, 2]
SIZES = [1, 2, 7, 8, 15]
MODES = ["zeros", "reflect", "replicate", "circular"]

# branch variants per registered type (every registered type must appear here)
VARIANTS = {
    "kxk": [{"type": "kxk"}, {"type": "kxk", "bias": True, "norm": "none", "gate": "learnable"}],
    "1xk": [{"type": "1xk"}],
    "kx1": [{"type": "kx1", "norm": "scale"}],
    "conv": [{"type": "conv", "kernel": 1}, {"type": "conv", "kernel": [1, 3], "dilation": 2},
             {"type": "conv", "kernel": 3, "groups": "depthwise", "norm": {"type": "bn", "eps": 0.01}}],
    "line": [{"type": "line", "axis": 0}, {"type": "line", "axis": "all", "norm": "scale", "bias": True}],
    "identity": [{"type": "identity"}, {"type": "identity", "optional": True, "norm": "scale"}],
    "avgpool": [{"type": "avgpool"}, {"type": "avgpool", "pre_1x1": True}],
    "1x1_kxk": [{"type": "1x1_kxk", "identity_init": True}, {"type": "1x1_kxk", "mid_channels": 8},
                {"type": "1x1_kxk", "mid_multiplier": 2, "mid_norm": "scale", "when": "depthwise"}],
    "seq": [{"type": "seq", "steps": [{"type": "conv", "kernel": 1, "out_channels": "in", "multiplier": 2,
                                       "bias": True},
                                      {"type": "bn", "eps": 0.001}, {"type": "scale"},
                                      {"type": "conv", "kernel": [1, 3], "groups": 1}]},
            {"type": "seq", "steps": [{"type": "avgpool", "kernel": 3}, {"type": "conv", "kernel": 1}]},
            {"type": "seq", "train_as": "kernel", "norm": "scale", "steps": [
                {"type": "conv", "kernel": 1, "out_channels": "in", "param": "identity"},
                {"type": "conv", "kernel": 1, "groups": "depthwise", "out_channels": "in", "multiplier": 2,
                 "param": "basis"},
                {"type": "scale"},
                {"type": "conv", "kernel": [1, 3], "param": "normalized", "bias": True}]}],
    "group": [{"type": "group", "norm": "scale", "factors": [1, -1],
               "branches": [{"type": "kxk"}, {"type": "conv", "kernel": 1, "bias": True}]},
              {"type": "group", "norm": "bn", "factors": [0.5, -2, 1], "branches": [
                  {"type": "avgpool", "pre_1x1": True}, {"type": "identity", "optional": True},
                  {"type": "group", "norm": "scale", "branches": [{"type": "1xk"}, {"type": "kx1"}]}]}],
}


def test_every_builtin_branch_type_is_in_the_grid():
    builtin = {n for n, t in rz.BRANCHES.items() if t.spec.__module__.startswith("reparam_zoo.engine.branches.")}
    assert builtin == set(VARIANTS)


def _cases():
    for btype, variants in VARIANTS.items():
        for variant in variants:
            yield btype, variant


def _block(branch, kernel, dilation, mode, with_kxk):
    branches = [branch] + ([{"type": "kxk"}] if with_kxk else [])
    return {"name": "grid", "kernel": kernel, "dilation": dilation, "padding_mode": mode, "act": "identity",
            "branches": branches}


@pytest.mark.parametrize("btype,variant", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_branch_type_folds_exactly_over_the_grid(btype, variant):
    outcomes = Counter()
    for kernel, stride, groups, dilation, mode, cout in itertools.product(
            KERNELS, STRIDES, GROUPS, DILATIONS, MODES, [C, 2 * C]):
        with_kxk = (stride + groups + dilation) % 2 == 0  # half the cases beside a kxk branch
        try:
            spec = rz.load_spec(_block(variant, kernel, dilation, mode, with_kxk))
            block = rz.build_block(spec, C, cout, stride=stride, groups=groups)
        except SpecError:
            outcomes["refused"] += 1
            continue
        shapes = [(2, C, s, s + (1 if s > 2 else 0)) for s in SIZES]
        for dtype in (torch.float64, torch.float32):
            res = rz.verify(block, shapes[0], dtype=dtype, shapes=shapes, seed=stride * 7 + groups, randomize=True)
            assert res.shapes, "no input size was accepted by the block"
            assert res.ok, (f"{btype} {variant} kernel={kernel} stride={stride} groups={groups} "
                            f"dilation={dilation} mode={mode} out={cout}: {res}")
        outcomes["folded"] += 1
    # the grid must exercise the type, not just refuse it
    assert outcomes["folded"] >= 20, outcomes


@pytest.mark.parametrize("name", rz.list_specs())
def test_shipped_spec_folds_exactly_over_the_grid(name):
    base = rz.get_spec(name)
    folded = 0
    for stride, groups, mode, cout in itertools.product(STRIDES, GROUPS, ["zeros", "reflect", "circular"], [C, 2 * C]):
        spec = base.model_copy(update={"padding_mode": mode})
        try:
            block = rz.build_block(spec, C, cout, stride=stride, groups=groups)
        except SpecError:
            continue
        shapes = [(2, C, s, s + 1) for s in (7, 8, 15, 33)]
        for dtype in (torch.float64, torch.float32):
            res = rz.verify(block, shapes[0], dtype=dtype, shapes=shapes, seed=stride + groups, randomize=True)
            assert res.shapes and res.ok, f"{name} stride={stride} groups={groups} mode={mode} out={cout}: {res}"
        folded += 1
    assert folded >= 12
