"""``GateStep`` — a scalar per-branch gate ``y = g * x`` (architecture search over branch subsets).

A spec asks for it with ``gate: learnable`` or ``gate: fixed`` on a branch; the engine appends it
to the branch's plan. A gate is linear, so a gated block folds exactly for ANY gate values; a gate
at 0 removes its branch exactly (the block then equals the spec without that branch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reparam_zoo.engine.geometry import Pair
from reparam_zoo.engine.steps.base import ChannelWise, StepKernel, register_step, register_step_converter


class BranchGate(nn.Module):
    def __init__(self, init: float = 1.0, learnable: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(init)), requires_grad=learnable)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return f"{float(self.weight.detach()):.4g}, learnable={self.weight.requires_grad}"


@register_step("gate")
@dataclass(frozen=True)
class GateStep(ChannelWise):
    """A scalar gate on ``channels`` channels, learnable or fixed at its initial value."""

    channels: int
    learnable: bool = True
    init: float = 1.0
    loc: str = "gate"

    stride: Pair = (1, 1)

    shift_free = True

    def build(self) -> nn.Module:
        return BranchGate(self.init, learnable=self.learnable)


@register_step_converter(BranchGate)
def gate_kernel(m: BranchGate, channels: int, device, dtype) -> StepKernel:
    return StepKernel(scale=m.weight.to(dtype).expand(channels))
