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


@pytest.mark.parametrize("spec", ["acb", "dbb"])
def test_vgg11_bn_every_biased_conv_expands_exactly_and_folds_back_strictly(spec):
    torch.manual_seed(0)
    model = rz.randomize_norms(torchvision.models.vgg11_bn(num_classes=10), seed=1).double().eval()
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
    fresh = torchvision.models.vgg11_bn(num_classes=10).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    xf = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(fresh(xf), tuned(xf)) <= 1e-5
