"""rz.adopt: upstream re-parameterized blocks (recognised by structure) become equal RepBlocks."""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.interop.adopt import ADOPTERS, adopt, register_adopter
from tests.conftest import assert_close
from tests.engine.test_reference import randomize
from tests.reference import upstream_blocks as up

CASES = {
    # name: (factory, input channels, train-mode exact)
    "repvgg": (lambda: up.RepVGGBlock(8, 8), 8, True),
    "repvgg_stride2": (lambda: up.RepVGGBlock(8, 16, stride=2), 8, True),
    "repvgg_g2": (lambda: up.RepVGGBlock(8, 8, groups=2), 8, True),
    "repvgg_se": (lambda: up.RepVGGBlock(8, 16, use_se=True), 8, True),
    "acb": (lambda: up.ACBlock(8, 8), 8, True),
    "acb_k5_stride2": (lambda: up.ACBlock(8, 12, k=5, stride=2, padding=2), 8, True),
    "acb_last_bn": (lambda: up.ACBlock(8, 8, use_last_bn=True), 8, True),
    "dbb": (lambda: up.DiverseBranchBlock(8, 8), 8, False),
    "dbb_grouped": (lambda: up.DiverseBranchBlock(8, 8, groups=2), 8, False),
    "dbb_depthwise": (lambda: up.DiverseBranchBlock(8, 8, groups=8), 8, False),
    "dbb_2x_internal": (lambda: up.DiverseBranchBlock(8, 16, stride=2, internal_channels_1x1_3x3=16), 8, False),
    "mobileone_dw_k4": (lambda: up.MobileOneBlock(8, 8, 3, 1, 1, groups=8, num_conv_branches=4), 8, True),
    "mobileone_pw_skip": (lambda: up.MobileOneBlock(8, 8, 1, 1, 0, num_conv_branches=4), 8, True),
    "mobileone_stem": (lambda: up.MobileOneBlock(3, 8, 3, 2, 1), 3, True),
    "mobileone_se": (lambda: up.MobileOneBlock(8, 16, 3, 1, 1, use_se=True, num_conv_branches=2), 8, True),
    "qarepvgg": (lambda: up.QARepVGGBlock(8, 8), 8, True),
    "qarepvgg_stride2": (lambda: up.QARepVGGBlock(8, 16, stride=2), 8, True),
    "qarepvgg_v2": (lambda: up.QARepVGGBlockV2(8, 8), 8, True),
    "replknet": (lambda: up.ReparamLargeKernelConv(8, 8, 13, 1, 8, 5), 8, True),
    "replknet_no_small": (lambda: up.ReparamLargeKernelConv(8, 8, 7, 2, 8, None), 8, True),
    # plain conv + BN helpers, one branch each (folded into their upstream's deployed conv)
    "dbb_convbn": (lambda: up.ConvBN(8, 8, 1), 8, True),
    "dbb_convbn_relu_k7_stride2": (lambda: up.ConvBN(3, 8, 7, 2, 3, nonlinear=nn.ReLU()), 3, True),
    "yolov6_convmodule": (lambda: up.ConvModule(8, 8, 3, 1, None), 8, True),
    "yolov6_convmodule_relu_stride2": (lambda: up.ConvModule(8, 16, 3, 2, "relu"), 8, True),
    "yolov6_convmodule_bias_silu_g2": (lambda: up.ConvModule(8, 8, 3, 1, "silu", groups=2, bias=True), 8, True),
    "yolov6_convmodule_hardswish_1x1": (lambda: up.ConvModule(8, 12, 1, 1, "hardswish"), 8, True),
}


def _upstream(name, seed=0):
    factory, cin, _ = CASES[name]
    torch.manual_seed(seed)
    return randomize(factory(), seed=seed).double().eval(), cin


@pytest.mark.parametrize("name", list(CASES))
def test_upstream_block_is_adopted_and_equal(name):
    block, cin = _upstream(name)
    net = nn.Sequential(nn.Identity(), block)
    before = copy.deepcopy(net.state_dict())
    new, report = adopt(net)
    assert len(report.adopted) == 1 and not report.left, str(report)
    assert any(isinstance(m, rz.RepBlock) for m in new.modules())
    assert not any(type(m).__name__ == type(block).__name__ for m in new.modules())
    x = torch.randn(2, cin, 15, 14, dtype=torch.float64)
    with torch.no_grad():
        assert_close(net(x), new(x))  # eval mode
        assert_close(net(x), rz.fold_model(new)(x))  # and folded
    for k, v in net.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])
    if CASES[name][2]:  # training mode: every branch BN normalises the same features
        a, b = copy.deepcopy(net).train(), copy.deepcopy(new).train()
        assert_close(a(x), b(x))


