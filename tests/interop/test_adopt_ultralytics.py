"""rz.adopt of ultralytics' ``RepConv`` (the real class, recognised by structure): equal to the upstream block,
folding with ``layout="original"`` into exactly what ultralytics' own ``fuse_convs()`` leaves, alone, at the
root and inside real ultralytics models built from their yaml (nothing downloaded: ``YOLO_OFFLINE`` and a
temporary ``YOLO_CONFIG_DIR`` are set before ultralytics is imported)."""

import copy
import os
import tempfile

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.verify import relative_error
from tests.conftest import assert_close

os.environ.setdefault("YOLO_OFFLINE", "1")  # tests/conftest.py sets both; kept here for a lone run
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="rz-yolo-config-"))
ultralytics = pytest.importorskip("ultralytics")
from ultralytics.nn.modules import RepC3, RepConv

CASES = {
    # name: RepConv arguments (c1, c2, k, s, p, g, act, bn)
    "plain": {"c1": 8, "c2": 8},
    "identity_bn": {"c1": 8, "c2": 8, "bn": True},
    "stride2": {"c1": 8, "c2": 16, "s": 2, "bn": True},  # the identity BN needs in == out and stride 1: none
    "grouped_identity_bn": {"c1": 8, "c2": 8, "g": 2, "bn": True},
    "relu": {"c1": 8, "c2": 12, "act": nn.ReLU()},
    "no_act": {"c1": 8, "c2": 8, "act": False, "bn": True},
}


def _repconv(name, seed=0):
    torch.manual_seed(seed)
    return rz.randomize_norms(RepConv(**CASES[name]), seed=seed + 1).double().eval()


def _fused(module):
    """ultralytics' own deploy of every RepConv in ``module`` (what ``DetectionModel.fuse`` does to them)."""
    module = copy.deepcopy(module)
    for m in module.modules():
        if isinstance(m, RepConv):
            m.fuse_convs()
            m.forward = m.forward_fuse
    return module


def _first(out):
    return out if isinstance(out, torch.Tensor) else _first(out[0])


@pytest.mark.parametrize("name", list(CASES))
def test_repconv_is_adopted_and_folds_into_its_own_fuse_convs(name):
    block = _repconv(name)
    assert (block.bn is not None) == (name in ("identity_bn", "grouped_identity_bn", "no_act"))
    new, report = rz.adopt(nn.Sequential(block))
    assert [a[2] for a in report.adopted] == ["ultralytics RepConv"] and not report.left, str(report)
    assert not any(isinstance(m, RepConv) for m in new.modules())
    x = torch.randn(2, 8, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        ref = block(x)
        assert_close(ref, new(x))  # float64, eval mode
        assert_close(copy.deepcopy(block).train()(x), copy.deepcopy(new).train()(x))  # and train mode
    folded = rz.fold_model(new, layout="original")
    deployed = _fused(nn.Sequential(block))
    assert set(folded.state_dict()) == {"0.conv.weight", "0.conv.bias"} == set(deployed.state_dict())
    deployed.load_state_dict(folded.state_dict(), strict=True)
    with torch.no_grad():
        assert_close(ref, deployed(x))
        assert_close(ref, folded(x))
    # float32: the fold loaded into ultralytics' fused block computes what the block computes
    block32, deployed32 = copy.deepcopy(block).float(), _fused(nn.Sequential(block)).float()
    deployed32.load_state_dict(rz.fold_model(copy.deepcopy(new).float(), layout="original").state_dict(), strict=True)
    with torch.no_grad():
        assert relative_error(deployed32(x.float()), block32(x.float())) <= 1e-5


@pytest.mark.parametrize("name", list(CASES))
def test_a_repconv_adopted_at_the_root_folds_into_its_fuse_convs_names(name):
    block = _repconv(name)
    root, report = rz.adopt(block)
    assert len(report.adopted) == 1 and report.adopted[0][0] == "<root>" and not report.left, str(report)
    folded = rz.fold_model(root, layout="original")
    deployed = _fused(block)
    deployed.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    with torch.no_grad():
        assert_close(block(x), folded(x))
        assert_close(block(x), deployed(x))


def test_a_fused_or_foreign_repconv_is_left_with_the_reason():
    fused = _fused(nn.Sequential(_repconv("identity_bn")))
    _, report = rz.adopt(fused)
    assert not report.adopted and "already fused" in report.left[0][2]

    class RepConv(nn.Module):  # YOLOv7's layout under the same class name: not ultralytics'
        def __init__(self):
            super().__init__()
            self.rbr_dense = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))

        def forward(self, x):
            return self.rbr_dense(x)

    _, report = rz.adopt(nn.Sequential(RepConv()))
    assert not report.adopted and "not ultralytics' layout" in report.left[0][2]


def test_repc3_of_rtdetr_adopts_every_repconv():
    torch.manual_seed(0)
    unit = rz.randomize_norms(RepC3(16, 24, n=3), seed=1).double().eval()
    new, report = rz.adopt(unit)
    assert len(report.adopted) == 3 and not report.left, str(report)
    assert not any(isinstance(m, RepConv) for m in new.modules())
    deployed = _fused(unit)
    deployed.load_state_dict(rz.fold_model(new, layout="original").state_dict(), strict=True)
    x = torch.randn(2, 16, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        assert_close(unit(x), new(x))
        assert_close(unit(x), deployed(x))


@pytest.mark.parametrize("name, count", [("yolov9t.yaml", 42), ("rtdetr-l.yaml", 12)])
def test_a_real_ultralytics_model_adopts_every_repconv_and_folds_into_its_own_fuse(name, count):
    torch.manual_seed(0)
    maker = ultralytics.RTDETR if name.startswith("rtdetr") else ultralytics.YOLO
    model = rz.randomize_norms(maker(name).model, seed=1).eval()
    if name.startswith("yolo"):  # the small one is checked in float64 too
        model = model.double()
    assert sum(isinstance(m, RepConv) for m in model.modules()) == count
    new, report = rz.adopt(model)
    assert len(report.adopted) == count and {a[2] for a in report.adopted} == {"ultralytics RepConv"}
    assert not any(isinstance(m, RepConv) for m in new.modules())
    assert all(cls != "RepConv" for _, cls, _ in report.left), str(report)  # Detect (its own fuse) may be left
    folded = rz.fold_model(new, layout="original")
    deployed = _fused(model)
    deployed.load_state_dict(folded.state_dict(), strict=True)
    dtype = next(model.parameters()).dtype
    x = torch.randn(1, 3, 64, 64, dtype=dtype)
    with torch.no_grad():
        ref, adopted, ours = _first(model(x)), _first(new(x)), _first(deployed(x))
        assert relative_error(adopted, ref) <= (1e-12 if dtype == torch.float64 else 1e-6)
        assert relative_error(ours, ref) <= (1e-10 if dtype == torch.float64 else 1e-5)
        ref32, ours32 = _first(model.float()(x.float())), _first(deployed.float()(x.float()))
    assert relative_error(ours32, ref32) <= 1e-5
