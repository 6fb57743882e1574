"""Norms with fixed statistics (torchvision's FrozenBatchNorm2d, as detection backbones use): the expanded
blocks' BatchNorms are frozen too (running statistics in training mode, never updated), so the expanded
model computes what the original computes in both modes, trains, and folds back into the same classes."""

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.ops import FrozenBatchNorm2d

import reparam_zoo as rz
from reparam_zoo.engine.steps import RunningStats
from reparam_zoo.engine.verify import relative_error


def _outputs(model, x, train):
    with torch.no_grad():
        out = copy.deepcopy(model).train(train)(x)
    return torch.cat([v.flatten() for v in out.values()]) if isinstance(out, dict) else out


def _sgd(model, x, steps=3):
    """Three SGD steps on the model in training mode (a bounded stand-in loss on every output: frozen norms
    do not renormalise, so an unbounded one diverges on random statistics)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        loss = _outputs_grad(model, x).tanh().square().mean()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _outputs_grad(model, x):
    out = model(x)
    return torch.cat([v.flatten() for v in out.values()]) if isinstance(out, dict) else out


def _check(model, fresh, spec, x, expected_units):
    """The issue's checks: every unit expanded, equal in both modes, frozen statistics stay put in
    training, three SGD steps, strict fold-back into a fresh model of the original classes, equal."""
    expanded, report = rz.expand(model, spec)
    assert {p for p, _, _ in report.expanded} >= expected_units, str(report)
    for train in (False, True):
        assert relative_error(_outputs(expanded, x, train), _outputs(model, x, train)) <= 1e-10
    norms = [m for m in expanded.modules() if isinstance(m, RunningStats)]
    assert norms and not any(type(m) in (nn.BatchNorm2d,) for m in expanded.modules())
    before = [m.running_mean.clone() for m in norms]
    gammas = [m.weight.detach().clone() for m in norms]
    tuned = _sgd(expanded.float(), x.float())
    assert all(torch.equal(m.running_mean, b.float()) for m, b in zip(norms, before))  # frozen: never updated
    assert any(not torch.equal(m.weight, g.float()) for m, g in zip(norms, gammas))  # gamma/beta still learn
    folded = rz.fold_model(tuned, layout="original")
    fresh.float().eval().load_state_dict(folded.state_dict(), strict=True)
    assert {type(m) for m in fresh.modules()} == {type(m) for m in folded.modules()}
    assert any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    assert relative_error(_outputs(fresh, x.float(), False), _outputs(tuned, x.float(), False)) <= 1e-5


@pytest.mark.parametrize("spec", ["acb", "dbb"])
def test_resnet18_with_frozen_batchnorm_expands_trains_and_folds_back(spec):
    torch.manual_seed(0)
    model = rz.randomize_norms(torchvision.models.resnet18(num_classes=10, norm_layer=FrozenBatchNorm2d), seed=1)
    convs = {p for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] >= 3}
    _check(model.double().eval(), torchvision.models.resnet18(num_classes=10, norm_layer=FrozenBatchNorm2d), spec,
           torch.randn(2, 3, 32, 32, dtype=torch.float64), convs)


def _mobilenet_fpn(norm_layer):
    return mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=6,
                              norm_layer=norm_layer)


def test_fasterrcnn_mobilenet_v3_backbone_expands_and_folds_back():
    """The detector's backbone as torchvision builds it for fine-tuning (FrozenBatchNorm2d when weights
    load), and the detector's own backbone object (plain BatchNorm2d when built without weights)."""
    torch.manual_seed(0)
    model = rz.randomize_norms(_mobilenet_fpn(FrozenBatchNorm2d), seed=3).double().eval()
    units = {p for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] >= 3
             and not p.startswith("fpn.")}  # the FPN's 3x3 convs have a bias and no norm
    _check(model, _mobilenet_fpn(FrozenBatchNorm2d), "acb", torch.randn(1, 3, 64, 64, dtype=torch.float64), units)
    detector = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    backbone = rz.randomize_norms(detector.backbone, seed=4).double().eval()
    expanded, report = rz.expand(backbone, "acb")
    assert {p for p, _, _ in report.expanded} == {p for p, m in backbone.named_modules() if isinstance(
        m, nn.Conv2d) and m.kernel_size[0] >= 3 and not p.startswith("fpn.")}, str(report)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    for train in (False, True):
        assert relative_error(_outputs(expanded, x, train), _outputs(backbone, x, train)) <= 1e-10


