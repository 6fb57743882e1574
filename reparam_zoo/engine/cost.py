"""Parameter and multiply-accumulate (MAC) counts, measured with forward hooks."""

from __future__ import annotations

import math

import torch
from torch import nn

from reparam_zoo.engine.block import RepBlock
from reparam_zoo.engine.steps import CONV_TRANSPOSES, CONVS, AvgPool, ComposedChain, chain_kernel


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


POOLS = (AvgPool, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _window(kernel_size, axes: int) -> int:
    """Taps of a kernel: ``kernel_size`` is an int (every axis) or one entry per axis."""
    return kernel_size ** axes if isinstance(kernel_size, int) else math.prod(kernel_size)


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates per sample (``input_shape[0]`` samples) of the convolutions, Linear layers
    and poolings of one forward pass, in 1, 2 or 3 spatial dimensions.

    Conv: ``out_elements * C_in/groups * prod(k)``; transposed conv: ``in_elements * C_out/groups *
    prod(k)`` (every product it scatters, the ones its padding crops included); Linear:
    ``out_elements * in_features``; average pooling: ``out_elements * prod(k)`` (transposed:
    ``in_elements * prod(k)``). A chain trained as its composed kernel counts as the one conv it runs,
    and a block trained online as the one conv of its geometry. Element-wise ops (BN in eval, adds,
    activations) and kernel composition are not counted.
    """
    total = 0

    def conv_hook(m: nn.Module, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def conv_transpose_hook(m: nn.Module, inp, out):
        nonlocal total
        total += inp[0].numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    def pool_hook(m: nn.Module, inp, out):
        nonlocal total
        taps = _window(m.kernel_size, out.dim() - 2)
        total += (inp[0] if getattr(m, "transposed", False) else out).numel() * taps

    def composed_hook(m: nn.Module, inp, out):
        # a chain trained as its composed kernel: one conv with the composite kernel on the features
        nonlocal total
        with torch.no_grad():
            k = chain_kernel(list(m), m.in_channels, dims=inp[0].dim() - 2)
        total += out.numel() * math.prod(k.weight.shape[1:])

    def block_hook(m: RepBlock, inp, out):
        # what a block runs functionally (no module call, no hook): online, the one conv of its geometry;
        # a transposed block, each branch's transposed conv on the block's input (the steps before it are
        # per-channel: they keep the spatial size)
        nonlocal total
        g, x = m.geometry, inp[0]
        if m.mode == "online":
            taps = math.prod(g.kernel)
            total += (x.numel() * (g.out_channels // g.groups) if g.transposed else
                      out.numel() * (g.in_channels // g.groups)) * taps
            return
        pixels = x.numel() // (x.shape[0] * x.shape[1])
        for branch in m.branches:
            for step in branch.modules():
                if isinstance(step, CONV_TRANSPOSES):
                    total += x.shape[0] * pixels * step.in_channels * (step.out_channels // step.groups) * \
                        math.prod(step.kernel_size)

    handles = []
    for m in module.modules():
        if isinstance(m, RepBlock) and (m.mode == "online" or (m.mode != "deployed" and m.geometry.transposed)):
            handles.append(m.register_forward_hook(block_hook))
        elif isinstance(m, ComposedChain):
            handles.append(m.register_forward_hook(composed_hook))
        elif isinstance(m, CONVS):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, CONV_TRANSPOSES):
            handles.append(m.register_forward_hook(conv_transpose_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, POOLS):
            handles.append(m.register_forward_hook(pool_hook))
    param = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
    x = torch.zeros(input_shape, dtype=param.dtype if param is not None else None,
                    device=param.device if param is not None else None)
    # the zero-padding fast path calls each branch's first conv functionally (no module call, no
    # hook): count on the pad-once path, which runs the same convs with the same output sizes
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
