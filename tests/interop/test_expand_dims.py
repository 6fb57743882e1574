"""rz.expand beyond Conv2d: Conv1d/Conv3d + BatchNorm1d/3d and Linear + BatchNorm1d pairs become blocks
of the matching dims (1, 3, 0), a kinds mapping gives each kind its spec, and
fold_model(layout="original") gives back the original classes and keys."""

import argparse
import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.cli.app import main
from reparam_zoo.cli.expand import input_shape
from reparam_zoo.engine.verify import relative_error
from reparam_zoo.interop.expand import AbsorbedNorm
from tests.conftest import assert_close


def _video(name):
    def make():
        tv = pytest.importorskip("torchvision")
        return getattr(tv.models.video, name)(weights=None, num_classes=5)

    return make


class Net1d(nn.Module):
    """A 1-D conv net: padding, a strided grouped conv, a dilated reflect-padded conv, a Linear head."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(3, 8, 5, padding=2, bias=False)
        self.a_bn = nn.BatchNorm1d(8)
        self.b = nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
        self.b_bn = nn.BatchNorm1d(8, eps=1e-3)
        self.c = nn.Conv1d(8, 8, 3, padding=2, dilation=2, padding_mode="reflect", bias=False)
        self.c_bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.a_bn(self.a(x)))
        x = torch.relu(self.b_bn(self.b(x)))
        x = self.c_bn(self.c(x))
        return self.head(x.mean(-1))


def mlp():
    """Linear + BatchNorm1d pairs, one Linear biased (the default), one not; a lone biased head."""
    return nn.Sequential(nn.Linear(12, 24), nn.BatchNorm1d(24), nn.ReLU(),
                         nn.Linear(24, 16, bias=False), nn.BatchNorm1d(16, eps=1e-3, momentum=0.2), nn.ReLU(),
                         nn.Linear(16, 5))


class Mixed(nn.Module):
    """Conv2d + BN2d layers and a Linear + BN1d layer; the first conv's path is literally ``conv``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 16)
        self.fc_bn = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.body(torch.relu(self.bn(self.conv(x))))
        return self.head(torch.relu(self.fc_bn(self.fc(x.mean((2, 3))))))


CASES = {  # name: (make, block, input shape, expanded layer count, the blocks' dims)
    "r3d_18": (_video("r3d_18"), "acb_nd", (2, 3, 4, 16, 16), 17, {3}),
    "mc3_18": (_video("mc3_18"), "repvgg", (2, 3, 4, 16, 16), 17, {3}),
    "conv1d": (Net1d, {"conv1d": "acb_nd"}, (4, 3, 19), 3, {1}),
    "mlp": (mlp, {"linear": "expandnet_fc"}, (8, 12), 2, {0}),
    "mixed": (Mixed, {"conv": "acb_nd", "linear": "expandnet_fc"}, (4, 3, 10, 10), 3, {0, 2}),
}


def _forward(model, x, train):
    model = copy.deepcopy(model).train(train)
    torch.manual_seed(1)
    with torch.no_grad():
        return model(x), model


def _check_batch_statistics(original, expanded, x):
    """In training mode both compute the same outputs AND their BNs track the same running statistics:
    each expanded block's carrier BN (branch 0) those of the BN it absorbed, shifted by a Linear's bias."""
    y0, a = _forward(original, x, True)
    y1, b = _forward(expanded, x, True)
    assert_close(y0, y1)
    modules = dict(a.named_modules())
    blocks = [(p, m) for p, m in b.named_modules() if isinstance(m, rz.RepBlock)]
    for path, block in blocks:
        parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
        if block.origin.norm is None:
            continue
        norm, layer, carrier = modules[parent + block.origin.norm], modules[path], block.branches[0][-1]
        shift = 0 if layer.bias is None else layer.bias
        assert_close(norm.running_mean, carrier.running_mean + shift)
        assert_close(norm.running_var, carrier.running_var)
        assert int(norm.num_batches_tracked) == int(carrier.num_batches_tracked) == 1
    return len(blocks)


