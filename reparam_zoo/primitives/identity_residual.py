"""``param: identity`` — a conv whose kernel is ``W + I`` with ``W`` zero-initialised.

DBB's ``IdentityBasedConv1x1``: the branch starts as the identity, and weight decay pulls
the kernel towards the identity, not towards zero. ``I`` is made on the fly, on the
weight's device and dtype (never cached).
"""

from __future__ import annotations


import torch.nn.functional as F
from torch import Tensor, nn

from .. import kernels as K
from ..errors import SpecError
from ..steps import StepKernel, conv_step_kernel, register_conv_param, register_step_converter


@register_conv_param("identity")
class IdentityResidualConv2d(nn.Conv2d):
    """``conv(x, W + I)``; needs in == out channels and an odd kernel."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        nn.init.zeros_(self.weight)

    @staticmethod
    def check_step(step) -> None:
        if step.in_channels != step.out_channels:
            raise SpecError(f"an identity-parameterised conv (W + I) needs in == out channels, got "
                            f"{step.in_channels} -> {step.out_channels}", step.loc)
        if step.kernel[0] % 2 == 0 or step.kernel[1] % 2 == 0:
            raise SpecError(f"an identity-parameterised conv needs an odd kernel, got {step.kernel}", step.loc)

    def effective_weight(self, weight: Tensor) -> Tensor:
        eye = K.identity_kernel(self.in_channels, self.groups, self.kernel_size, dtype=weight.dtype,
                                device=weight.device)
        return weight + eye

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.effective_weight(self.weight), self.bias, self.stride, 0, self.dilation,
                        self.groups)


@register_step_converter(IdentityResidualConv2d)
def _identity_residual_kernel(m: IdentityResidualConv2d, channels: int, device) -> StepKernel:
    return conv_step_kernel(m, m.effective_weight(K.as_float64(m.weight)))
