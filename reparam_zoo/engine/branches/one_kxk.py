"""``1x1_kxk``: DBB's 1x1 -> BN -> kxk branch (the kxk has the block's kernel and dilation)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, PositiveInt

from reparam_zoo.engine.steps import BlockGeometry, ConvStep, Step, norm_steps
from reparam_zoo.spec.registry import register_branch
from reparam_zoo.spec.schema import BranchSpec, Norm, NormSpec


@register_branch("1x1_kxk")
class OneKxKBranch(BranchSpec):
    type: Literal["1x1_kxk"] = "1x1_kxk"
    mid_channels: Union[PositiveInt, Literal["in", "out"]] = Field(
        "in", description="channels between the 1x1 and the kxk: an int, 'in' or 'out'")
    mid_multiplier: PositiveInt = Field(1, description="multiplies mid_channels (DBB's depthwise variant: 2)")
    identity_init: bool = Field(False, description="the 1x1 is I + W with W zero-initialised (DBB's "
                                                   "IdentityBasedConv1x1; needs mid == in)")
    mid_norm: Norm = Field(default_factory=NormSpec, description="norm between the 1x1 and the kxk")

    def plan(self, block: BlockGeometry) -> list[Step]:
        mid = {"in": block.in_channels, "out": block.out_channels}.get(self.mid_channels, self.mid_channels)
        mid *= self.mid_multiplier
        first = ConvStep(block.in_channels, mid, block.ones, groups=block.groups,
                         param="identity" if self.identity_init else "plain", loc="mid_channels")
        second = ConvStep(mid, block.out_channels, block.kernel, block.dilation, block.groups, loc="")
        return [first, *norm_steps(self.mid_norm, mid, "mid_norm"), second, *norm_steps(self.norm, block.out_channels)]

    def label(self) -> str:
        norm = "" if self.norm.type == "none" else f" + {self.norm.type}"
        mid = "" if self.mid_norm.type == "none" else f" + {self.mid_norm.type}"
        return f"1x1{mid} -> kxk{norm}"
