"""``AvgStep``: unpadded depthwise average pooling (``count_include_pad`` is moot without padding)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.geometry import Axes, grid_taps
from reparam_zoo.engine.steps.base import ChannelWise, StepKernel, register_step, register_step_converter
from reparam_zoo.errors import SpecError

_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class AvgPool(nn.Module):
    """Unpadded depthwise average pooling with an optional dilation, on ``len(kernel_size)`` axes.

    Without dilation this is ``F.avg_pool{d}d`` (padding 0, so every window holds
    ``prod(k)`` pixels); with dilation, torch has no pooling op, so it is a depthwise
    conv with the constant weight ``1 / prod(k)`` made on the fly. ``transposed``: the
    transposed depthwise conv with that weight (the pooling of a transposed block).
    """

    def __init__(self, kernel_size, stride=1, dilation=1, *, transposed: bool = False):
        super().__init__()
        n = 2 if isinstance(kernel_size, int) else len(kernel_size)
        self.kernel_size = K.as_tuple(kernel_size, n, "kernel_size")
        self.stride = K.as_tuple(stride, n, "stride")
        self.dilation = K.as_tuple(dilation, n, "dilation")
        self.transposed = transposed

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.kernel_size)
        if all(d == 1 for d in self.dilation) and not self.transposed:
            return _POOL[n](x, self.kernel_size, self.stride, padding=0)
        c = x.shape[1]
        w = K.avgpool_kernel(c, self.kernel_size, dtype=x.dtype, device=x.device)
        if self.transposed:
            return K.CONV_TRANSPOSE[n](x, w, stride=self.stride, groups=c, dilation=self.dilation)
        return K.CONV[n](x, w, stride=self.stride, dilation=self.dilation, groups=c)

    def extra_repr(self) -> str:
        t = ", transposed=True" if self.transposed else ""
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}{t}"


@register_step("avgpool")
@dataclass(frozen=True)
class AvgStep(ChannelWise):
    """Unpadded depthwise average pooling."""

    channels: int
    kernel: Axes
    dilation: Axes | None = None
    stride: Axes | None = None
    loc: str = ""
    transposed: bool = False

    spatial = True

    def __post_init__(self):
        for name in ("stride", "dilation"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, (1,) * len(self.kernel))

    def for_block(self, block) -> "AvgStep":
        return replace(self, transposed=True) if block.transposed and not self.transposed else self

    def taps(self) -> tuple[list[int], ...]:
        return grid_taps(self.kernel, self.dilation)

    def build(self) -> nn.Module:
        return AvgPool(self.kernel, self.stride, self.dilation, transposed=self.transposed)


@register_step_converter(AvgPool)
@register_step_converter(nn.AvgPool1d)
@register_step_converter(nn.AvgPool2d)
@register_step_converter(nn.AvgPool3d)
def avg_kernel(m: nn.Module, channels: int, device, dtype) -> StepKernel:
    if isinstance(m, AvgPool):
        ks, stride, dilation = m.kernel_size, m.stride, m.dilation
    else:
        n = {nn.AvgPool1d: 1, nn.AvgPool3d: 3}.get(type(m), 2)
        padding = K.as_tuple(m.padding, n, "padding")
        if any(padding) or m.ceil_mode or getattr(m, "divisor_override", None) is not None:
            raise SpecError(f"{m!r}: only unpadded average pooling without ceil_mode or "
                            "divisor_override is a convolution")
        ks = K.as_tuple(m.kernel_size, n, "kernel_size")
        stride, dilation = K.as_tuple(m.stride or m.kernel_size, n, "stride"), (1,) * n
    w = K.avgpool_kernel(channels, ks, dtype=dtype, device=device)
    return StepKernel(weight=w, groups=channels, stride=tuple(stride), dilation=tuple(dilation))
