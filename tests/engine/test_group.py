"""The ``group`` branch: member branches summed, each times a constant factor, then a per-channel factor
(FastViT's RepMixer). It folds by the engine's converters, exactly, in every fold path; its YAML is
validated like a block's branches; what cannot fold is refused when the block is built."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import reparam_zoo as rz
from reparam_zoo import SpecError
from reparam_zoo.engine.fastfold import fold_blocks
from reparam_zoo.engine.steps.group import GroupSum
from tests.conftest import assert_close

#: FastViT's RepMixer: x + layer_scale * (mixer(x) - norm(x)), mixer = kxk + 1x1 + BN skip, norm = BN skip
REPMIXER = {"name": "repmixer", "act": "identity", "branches": [
    {"type": "identity", "norm": "none"},
    {"type": "group", "norm": {"type": "scale", "init": 1e-5}, "factors": [1, 1, 1, -1],
     "branches": [{"type": "kxk"}, {"type": "conv", "kernel": 1}, {"type": "identity"}, {"type": "identity"}]}]}

#: a group of everything: signed and scaled members of several types, copies, gates, a 1x1_kxk chain
MIXED = {"type": "group", "norm": "scale", "factors": [1, -1, 0.5, 2],
         "branches": [{"type": "kxk"}, {"type": "conv", "kernel": 1, "bias": True, "norm": "none"},
                      {"type": "1x1_kxk", "count": 2}, {"type": "line", "axis": "all", "gate": "learnable"}]}


def _block(branches, **keys):
    return {"name": "g", "act": "identity", "branches": branches, **keys}


CASES = {  # name: (spec, in, out, build keywords)
    "repmixer_depthwise": (REPMIXER, 8, 8, dict(groups=8)),
    "repmixer_dense": (REPMIXER, 8, 8, {}),
    "mixed_stride2_groups2": (_block([MIXED, {"type": "identity", "optional": True}]), 4, 8,
                              dict(stride=2, groups=2)),
    "mixed_k5_dilation2_reflect": (_block([MIXED], kernel=5, dilation=2, padding_mode="reflect"), 4, 4, {}),
    "mixed_k3x5_circular": (_block([MIXED, {"type": "kxk"}], kernel=[3, 5], padding_mode="circular"), 4, 4,
                            dict(groups=2)),
    "mixed_1d": (_block([MIXED]), 4, 4, dict(dims=1)),
    "mixed_3d_stride2": (_block([MIXED]), 4, 4, dict(dims=3, stride=2)),
    "linear": (_block([{"type": "group", "factors": [1, -1], "branches": [{"type": "kxk"}, {"type": "identity"}]}]),
               4, 4, dict(dims=0)),
    "nested_bn_gate": (_block([{"type": "group", "norm": "bn", "gate": "learnable",
                                "branches": [MIXED, {"type": "identity", "gate": "fixed"}, {"type": "avgpool"}]}]),
                       4, 4, {}),
    "norm_after_online": (_block([MIXED, {"type": "identity"}], norm_after="bn"), 4, 4, dict(mode="online")),
    "train_as_kernel": (_block([{"type": "group", "norm": "scale", "train_as": "kernel", "factors": [2, -1],
                                 "branches": [{"type": "kxk", "norm": "scale"}, {"type": "avgpool", "norm": "none"}]}]),
                        4, 4, {}),
    "member_train_as_kernel": (_block([{"type": "group", "factors": [-1, 3], "branches": [
        {"type": "kxk", "norm": "scale", "train_as": "kernel"}, {"type": "avgpool", "kernel": 1}]}]), 4, 4,
        dict(stride=2)),
}


def _built(name, seed=0):
    spec, cin, cout, kw = CASES[name]
    block = rz.build_block(spec, cin, cout, **kw)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():  # every weight random (layer scales and gates too), BN statistics too
            p.copy_(torch.randn_like(p) * 0.5 + (1 if p.dim() <= 1 else 0))
    return rz.randomize_norms(block, seed=seed), cin, kw.get("dims", 2)


@pytest.mark.parametrize("name", list(CASES))
def test_group_folds_exactly_in_every_geometry(name):
    block, cin, dims = _built(name)
    shape = (2, cin, *([9] * dims))
    for dtype in (torch.float64, torch.float32):
        res = rz.verify(block, shape, dtype=dtype, randomize=True)
        assert res.ok and res.shapes, f"{name} {dtype}: {res}"
        if dtype == torch.float64:
            assert res.max_rel <= 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_every_fold_path_gives_the_reference_numbers(name):
    """fastfold (RepBlock.fold, fold_model) falls back to the composed float64 path for a group branch: it
    gives what the differentiable reference (equivalent_kernel) gives, alone and batched with other blocks."""
    block, _, _ = _built(name)
    block = block.double().eval()
    ref_w, ref_b = block.equivalent_kernel()
    other = rz.build_block("repvgg", 4, 4).double()
    (w, b), _ = fold_blocks([block, other])
    assert_close(ref_w, w, rel=1e-14)
    assert_close(ref_b, b, rel=1e-14)
    layer = rz.fold_model(block)
    layer = layer.conv if isinstance(layer, torch.nn.Sequential) else layer
    assert torch.equal(layer.weight, w) and torch.equal(layer.bias, b)


def test_repmixer_is_the_formula():
    """The block computes x + γ ⊙ (BN1(dw3(x)) + BN2(dw1(x)) + BN3(x) − BN4(x)), written out by hand from
    its own modules, in eval and in training mode (each member BN normalises what it would alone)."""
    block, _, _ = _built("repmixer_depthwise", seed=3)
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64)
    for train in (False, True):
        blk = copy.deepcopy(block).double().train(train)
        group, scale = blk.branches[1]
        assert isinstance(group, GroupSum)
        (conv3, bn1), (conv1, bn2), (_, bn3), (_, bn4) = (list(chain) for chain in group.branches)

        def bn(m, z):
            stats = (None, None) if train else (m.running_mean, m.running_var)
            return F.batch_norm(z, *stats, m.weight, m.bias, train, 0.0, m.eps)

        with torch.no_grad():
            want = x + scale.weight.reshape(1, -1, 1, 1) * (
                bn(bn1, F.conv2d(x, conv3.weight, padding=1, groups=8)) + bn(bn2, F.conv2d(x, conv1.weight, groups=8))
                + bn(bn3, x) - bn(bn4, x))
            assert_close(want, blk(x))


def test_factors_are_constants_of_the_function():
    """Two equal members with factors 1 and -1 cancel exactly, in the training form and in the fold."""
    spec = _block([{"type": "group", "norm": "scale", "factors": [1, -1],
                    "branches": [{"type": "kxk", "bias": True, "norm": "none"},
                                 {"type": "kxk", "bias": True, "norm": "none"}]}])
    block = rz.build_block(spec, 4, 4).double()
    first, second = block.branches[0][0].branches
    with torch.no_grad():
        second[0].weight.copy_(first[0].weight)
        second[0].bias.copy_(first[0].bias)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    assert torch.equal(block(x), torch.zeros_like(x))
    w, b = block.equivalent_kernel()
    assert not w.any() and not b.any()
    with torch.no_grad():  # and with another factor the members no longer cancel: the factor is used
        block.branches[0][0].factors = (1.0, -0.5)
    assert block(x).abs().max() > 0
    assert_close(block(x), rz.fold_model(block)(x))


def test_the_layer_scale_is_one_learnable_factor_per_channel_on_the_group():
    block = rz.build_block(REPMIXER, 8, 8, groups=8)
    scale = block.branches[1][1]
    assert tuple(scale.weight.shape) == (8,) and torch.all(scale.weight == 1e-5)
    out = block(torch.randn(2, 8, 5, 5)).sum()
    out.backward()
    assert scale.weight.grad is not None and scale.weight.grad.abs().sum() > 0
    group = block.branches[1][0]
    assert all(p.grad is not None for p in group.parameters())  # every member learns through the sum


def test_yaml_round_trip_pickle_and_label():
    spec = rz.load_spec(_block([MIXED, {"type": "group", "branches": [MIXED]}]))
    assert rz.load_spec(spec.to_yaml()) == spec
    assert copy.deepcopy(spec) == spec and pickle.loads(pickle.dumps(spec)) == spec
    block = rz.build_block(REPMIXER, 8, 8, groups=8).double()
    assert block.describe()[1] == ("branches.1: group(kxk + bn, conv 1x1 + bn, identity + bn, -identity + bn) "
                                   "x scale")
    clone = pickle.loads(pickle.dumps(block))
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    assert torch.equal(clone(x), block(x))


@pytest.mark.parametrize("branch, message", [
    ({"type": "group", "branches": [{"type": "kxk"}], "factors": [1, 2]},
     "branches.0.factors: Expected one factor per entry of branches (1) but got 2"),
    ({"type": "group", "branches": [{"type": "kxx"}]},
     "branches.0.branches.0.type: unknown branch type 'kxx'"),
    ({"type": "group", "branches": [{"type": "conv", "kernel": 1, "bais": True}]},
     "branches.0.branches.0.bais: unknown key 'bais'; did you mean 'bias'?"),
    ({"type": "group", "branches": [{"type": "group", "branches": [{"type": "kxk", "count": 65}]}]},
     "branches.0.branches.0.branches.0.count: Expected a value <= 64 but got 65"),
    ({"type": "group", "branches": "kxk"}, "branches.0.branches: Expected a list of branches but got 'kxk'"),
    ({"type": "group", "branches": []}, "branches.0.branches: List should have at least 1 item"),
    ({"type": "group", "branches": [{"type": "kxk"}] * 65}, "branches.0.branches: Expected at most 64 items"),
    ({"type": "group", "branches": [{"type": "kxk"}], "factors": [float("nan")]},
     "branches.0.factors.0: Input should be a finite number"),
    ({"type": "group", "branches": [{"type": "kxk"}], "factors": [1e9]},
     "branches.0.factors.0: Expected a value <= 1000000.0 but got 1000000000.0"),
    ({"type": "group"}, "branches.0.branches: missing required key 'branches'"),
    ({"type": "group", "branches": [{"type": "kxk"}], "norm": "scael"}, "branches.0.norm.type"),
])
def test_yaml_is_validated_with_located_one_line_errors(branch, message):
    with pytest.raises(SpecError) as info:
        rz.load_spec(_block([branch]))
    text = str(info.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize("branch, keywords, message", [
    ({"type": "group", "branches": [{"type": "kxk"}]}, dict(transposed=True),
     "branches.0: a group cannot fold into a transposed block"),
    ({"type": "group", "branches": [{"type": "kxk"}, {"type": "identity"}]}, dict(out_channels=8),
     "branches.0.branches.1: identity needs in_channels == out_channels, got 4 -> 8; mark the branch `optional: true`"),
    ({"type": "group", "branches": [{"type": "identity", "optional": True}]}, dict(stride=2),
     "branches.0.branches: no member of the group applies"),
    ({"type": "group", "branches": [{"type": "group", "branches": [{"type": "conv", "kernel": 5}]}]}, {},
     "branches.0.branches.0.branches.0.kernel: the branch covers a 5x5 window, which does not fit"),
    ({"type": "group", "branches": [{"type": "kxk", "train_as": "kernel"}]}, {},
     "branches.0.branches.0.train_as: train_as: kernel composes the branch's kernel every step"),
    ({"type": "group", "train_as": "kernel", "branches": [{"type": "kxk"}]}, {},
     "branches.0.train_as: train_as: kernel composes the branch's kernel every step"),
    ({"type": "group", "count": 64, "branches": [{"type": "group", "branches": [{"type": "identity", "count": 64}]}]},
     {}, "the block's groups build 4,160 chains"),
    ({"type": "group", "branches": [{"type": "kxk", "count": 64}]}, dict(in_channels=2048, out_channels=2048),
     "would hold about 2.45e+09 weights"),
])
def test_what_cannot_fold_is_refused_when_the_block_is_built(branch, keywords, message):
    keywords = {"in_channels": 4, "out_channels": 4, **keywords}
    cin, cout = keywords.pop("in_channels"), keywords.pop("out_channels")
    with pytest.raises(SpecError) as info:
        rz.build_block(_block([branch]), cin, cout, **keywords)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_optional_members_and_when_are_dropped_like_branches():
    spec = _block([{"type": "group", "branches": [{"type": "kxk"}, {"type": "identity", "optional": True},
                                                  {"type": "conv", "kernel": 1, "when": "depthwise"}]}])
    assert len(rz.build_block(spec, 4, 8).branches[0][0].branches) == 1
    assert len(rz.build_block(spec, 4, 4, groups=4).branches[0][0].branches) == 3
    dropped = _block([{"type": "group", "optional": True, "branches": [{"type": "identity"}]}, {"type": "kxk"}])
    assert len(rz.build_block(dropped, 4, 8).branches) == 1  # a member that cannot apply drops the optional group
