"""FastViT adopted fully: timm's RepMixer (a ``group`` branch: the mixer's branches minus the norm's, times the
layer scale, beside the identity) and RepConditionalPosEnc (a biased kxk beside the identity), alone, at the
root and in the whole fastvit_t8, folding into timm's own deployed layout (``reparam_conv``)."""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.verify import TOLERANCES, relative_error
from reparam_zoo.interop.adopt import REPARAM_METHODS, adopt

timm = pytest.importorskip("timm")
from timm.models.fastvit import RepConditionalPosEnc, RepMixer  # noqa: E402
from timm.utils import reparameterize_model  # noqa: E402

CASES = {  # name: (factory, channels)
    "repmixer_k3": (lambda: RepMixer(8, 3), 8),
    "repmixer_k5_no_layer_scale": (lambda: RepMixer(8, 5, layer_scale_init_value=None), 8),
    "repmixer_k7_16": (lambda: RepMixer(16, 7, layer_scale_init_value=1e-5), 16),
    "repcpe_7x7": (lambda: RepConditionalPosEnc(8, spatial_shape=(7, 7)), 8),
    "repcpe_3": (lambda: RepConditionalPosEnc(8, spatial_shape=3), 8),
}
ADAPTERS = {"repmixer": "timm RepMixer", "repcpe": "timm RepConditionalPosEnc"}


def _random(module, seed=0):
    """Every parameter random (layer scales near 1, not timm's 1e-5, which would hide the group's numbers)
    and every BatchNorm with random statistics; float64, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name.endswith("gamma") else
                    p + 0.3 * torch.randn(p.shape, generator=g))
    return rz.randomize_norms(module, seed=seed).double().eval()


def _upstream(name):
    factory, channels = CASES[name]
    torch.manual_seed(0)
    return _random(factory()), channels


def _deployed(module):
    """timm's own deployed form of a block: ``reparameterize()`` on a copy (timm's walk only visits children)."""
    module = copy.deepcopy(module)
    module.reparameterize()
    return module


@pytest.mark.parametrize("name", list(CASES))
def test_fastvit_block_is_adopted_equal_and_folds_into_timms_deployed_layout(name):
    block, c = _upstream(name)
    net = nn.Sequential(block)
    new, report = adopt(net)
    assert [(p, a) for p, _, a, _ in report.adopted] == [("0", ADAPTERS[name.split("_")[0]])] and not report.left
    assert isinstance(new[0], rz.RepBlock) and new[0].origin.deploy == "reparam_conv"
    x = torch.randn(2, c, 11, 12, dtype=torch.float64)
    for train in (False, True):  # training mode too: every BN normalises the features it normalises upstream
        a, b = copy.deepcopy(net).train(train), copy.deepcopy(new).train(train)
        with torch.no_grad():
            assert relative_error(b(x), a(x)) <= TOLERANCES["adopt"]
    with torch.no_grad():
        want = net(x)
        assert relative_error(rz.fold_model(new)(x), want) <= 1e-12
        folded = rz.fold_model(new, layout="original")
        assert set(folded.state_dict()) == {"0.reparam_conv.weight", "0.reparam_conv.bias"}
        deployed = reparameterize_model(net)  # timm's walk reparameterizes the child
        deployed.load_state_dict(folded.state_dict(), strict=True)
        assert relative_error(deployed(x), want) <= 1e-12
        assert relative_error(folded(x), want) <= 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_fastvit_block_adopted_at_the_root_folds_under_timms_deployed_names(name):
    block, c = _upstream(name)
    root, report = adopt(block)
    assert len(report.adopted) == 1 and not report.left and isinstance(root, rz.RepBlock)
    folded = rz.fold_model(root, layout="original")
    assert set(folded.state_dict()) == {"reparam_conv.weight", "reparam_conv.bias"}
    deployed = _deployed(block)
    deployed.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, c, 9, 10, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(deployed(x), block(x)) <= 1e-12
        assert relative_error(folded(x), block(x)) <= 1e-12


def test_repmixer_is_the_identity_beside_a_signed_group_times_the_layer_scale():
    block, _ = _upstream("repmixer_k3")
    new, _ = adopt(block)
    assert new.describe() == ["branches.0: identity",
                              "branches.1: group(kxk + bn, conv 1x1 + bn, identity + bn, -identity + bn) x scale"]
    assert torch.equal(new.branches[1][1].weight, block.layer_scale.gamma.reshape(-1))
    mixer_kxk = new.branches[1][0].branches[0]
    assert torch.equal(mixer_kxk[0].weight, block.mixer.conv_kxk[0].conv.weight)
    assert torch.equal(new.branches[1][0].branches[3][1].running_var, block.norm.identity.running_var)


@pytest.mark.parametrize("change, reason", [
    (lambda m: setattr(m.mixer, "se", nn.Sigmoid()), "mixer applies se after its branches (not linear)"),
    (lambda m: setattr(m.norm, "act", nn.ReLU()), "norm applies act after its branches (not linear)"),
    (lambda m: setattr(m, "layer_scale", nn.Dropout()), "layer_scale is a Dropout, not timm's LayerScale2d"),
    (lambda m: m.reparameterize(), "already reparameterized"),
])
def test_a_repmixer_that_is_not_a_sum_of_linear_branches_is_left_with_the_reason(change, reason):
    block, _ = _upstream("repmixer_k3")
    change(block)
    new, report = adopt(nn.Sequential(block))
    assert not report.adopted and len(report.left) == 1 and reason in report.left[0][2], report.left
    assert new[0].__class__ is RepMixer


ADOPTED = {"timm MobileOneBlock", "timm ReparamLargeKernelConv", "timm RepMixer"}


@pytest.mark.parametrize("name, adapters", [
    ("fastvit_t8", ADOPTED),
    pytest.param("fastvit_sa12", ADOPTED | {"timm RepConditionalPosEnc"}, marks=pytest.mark.slow),  # + attention
])
def test_fastvit_is_adopted_fully_and_loads_into_timms_deployed_model_strictly(name, adapters):
    torch.manual_seed(0)
    original = _random(timm.create_model(name, pretrained=False, num_classes=10), seed=1).float()
    new, report = adopt(copy.deepcopy(original).double())
    assert not report.left, str(report)
    assert {a for _, _, a, _ in report.adopted} == adapters
    left = [n for n, m in new.named_modules() if any(callable(getattr(m, k, None)) for k in REPARAM_METHODS)
            and not type(m).__module__.startswith(("torch.", "reparam_zoo."))]
    assert not left, left  # nothing re-parameterizable is left
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(new(x), copy.deepcopy(original).double()(x)) <= TOLERANCES["adopt"]
        x = x.float()
        folded = rz.fold_model(new.float(), layout="original")
        deployed = reparameterize_model(original)
        deployed.load_state_dict(folded.state_dict(), strict=True)
        assert relative_error(deployed(x), folded(x)) <= 1e-5
        assert relative_error(folded(x), original(x)) <= TOLERANCES["expand"]  # float32 through a deep net
        assert relative_error(folded(x), reparameterize_model(original)(x)) <= TOLERANCES["expand"]
