"""``IdentityStep``: the identity map (RepVGG's identity branch, before its BatchNorm)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reparam_zoo.engine.geometry import Pair
from reparam_zoo.engine.steps.base import ChannelWise, StepKernel, register_step, register_step_converter


@register_step("identity")
@dataclass(frozen=True)
class IdentityStep(ChannelWise):
    """The identity map on ``channels`` channels."""

    channels: int
    loc: str = ""

    stride: Pair = (1, 1)

    shift_free = True

    def build(self) -> nn.Module:
        return nn.Identity()


@register_step_converter(nn.Identity)
def identity_kernel(m: nn.Identity, channels: int, device, dtype) -> StepKernel:
    """The identity as a per-channel scale of one: a kernel of extent 1 on every axis, whatever their number."""
    return StepKernel(scale=torch.ones(channels, dtype=dtype, device=device))
