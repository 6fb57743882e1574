"""Parameter and multiply-accumulate (MAC) counts, measured with forward hooks."""

from __future__ import annotations

import torch
from torch import nn

from reparam_zoo.engine.steps import AvgPool, ComposedChain, chain_kernel


def count_params(module: nn.Module) -> int:
    """Learnable parameters (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def train_deploy_costs(train: nn.Module, deployed: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """``train_params``, ``deploy_params``, ``train_macs``, ``deploy_macs`` of a training form and its fold
    (MACs for one forward of ``input_shape``): the columns every table of the library shows."""
    return {"train_params": count_params(train), "deploy_params": count_params(deployed),
            "train_macs": count_macs(train, input_shape), "deploy_macs": count_macs(deployed, input_shape)}


def saved_tensor_mb(step) -> float:
    """MiB that autograd saves for backward while ``step()`` runs (a training step's memory)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total / 2**20


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the convolutions and poolings of one forward pass.

    Conv: ``out_elements * C_in/groups * kh * kw``; average pooling: ``out_elements * kh * kw``;
    a chain trained as its composed kernel counts as the one conv it runs. Element-wise ops
    (BN in eval, adds, activations) and kernel composition are not counted.
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

    def composed_hook(m: nn.Module, inp, out):
        # a chain trained as its composed kernel: one conv with the composite kernel on the features
        nonlocal total
        with torch.no_grad():
            k = chain_kernel(list(m), m.in_channels)
        total += out.numel() * k.weight.shape[1] * k.weight.shape[2] * k.weight.shape[3]

    handles = []
    for m in module.modules():
        if isinstance(m, ComposedChain):
            handles.append(m.register_forward_hook(composed_hook))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (AvgPool, nn.AvgPool2d)):
            handles.append(m.register_forward_hook(pool_hook))
    param = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
    x = torch.zeros(input_shape, dtype=param.dtype if param is not None else None,
                    device=param.device if param is not None else None)
    # the zero-padding fast path calls each branch's first conv functionally (no module call, no
    # hook): count on the pad-once path, which runs the same convs with the same output sizes
    from reparam_zoo.engine.block import RepBlock

    blocks = [m for m in module.modules() if isinstance(m, RepBlock)]
    saved = [b._direct for b in blocks]
    was_training = module.training
    try:
        for b in blocks:
            b._direct = (None,) * len(b._direct)
        module.eval()
        with torch.no_grad():
            module(x)
    finally:
        module.train(was_training)
        for b, d in zip(blocks, saved):
            b._direct = d
        for h in handles:
            h.remove()
    return total // input_shape[0]
