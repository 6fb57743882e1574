"""``param: identity`` — a conv whose kernel is ``W + I`` with ``W`` zero-initialised.

DBB's ``IdentityBasedConv1x1``: the branch starts as the identity, and weight decay pulls
the kernel towards the identity, not towards zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.primitives.residual import Residual, residual_kernel
from reparam_zoo.engine.steps import register_conv_param, register_step_converter
from reparam_zoo.errors import SpecError


class IdentityResidual(Residual):
    """``conv(x, W + I)``; needs in == out channels and an odd kernel."""

    @staticmethod
    def check_step(step) -> None:
        if step.in_channels != step.out_channels:
            raise SpecError(f"an identity-parameterised conv (W + I) needs in == out channels, got "
                            f"{step.in_channels} -> {step.out_channels}", step.loc)
        if any(k % 2 == 0 for k in step.kernel):
            raise SpecError(f"an identity-parameterised conv needs an odd kernel, got {step.kernel}", step.loc)

    def fixed_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        return K.identity_kernel(self.in_channels, self.groups, self.kernel_size, dtype=dtype, device=device)


class IdentityResidualConv1d(IdentityResidual, nn.Conv1d):
    pass


class IdentityResidualConv2d(IdentityResidual, nn.Conv2d):
    pass


class IdentityResidualConv3d(IdentityResidual, nn.Conv3d):
    pass


register_conv_param("identity", {1: IdentityResidualConv1d, 2: IdentityResidualConv2d, 3: IdentityResidualConv3d})
register_step_converter(IdentityResidual)(residual_kernel)
