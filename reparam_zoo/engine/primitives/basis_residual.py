"""``param: basis`` — DO-Conv's depthwise over-parameterisation ``D + D_diag``.

A depthwise conv with ``multiplier >= kh*kw`` outputs per channel whose kernel is ``W + E``
(:func:`~reparam_zoo.kernels.basis_kernel`), ``W`` zero-initialised: followed by a 1x1
conv it starts as a plain kxk conv.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.primitives.residual import ResidualConv2d, residual_kernel
from reparam_zoo.engine.steps import register_conv_param, register_step_converter
from reparam_zoo.errors import SpecError


@register_conv_param("basis")
class BasisResidualConv2d(ResidualConv2d):
    """``conv(x, W + E)``, depthwise, ``out = in * multiplier`` with ``multiplier >= kh*kw``."""

    @staticmethod
    def check_step(step) -> None:
        kh, kw = step.kernel
        if step.groups != step.in_channels or step.out_channels % step.in_channels:
            raise SpecError("a basis-parameterised conv (DO-Conv) must be depthwise (groups: depthwise) with "
                            f"out_channels a multiple of in_channels, got {step.in_channels} -> "
                            f"{step.out_channels} with groups={step.groups}", step.loc)
        if step.out_channels // step.in_channels < kh * kw:
            raise SpecError(f"a basis-parameterised conv needs a depth multiplier >= kh*kw = {kh * kw}, got "
                            f"{step.out_channels // step.in_channels}", step.loc)

    def fixed_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        return K.basis_kernel(self.in_channels, self.out_channels // self.in_channels, self.kernel_size,
                              dtype=dtype, device=device)


register_step_converter(BasisResidualConv2d)(residual_kernel)
