"""Shared shape of the residual-parameterised convs: kernel = W + F, W zero-initialised.

``F`` is a fixed kernel made on the fly on the weight's device and dtype (never cached);
subclasses define it in :meth:`Residual.fixed_kernel`. Each parameterisation is one mixin with
its 1-D, 2-D and 3-D conv classes beside it (``class XConv2d(X, nn.Conv2d)``), registered together.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.steps import StepKernel, conv_step_kernel


class EffectiveKernel:
    """Mixin of a conv class whose applied kernel is computed from its weight (:meth:`kernel`)."""

    def kernel(self) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return K.CONV[len(self.kernel_size)](x, self.kernel(), self.bias, self.stride, 0, self.dilation, self.groups)


class Residual(EffectiveKernel):
    """``conv(x, W + F)`` with ``W`` zero-initialised."""

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


class ResidualConv2d(Residual, nn.Conv2d):
    """A 2-D residual-parameterised conv (kept for code that subclasses it)."""


def residual_kernel(m: Residual, channels: int, device, dtype=torch.float64) -> StepKernel:
    """Step converter: the effective kernel, computed in ``dtype``."""
    return conv_step_kernel(m, m.effective_weight(m.weight.to(dtype)))
