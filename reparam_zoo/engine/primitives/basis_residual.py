"""``param: basis`` — DO-Conv's depthwise over-parameterisation ``D + D_diag``.

A depthwise conv with ``multiplier >= prod(k)`` outputs per channel whose kernel is ``W + E``
(:func:`~reparam_zoo.engine.kernels.basis_kernel`), ``W`` zero-initialised: followed by a 1x1
conv it starts as a plain kxk conv.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.primitives.residual import Residual, residual_kernel
from reparam_zoo.engine.steps import register_conv_param, register_step_converter
from reparam_zoo.errors import SpecError


class BasisResidual(Residual):
    """``conv(x, W + E)``, depthwise, ``out = in * multiplier`` with ``multiplier >= prod(k)``."""

    @staticmethod
    def check_step(step) -> None:
        taps = math.prod(step.kernel)
        if step.groups != step.in_channels or step.out_channels % step.in_channels:
            raise SpecError("a basis-parameterised conv (DO-Conv) must be depthwise (groups: depthwise) with "
                            f"out_channels a multiple of in_channels, got {step.in_channels} -> "
                            f"{step.out_channels} with groups={step.groups}", step.loc)
        if step.out_channels // step.in_channels < taps:
            raise SpecError(f"a basis-parameterised conv needs a depth multiplier >= prod(kernel) = {taps}, got "
                            f"{step.out_channels // step.in_channels}", step.loc)

    def fixed_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        return K.basis_kernel(self.in_channels, self.out_channels // self.in_channels, self.kernel_size,
                              dtype=dtype, device=device)


class BasisResidualConv1d(BasisResidual, nn.Conv1d):
    pass


class BasisResidualConv2d(BasisResidual, nn.Conv2d):
    pass


class BasisResidualConv3d(BasisResidual, nn.Conv3d):
    pass


register_conv_param("basis", {1: BasisResidualConv1d, 2: BasisResidualConv2d, 3: BasisResidualConv3d})
register_step_converter(BasisResidual)(residual_kernel)
