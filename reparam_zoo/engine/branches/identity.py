"""``identity``: the input itself (RepVGG's identity branch, usually followed by a BN)."""

from __future__ import annotations

from typing import Literal

from reparam_zoo.engine.steps import BlockGeometry, IdentityStep, Step, norm_steps
from reparam_zoo.errors import NotApplicable
from reparam_zoo.spec.registry import register_branch
from reparam_zoo.spec.schema import BranchSpec


@register_branch("identity")
class IdentityBranch(BranchSpec):
    type: Literal["identity"] = "identity"

    def plan(self, block: BlockGeometry) -> list[Step]:
        if block.in_channels != block.out_channels:
            raise NotApplicable(
                f"identity needs in_channels == out_channels, got {block.in_channels} -> {block.out_channels}")
        if block.stride != block.ones:
            raise NotApplicable(f"identity needs stride 1, got {block.stride}")
        return [IdentityStep(block.in_channels), *norm_steps(self.norm, block.out_channels)]
