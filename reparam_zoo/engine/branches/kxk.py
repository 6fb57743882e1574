"""``kxk``: a conv with the block's own kernel, dilation and groups (RepVGG's 3x3)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reparam_zoo.engine.steps import BlockGeometry, ConvStep, Step, norm_steps
from reparam_zoo.spec.registry import register_branch
from reparam_zoo.spec.schema import BranchSpec


@register_branch("kxk")
class KxKBranch(BranchSpec):
    type: Literal["kxk"] = "kxk"
    bias: bool = Field(False, description="conv bias (usually false before a BN)")

    def plan(self, block: BlockGeometry) -> list[Step]:
        conv = ConvStep(block.in_channels, block.out_channels, block.kernel, block.dilation,
                        block.groups, bias=self.bias)
        return [conv, *norm_steps(self.norm, block.out_channels)]

    def label(self) -> str:
        return "kxk" + ("" if self.norm.type == "none" else f" + {self.norm.type}")
