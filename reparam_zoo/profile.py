"""Parameter and multiply-accumulate (MAC) counts, measured with forward hooks."""

from __future__ import annotations

import torch
from torch import nn

from .modules import AvgPool


def count_params(module: nn.Module) -> int:
    """Learnable parameters (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the convolutions and poolings of one forward pass.

    Conv: ``out_elements * C_in/groups * kh * kw``; average pooling: ``out_elements * kh * kw``.
    Element-wise ops (BN in eval, adds, activations) are not counted.
    """
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def pool_hook(m: nn.Module, inp, out):
        nonlocal total
        k = m.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        total += out.numel() * kh * kw

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (AvgPool, nn.AvgPool2d)):
            handles.append(m.register_forward_hook(pool_hook))
    param = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
    x = torch.zeros(input_shape, dtype=param.dtype if param is not None else None,
                    device=param.device if param is not None else None)
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(x)
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total // input_shape[0]
