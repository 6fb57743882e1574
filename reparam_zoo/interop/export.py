"""Export: fold, write ONNX, check the graph, compare onnxruntime with PyTorch."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.steps import CONV_TRANSPOSES, CONVS
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


#: the norms a folded model may keep outside its blocks (each one BatchNormalization node)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: the ONNX op each layer a block folds into exports to, one node per layer
CONV_OPS = {"Conv": CONVS, "ConvTranspose": CONV_TRANSPOSES}


def _check_layers(ops: Counter, folded: nn.Module) -> None:
    """The graph has one node per layer of the folded model: a ``Conv`` per conv (1-D, 2-D, 3-D), a
    ``ConvTranspose`` per transposed conv, a ``BatchNormalization`` per norm the model keeps outside its
    blocks, and a ``Gemm`` (or, on inputs of more than two dimensions, a ``MatMul``) per ``nn.Linear``."""
    modules = list(folded.modules())
    bns = sum(isinstance(m, BATCHNORMS) for m in modules)
    if ops.get("BatchNormalization", 0) != bns:
        raise ExportError(f"the ONNX graph has {ops.get('BatchNormalization', 0)} BatchNormalization nodes, "
                          f"the folded model {bns}")
    for op, classes in CONV_OPS.items():
        layers = sum(isinstance(m, classes) for m in modules)
        if ops.get(op, 0) != layers:
            raise ExportError(f"the ONNX graph has {ops.get(op, 0)} {op} nodes, the folded model {layers} "
                              "(a folded block must be exactly one layer)")
    linears = sum(isinstance(m, nn.Linear) for m in modules)
    if ops.get("Gemm", 0) + ops.get("MatMul", 0) < linears:  # a model's own matmuls may add MatMul nodes
        raise ExportError(f"the ONNX graph has {ops.get('Gemm', 0)} Gemm and {ops.get('MatMul', 0)} MatMul "
                          f"nodes for the folded model's {linears} Linear layers (one each expected)")


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *, opset: int = 17,
                tolerance: float = TOLERANCES["export"]) -> ExportReport:
    """Fold ``model`` (a copy), export it to ONNX (dynamic batch), check that every folded block
    is one node — ``Conv`` (1-D, 2-D, 3-D), ``ConvTranspose`` or, for a Linear block, ``Gemm`` — with no
    BatchNormalization or parallel branches left, and that onnxruntime's output matches PyTorch's within
    ``tolerance`` (relative to max |y|). ``input_shape``: ``(N, C, *size)``, ``(N, C)`` for a Linear block."""
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
    _check_layers(ops, folded)
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
