"""Export: fold, write ONNX, check the graph, compare onnxruntime with PyTorch."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.verify import TOLERANCES, relative_error

INSTALL_HINT = "ONNX export needs onnx and onnxruntime: pip install 'reparam_zoo[onnx]'"


class ExportError(ValueError):
    """An export whose graph or numbers are not what the folded model says."""


@dataclass
class ExportReport:
    path: str
    ops: dict
    max_abs: float
    max_rel: float

    def __str__(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.ops.items()))
        return (f"wrote {self.path}: {ops}; onnxruntime vs PyTorch: max abs {self.max_abs:.2e}, "
                f"max rel {self.max_rel:.2e}")


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *, opset: int = 17,
                tolerance: float = TOLERANCES["export"]) -> ExportReport:
    """Fold ``model`` (a copy), export it to ONNX (dynamic batch), check that every folded block
    is one Conv (no BatchNormalization, no parallel branches left) and that onnxruntime's output
    matches PyTorch's within ``tolerance`` (relative to max |y|)."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ExportError(INSTALL_HINT) from None
    folded = fold_model(model).eval().float().cpu()
    x = torch.randn(*input_shape)
    with warnings.catch_warnings():  # the TorchScript-based exporter needs no extra package
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(folded, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    convs = sum(isinstance(m, nn.Conv2d) for m in folded.modules())
    bns = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    if ops.get("BatchNormalization", 0) != bns:
        raise ExportError(f"the ONNX graph has {ops.get('BatchNormalization', 0)} BatchNormalization nodes, "
                          f"the folded model {bns}")
    if ops.get("Conv", 0) != convs:
        raise ExportError(f"the ONNX graph has {ops.get('Conv', 0)} Conv nodes, the folded model {convs} "
                          "(a folded block must be exactly one conv)")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xb = torch.randn(2, *input_shape[1:])
    with torch.no_grad():
        want = folded(xb)
    got = torch.from_numpy(sess.run(None, {"input": xb.numpy()})[0])
    max_abs = (got.double() - want.double()).abs().max().item()
    max_rel = relative_error(got, want)
    report = ExportReport(str(path), dict(ops), max_abs, max_rel)
    if not max_rel <= tolerance:  # inf for NaN, inf or nothing compared: such a model must not pass
        raise ExportError(f"onnxruntime differs from PyTorch (or either is not finite): {report}")
    return report
