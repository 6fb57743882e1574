"""``GroupStep``: member chains in parallel, each times a constant factor, summed — the step a ``group``
branch plans (FastViT's RepMixer: ``layer_scale * (mixer(x) - norm(x))`` is a group of the mixer's and
the norm's branches, factors 1 and -1, followed by a per-channel scale); its module :class:`GroupSum` and
its converter.

The members are planned and checked like a block's branches (each one conv of the block's geometry,
centred in the block's window), so the group is one conv too: the sum of its members' kernels, each
placed in the group's window and times its factor (docs/math.md §15). The group runs first in its
branch, on the padded input cropped to the group's window, and crops that again for each member: a
member sees exactly the pixels it would see as a branch of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.geometry import Axes
from reparam_zoo.engine.steps.base import Step, StepKernel, register_step, register_step_converter
from reparam_zoo.engine.steps.chain import Chain, ComposedChain, chain_kernel


@dataclass(frozen=True)
class GroupMember:
    """One member of a group: its planned chain, where its window sits in the group's (``offset``,
    ``extent``, and its ``taps`` per axis relative to its first one), its constant ``factor``, its
    ``count`` of copies and whether each copy trains as its composed kernel (``composed``)."""

    plan: tuple[Step, ...]
    offset: Axes
    extent: Axes
    taps: tuple[tuple[int, ...], ...]
    factor: float = 1.0
    count: int = 1
    composed: bool = False

    @property
    def chains(self) -> int:
        """Chains this member builds: its copies, each with the chains of the groups inside it."""
        inner = sum(s.chains for s in self.plan if isinstance(s, GroupStep))
        return self.count * (1 + inner)


class GroupSum(nn.Module):
    """The training module of a :class:`GroupStep`: member chains on their crops of the group's window,
    each times its constant factor, summed. ``crops``: per chain, the ``(start, end)`` margins per axis
    cut from the group's input; ``window``: the group's extent per axis."""

    def __init__(self, chains: list[nn.Module], crops, factors, groups: int, stride: Axes, window: Axes):
        super().__init__()
        self.branches = nn.ModuleList(chains)
        self.crops = tuple(tuple(tuple(c) for c in crop) for crop in crops)
        self.factors = tuple(float(f) for f in factors)
        self.groups, self.stride, self.window = groups, tuple(stride), tuple(window)

    def forward(self, x: Tensor) -> Tensor:
        out = None
        for chain, crop, factor in zip(self.branches, self.crops, self.factors):
            y = chain(x[(slice(None), slice(None), *(slice(a, n - b) for (a, b), n in zip(crop, x.shape[2:])))])
            if factor != 1.0:
                y = y * factor
            out = y if out is None else out + y
        return out

    def extra_repr(self) -> str:
        return f"factors={self.factors}, window={self.window}"


@register_step("group")
@dataclass(frozen=True)
class GroupStep(Step):
    """Parallel member chains ``in_channels -> out_channels``, each times its factor, summed; ``groups``
    is the gcd of the members' groupings, ``stride`` the block's (every member strides to it)."""

    in_channels: int
    out_channels: int
    members: tuple[GroupMember, ...]
    groups: int
    stride: Axes
    loc: str = "branches"

    @property
    def out(self) -> int:
        return self.out_channels

    @property
    def spatial(self) -> bool:  # type: ignore[override]
        return any(s.spatial for m in self.members for s in m.plan)

    @property
    def needs_features(self) -> bool:  # type: ignore[override]
        return any(s.needs_features for m in self.members for s in m.plan)

    @property
    def window(self) -> Axes:
        """The group's extent per axis: its largest member's (every member is centred in it)."""
        return tuple(max(o + e for o, e in axis) for axis in zip(*[zip(m.offset, m.extent) for m in self.members]))

    @property
    def chains(self) -> int:
        return sum(m.chains for m in self.members)

    def taps(self) -> tuple[list[int], ...]:
        axes = zip(*[[[o + t for t in axis] for o, axis in zip(m.offset, m.taps)] for m in self.members])
        return tuple(sorted({t for member in axis for t in member}) for axis in axes)

    def online(self) -> Step:
        """Every member's online form (OREPA: its BatchNorms become per-channel scales)."""
        return replace(self, members=tuple(replace(m, plan=tuple(s.online() for s in m.plan)) for m in self.members))

    def build(self) -> nn.Module:
        chains, crops, factors = [], [], []
        window = self.window
        for m in self.members:
            crop = tuple((o, w - e - o) for o, e, w in zip(m.offset, m.extent, window))
            for _ in range(m.count):
                chain = Chain.from_plan(m.plan)
                chains.append(ComposedChain(*chain, in_channels=self.in_channels) if m.composed else chain)
                crops.append(crop)
                factors.append(m.factor)
        return GroupSum(chains, crops, factors, self.groups, self.stride, window)


@register_step_converter(GroupSum)
def group_kernel(m: GroupSum, channels: int, device, dtype) -> StepKernel:
    """The sum of the members' kernels, each times its factor, placed in the group's window (differentiable)."""
    parts = []
    for chain, crop, factor in zip(m.branches, m.crops, m.factors):
        bk = chain_kernel(list(chain), channels, device, dtype, dims=len(m.window))
        weight, bias = bk.weight, bk.bias
        if factor != 1.0:
            weight, bias = weight * factor, None if bias is None else bias * factor
        parts.append((weight, bias, bk.groups, tuple(a for a, _ in crop)))
    weight, bias = K.sum_placed(parts, m.window, channels, m.groups)
    return StepKernel(weight=weight, bias=bias, groups=m.groups, stride=m.stride)
