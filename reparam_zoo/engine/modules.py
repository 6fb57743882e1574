"""The few leaf modules a branch step needs beyond torch's own, and the activations."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reparam_zoo.engine.kernels import as_pair
from reparam_zoo.registry import Registry


class ChannelScale(nn.Module):
    """A learnable per-channel scale ``y = w[c] * x`` (OREPA's linear scaling)."""

    def __init__(self, channels: int, init: float = 1.0, *, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(init), dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}"


class AvgPool(nn.Module):
    """Unpadded depthwise average pooling with an optional dilation.

    Without dilation this is ``F.avg_pool2d`` (padding 0, so every window holds
    ``kh * kw`` pixels); with dilation, torch has no pooling op, so it is a depthwise
    conv with the constant weight ``1 / (kh * kw)`` made on the fly.
    """

    def __init__(self, kernel_size, stride=1, dilation=1):
        super().__init__()
        self.kernel_size = as_pair(kernel_size)
        self.stride = as_pair(stride)
        self.dilation = as_pair(dilation)

    def forward(self, x: Tensor) -> Tensor:
        if self.dilation == (1, 1):
            return F.avg_pool2d(x, self.kernel_size, self.stride, padding=0)
        kh, kw = self.kernel_size
        c = x.shape[1]
        w = torch.full((c, 1, kh, kw), 1.0 / (kh * kw), dtype=x.dtype, device=x.device)
        return F.conv2d(x, w, stride=self.stride, dilation=self.dilation, groups=c)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


#: activation name -> constructor (no arguments)
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
for _name, _ctor in {
    "identity": nn.Identity,
    "relu": lambda: nn.ReLU(inplace=False),
    "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "mish": nn.Mish,
    "prelu": nn.PReLU,
}.items():
    ACTIVATIONS.register(_name, _ctor)
