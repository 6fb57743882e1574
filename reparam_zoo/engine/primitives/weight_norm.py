"""``param: normalized`` — a conv whose kernel is ``W / ||W||`` per output filter (DiracNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.steps import StepKernel, conv_step_kernel, register_conv_param, register_step_converter


@register_conv_param("normalized")
class NormalizedConv2d(nn.Conv2d):
    """``conv(x, normalize(W))``: every output filter has unit L2 norm; put a per-channel
    ``scale`` after it to learn the magnitude (DiracNet's ``b``)."""

    eps = 1e-12

    def kernel(self) -> Tensor:
        """The effective kernel ``W / ||W||`` (what the conv applies)."""
        return K.normalize_filters(self.weight, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel(), self.bias, self.stride, 0, self.dilation, self.groups)


@register_step_converter(NormalizedConv2d)
def _normalized_kernel(m: NormalizedConv2d, channels: int, device, dtype=torch.float64) -> StepKernel:
    return conv_step_kernel(m, K.normalize_filters(m.weight.to(dtype), m.eps))
