"""Shared shape of the residual-parameterised convs: kernel = W + F, W zero-initialised.

``F`` is a fixed kernel made on the fly on the weight's device and dtype (never cached);
subclasses define it in :meth:`ResidualConv2d.fixed_kernel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reparam_zoo.engine.steps import StepKernel, conv_step_kernel


class ResidualConv2d(nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        nn.init.zeros_(self.weight)

    def fixed_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        raise NotImplementedError

    def effective_weight(self, weight: Tensor) -> Tensor:
        return weight + self.fixed_kernel(weight.dtype, weight.device)

    def kernel(self) -> Tensor:
        """The effective kernel ``W + F`` (what the conv applies)."""
        return self.effective_weight(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel(), self.bias, self.stride, 0, self.dilation, self.groups)


def residual_kernel(m: ResidualConv2d, channels: int, device, dtype=torch.float64) -> StepKernel:
    """Step converter: the effective kernel, computed in ``dtype``."""
    return conv_step_kernel(m, m.effective_weight(m.weight.to(dtype)))