def test_training_mode_running_statistics_match_for_repvgg():
    block, cin = _upstream("repvgg")
    new, _ = adopt(block)
    a, b = copy.deepcopy(block).train(), copy.deepcopy(new).train()
    x = torch.randn(4, cin, 9, 9, dtype=torch.float64)
    a(x), b(x)
    assert_close(a.rbr_dense.bn.running_mean, b.branches[0][1].running_mean)
    assert_close(a.rbr_identity.running_var, b.branches[2][1].running_var)


def test_every_upstream_block_class_has_an_adapter():
    names = ADOPTERS.names()
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="already registered"):
        register_adopter("timm RepVggBlock", "RepVggBlock")(lambda m: None)


@pytest.mark.parametrize("module, reason", [
    (lambda: up.ACBlock(8, 8, padding=0), "cropped input"),
    (lambda: up.OREPA(4, 4), "prior branch"),
])
def test_blocks_that_cannot_fold_exactly_are_left_with_the_reason(module, reason):
    net = nn.Sequential(module())
    new, report = adopt(net)
    assert not report.adopted and len(report.left) == 1
    path, cls, why = report.left[0]
    assert path == "0" and reason in why
    assert type(new[0]) is type(net[0])  # left as it was


def test_same_named_class_of_another_layout_is_left_not_crashed():
    class RepVGGBlock(nn.Module):  # a user's own class that happens to share the name
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    new, report = adopt(nn.Sequential(RepVGGBlock()))
    assert not report.adopted and "RepVGGBlock" in report.left[0][1]


def test_unknown_reparameterizable_module_is_reported():
    class MyRepBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def switch_to_deploy(self):
            pass

    _, report = adopt(nn.Sequential(MyRepBlock()))
    assert report.left == [("0", "MyRepBlock", "no adapter for class MyRepBlock")]


def test_a_wrong_adoption_is_refused_by_the_numeric_check(monkeypatch):
    from reparam_zoo.interop.adopt import build

    block, _ = _upstream("repvgg")
    real = build._load

    def swap_bn(step, src, where):  # a broken adapter: identity BN state into the dense branch's BN
        real(step, block.rbr_identity if where == "branches.0.1" else src, where)

    monkeypatch.setattr(build, "_load", swap_bn)
    _, report = adopt(nn.Sequential(block))
    assert not report.adopted and "differs from the upstream block in eval mode" in report.left[0][2]


# ----------------------------------------------------------------------------- whole timm networks

TIMM_NETS = ["repvgg_a0", "repvgg_b1", "repvgg_b1g4", "repvgg_d2se", "mobileone_s0", "mobileone_s1",
             "mobileone_s2", "mobileone_s3", "mobileone_s4"]


@pytest.mark.parametrize("name", TIMM_NETS)
def test_timm_network_is_adopted_and_folds_like_timm(name):
    timm = pytest.importorskip("timm")
    from timm.utils.model import reparameterize_model

    torch.manual_seed(0)
    model = rz.randomize_norms(timm.create_model(name, num_classes=10), seed=1).double().eval()
    new, report = adopt(model)
    assert not report.left and len(report.adopted) == sum(
        type(m).__name__ in ("RepVggBlock", "MobileOneBlock") for m in model.modules())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        assert_close(ref, new(x))
        theirs = reparameterize_model(copy.deepcopy(model))(x)
        ours = rz.fold_model(new)(x)
    # both folds against the unfolded net: deep nets with random BN statistics amplify rounding,
    # so the bound is the larger of 1e-12 and 10x timm's own folding error
    scale = ref.abs().max().item()
    err_theirs = (theirs - ref).abs().max().item() / scale
    err_ours = (ours - ref).abs().max().item() / scale
    assert err_ours <= max(1e-12, 10 * err_theirs), (err_ours, err_theirs)
    # layout="original": timm's own deployed model loads the fold strictly and computes the same
    deployed = reparameterize_model(copy.deepcopy(model))
    deployed.load_state_dict(rz.fold_model(new, layout="original").state_dict(), strict=True)
    with torch.no_grad():
        assert_close(ours, deployed(x))


def test_a_block_whose_check_cannot_run_is_left_not_raised():
    class FixedPoolSE(nn.Module):  # an SE that only runs on 16x16 features
        def forward(self, x):
            return x * torch.sigmoid(torch.nn.functional.avg_pool2d(x, 16))

    block = up.MobileOneBlock(8, 8, 3, 1, 1, use_se=True)
    block.se = FixedPoolSE()
    new, report = adopt(nn.Sequential(block))
    assert not report.adopted and "building or checking the block failed" in report.left[0][2]
    assert new[0].se.__class__ is FixedPoolSE


