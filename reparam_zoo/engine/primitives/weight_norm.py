"""``param: normalized`` — a conv whose kernel is ``W / ||W||`` per output filter (DiracNet)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.primitives.residual import EffectiveKernel
from reparam_zoo.engine.steps import StepKernel, conv_step_kernel, register_conv_param, register_step_converter


class Normalized(EffectiveKernel):
    """``conv(x, normalize(W))``: every output filter has unit L2 norm; put a per-channel
    ``scale`` after it to learn the magnitude (DiracNet's ``b``)."""

    eps = 1e-12

    def kernel(self) -> Tensor:
        """The effective kernel ``W / ||W||`` (what the conv applies)."""
        return K.normalize_filters(self.weight, self.eps)


class NormalizedConv1d(Normalized, nn.Conv1d):
    pass


class NormalizedConv2d(Normalized, nn.Conv2d):
    pass


class NormalizedConv3d(Normalized, nn.Conv3d):
    pass


register_conv_param("normalized", {1: NormalizedConv1d, 2: NormalizedConv2d, 3: NormalizedConv3d})


@register_step_converter(Normalized)
def _normalized_kernel(m: Normalized, channels: int, device, dtype=torch.float64) -> StepKernel:
    return conv_step_kernel(m, K.normalize_filters(m.weight.to(dtype), m.eps))