@pytest.mark.parametrize("name", [pytest.param("r3d_18", marks=pytest.mark.slow), "mc3_18", "conv1d", "mlp", "mixed"])
def test_expanded_model_equals_the_original_and_folds_back_into_it(name):
    make, block, shape, count, dims = CASES[name]
    torch.manual_seed(0)
    model = rz.randomize_norms(make(), seed=2).double().eval()
    before = copy.deepcopy(model.state_dict())
    expanded, report = rz.expand(model, block)
    assert len(report.expanded) == count and report.traced, report
    assert {b.geometry.dims for b in expanded.modules() if isinstance(b, rz.RepBlock)} == dims
    x = torch.randn(*shape, dtype=torch.float64)
    assert_close(_forward(model, x, False)[0], _forward(expanded, x, False)[0])
    assert _check_batch_statistics(model, expanded, x) == count
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])

    # fine-tune three steps (float32), fold back into the original architecture and classes
    tuned = expanded.float().train()
    start = copy.deepcopy(tuned.state_dict())
    opt = torch.optim.SGD(tuned.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        loss = nn.functional.cross_entropy(tuned(torch.randn(*shape)), torch.randint(0, 5, (shape[0],)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    tuned.eval()
    folded = rz.fold_model(tuned, layout="original")
    fresh = make().eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    assert {p: type(m) for p, m in folded.named_modules()} == {p: type(m) for p, m in fresh.named_modules()}
    xf = torch.randn(*shape)
    with torch.no_grad():
        assert relative_error(fresh(xf), tuned(xf)) <= 1e-5
    # every branch of every block learnt: the fine-tune used the new parameters
    for p, b in tuned.named_modules():
        if isinstance(b, rz.RepBlock):
            assert all(not torch.equal(v, start[f"{p}.{k}"]) for k, v in b.state_dict().items()
                       if k.endswith("weight")), p


def test_report_describes_each_block_in_its_own_dims():
    tv = pytest.importorskip("torchvision")
    _, report = rz.expand(tv.models.video.r3d_18(weights=None), "acb_nd")
    geometry = {p: g for p, _, g in report.expanded}
    assert geometry["stem.0"] == "3->64 k3x7x7 s1x2x2 g1" and geometry["layer2.0.conv1.0"] == "64->128 k3x3x3 s2 g1"
    assert dict(report.left)["layer2.0.downsample.0"] == "kernel 1x1x1 is below min_kernel=3"
    assert str(report).startswith("expanded 17 conv+BN layer(s), left 3 conv(s)")
    _, report = rz.expand(Net1d(), "acb_nd")  # a spec alone: every conv; the Linear head is not looked at
    assert [g for _, _, g in report.expanded] == ["3->8 k5 s1 g1", "8->8 k3 s2 g2", "8->8 k3 s1 g1"]
    assert not report.left
    _, report = rz.expand(mlp(), {"linear": "expandnet_fc"})
    assert [g for _, _, g in report.expanded] == ["12->24 linear", "24->16 linear"]
    assert "has a bias and no BatchNorm" in dict(report.left)["6"]
    assert str(report).startswith("expanded 2 conv/Linear+BN layer(s), left 1 conv/Linear(s)")


def test_kinds_and_path_patterns_first_match_wins_and_a_kind_key_is_never_a_path():
    model = Mixed()
    _, report = rz.expand(model, {"conv": "acb_nd", "linear": "expandnet_fc"})
    assert {p: s for p, s, _ in report.expanded} == {"conv": "acb_nd", "body.0": "acb_nd", "fc": "expandnet_fc"}
    assert len(report.notes) == 1 and "'[c]onv'" in report.notes[0] and "note:" in str(report)
    _, report = rz.expand(model, {"[c]onv": "repvgg", "conv": "acb_nd", "*": "expandnet_fc"})
    assert {p: s for p, s, _ in report.expanded} == {"conv": "repvgg", "body.0": "acb_nd", "fc": "expandnet_fc"}
    assert len(report.notes) == 1 and list(dict(report.left)) == ["head"]  # a pattern reaches Linear layers too
    assert "has a bias and no BatchNorm" in dict(report.left)["head"]
    _, report = rz.expand(model, {"conv2d": "repvgg", "conv": "acb_nd", "linear": "expandnet_fc"}, exclude="body.*")
    assert {p: s for p, s, _ in report.expanded} == {"conv": "repvgg", "fc": "expandnet_fc"}
    assert dict(report.left)["body.0"] == "matched by exclude"
    _, report = rz.expand(model, {"conv3d": "acb_nd"})  # no entry for the 2-D convs: left; Linear: not looked at
    assert not report.expanded and set(dict(report.left)) == {"conv", "body.0"}
    with pytest.raises(rz.SpecError):
        rz.expand(model, {"linear": "no_such_spec"})


def test_mismatched_and_unusable_layers_are_left_with_the_reason():
    class Odd(nn.Module):  # traced, never run: the pairs are found on the graph
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(4, 4, 3, padding=1, bias=False)
            self.c1_bn = nn.BatchNorm2d(4)  # a 2-D norm after a 1-D conv
            self.c3 = nn.Conv3d(4, 4, 3, padding=1, bias=False)
            self.c3_bn = nn.BatchNorm1d(4)
            self.fc = nn.Linear(4, 4, bias=False)
            self.fc_bn = nn.BatchNorm3d(4)
            self.seq = nn.Linear(4, 6, bias=False)  # on (N, L, C) inputs: BatchNorm1d normalises L
            self.seq_bn = nn.BatchNorm1d(5)
            self.proj = nn.Linear(4, 4)  # its weight used directly, never called
            self.wn = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3, padding=1, bias=False))
            self.wn_bn = nn.BatchNorm1d(4)

        def forward(self, x1, x3, v, s):
            y = self.c1_bn(self.c1(x1)) + self.wn_bn(self.wn(x1))
            return y, self.c3_bn(self.c3(x3)), self.fc_bn(self.fc(v)), self.seq_bn(self.seq(s)), \
                nn.functional.linear(v, self.proj.weight, self.proj.bias)

    lone = {"name": "biased", "kernel": 3, "branches": [{"type": "kxk", "bias": True, "norm": "none"}]}
    new, report = rz.expand(Odd(), {"proj": lone, "conv": "acb_nd", "linear": "expandnet_fc"})
    left = dict(report.left)
    assert not report.expanded and set(left) == {"c1", "c3", "fc", "seq", "proj", "wn"}
    assert left["c1"] == "its norm BatchNorm2d does not match the Conv1d (a 1-D block's BN is a BatchNorm1d)"
    assert "BatchNorm1d does not match the Conv3d" in left["c3"]
    assert "BatchNorm3d does not match the Linear" in left["fc"]
    assert "normalises 5 channels but the layer gives 6" in left["seq"]
    assert "never called as a module" in left["proj"] and "more than a plain weight" in left["wn"]
    assert isinstance(new.c1_bn, nn.BatchNorm2d) and isinstance(new.proj, nn.Linear)


def test_a_conv_subclass_keeps_its_class_when_folded_back_and_one_with_its_own_forward_is_left():
    class Same(nn.Conv1d):  # only __init__ differs (as torchvision's Conv3DSimple)
        def __init__(self, channels):
            super().__init__(channels, channels, 3, padding=1, bias=False)

    class Doubled(nn.Conv1d):
        def forward(self, x):
            return 2 * super().forward(x)

    def make():
        return nn.Sequential(Same(4), nn.BatchNorm1d(4), Doubled(4, 4, 3, padding=1, bias=False), nn.BatchNorm1d(4))

    model = rz.randomize_norms(make(), seed=1).double().eval()
    new, report = rz.expand(model, "acb_nd")
    assert [p for p, _, _ in report.expanded] == ["0"] and "Doubled with its own forward" in dict(report.left)["2"]
    assert isinstance(new[1], AbsorbedNorm)
    rz.randomize_norms(new, seed=4)  # as if trained
    folded = rz.fold_model(new, layout="original")
    assert type(folded[0]) is Same and type(folded[1]) is nn.BatchNorm1d
    fresh = make().double().eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 4, 9, dtype=torch.float64)
    assert_close(new(x), fresh(x))


