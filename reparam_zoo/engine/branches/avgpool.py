"""``avgpool``: depthwise average pooling; with ``pre_1x1`` DBB's 1x1 -> BN -> avg branch."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from reparam_zoo.engine.geometry import per_axis
from reparam_zoo.engine.steps import AvgStep, BlockGeometry, ConvStep, Step, norm_steps
from reparam_zoo.errors import NotApplicable
from reparam_zoo.spec.registry import register_branch
from reparam_zoo.spec.schema import BranchSpec, Dilation, KernelSize, Norm, NormSpec, linear_pooling


@register_branch("avgpool")
class AvgPoolBranch(BranchSpec):
    type: Literal["avgpool"] = "avgpool"
    kernel: Optional[KernelSize] = Field(None, description="pooling window (default: the block's kernel)")
    dilation: Optional[Dilation] = Field(None, description="pooling dilation (default: the block's)")
    pre_1x1: bool = Field(False, description="a 1x1 conv (block groups) + mid_norm before the pooling")
    mid_norm: Norm = Field(default_factory=NormSpec, description="norm between the 1x1 and the pooling")
    count_include_pad: bool = Field(True, description="must be true: only then is pooling linear at borders")

    _linear = field_validator("count_include_pad")(linear_pooling)

    def plan(self, block: BlockGeometry) -> list[Step]:
        if block.dims == 0:
            raise NotApplicable("average pooling needs a window and a Linear block (dims=0) has none")
        steps: list[Step] = []
        if self.pre_1x1:
            steps += [ConvStep(block.in_channels, block.out_channels, block.ones, groups=block.groups,
                               loc="pre_1x1"),
                      *norm_steps(self.mid_norm, block.out_channels, "mid_norm")]
        elif block.in_channels != block.out_channels:
            raise NotApplicable(
                f"depthwise average pooling needs in_channels == out_channels, got "
                f"{block.in_channels} -> {block.out_channels}; set pre_1x1: true to change channels")
        kernel = block.kernel if self.kernel is None else per_axis(self.kernel, block.axes, "kernel")
        dilation = block.dilation if self.dilation is None else per_axis(self.dilation, block.axes, "dilation")
        steps += [AvgStep(block.out_channels, kernel, dilation, loc="kernel"),
                  *norm_steps(self.norm, block.out_channels)]
        return steps

    def label(self) -> str:
        mid = "" if self.mid_norm.type == "none" else f" + {self.mid_norm.type}"
        pre = f"1x1{mid} -> " if self.pre_1x1 else ""
        norm = "" if self.norm.type == "none" else f" + {self.norm.type}"
        return f"{pre}avgpool{norm}"