def test_fastvit_reparameterizable_blocks_are_all_adopted():  # more: tests/interop/test_adopt_fastvit.py
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = rz.randomize_norms(timm.create_model("fastvit_t8", num_classes=10), seed=1).double().eval()
    new, report = adopt(model)
    kinds = {a for _, _, a, _ in report.adopted}
    assert kinds == {"timm MobileOneBlock", "timm ReparamLargeKernelConv", "timm RepMixer"}
    assert not report.left, str(report)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert_close(model(x), new(x))
        assert_close(model(x), rz.fold_model(new)(x), rel=1e-9)


DEPLOYED_KEYS = {  # the upstream's deployed names (+ the modules it keeps), per case
    "repvgg": {"rbr_reparam.weight", "rbr_reparam.bias"},
    "repvgg_se": {"rbr_reparam.weight", "rbr_reparam.bias", "se.down.weight", "se.down.bias", "se.up.weight",
                  "se.up.bias"},
    "acb": {"fused_conv.weight", "fused_conv.bias"},
    "dbb_depthwise": {"dbb_reparam.weight", "dbb_reparam.bias"},
    "mobileone_pw_skip": {"reparam_conv.weight", "reparam_conv.bias"},
    "qarepvgg": {"rbr_reparam.weight", "rbr_reparam.bias", "bn.weight", "bn.bias", "bn.running_mean",
                 "bn.running_var", "bn.num_batches_tracked"},
    "replknet": {"lkb_reparam.weight", "lkb_reparam.bias"},
    "dbb_convbn_relu_k7_stride2": {"conv.weight", "conv.bias"},
    "yolov6_convmodule": {"conv.weight", "conv.bias"},
    "yolov6_convmodule_bias_silu_g2": {"conv.weight", "conv.bias"},
}


@pytest.mark.parametrize("name", list(DEPLOYED_KEYS))
def test_adopted_blocks_fold_into_their_upstreams_deployed_layout(name):
    block, cin = _upstream(name)
    new, _ = adopt(nn.Sequential(block))
    folded = rz.fold_model(new, layout="original")
    assert set(folded.state_dict()) == {f"0.{k}" for k in DEPLOYED_KEYS[name]}
    x = torch.randn(2, cin, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        assert_close(new(x), folded(x))


@pytest.mark.parametrize("name", list(CASES))
def test_a_block_adopted_at_the_root_folds_into_its_upstreams_deployed_names(name):
    """``rz.adopt(block)`` on the upstream block itself: ``layout="original"`` gives the same deployed
    module, under the same names, as when the block sits inside a container."""
    block, cin = _upstream(name)
    root, report = adopt(block)
    assert len(report.adopted) == 1 and not report.left, str(report)
    in_container, _ = adopt(nn.Sequential(block))
    folded = rz.fold_model(root, layout="original")
    expected = rz.fold_model(in_container, layout="original")
    assert set(folded.state_dict()) == {k[2:] for k in expected.state_dict()}
    x = torch.randn(2, cin, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        assert_close(root(x), folded(x))
        assert_close(expected(x), folded(x))


def _timm_blocks():
    import timm.models.byobnet as byobnet
    import timm.models.fastvit as fastvit

    return {
        "timm_repvgg": lambda: byobnet.RepVggBlock(8, 8),
        "timm_repvgg_s2": lambda: byobnet.RepVggBlock(8, 16, stride=2),
        "timm_mobileone": lambda: byobnet.MobileOneBlock(8, 8, num_conv_branches=3),
        "fastvit_mobileone": lambda: fastvit.MobileOneBlock(8, 8, 3, num_conv_branches=2),
        "fastvit_replk": lambda: fastvit.ReparamLargeKernelConv(8, 8, 7, 1, 1, small_kernel=3),
    }


@pytest.mark.parametrize("name", ["timm_repvgg", "timm_repvgg_s2", "timm_mobileone", "fastvit_mobileone",
                                  "fastvit_replk"])
def test_a_timm_block_adopted_at_the_root_folds_into_timms_own_reparameterized_block(name):
    """Root adopt for timm's adapters: the fold of ``rz.adopt(block)`` loads strictly into the block after
    timm's own ``reparameterize()`` (the keys ``reparam_conv.*``) and computes the same."""
    pytest.importorskip("timm")
    torch.manual_seed(0)
    block = rz.randomize_norms(_timm_blocks()[name](), seed=3).double().eval()
    root, report = adopt(block)
    assert len(report.adopted) == 1 and not report.left, str(report)
    deployed = copy.deepcopy(block)
    deployed.reparameterize()
    folded = rz.fold_model(root, layout="original")
    assert set(folded.state_dict()) == set(deployed.state_dict())
    deployed.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 8, 11, 11, dtype=torch.float64)
    with torch.no_grad():
        assert_close(root(x), block(x))
        assert_close(deployed(x), block(x), rel=1e-10)
