"""The geometry of a block and of each branch inside it, checked before anything is built.

:class:`BlockGeometry` is the one conv a block folds into. :func:`finalize` gives the block's
stride to a branch's last spatial step; :func:`analyze` checks that a branch's planned steps are
one conv of the block's geometry (channels connect, the window fits and can be centred, taps lie
on the dilation grid, the grouping is expressible) and says where the branch sits
(:class:`Placement`). Both read only what every step declares (``in_channels``, ``out``,
``groups``, ``spatial``, ``stride``, ``taps()``, ``validate()``, ``loc``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from reparam_zoo.errors import NotApplicable, SpecError
from reparam_zoo.spec.limits import LIMITS

if TYPE_CHECKING:
    from reparam_zoo.engine.steps import Step

Pair = tuple[int, int]


def grid_taps(kernel: Pair, dilation: Pair) -> tuple[list[int], list[int]]:
    """Tap positions per axis of a kernel with a dilation (relative to its first tap)."""
    return ([dilation[0] * j for j in range(kernel[0])], [dilation[1] * j for j in range(kernel[1])])


@dataclass(frozen=True)
class BlockGeometry:
    """What a block is, for the branches inside it: the one conv it folds into."""

    in_channels: int
    out_channels: int
    kernel: Pair
    stride: Pair = (1, 1)
    dilation: Pair = (1, 1)
    groups: int = 1
    padding: Pair = (0, 0)

    @property
    def window(self) -> Pair:
        """Extent of the block's (dilated) kernel on the input."""
        return (self.dilation[0] * (self.kernel[0] - 1) + 1, self.dilation[1] * (self.kernel[1] - 1) + 1)


@dataclass(frozen=True)
class Placement:
    """Where a branch's composite kernel sits in the block's window."""

    offset: Pair
    extent: Pair
    groups: int  # groups of the composite kernel (gcd of the steps' groups)


def finalize(plan: Sequence[Step], stride: Pair) -> list[Step]:
    """Give the block stride to the last spatial step; every other step has stride 1.

    A chain with no spatial step (identity, pure norm) cannot stride.
    """
    plan = list(plan)
    if stride == (1, 1):
        return plan
    for i in range(len(plan) - 1, -1, -1):
        if plan[i].spatial:
            plan[i] = replace(plan[i], stride=stride)
            return plan
    raise NotApplicable(f"this branch has no conv or pooling step, so it cannot apply with stride {stride}")


def _worst_loc(plan: Sequence[Step]) -> str:
    spatial = [s for s in plan if s.spatial]
    if not spatial:
        return plan[0].loc if plan else ""
    big = max(spatial, key=lambda s: max(t for axis in s.taps() for t in axis))
    return big.loc


def analyze(plan: Sequence[Step], block: BlockGeometry) -> Placement:
    """Check that ``plan`` folds into the block's conv and say where it sits.

    Raises :class:`SpecError` (locations relative to the branch) when the chain's
    channels do not connect, when its window does not fit the block's, cannot be
    centred, has taps off the block's dilation grid, or when its channel grouping is
    not expressible with the block's ``groups``.
    """
    if not plan:
        raise SpecError("a branch needs at least one step")
    channels, last_change = block.in_channels, plan[0].loc
    limit = LIMITS["channels"]  # checked before any weight is allocated
    for step in plan:
        if max(step.in_channels, step.out) > limit:
            raise SpecError(f"plans {max(step.in_channels, step.out):,} channels, above the limit {limit:,}", step.loc)
        if step.in_channels != channels:
            raise SpecError(f"expects {step.in_channels} input channels but the previous step gives {channels}",
                            step.loc)
        step.validate()
        if step.out != channels:
            channels, last_change = step.out, step.loc
    if channels != block.out_channels:
        raise SpecError(f"ends with {channels} channels but the block has out_channels={block.out_channels}",
                        last_change)
    taps_h, taps_w, sh, sw, groups = {0}, {0}, 1, 1, 0
    for step in plan:
        th, tw = step.taps()
        taps_h = {a + sh * t for a in taps_h for t in th}
        taps_w = {a + sw * t for a in taps_w for t in tw}
        sh, sw = sh * step.stride[0], sw * step.stride[1]
        groups = math.gcd(groups, step.groups)
    loc = _worst_loc(plan)
    extent = (max(taps_h) + 1, max(taps_w) + 1)
    window = block.window
    if (sh, sw) != block.stride:  # finalize() guarantees this; a custom plan may not
        raise SpecError(f"strides to {(sh, sw)} but the block's stride is {block.stride}", loc)
    if extent[0] > window[0] or extent[1] > window[1]:
        raise SpecError(
            f"the branch covers a {extent[0]}x{extent[1]} window, which does not fit in the block's "
            f"{window[0]}x{window[1]} window (kernel {block.kernel[0]}x{block.kernel[1]}, "
            f"dilation {block.dilation})", loc)
    if (window[0] - extent[0]) % 2 or (window[1] - extent[1]) % 2:
        raise SpecError(
            f"the branch's {extent[0]}x{extent[1]} window cannot be centred in the block's "
            f"{window[0]}x{window[1]} window (the size difference must be even)", loc)
    offset = ((window[0] - extent[0]) // 2, (window[1] - extent[1]) // 2)
    dh, dw = block.dilation
    if any((offset[0] + t) % dh for t in taps_h) or any((offset[1] + t) % dw for t in taps_w):
        raise SpecError(
            f"the branch's taps do not lie on the block's dilation grid (dilation {block.dilation}); "
            "give the branch a dilation that is a multiple of the block's", loc)
    if groups % block.groups:
        culprit = next((s.loc for s in plan if s.groups % block.groups), loc)
        raise SpecError(
            f"the branch connects channels in {groups} group(s), which a conv with the block's "
            f"groups={block.groups} cannot express (its groups must be a multiple of {block.groups})", culprit)
    return Placement(offset=offset, extent=extent, groups=groups)
