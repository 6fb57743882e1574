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
Axes = tuple[int, ...]  # one entry per spatial axis


def grid_taps(kernel: Axes, dilation: Axes) -> tuple[list[int], ...]:
    """Tap positions per axis of a kernel with a dilation (relative to its first tap)."""
    return tuple([d * j for j in range(k)] for k, d in zip(kernel, dilation))


def per_axis(value, n: int, key: str) -> Axes:
    """A spec's ``k`` (every axis) or list (one entry per axis) as ``n`` ints; a list of another
    length is a :class:`SpecError` naming ``key``."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise SpecError(f"{list(value)} has {len(value)} entries but the block has {n} spatial axes "
                        f"(give one entry per axis, or one int for every axis)", key)
    return value


@dataclass(frozen=True)
class BlockGeometry:
    """What a block is, for the branches inside it: the one conv it folds into.

    ``kernel``, ``stride``, ``dilation``, ``padding`` (and ``output_padding``) have one entry per
    spatial axis; omitted ones default to 1 (0 for paddings) on every axis. ``dims`` is what the
    user asked for (1, 2, 3; 0 is a Linear layer, computed as one axis of extent 1);
    ``transposed``: the block folds into a ``ConvTranspose``.
    """

    in_channels: int
    out_channels: int
    kernel: Axes
    stride: Axes | None = None
    dilation: Axes | None = None
    groups: int = 1
    padding: Axes | None = None
    dims: int | None = None
    transposed: bool = False
    output_padding: Axes | None = None

    def __post_init__(self):
        n = len(self.kernel)
        for name, default in (("stride", 1), ("dilation", 1), ("padding", 0), ("output_padding", 0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, (default,) * n)
        if self.dims is None:
            object.__setattr__(self, "dims", n)

    @property
    def axes(self) -> int:
        """Spatial axes the engine computes with (``max(dims, 1)``)."""
        return len(self.kernel)

    @property
    def ones(self) -> Axes:
        return (1,) * len(self.kernel)

    @property
    def window(self) -> Axes:
        """Extent of the block's (dilated) kernel on the input."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))


@dataclass(frozen=True)
class Placement:
    """Where a branch's composite kernel sits in the block's window."""

    offset: Axes
    extent: Axes
    groups: int  # groups of the composite kernel (gcd of the steps' groups)


def finalize(plan: Sequence[Step], stride: Axes) -> list[Step]:
    """Give the block stride to the last spatial step; every other step has stride 1.

    A chain with no spatial step (identity, pure norm) cannot stride.
    """
    plan = list(plan)
    if all(s == 1 for s in stride):
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


def _x(v) -> str:
    return "x".join(str(e) for e in v)


def chain_taps(plan: Sequence[Step], n: int) -> tuple[list[set[int]], list[int]]:
    """Where a chain's composite kernel has taps, per axis on its input (relative to its first tap), and
    its stride per axis; a step of another number of spatial axes is a :class:`SpecError`."""
    taps, strides = [{0} for _ in range(n)], [1] * n
    for step in plan:
        if not step.spatial:
            continue
        step_taps = step.taps()
        if len(step_taps) != n:
            raise SpecError(f"has {len(step_taps)} spatial axes but the block has {n}", step.loc)
        taps = [{a + s * t for a in axis for t in st} for axis, st, s in zip(taps, step_taps, strides)]
        strides = [s * t for s, t in zip(strides, step.stride)]
    return taps, strides


def analyze(plan: Sequence[Step], block: BlockGeometry) -> Placement:  # noqa: C901
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
    taps, strides = chain_taps(plan, block.axes)
    groups = 0
    for step in plan:
        groups = math.gcd(groups, step.groups)
    loc = _worst_loc(plan)
    extent = tuple(max(axis) + 1 for axis in taps)
    window = block.window
    if tuple(strides) != tuple(block.stride):  # finalize() guarantees this; a custom plan may not
        raise SpecError(f"strides to {tuple(strides)} but the block's stride is {block.stride}", loc)
    if block.dims == 0 and extent != window:
        raise SpecError(f"covers a {_x(extent)} window, but a Linear block (dims=0) has no window: its "
                        "convs have kernel 1 and it has no pooling or line branches", loc)
    if any(e > w for e, w in zip(extent, window)):
        raise SpecError(
            f"the branch covers a {_x(extent)} window, which does not fit in the block's "
            f"{_x(window)} window (kernel {_x(block.kernel)}, dilation {block.dilation})", loc)
    if any((w - e) % 2 for e, w in zip(extent, window)):
        raise SpecError(
            f"the branch's {_x(extent)} window cannot be centred in the block's "
            f"{_x(window)} window (the size difference must be even)", loc)
    offset = tuple((w - e) // 2 for e, w in zip(extent, window))
    if any((o + t) % d for o, axis, d in zip(offset, taps, block.dilation) for t in axis):
        raise SpecError(
            f"the branch's taps do not lie on the block's dilation grid (dilation {block.dilation}); "
            "give the branch a dilation that is a multiple of the block's", loc)
    if groups % block.groups:
        culprit = next((s.loc for s in plan if s.groups % block.groups), loc)
        raise SpecError(
            f"the branch connects channels in {groups} group(s), which a conv with the block's "
            f"groups={block.groups} cannot express (its groups must be a multiple of {block.groups})", culprit)
    if block.transposed:
        _check_transposed(plan)
    return Placement(offset=offset, extent=extent, groups=groups)


def _check_transposed(plan: Sequence[Step]) -> None:
    """A branch of a transposed block: at most one conv or pooling step, and nothing before it that adds
    a constant (a BatchNorm's shift, a conv bias): a transposed conv spreads a constant unevenly near the
    borders and between the strided taps, so it would not fold into one ConvTranspose's bias."""
    spatial = [i for i, s in enumerate(plan) if s.spatial]
    if len(spatial) > 1:
        raise SpecError("a branch of a transposed block may hold one conv or pooling step (a chain of "
                        "transposed steps does not compose into one with a per-channel bias)",
                        plan[spatial[1]].loc or plan[spatial[0]].loc)
    for step in plan[: spatial[0]] if spatial else ():
        if not step.shift_free:
            raise SpecError(f"a {type(step).__name__} before the conv of a transposed block's branch may add a "
                            "constant, which the transposed conv spreads unevenly; it cannot fold into one "
                            "ConvTranspose (only identity, scale and gate steps may come first)", step.loc)
