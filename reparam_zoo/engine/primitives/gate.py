"""``gate`` — a scalar per-branch gate ``y = g * x`` (architecture search over branch subsets).

A gate is linear, so a gated block folds exactly for ANY gate values; a gate at 0 removes its
branch exactly (the block then equals the spec without that branch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reparam_zoo.engine.steps import StepKernel, register_step_converter


class BranchGate(nn.Module):
    def __init__(self, init: float = 1.0, learnable: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(init)), requires_grad=learnable)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return f"{float(self.weight.detach()):.4g}, learnable={self.weight.requires_grad}"


@register_step_converter(BranchGate)
def _gate_kernel(m: BranchGate, channels: int, device, dtype=torch.float64) -> StepKernel:
    return StepKernel(scale=m.weight.to(dtype).expand(channels))
