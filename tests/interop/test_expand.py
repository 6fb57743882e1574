"""rz.expand: plain conv+BN layers of any model become RepBlocks; fold_model(layout="original") gives
the original classes and keys back."""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.interop.expand import AbsorbedNorm

from tests.conftest import assert_close


def _torchvision(name):
    tv = pytest.importorskip("torchvision")
    return lambda: getattr(tv.models, name)(weights=None, num_classes=10)


def _timm(name):
    def make():
        timm = pytest.importorskip("timm")
        return timm.create_model(name, num_classes=10)

    return make


MODELS = {
    "torchvision:resnet18": _torchvision("resnet18"),
    "torchvision:resnet50": _torchvision("resnet50"),
    "torchvision:mobilenet_v2": _torchvision("mobilenet_v2"),
    "torchvision:mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "torchvision:efficientnet_b0": _torchvision("efficientnet_b0"),
    "torchvision:regnet_y_400mf": _torchvision("regnet_y_400mf"),
    "timm:resnet18": _timm("resnet18"),
    "timm:mobilenetv3_small_100": _timm("mobilenetv3_small_100"),
}


def _forward(model, x, train):
    model = copy.deepcopy(model).train(train)
    torch.manual_seed(1)  # dropout / stochastic depth draw the same masks
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("spec", ["acb", "dbb"])
@pytest.mark.parametrize("name", list(MODELS))
def test_expanded_model_equals_the_original_and_folds_back_into_it(name, spec):
    if spec == "dbb" and name not in ("torchvision:resnet18", "torchvision:mobilenet_v3_small",
                                      "timm:mobilenetv3_small_100"):
        pytest.skip("dbb on three models is enough")
    make = MODELS[name]
    torch.manual_seed(0)
    model = rz.randomize_norms(make(), seed=2).double().eval()
    before = copy.deepcopy(model.state_dict())
    expanded, report = rz.expand(model, spec)
    convs = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(report.expanded) + len(report.left) == len(convs) and report.traced
    assert len(report.expanded) == sum(max(m.kernel_size) >= 3 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, rz.RepBlock) for m in expanded.modules()) == len(report.expanded)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    for train in (False, True):  # init="preserve": the same function in both modes
        assert_close(_forward(model, x, train), _forward(expanded, x, train))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])

    # fine-tune a few steps (float32), fold back into the original architecture
    tuned = expanded.float().train()
    opt = torch.optim.SGD(tuned.parameters(), lr=0.05, momentum=0.9)
    for step in range(3):
        xb, yb = torch.randn(4, 3, 48, 48), torch.randint(0, 10, (4,))
        loss = nn.functional.cross_entropy(tuned(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tuned.eval()
    folded = rz.fold_model(tuned, layout="original")
    fresh = make().eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    xf = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert_close(tuned(xf), fresh(xf), rel=1e-5)
    # the non-carrier branches learnt something: the fine-tune really used the new branches
    moved = [b.branches[1][-1].weight.abs().max().item() for b in tuned.modules() if isinstance(b, rz.RepBlock)]
    assert max(moved) > 0


class Custom(nn.Module):
    """A user's own model: geometry corner cases, a shared BN, a conv read twice, a biased conv before its BN."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=0, bias=False)  # no padding
        self.a_bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)  # dilated
        self.b_bn = nn.BatchNorm2d(8)
        self.c = nn.Conv2d(8, 8, 5, stride=2, padding=1, groups=4, bias=False)  # grouped, strided, not "same"
        self.c_bn = nn.BatchNorm2d(8)
        self.d = nn.Conv2d(8, 8, 3, padding=1, bias=False)  # its output also feeds a residual
        self.d_bn = nn.BatchNorm2d(8)
        self.e = nn.Conv2d(8, 8, 3, padding=1, bias=True)  # biased
        self.e_bn = nn.BatchNorm2d(8)
        self.f = nn.Conv2d(8, 8, (3, 5), padding=(1, 2), padding_mode="reflect", bias=False)
        self.f_bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = torch.relu(self.a_bn(self.a(x)))
        x = torch.relu(self.b_bn(self.b(x)))
        x = torch.relu(self.c_bn(self.c(x)))
        d = self.d(x)
        x = self.d_bn(d) + d
        x = self.e_bn(self.e(x))
        return self.f_bn(self.f(x))


def test_a_users_model_with_corner_cases():
    torch.manual_seed(0)
    model = rz.randomize_norms(Custom(), seed=3).double().eval()
    expanded, report = rz.expand(model, "acb")
    done = {p for p, _, _ in report.expanded}
    left = dict(report.left)
    assert done == {"a", "b", "c", "e", "f"}  # e: a biased conv, its BatchNorm absorbs the bias
    assert set(left) == {"d"} and "not consumed by a BatchNorm alone" in left["d"]
    assert isinstance(expanded.a_bn, AbsorbedNorm) and isinstance(expanded.d_bn, nn.BatchNorm2d)
    assert isinstance(expanded.e_bn, AbsorbedNorm)
    x = torch.randn(2, 3, 21, 19, dtype=torch.float64)
    for train in (False, True):
        assert_close(_forward(model, x, train), _forward(expanded, x, train))
    rz.randomize_norms(expanded, seed=5)  # as if trained: every branch now contributes
    folded = rz.fold_model(expanded, layout="original")
    fresh = Custom().double().eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    assert_close(expanded(x), fresh(x))
    assert_close(expanded(x), rz.fold_model(expanded)(x))  # the plain layout too


def test_spec_mapping_include_exclude_and_min_kernel():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(weights=None)
    expanded, report = rz.expand(model, {"layer1.*": "acb", "layer2.*": "dbb"})
    specs = {p: s for p, s, _ in report.expanded}
    assert specs and all(p.startswith(("layer1.", "layer2.")) for p in specs)
    assert {specs[p] for p in specs if p.startswith("layer1.")} == {"acb"}
    assert {specs[p] for p in specs if p.startswith("layer2.")} == {"dbb"}
    _, report = rz.expand(model, "acb", include="layer4.*", exclude="layer4.1.*")
    assert {p for p, _, _ in report.expanded} == {"layer4.0.conv1", "layer4.0.conv2"}
    _, report = rz.expand(model, "acb", min_kernel=1, include="layer2.0.*")
    assert {p for p, _, _ in report.expanded} == {"layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"}
    _, report = rz.expand(model, "acb", include="layer2.0.*")
    assert "below min_kernel=3" in dict(report.left)["layer2.0.downsample.0"]


def test_preserve_is_refused_per_layer_for_specs_that_cannot_start_at_the_pretrained_layer():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    _, report = rz.expand(model, "qarepvgg")
    assert not report.expanded and "norm after the sum" in report.left[0][1]
    _, report = rz.expand(model, "diracnet")  # its BatchNorm is after the sum (the authors' unit)
    assert not report.expanded and "norm after the sum" in report.left[0][1]
    no_bn = "name: no_bn\nbranches: [{type: identity, optional: true, norm: scale}, {type: kxk, norm: scale}]\n"
    _, report = rz.expand(model, no_bn)  # no BN anywhere to carry the pretrained one (DiracNet's old spec)
    assert not report.expanded and "no kxk conv + BN branch" in report.left[0][1]
    new, report = rz.expand(model, "qarepvgg", init="fresh")
    assert len(report.expanded) == 1 and isinstance(new[0], rz.RepBlock)


def test_untraceable_model_falls_back_to_sequential_pairs():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
            self.side = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.side_bn = nn.BatchNorm2d(4)

        def forward(self, x):
            x = self.body(x)
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
                x = self.side_bn(self.side(x))
            return x

    model = rz.randomize_norms(Branchy()).double().eval()
    new, report = rz.expand(model, "repvgg")
    assert not report.traced and [p for p, _, _ in report.expanded] == ["body.0"]
    assert "did not trace" in dict(report.left)["side"]
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    assert_close(model(x), new(x))


def test_fold_original_refuses_a_tampered_norm_slot():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
    new, _ = rz.expand(model, "acb")
    new[1] = nn.Identity()
    with pytest.raises(ValueError, match="AbsorbedNorm"):
        rz.fold_model(new, layout="original")


def test_layers_expand_cannot_reproduce_are_left_with_the_reason():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.even = nn.Conv2d(3, 4, 4, padding="same", bias=False)  # torch pads 4-tap "same" asymmetrically
            self.even_bn = nn.BatchNorm2d(4)
            self.plain = nn.Conv2d(4, 4, 3, padding="same", bias=False)  # odd: symmetric, fine
            self.plain_bn = nn.BatchNorm2d(4, affine=False)  # no gamma/beta to carry
            self.shared = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.shared_bn = nn.BatchNorm2d(4)
            self.alias = self.shared  # the same conv registered twice

        def forward(self, x):
            x = self.plain_bn(self.plain(self.even_bn(self.even(x))))
            return self.shared_bn(self.shared(x))

    _, report = rz.expand(Odd(), "acb")
    left = dict(report.left)
    assert not report.expanded
    assert "pads asymmetrically" in left["even"]
    assert "affine=False" in left["plain"]
    assert "shared" in left["shared"]


def test_sequential_fallback_takes_plain_sequentials_only():
    class Residual(nn.Sequential):  # a subclass whose forward is not its children in order
        def forward(self, x):
            y = self[0](x)
            return self[1](y) + y

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.res = Residual(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
            self.seq = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))

        def forward(self, x):
            if x.mean() > 10:  # data-dependent: no torch.fx
                return x
            return self.seq(self.res(x))

    model = rz.randomize_norms(Untraceable()).double().eval()
    new, report = rz.expand(model, "acb")
    assert not report.traced and [p for p, _, _ in report.expanded] == ["seq.0"]
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    assert_close(model(x), new(x))


def test_expanded_model_moves_and_still_folds_back():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, eps=1e-3), nn.ReLU())
    new, _ = rz.expand(rz.randomize_norms(model), "dbb")
    new = rz.randomize_norms(new, seed=3).double().eval()  # converted after expanding
    folded = rz.fold_model(new, layout="original")
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, eps=1e-3), nn.ReLU())
    fresh.double().eval().load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    assert_close(new(x), fresh(x))


def test_fresh_expansion_keeps_the_layers_eps_so_a_rebuilt_model_folds_right():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, eps=1e-3, momentum=0.01))
    for init in ("preserve", "fresh"):
        new, _ = rz.expand(model, "acb", init=init)
        carrier = new[0].branches[0][1]
        assert (carrier.eps, carrier.momentum) == (1e-3, 0.01)


def test_sync_batchnorm_layers_get_sync_batchnorm_blocks():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.SyncBatchNorm(4))
    model = rz.randomize_norms(model).double().eval()
    new, report = rz.expand(model, "acb")
    assert len(report.expanded) == 1
    assert all(isinstance(chain[1], nn.SyncBatchNorm) for chain in new[0].branches)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert_close(model(x), new(x))


LONE_SPEC = {"name": "acb_biased", "kernel": 3, "act": "identity",
             "branches": [{"type": "kxk", "bias": True, "norm": "none"}, {"type": "1xk"}, {"type": "kx1"}]}


def test_lone_biased_convs_expand_where_the_spec_has_a_biased_carrier():
    def make():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.ReLU(),
                             nn.Conv2d(4, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4))  # biased conv + BN

    torch.manual_seed(0)
    model = rz.randomize_norms(make(), seed=2).double().eval()
    new, report = rz.expand(model, LONE_SPEC)
    assert [p for p, _, _ in report.expanded] == ["0", "2"] and isinstance(new[3], nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    for train in (False, True):
        assert_close(_forward(model, x, train), _forward(new, x, train))
    rz.randomize_norms(new, seed=6)  # as if trained
    folded = rz.fold_model(new, layout="original")
    fresh = make().double().eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    assert_close(new(x), fresh(x))
    _, report = rz.expand(model, "acb")  # the lone biased conv: no biased carrier in acb, left with the reason
    assert dict(report.left).keys() == {"0"} and "no biased kxk conv branch" in dict(report.left)["0"]
    assert [p for p, _, _ in report.expanded] == ["2"]  # its BatchNorm absorbs the biased conv's bias
