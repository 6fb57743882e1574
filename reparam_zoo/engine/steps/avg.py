"""``AvgStep``: unpadded depthwise average pooling (``count_include_pad`` is moot without padding)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.geometry import Pair, grid_taps
from reparam_zoo.engine.steps.base import ChannelWise, StepKernel, register_step, register_step_converter
from reparam_zoo.errors import SpecError


class AvgPool(nn.Module):
    """Unpadded depthwise average pooling with an optional dilation.

    Without dilation this is ``F.avg_pool2d`` (padding 0, so every window holds
    ``kh * kw`` pixels); with dilation, torch has no pooling op, so it is a depthwise
    conv with the constant weight ``1 / (kh * kw)`` made on the fly.
    """

    def __init__(self, kernel_size, stride=1, dilation=1):
        super().__init__()
        self.kernel_size = K.as_pair(kernel_size)
        self.stride = K.as_pair(stride)
        self.dilation = K.as_pair(dilation)

    def forward(self, x: Tensor) -> Tensor:
        if self.dilation == (1, 1):
            return F.avg_pool2d(x, self.kernel_size, self.stride, padding=0)
        kh, kw = self.kernel_size
        c = x.shape[1]
        w = torch.full((c, 1, kh, kw), 1.0 / (kh * kw), dtype=x.dtype, device=x.device)
        return F.conv2d(x, w, stride=self.stride, dilation=self.dilation, groups=c)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


@register_step("avgpool")
@dataclass(frozen=True)
class AvgStep(ChannelWise):
    """Unpadded depthwise average pooling."""

    channels: int
    kernel: Pair
    dilation: Pair = (1, 1)
    stride: Pair = (1, 1)
    loc: str = ""

    spatial = True

    def taps(self) -> tuple[list[int], list[int]]:
        return grid_taps(self.kernel, self.dilation)

    def build(self) -> nn.Module:
        return AvgPool(self.kernel, self.stride, self.dilation)


@register_step_converter(AvgPool)
@register_step_converter(nn.AvgPool2d)
def avg_kernel(m: nn.Module, channels: int, device, dtype) -> StepKernel:
    if isinstance(m, nn.AvgPool2d):
        if K.as_pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override is not None:
            raise SpecError(f"{m!r}: only unpadded average pooling without ceil_mode or "
                            "divisor_override is a convolution")
        ks, stride, dilation = m.kernel_size, m.stride or m.kernel_size, 1
    else:
        ks, stride, dilation = m.kernel_size, m.stride, m.dilation
    w = K.avgpool_kernel(channels, ks, dtype=dtype, device=device)
    return StepKernel(weight=w, groups=channels, stride=K.as_pair(stride), dilation=K.as_pair(dilation))