def test_expandnet_fc_starts_from_full_rank_factors_and_fresh_init_folds_back_too():
    model = rz.randomize_norms(mlp(), seed=3).double().eval()
    new, _ = rz.expand(model, {"linear": "expandnet_fc"})
    w1, w2, w3 = (new[0].branches[0][i].weight[..., 0] for i in range(3))
    assert [torch.linalg.matrix_rank(w).item() for w in (w1, w2, w3)] == [12, 12, 24]
    assert (w1 != 0).all() and (w2 != 0).all() and (w3 != 0).all()  # random factors, no identity embedding
    assert_close(w3 @ w2 @ w1, model[0].weight)
    new, report = rz.expand(model, {"linear": "expandnet_fc"}, init="fresh")
    assert len(report.expanded) == 2 and new[3].branches[0][-1].eps == 1e-3
    rz.randomize_norms(new, seed=5)
    fresh = mlp().double().eval()
    fresh.load_state_dict(rz.fold_model(new.eval(), layout="original").state_dict(), strict=True)
    x = torch.randn(6, 12, dtype=torch.float64)
    assert_close(new(x), fresh(x))


def test_cli_expands_and_converts_a_1d_model_with_its_input_shape(tmp_path, capsys):
    src = tmp_path / "net1d.py"
    src.write_text("import torch.nn as nn\n"
                   "def make():\n"
                   "    return nn.Sequential(nn.Conv1d(2, 6, 3, padding=1, bias=False), nn.BatchNorm1d(6), nn.ReLU(),\n"
                   "                         nn.Conv1d(6, 6, 5, padding=2, bias=False), nn.BatchNorm1d(6))\n")
    out, back = tmp_path / "e.pth", tmp_path / "b.pth"
    assert main(["expand", str(out), "--model", f"{src}:make", "--block", "acb_nd", "--input-shape", "2,2,11"]) == 0
    text = capsys.readouterr().out
    assert "expanded 2 conv+BN layer(s)" in text and "input (2, 2, 11)" in text
    assert main(["convert", str(out), str(back)]) == 0
    assert "load_state_dict(..., strict=True)" in capsys.readouterr().out
    assert input_shape("1,3,4,32,32") == (1, 3, 4, 32, 32) and input_shape("8,16") == (8, 16)
    for bad in ("1", "1,2,3,4,5,6", "1,0,3", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError, match="Expected"):
            input_shape(bad)
