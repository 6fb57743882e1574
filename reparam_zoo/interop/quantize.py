"""INT8 deployment: a folded network quantized statically with ONNX Runtime, the quantized graph
checked, INT8 measured against FP32, and per-layer statistics of the folded kernels that explain
what quantization does to them.

Quantization is ONNX Runtime's own (``onnxruntime.quantization.quantize_static``): QDQ format,
int8 weights per output channel (symmetric), int8 activations per tensor with ranges calibrated
(min/max) on real images. Nothing here re-implements a quantizer.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from reparam_zoo.engine.block import RepBlock
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.kernels import transpose_layout
from reparam_zoo.interop.export import BATCHNORMS, CONV_OPS, ExportError, export_onnx
from reparam_zoo.stats import nan_max

INSTALL_HINT = "INT8 export needs onnx and onnxruntime: pip install 'reparam_zoo[onnx]'"
#: the ONNX ops whose weights are quantized (every one must be)
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm")


@dataclass
class Int8Report:
    """What :func:`quantize_onnx` wrote and measured."""

    path: str  # the INT8 (QDQ) model
    fp32_path: str  # the FP32 model it was quantized from
    ops: dict  # op type -> count in the INT8 graph
    convs: int  # Conv and ConvTranspose nodes
    quantized_convs: int  # of them, those whose input and weight come through DequantizeLinear of int8 values
    per_channel: bool
    calibration_images: int
    check_images: int
    top1_agreement: float  # fraction of check images where INT8 and FP32 predict the same class
    max_logit_diff: float  # max |INT8 - FP32| logit over the check images
    max_logit: float  # max |FP32| logit (the scale of the difference)
    fp32_export: object = None  # the FP32 export's ExportReport (graph ops, onnxruntime vs PyTorch)
    fp32_accuracy: float | None = None  # on the check images, when their labels were given
    int8_accuracy: float | None = None
    layers: list = field(default_factory=list)  # kernel_stats of every folded conv, by module name
    gemms: int = 0  # Gemm nodes (Linear layers: Linear blocks, a classifier head), every one quantized

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        quantized = []
        if self.convs or not self.gemms:
            kinds = "/".join(op for op in ("Conv", "ConvTranspose") if self.ops.get(op)) or "Conv"
            quantized.append(f"{self.quantized_convs}/{self.convs} {kinds} quantized")
        if self.gemms:
            quantized.append(f"{self.gemms}/{self.gemms} Gemm quantized")
        return (f"wrote {self.path}: {', '.join(quantized)} (int8 weights "
                f"{'per channel' if self.per_channel else 'per tensor'}, int8 activations calibrated on "
                f"{self.calibration_images} images), QuantizeLinear x{self.ops.get('QuantizeLinear', 0)}, "
                f"no BatchNormalization; INT8 vs FP32 on {self.check_images} held-out images: top-1 agreement "
                f"{100 * self.top1_agreement:.2f}%, max logit diff {self.max_logit_diff:.3g} "
                f"(max |logit| {self.max_logit:.3g})")


# ----------------------------------------------------------------------------- kernel statistics


def kernel_stats(weight: Tensor) -> dict:
    """Statistics of a kernel with its output channels first — a conv's ``(C_out, C_in/g, *k)`` in 1, 2 or 3
    dimensions, a Linear layer's ``(C_out, C_in)`` (a transposed conv's weight goes through
    :func:`output_channels_first`) — that bear on int8 quantization.

    Per output channel ``c``: its range ``max|W_c|`` (what a symmetric per-channel scale covers)
    and its kurtosis ``E[(w - mean)^4] / var^2`` (3 for a Gaussian; large when a few weights are
    far out — they take the range, the rest get few levels). Returned: the max and median channel
    range and their ratio (what one per-tensor scale would have to cover), the mean and max
    channel kurtosis."""
    w = weight.detach().to(torch.float64).reshape(weight.shape[0], -1)
    ranges = w.abs().amax(1)
    centred = w - w.mean(1, keepdim=True)
    var = centred.square().mean(1)
    kurt = centred.pow(4).mean(1) / var.square()
    kurt = kurt[var > 0]  # a constant channel has no shape
    rmax, rmed = ranges.max().item(), ranges.median().item()
    return {"channels": int(w.shape[0]), "range_max": rmax, "range_median": rmed,
            "range_ratio": rmax / rmed if rmed > 0 else math.inf,
            "kurtosis_mean": kurt.mean().item() if len(kurt) else math.nan,
            "kurtosis_max": kurt.max().item() if len(kurt) else math.nan}


def worst(layers: list[dict], key: str) -> float:
    """The largest ``key`` over :func:`layer_stats` rows, NaN (a layer of constant channels) ignored."""
    return nan_max(r[key] for r in layers)


def output_channels_first(layer: nn.Module) -> Tensor:
    """A layer's weight with one row per output channel: a conv's or Linear's own, a transposed conv's
    ``(C_in, C_out/g, *k)`` regrouped to the conv layout ``(C_out, C_in/g, *k)``."""
    if isinstance(layer, CONV_OPS["ConvTranspose"]):
        return transpose_layout(layer.weight, layer.groups)
    return layer.weight


def layer_stats(model: nn.Module, linear: Collection[str] = ()) -> list[dict]:
    """:func:`kernel_stats` of every conv and transposed conv (1-D, 2-D, 3-D) of a (folded) model, with its
    module name, and of the ``nn.Linear`` layers named in ``linear`` (the folded Linear blocks,
    :func:`linear_blocks`; a classifier head is not a folded kernel)."""
    kinds = (*CONV_OPS["Conv"], *CONV_OPS["ConvTranspose"])
    return [{"layer": name, **kernel_stats(output_channels_first(m))} for name, m in model.named_modules()
            if isinstance(m, kinds) or (isinstance(m, nn.Linear) and name in linear)]


def linear_blocks(model: nn.Module) -> set[str]:
    """The names the Linear layers of ``model``'s Linear blocks (``dims=0``) have once folded: the block's
    own name, or its ``conv`` child when the block has an activation."""
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, RepBlock) and m.geometry.dims == 0:
            names.update((name, f"{name}.conv" if name else "conv"))
    return names


# ----------------------------------------------------------------------------- graph check


def check_int8_graph(graph, per_channel: bool = True, batchnorms: int = 0) -> tuple[dict, int, int]:
    """``(op counts, Conv and ConvTranspose nodes, quantized ones)`` of a QDQ graph; raises ExportError
    unless every Conv, ConvTranspose and Gemm reads its input through DequantizeLinear of 8-bit values
    and its weight through DequantizeLinear of an int8 initializer (with ``per_channel``, one scale per
    output channel: axis 0 of a Conv's weight, axis 1 of a ConvTranspose's ``(C_in, C_out/g, *k)`` —
    which ONNX Runtime can give only without groups —, the output axis of a Gemm's), and the graph has
    exactly ``batchnorms`` BatchNormalization nodes (those the folded model keeps outside its blocks; none
    for a network of blocks)."""
    import onnx

    ops = Counter(n.op_type for n in graph.node)
    if ops.get("BatchNormalization", 0) != batchnorms:
        raise ExportError(f"the INT8 graph has {ops.get('BatchNormalization', 0)} BatchNormalization node(s), "
                          f"the folded model {batchnorms}")
    producer = {out: n for n in graph.node for out in n.output}
    inits = {t.name: t for t in graph.initializer}
    layers = [n for n in graph.node if n.op_type in WEIGHT_OPS]
    if not layers:
        raise ExportError(f"the INT8 graph has no {', '.join(WEIGHT_OPS)} node")

    def int8_dequant(name: str):
        node = producer.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            return None
        src = node.input[0]
        if src in inits:
            dtype = inits[src].data_type
        else:
            q = producer.get(src)  # an activation: DequantizeLinear(QuantizeLinear(x)), int8 by its zero point
            zp = inits.get(q.input[2]) if q is not None and q.op_type == "QuantizeLinear" and len(q.input) > 2 \
                else None
            dtype = zp.data_type if zp is not None else None
        return node if dtype in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) else None

    quantized = 0
    for n in layers:
        x_dq, w_dq = int8_dequant(n.input[0]), int8_dequant(n.input[1])
        if x_dq is None or w_dq is None:
            raise ExportError(f"{n.op_type} node {n.name!r} is not quantized: its "
                              f"{'input' if x_dq is None else 'weight'} does not come through DequantizeLinear "
                              "of int8 values")
        w_init = inits.get(w_dq.input[0])
        if w_init is None or w_init.data_type != onnx.TensorProto.INT8:
            raise ExportError(f"{n.op_type} node {n.name!r}: expected its weight stored as an int8 initializer but "
                              f"it is "
                              f"{'computed in the graph' if w_init is None else f'ONNX type {w_init.data_type}'}")
        scale = inits.get(w_dq.input[1])
        if scale is None:
            raise ExportError(f"{n.op_type} node {n.name!r}: its weight scale is not a constant of the graph")
        n_scales = int(np.prod(scale.dims)) if len(scale.dims) else 1
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        want_axis, channels = _output_axis(n, w_init)
        if per_channel and (n_scales != channels or w_init.dims[want_axis] != channels or
                            (n_scales > 1 and axis != want_axis)):
            raise ExportError(f"{n.op_type} node {n.name!r}: expected one weight scale per output channel "
                              f"({channels}, axis {want_axis}) but got {n_scales} (axis {axis})")
        if n.op_type != "Gemm":
            quantized += 1
    return dict(ops), len(layers) - ops.get("Gemm", 0), quantized


def _output_axis(node, weight) -> tuple[int, int]:
    """``(axis, output channels)`` of a weight-bearing node's weight: a Conv's ``(C_out, C_in/g, *k)``
    axis 0; a ConvTranspose's ``(C_in, C_out/g, *k)`` axis 1, ``group * dims[1]`` outputs; a Gemm's
    ``(C_out, C_in)`` axis 0 when ``transB``, else axis 1."""
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "ConvTranspose":
        return 1, weight.dims[1] * attrs.get("group", 1)
    axis = 0 if node.op_type == "Conv" or attrs.get("transB", 0) else 1
    return axis, weight.dims[axis]


# ----------------------------------------------------------------------------- quantize


def _refuse_grouped_transposed(folded: nn.Module) -> None:
    """ONNX Runtime quantizes a ConvTranspose's weight per channel along axis 1 of ``(C_in, C_out/g, *k)``:
    with groups that is ``C_out/g`` scales shared by the groups (it fails, or gives one scale for a depthwise
    layer), not one per output channel. Refused before any work, with what does work."""
    for name, m in folded.named_modules():
        if isinstance(m, CONV_OPS["ConvTranspose"]) and m.groups > 1:
            raise ExportError(f"ONNX Runtime cannot quantize the transposed conv {name or '<root>'!r} (groups="
                              f"{m.groups}) with one weight scale per output channel (it scales axis 1, C_out/groups "
                              "channels shared by the groups); quantize with per_channel=False")


def onnx_logits(path: str | Path, x: Tensor, batch: int = 256) -> Tensor:
    """The outputs of an ONNX model (onnxruntime, CPU) on ``x``, in batches."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i:i + batch].float().numpy()})[0] for i in range(0, len(x), batch)]
    return torch.from_numpy(np.concatenate(outs))


def quantize_onnx(model: nn.Module, calibration: Tensor, path: str | Path, *, check: Tensor | None = None,
                  labels: Tensor | None = None, fp32_path: str | Path | None = None, per_channel: bool = True, opset: int = 17,
                  batch: int = 64) -> Int8Report:
    """Fold ``model`` (a copy), export it to FP32 ONNX (checked as :func:`~reparam_zoo.export.export_onnx`
    checks it), quantize it statically with ONNX Runtime — QDQ, int8 weights per output channel,
    int8 activations calibrated (min/max) on ``calibration`` images ``(N, C, H, W)`` (or what the model
    takes: ``(N, C)`` for Linear blocks, ``(N, C, L)``, ``(N, C, D, H, W)``) — into ``path``,
    check the quantized graph (:func:`check_int8_graph`) and measure INT8 against FP32 on ``check``
    images (default: the calibration images; pass held-out ones): top-1 agreement and max logit
    difference, and with their ``labels`` the FP32 and INT8 accuracies. The FP32 model is written to
    ``fp32_path`` (default ``<path stem>.fp32.onnx``). Both files are written whole or not at all; a
    quantization ONNX Runtime refuses, a graph that fails the check and non-finite outputs raise
    :class:`~reparam_zoo.export.ExportError` and write nothing."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise ExportError(INSTALL_HINT) from None
    if calibration.dim() < 2 or len(calibration) == 0:
        raise ExportError(f"Expected calibration images (N, C, H, W) with N >= 1 (or the model's inputs: (N, C) "
                          f"for Linear blocks, (N, C, L), (N, C, D, H, W)) but got {tuple(calibration.shape)}")
    path = Path(path)
    fp32_path = Path(fp32_path) if fp32_path is not None else path.with_name(path.stem + ".fp32.onnx")
    folded = fold_model(model).eval().float().cpu()
    calibration = calibration.float().cpu()
    check = calibration if check is None else check.float().cpu()
    if labels is not None and len(labels) != len(check):
        raise ExportError(f"Expected {len(check)} labels for the check images but got {len(labels)}")
    batchnorms = sum(isinstance(m, BATCHNORMS) for m in folded.modules())
    if per_channel:
        _refuse_grouped_transposed(folded)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([calibration[i:i + batch].numpy() for i in range(0, len(calibration), batch)])

        def get_next(self):
            x = next(self._batches, None)
            return None if x is None else {"input": x}

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32_tmp, pre, int8_tmp = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32_export = export_onnx(folded, (1, *calibration.shape[1:]), fp32_tmp, opset=opset)
        try:  # ONNX Runtime's own failures (a NaN range: "scale issue", an unsupported op) are one line too
            quant_pre_process(str(fp32_tmp), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(int8_tmp), _Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            raise ExportError(f"ONNX Runtime could not quantize the model: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}") from exc
        ops, convs, quantized = check_int8_graph(onnx.load(str(int8_tmp)).graph, per_channel, batchnorms)
        want, got = onnx_logits(fp32_tmp, check), onnx_logits(int8_tmp, check)
        for name, out in (("FP32", want), ("INT8", got)):
            if not bool(torch.isfinite(out).all()):  # NaN "agrees" in argmax: never a number from it
                raise ExportError(f"the {name} model's outputs on the check images are not finite; nothing written")
        os.replace(fp32_tmp, fp32_path)
        os.replace(int8_tmp, path)
    fp32_export.path = str(fp32_path)
    accuracy = {} if labels is None else {
        "fp32_accuracy": (want.argmax(1) == labels.cpu()).double().mean().item(),
        "int8_accuracy": (got.argmax(1) == labels.cpu()).double().mean().item()}
    return Int8Report(
        path=str(path), fp32_path=str(fp32_path), ops=ops, convs=convs, quantized_convs=quantized,
        per_channel=per_channel, calibration_images=len(calibration), check_images=len(check),
        top1_agreement=(got.argmax(1) == want.argmax(1)).double().mean().item(),
        max_logit_diff=(got - want).abs().max().item(), max_logit=want.abs().max().item(),
        layers=layer_stats(folded, linear_blocks(model)), fp32_export=fp32_export, gemms=ops.get("Gemm", 0),
        **accuracy)


__all__ = ["Int8Report", "check_int8_graph", "kernel_stats", "layer_stats", "linear_blocks", "onnx_logits",
           "output_channels_first", "quantize_onnx", "worst"]
