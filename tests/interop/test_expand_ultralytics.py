"""ultralytics YOLO detectors (built from their yaml, nothing downloaded: tests/conftest.py sets
``YOLO_OFFLINE`` and a temporary ``YOLO_CONFIG_DIR``): the models do not trace with torch.fx as a whole,
so expand finds the pairs inside their traceable units (ultralytics' ``Conv``); the expanded model equals
the original in both modes, trains, folds back strictly into a fresh ultralytics model, and ultralytics'
own ``fuse()`` still works on the fold."""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.verify import relative_error

ultralytics = pytest.importorskip("ultralytics")


def _yolo(name):
    torch.manual_seed(0)
    return ultralytics.YOLO(name).model


def _flat(out):
    """Every tensor of a detector's output (a tensor, or nested tuples/lists/dicts of them), flattened."""
    if isinstance(out, torch.Tensor):
        return out.flatten()
    values = out.values() if isinstance(out, dict) else out
    return torch.cat([_flat(v) for v in values if isinstance(v, (torch.Tensor, tuple, list, dict))])


def _outputs(model, x, train):
    with torch.no_grad():
        return _flat(copy.deepcopy(model).train(train)(x))


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml"])
@pytest.mark.parametrize("spec", ["acb", "dbb"])
def test_yolo_expands_exactly_trains_and_folds_back_into_ultralytics(name, spec):
    model = rz.randomize_norms(_yolo(name), seed=1).double().eval()
    units = {p for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and max(m.kernel_size) >= 3
             and isinstance(getattr(model.get_submodule(p.rsplit(".", 1)[0]), "bn", None), nn.BatchNorm2d)}
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    expanded, report = rz.expand(model, spec, example_input=x)  # checked on the whole model, both modes
    done = {p for p, _, _ in report.expanded}
    assert len(done & units) >= 0.8 * len(units) and len(units) >= 39, str(report)
    assert not report.traced and "" in report.untraced  # found through the traceable subtrees
    assert "model.0" in report.subtrees and "model.0" not in report.untraced  # the stem's Conv unit
    for train in (False, True):
        assert relative_error(_outputs(expanded, x, train), _outputs(model, x, train)) <= 1e-10

    tuned = expanded.float().train()
    opt = torch.optim.SGD(tuned.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        loss = _flat(tuned(torch.randn(2, 3, 64, 64))).tanh().square().mean()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tuned.eval()
    folded = rz.fold_model(tuned, layout="original")
    fresh = _yolo(name).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    xf = torch.randn(1, 3, 64, 64)
    want = _outputs(tuned, xf, False)
    assert relative_error(_outputs(fresh, xf, False), want) <= 1e-5
    fused = copy.deepcopy(fresh).fuse(verbose=False)  # ultralytics' own conv+BN fusion on the fold
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert relative_error(_outputs(fused, xf, False), want) <= 1e-5
