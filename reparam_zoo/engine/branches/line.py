"""``line``: a conv that spans the block's kernel along one axis and is 1 wide on the others
(ACNet's asymmetric kernels in any number of dimensions); ``axis: all`` is one line per axis."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, NonNegativeInt

from reparam_zoo.engine.steps import BlockGeometry, ConvStep, Step, norm_steps
from reparam_zoo.errors import NotApplicable, SpecError
from reparam_zoo.spec.registry import register_branch
from reparam_zoo.spec.schema import BranchSpec


def line_step(block: BlockGeometry, axis: int, bias: bool, loc: str = "axis") -> ConvStep:
    """The block's kernel and dilation along ``axis``, 1 on every other axis (block groups)."""
    kernel = tuple(k if a == axis else 1 for a, k in enumerate(block.kernel))
    dilation = tuple(d if a == axis else 1 for a, d in enumerate(block.dilation))
    return ConvStep(block.in_channels, block.out_channels, kernel, dilation, block.groups, bias=bias, loc=loc)


@register_branch("line")
class LineBranch(BranchSpec):
    type: Literal["line"] = "line"
    axis: Union[NonNegativeInt, Literal["all"]] = Field(
        description="the spatial axis the line spans (0 = the first after the channels: time in 1-D, height in "
                    "2-D, depth in 3-D), or 'all': one line per axis (each with its own norm)")
    bias: bool = Field(False, description="conv bias")

    def _axes(self, block: BlockGeometry) -> list[int]:
        if block.dims == 0:
            raise NotApplicable("a line kernel needs a window and a Linear block (dims=0) has none")
        if self.axis == "all":
            return list(range(block.axes))
        if self.axis >= block.axes:
            raise SpecError(f"axis {self.axis} does not exist in a block with {block.axes} spatial axes "
                            f"(0 ... {block.axes - 1})", "axis")
        return [self.axis]

    def plan(self, block: BlockGeometry) -> list[Step]:
        axes = self._axes(block)
        if len(axes) != 1:
            raise SpecError("axis: all stands for one branch per axis (see parts)", "axis")
        return [line_step(block, axes[0], self.bias), *norm_steps(self.norm, block.out_channels)]

    def parts(self, block: BlockGeometry) -> list[tuple[str, list[Step]]]:
        """One line per axis for ``axis: all`` (suffix ``:axis<a>``), else the one line."""
        return [(f":axis{a}" if self.axis == "all" else "",
                 [line_step(block, a, self.bias), *norm_steps(self.norm, block.out_channels)])
                for a in self._axes(block)]

    def label(self) -> str:
        norm = "" if self.norm.type == "none" else f" + {self.norm.type}"
        return f"line ({'one per axis' if self.axis == 'all' else f'axis {self.axis}'}){norm}"
