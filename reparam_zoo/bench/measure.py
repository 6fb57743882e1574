"""Measuring a network: accuracy and logits on a dataset, the wall time of a forward, the activation
memory a training step saves for backward, the INT8 accuracy of a deployed net (ONNX Runtime), and
the accuracy below which a training counts as failed. Used by the trainer, compare and the search."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reparam_zoo.bench.data import Dataset
from reparam_zoo.engine.cost import saved_tensor_mb


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a wall-clock time covers it; no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             batch: int = 256) -> tuple[float, torch.Tensor]:
    """(top-1 accuracy, the logits on the CPU) of ``model`` in eval mode on the images ``x`` with labels ``y``."""
    model.eval()
    logits = torch.cat([model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])
    acc = (logits.argmax(1) == y).float().mean().item()
    return acc, logits


@torch.no_grad()
def latency_ms(model: nn.Module, shape: tuple[int, ...], device: torch.device, runs: int) -> float:
    """Median wall time of one eval forward (after warm-up)."""
    model.eval()
    x = torch.randn(shape, device=device)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(runs):
        sync_device(device)
        t0 = time.perf_counter()
        model(x)
        sync_device(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def saved_activation_mb(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """MiB autograd saves for backward in one training step (the training memory a block costs). The model
    comes back as it was: the training-mode forward's BatchNorm statistics updates are undone."""
    state, training = {k: v.clone() for k, v in model.state_dict().items()}, model.training
    model.train()
    mb = saved_tensor_mb(lambda: F.cross_entropy(model(x), y).backward())
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    model.train(training)
    return mb


def measure_int8(deployed: nn.Module, data: Dataset, calibration: int, deploy_acc: float) -> dict:
    """The deployed net quantized by ONNX Runtime (``quantize.quantize_onnx``: QDQ, int8 weights per channel,
    activations calibrated on the first ``calibration`` training images) and run on the validation set:
    INT8 accuracy, its drop from the deployed FP32 accuracy, INT8 vs FP32 agreement, and the folded
    kernels' statistics per layer."""
    import tempfile

    from reparam_zoo.interop.quantize import quantize_onnx, worst

    with tempfile.TemporaryDirectory() as tmp:
        rep = quantize_onnx(deployed, data.train_x[:calibration], Path(tmp) / "int8.onnx", check=data.val_x,
                            labels=data.val_y)
    layers = rep.layers
    return {"int8_val_acc": rep.int8_accuracy, "onnx_fp32_val_acc": rep.fp32_accuracy,
            "int8_drop": deploy_acc - rep.int8_accuracy, "int8_agreement": rep.top1_agreement,
            "int8_max_logit_diff": rep.max_logit_diff, "int8_calibration_images": rep.calibration_images,
            "int8_quantized_convs": rep.quantized_convs,
            "kernel_range_ratio_max": worst(layers, "range_ratio"),
            "kernel_kurtosis_max": worst(layers, "kurtosis_max"),
            "kernel_layers": layers}


def chance_level(num_classes: int, n_val: int) -> float:
    """The accuracy below which a training counts as failed: chance (1 / classes) plus three standard
    errors of a guesser's accuracy on ``n_val`` images."""
    p = 1.0 / num_classes
    return p + 3 * math.sqrt(p * (1 - p) / max(n_val, 1))


__all__ = ["chance_level", "evaluate", "latency_ms", "measure_int8", "saved_activation_mb", "sync_device"]