def test_a_norm_with_fixed_state_pairs_only_if_it_computes_a_batchnorm():
    """Never a wrong pairing: a module with a FrozenBatchNorm2d's state but another forward is left, with the
    reason; a FrozenBatchNorm2d after a Conv1d (its reshape is 2-D) is left too."""

    class NotANorm(FrozenBatchNorm2d):
        def forward(self, x):
            return x * self.weight.reshape(1, -1, 1, 1)  # no statistics

    class Net(nn.Module):
        def __init__(self, norm, conv=nn.Conv2d):
            super().__init__()
            self.conv = conv(4, 4, 3, padding=1, bias=False)
            self.bn = norm(4)

        def forward(self, x):
            return self.bn(self.conv(x))

    for model, why in [(Net(NotANorm), "does not compute a BatchNorm"),
                       (Net(FrozenBatchNorm2d, nn.Conv1d), "does not compute a BatchNorm")]:
        expanded, report = rz.expand(rz.randomize_norms(model, seed=0), "acb_nd")
        assert not report.expanded and why in dict(report.left)["conv"], str(report)
    good = rz.randomize_norms(Net(FrozenBatchNorm2d), seed=0).double()
    expanded, report = rz.expand(good, "acb")
    assert [p for p, _, _ in report.expanded] == ["conv"]
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    assert relative_error(_outputs(expanded, x, True), _outputs(good, x, True)) <= 1e-12


def test_a_batchnorm_subclass_is_probed_for_the_statistics_it_trains_with():
    """A BatchNorm subclass with its own forward (detection code's "FrozenBN(nn.BatchNorm2d)") is probed: one
    normalising with its running statistics in training too becomes a block of frozen norms; one computing
    something else is left; the plain BatchNorm stays an ordinary one."""

    class RunningBN(nn.BatchNorm2d):
        def forward(self, x):
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False,
                                            0.0, self.eps)

    class Doubled(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2

    def net(norm):
        return rz.randomize_norms(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), norm(4)), seed=0).double()

    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for norm, frozen in [(RunningBN, True), (nn.BatchNorm2d, False)]:
        model = net(norm)
        expanded, report = rz.expand(model, "acb")
        assert [p for p, _, _ in report.expanded] == ["0"]
        kinds = {isinstance(m, RunningStats) for m in expanded.modules() if isinstance(m, nn.BatchNorm2d)}
        assert kinds == {frozen}
        for train in (False, True):
            assert relative_error(_outputs(expanded, x, train), _outputs(model, x, train)) <= 1e-12
    _, report = rz.expand(net(Doubled), "acb")
    assert not report.expanded and "does not compute a BatchNorm" in dict(report.left)["0"]


def test_frozen_stages_stay_frozen_and_tracing_leaves_no_proxies_behind():
    """A detector's frozen first stages (requires_grad False, torchvision's default trainable_layers=3)
    become blocks without trainable parameters; a unit whose forward stores an attribute, traced on its
    own, keeps its attribute as it was (not a torch.fx Proxy)."""
    model = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=3,
                               norm_layer=FrozenBatchNorm2d)
    frozen = {p.rsplit(".", 1)[0] for p, t in model.named_parameters() if not t.requires_grad and p.endswith("weight")}
    expanded, report = rz.expand(model, "acb")
    done = {p for p, _, _ in report.expanded}
    assert done & frozen and done - frozen
    for path in done:
        params = list(expanded.get_submodule(path).parameters())
        assert all(t.requires_grad == (path not in frozen) for t in params), path

    class Caching(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.shape = None

        def forward(self, x):
            self.shape = x.shape
            return self.bn(self.conv(x))

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.unit = Caching()

        def forward(self, x):
            return self.unit(x) if x.mean() > 0 else self.unit(-x)

    expanded, report = rz.expand(Gated(), "acb")
    assert report.subtrees == ["unit"] and expanded.unit.shape is None
