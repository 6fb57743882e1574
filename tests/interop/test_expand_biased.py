"""A conv with a bias before its BatchNorm (torchvision's vgg*_bn): the norm absorbs the bias (its running
mean shifted by it), exactly in eval and in training mode, and the fold goes back into the original classes."""

import copy

import pytest
import torch
import torchvision
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.verify import relative_error
from reparam_zoo.interop.expand import AbsorbedNorm


def _outputs(model, x, train):
    with torch.no_grad():
        return copy.deepcopy(model).train(train)(x)


def _vgg(name):
    """torchvision's vgg*_bn with a small head (its 25088x4096 classifier is not what is tested: the convs are)."""
    model = getattr(torchvision.models, name)(num_classes=10)
    model.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(512 * 7 * 7, 10))
    return model


@pytest.mark.parametrize("name, spec", [("vgg11_bn", "acb"), ("vgg11_bn", "dbb"), ("vgg16_bn", "acb")])
def test_vgg_bn_every_biased_conv_expands_exactly_and_folds_back_strictly(name, spec):
    torch.manual_seed(0)
    model = rz.randomize_norms(_vgg(name), seed=1).double().eval()
    convs = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert all(model.get_submodule(p).bias is not None for p in convs)
    expanded, report = rz.expand(model, spec)
    assert {p for p, _, _ in report.expanded} == set(convs) and not report.left, str(report)
    assert sum(isinstance(m, AbsorbedNorm) for m in expanded.modules()) == len(convs)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for train in (False, True):  # dropout off in eval; in train mode the same seed for both
        torch.manual_seed(5)
        want = _outputs(model, x, train)
        torch.manual_seed(5)
        assert relative_error(_outputs(expanded, x, train), want) <= 1e-10
    # training mode: each carrier BN tracks the original's running mean, shifted by the conv's bias
    a, b = copy.deepcopy(model).train(), copy.deepcopy(expanded).train()
    with torch.no_grad():
        a(x), b(x)
    bn_a = a.features[1]
    bn_b = b.features[0].branches[0][-1]
    assert relative_error(bn_b.running_mean, bn_a.running_mean - a.features[0].bias) <= 1e-12
    assert relative_error(bn_b.running_var, bn_a.running_var) <= 1e-12
    tuned = expanded.float().train()
    opt = torch.optim.SGD(tuned.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        loss = nn.functional.cross_entropy(tuned(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    tuned.eval()
    folded = rz.fold_model(tuned, layout="original")
    fresh = _vgg(name).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    xf = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(fresh(xf), tuned(xf)) <= 1e-5


def test_a_model_that_does_not_trace_is_expanded_in_its_traceable_subtrees():
    """DataParallel (does not trace as a whole) expands exactly like the model it wraps; module-local units
    (torchvision's Conv2dNormActivation) inside an untraceable parent are found; the report says which
    subtrees did not trace, and why."""
    from torchvision.ops import Conv2dNormActivation

    torch.manual_seed(0)
    plain = rz.randomize_norms(torchvision.models.resnet18(num_classes=10), seed=2).double().eval()
    wrapped = nn.DataParallel(copy.deepcopy(plain))
    new_plain, rep_plain = rz.expand(plain, "acb")
    new_wrapped, rep_wrapped = rz.expand(wrapped, "acb")
    assert rep_plain.traced and not rep_wrapped.traced and "" in rep_wrapped.untraced
    assert "did not trace: <the model>" in str(rep_wrapped) and "traced: module" in str(rep_wrapped)
    assert rep_wrapped.subtrees == ["module"] and rep_plain.subtrees == [""]
    assert {p for p, _, _ in rep_wrapped.expanded} == {f"module.{p}" for p, _, _ in rep_plain.expanded}
    assert len(rep_plain.expanded) == 17
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for train in (False, True):
        assert relative_error(_outputs(new_wrapped, x, train), _outputs(wrapped, x, train)) <= 1e-10
    opt = torch.optim.SGD(new_wrapped.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):  # the same checks as for the unwrapped models: three SGD steps, then the fold
        loss = nn.functional.cross_entropy(new_wrapped.train()(x), torch.tensor([1, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    fresh = nn.DataParallel(torchvision.models.resnet18(num_classes=10)).double().eval()
    fresh.load_state_dict(rz.fold_model(new_wrapped.eval(), layout="original").state_dict(), strict=True)
    assert relative_error(_outputs(fresh, x, False), _outputs(new_wrapped, x, False)) <= 1e-10

    class Gated(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.stem = Conv2dNormActivation(3, 8, 3)
            self.body = nn.Sequential(Conv2dNormActivation(8, 8, 3), Conv2dNormActivation(8, 8, 3, groups=8))
            self.side = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.side_bn = nn.BatchNorm2d(8)

        def forward(self, x):
            x = self.body(self.stem(x))
            return self.side_bn(self.side(x)) if x.mean() > 0 else x

    model = rz.randomize_norms(Gated(), seed=4).double().eval()
    new, report = rz.expand(model, "repvgg")
    assert {p for p, _, _ in report.expanded} == {"stem.0", "body.0.0", "body.1.0"}, str(report)
    assert "did not trace" in dict(report.left)["side"] and set(report.untraced) == {""}
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64)
    for train in (False, True):
        assert relative_error(_outputs(new, x, train), _outputs(model, x, train)) <= 1e-10


def test_example_input_catches_a_parent_that_uses_a_traced_units_layers_directly():
    """The one case no graph shows: an untraceable parent calling a unit's conv and BN itself (here with a
    constant between them). The report says the pairs of untraceable models are unchecked; example_input
    runs both models and refuses the expansion where they differ."""

    class Unit(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))

        def forward(self, x):
            return self.seq(x)

    class Bypass(nn.Module):
        def __init__(self):
            super().__init__()
            self.unit = Unit()

        def forward(self, x):
            if x.mean() > 0:  # data-dependent: does not trace
                return self.unit.seq[1](self.unit.seq[0](x) + 1)
            return self.unit(x)

    model = rz.randomize_norms(Bypass(), seed=0).double()
    _, report = rz.expand(model, "acb")
    assert report.expanded and "pass example_input= to check" in str(report)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="computes other numbers than the original in eval mode"):
        rz.expand(model, "acb", example_input=x)
    _, report = rz.expand(model, "acb", example_input=-x)  # the branch that calls the unit: equal
    assert report.expanded and "example_input" not in str(report)
