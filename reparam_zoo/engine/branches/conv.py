"""``conv``: a conv of any kernel, dilation and groups (RepVGG's 1x1, UniRepLKNet's dilated kernels)."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field

from reparam_zoo.engine.geometry import per_axis
from reparam_zoo.engine.steps import BlockGeometry, ConvStep, Step, norm_steps
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.registry import register_branch
from reparam_zoo.spec.schema import BranchSpec, Dilation, KernelSize

Groups = Union[int, Literal["block", "depthwise"]]


def resolve_groups(groups: Any, in_channels: int, block: BlockGeometry, loc: str = "groups") -> int:
    """``"block"`` -> the block's groups, ``"depthwise"`` -> ``in_channels``, else the int."""
    if groups == "block":
        return block.groups
    if groups == "depthwise":
        return in_channels
    if isinstance(groups, int) and groups >= 1:
        return groups
    raise SpecError(f"groups must be a positive int, 'block' or 'depthwise', got {groups!r}", loc)


@register_branch("conv")
class ConvBranch(BranchSpec):
    type: Literal["conv"] = "conv"
    kernel: KernelSize = Field(description="k (every axis) or one entry per axis, e.g. [kh, kw]")
    dilation: Dilation = Field(1, description="the branch's own dilation")
    groups: Groups = Field("block", description="'block' (the block's groups), 'depthwise' or an int")
    bias: bool = Field(False, description="conv bias")

    def plan(self, block: BlockGeometry) -> list[Step]:
        groups = resolve_groups(self.groups, block.in_channels, block)
        n = block.axes
        conv = ConvStep(block.in_channels, block.out_channels, per_axis(self.kernel, n, "kernel"),
                        per_axis(self.dilation, n, "dilation"), groups, bias=self.bias, loc="kernel")
        return [conv, *norm_steps(self.norm, block.out_channels)]

    def label(self) -> str:
        k = f"{self.kernel}x{self.kernel}" if isinstance(self.kernel, int) else "x".join(map(str, self.kernel))
        d = "" if self.dilation in (1, (1, 1)) else f" d{self.dilation}"
        norm = "" if self.norm.type == "none" else f" + {self.norm.type}"
        return f"conv {k}{d}{norm}"
