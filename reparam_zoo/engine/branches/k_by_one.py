"""``kx1``: a vertical kh x 1 conv (ACNet's vertical kernel); 2-D blocks only (``line`` in any d)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reparam_zoo.engine.steps import BlockGeometry, ConvStep, Step, norm_steps
from reparam_zoo.errors import NotApplicable
from reparam_zoo.spec.registry import register_branch
from reparam_zoo.spec.schema import BranchSpec


@register_branch("kx1")
class KByOneBranch(BranchSpec):
    type: Literal["kx1"] = "kx1"
    bias: bool = Field(False, description="conv bias")

    def plan(self, block: BlockGeometry) -> list[Step]:
        if block.dims != 2:
            raise NotApplicable(f"kx1 is a 2-D branch and this block has dims={block.dims}; use `type: line, "
                                "axis: 0` (or `axis: all`) in any number of dimensions")
        conv = ConvStep(block.in_channels, block.out_channels, (block.kernel[0], 1),
                        (block.dilation[0], 1), block.groups, bias=self.bias)
        return [conv, *norm_steps(self.norm, block.out_channels)]
