"""Network specs: validate, build, fold exactly, match the RepVGG paper's sizes."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.engine.nets import block_fits, build_model, list_nets, load_net


def test_shipped_nets_load_and_build():
    assert ORIGINAL_NETS | {"repvgg_a2", "repvgg_b1", "repvgg_b1g4", "repvgg_b3g4"} <= set(list_nets())
    for name in list_nets():
        net = load_net(name)
        model = build_model(net, 10)
        out = model(torch.randn(2, 3, net.input_size, net.input_size))
        assert out.shape == (2, 10)


@pytest.mark.parametrize("name,deploy_m", [("repvgg_a0", 8.30), ("repvgg_a1", 12.78), ("repvgg_b0", 14.33)])
def test_repvgg_nets_have_the_papers_deployed_parameter_counts(name, deploy_m):
    # RepVGG paper, Table 4 (ImageNet, 1000 classes): A0 8.30M, A1 12.78M, B0 14.33M
    deployed = rz.fold_model(build_model(name, 1000))
    params = sum(p.numel() for p in deployed.parameters()) / 1e6
    assert abs(params - deploy_m) < 0.01, params


@pytest.mark.parametrize("name,deploy_m", [
    ("repvgg_a2", 25.49), ("repvgg_b1", 51.82), ("repvgg_b1g2", 41.36), ("repvgg_b1g4", 36.12),
    ("repvgg_b2", 80.31), ("repvgg_b2g4", 55.77), ("repvgg_b3", 110.96), ("repvgg_b3g4", 75.62)])
def test_larger_repvgg_nets_have_the_papers_deployed_parameter_counts(name, deploy_m):
    # RepVGG paper, Table 4 (deployed, 1000 classes); counted on the meta device (nothing allocated)
    with torch.device("meta"):
        deployed = build_model(name, 1000, deployed=True)
    params = sum(p.numel() for p in deployed.parameters()) / 1e6
    assert abs(params - deploy_m) < 0.015, params


ORIGINAL_NETS = {"cifar_vgg", "repvgg_a0", "repvgg_a1", "repvgg_b0", "tiny_vgg"}


def test_block_override_swaps_every_block():
    model = build_model("tiny_vgg", 10, block="acb", in_channels=1)
    blocks = [m for m in model.modules() if isinstance(m, rz.RepBlock)]
    assert len(blocks) == 5 and {b.spec.name for b in blocks} == {"acb"}
    assert blocks[0].geometry.in_channels == 1


def test_groups_pattern_is_applied_cyclically():
    net = {"name": "g", "input_size": 16, "stem": {"width": 8, "stride": 1},
           "stages": [{"width": 8, "depth": 4, "stride": 1, "groups": [1, 2]}]}
    model = build_model(net, 3)
    assert [b.geometry.groups for b in model.stages] == [1, 2, 1, 2]


@pytest.mark.parametrize("net,message", [
    ({"name": "x", "input_size": 16, "stem": {"width": 8}, "stages": [{"width": 8, "depht": 2}]},
     "stages.0.depht: unknown key 'depht'; did you mean 'depth'?"),
    ({"name": "x", "input_size": 16, "stem": {"width": 8}, "stages": []}, "stages: List should have at least 1 item"),
    ({"name": "x", "input_size": 16, "block": "repvg", "stem": {"width": 8}, "stages": [{"width": 8, "depth": 1}]},
     "stem.block: no shipped block spec 'repvg'"),
    ({"name": "x", "input_size": 16, "stem": {"width": 6}, "stages": [{"width": 6, "depth": 1, "groups": 4}]},
     "<net spec>: stages.0.groups: in_channels=6 and out_channels=6 must both be divisible by groups=4"),
])
def test_bad_net_specs_raise_spec_errors(net, message):
    with pytest.raises(rz.SpecError) as info:
        build_model(net, 10)
    assert message in str(info.value)


def test_unknown_net_suggests_the_closest():
    with pytest.raises(rz.SpecError, match="did you mean 'tiny_vgg'"):
        load_net("tiny_vg")


def _fold_cases(full):
    for net in list_nets():
        spec = load_net(net)
        if not isinstance(spec.block, str):  # a net with its own inline blocks (MobileOne): as shipped
            yield net, None
        small = spec.input_size <= 32
        for block in rz.list_specs():
            if not block_fits(spec, rz.get_spec(block)):
                continue
            # the default run: every block on the small nets, three on the original big ones, the
            # net's own block on the larger RepVGG nets (their other blocks run with -m slow)
            if full or small or block in (("repvgg", "acb", "dbb") if net in ORIGINAL_NETS else (spec.block,)):
                yield net, block


MAX_PARAMS = 60e6  # what fits this machine's memory in float64 with verify's copies


def _check_fold(net, block):
    spec = load_net(net)  # block None: the net's own blocks
    try:
        with torch.device("meta"):  # count first, allocate nothing
            n = sum(p.numel() for p in build_model(spec, 10, block=block).parameters())
    except rz.SpecError as exc:  # e.g. RepLKNet's dense 31x31 at 2560 channels: over the block weight budget
        assert "would hold about" in str(exc) and "limit" in str(exc), str(exc)
        pytest.skip(f"{net} x {block} is refused by the block weight budget (docs/spec.md, Limits): {exc}")
    if n > MAX_PARAMS:
        pytest.skip(f"{net} x {block} has {n / 1e6:.0f}M training parameters; "
                    f"too large to verify in float64 on a 24 GiB CPU machine")
    torch.manual_seed(0)
    model = build_model(spec, 10, block=block)
    size = min(spec.input_size, 32)  # the fold does not depend on the input size; keep CPU time low
    res = rz.verify(model, (2, 3, size, size), dtype=torch.float32, shapes=[(2, 3, size, size), (1, 3, size + 3, size + 1)], randomize=True)
    assert res.shapes and res.ok, f"{net} x {block}: {res}"


@pytest.mark.parametrize("net,block", list(_fold_cases(full=False)))
def test_net_with_block_folds_exactly(net, block):
    _check_fold(net, block)


@pytest.mark.slow
@pytest.mark.parametrize("net,block", [c for c in _fold_cases(full=True) if c not in set(_fold_cases(full=False))])
def test_every_net_with_every_block_folds_exactly(net, block):
    _check_fold(net, block)
