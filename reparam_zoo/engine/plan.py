"""Planning a block: from a spec and a geometry to checked branch plans, before anything is built.

:func:`block_geometry` is the one conv a spec folds into; :func:`plan_branches` plans every
branch (its steps, the gate, the online form), checks it against the geometry and the cost
limit, and says where it sits. :class:`~reparam_zoo.engine.block.RepBlock` builds modules from
the result; nothing here allocates a tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reparam_zoo.engine.geometry import per_axis
from reparam_zoo.engine.steps import BlockGeometry, ConvStep, GateStep, Placement, Step, analyze, finalize
from reparam_zoo.engine.steps.group import GroupStep
from reparam_zoo.errors import NotApplicable, SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.registry import BRANCHES, BranchType
from reparam_zoo.spec.schema import BlockSpec, BranchSpec


@dataclass(frozen=True)
class BranchInfo:
    """A planned, validated branch: where it came from and where it sits."""

    name: str  # e.g. "branches.2" or "branches.2#1" for the second copy of a count: 2 branch
    type: BranchType
    spec: BranchSpec
    placement: Placement


def _axes_arg(value, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    if isinstance(value, bool) or not (isinstance(value, int) or isinstance(value, (tuple, list)) and len(value) == n):
        raise SpecError(f"Expected {name} to be an int or {n} ints (one per spatial axis) but got {value!r}"[:200],
                        name)
    out = (value,) * n if isinstance(value, int) else tuple(value)
    for v in out:
        check_int(v, name, minimum)
    return out


def block_geometry(spec: BlockSpec, in_channels: int, out_channels: int, *, stride=1, groups: int = 1,
                   dims: int = 2, transposed: bool = False, output_padding=0) -> BlockGeometry:
    """The one conv a spec folds into, for these channels, stride and groups (checked).

    ``dims``: spatial axes, 1, 2 or 3 (``Conv{d}d``), or 0 for a Linear layer (the spec's kernel,
    dilation and padding do not apply; computed as one axis of extent 1). ``transposed``: the block
    folds into a ``ConvTranspose{d}d`` with this ``output_padding``."""
    try:
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels")):
            check_int(value, name)
            if value > LIMITS["channels"]:
                raise SpecError(f"{name}={value} is above the limit {LIMITS['channels']:,}", name)
        check_int(groups, "groups")
        if isinstance(dims, bool) or not isinstance(dims, int) or dims not in (0, 1, 2, 3):
            raise SpecError(f"Expected dims to be 0 (Linear), 1, 2 or 3 but got {dims!r}"[:200], "dims")
        if transposed not in (True, False):
            raise SpecError(f"Expected transposed to be True or False but got {transposed!r}"[:200], "transposed")
        if transposed and dims == 0:
            raise SpecError("a Linear block (dims=0) has no transposed form (transpose its weight instead)",
                            "transposed")
        n = max(dims, 1)
        stride = _axes_arg(stride, n, "stride")
        output_padding = _axes_arg(output_padding, n, "output_padding", minimum=0)
        if dims == 0 and (any(s != 1 for s in stride) or groups != 1):
            raise SpecError("a Linear block (dims=0) has no stride and no groups", "stride" if groups == 1 else "groups")
        if in_channels % groups or out_channels % groups:
            raise SpecError(f"in_channels={in_channels} and out_channels={out_channels} must both be "
                            f"divisible by groups={groups}", "groups")
        if dims == 0:
            kernel, dilation, padding = (1,), (1,), (0,)
        else:
            kernel, dilation = per_axis(spec.kernel, n, "kernel"), per_axis(spec.dilation, n, "dilation")
            if spec.padding == "same":
                if any(d * (k - 1) % 2 for k, d in zip(kernel, dilation)):
                    raise SpecError(f"padding 'same' needs an odd (dilated) kernel on each axis, got kernel {kernel} "
                                    f"with dilation {dilation}; give an explicit padding", "padding")
                padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
            else:
                padding = per_axis(spec.padding, n, "padding")
        if transposed:
            if spec.padding_mode != "zeros":
                raise SpecError(f"a transposed block pads with zeros only (torch's ConvTranspose), got padding_mode "
                                f"{spec.padding_mode!r}", "padding_mode")
            if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
                raise SpecError(f"output_padding {output_padding} must be smaller than the stride {stride} or the "
                                f"dilation {dilation} on each axis", "output_padding")
        elif any(output_padding):
            raise SpecError("output_padding applies to transposed blocks only", "output_padding")
    except (SpecError, ValueError) as exc:
        raise (exc if isinstance(exc, SpecError) else SpecError(str(exc))).located("", spec.source) from None
    return BlockGeometry(in_channels, out_channels, kernel, stride, dilation, groups, padding, dims, transposed,
                         output_padding)


@dataclass(frozen=True)
class PlannedBranch:
    """A branch of the spec, planned and checked for one geometry (each ``count`` copy is built from it)."""

    loc: str  # "branches.2"
    spec: BranchSpec
    type: BranchType
    plan: list[Step]
    placement: Placement


def plan_branches(spec: BlockSpec, geometry: BlockGeometry, mode: str = "offline") -> list[PlannedBranch]:
    """Every branch of ``spec`` that applies to ``geometry``, planned and checked (SpecError otherwise).

    Optional branches that cannot apply, and branches whose ``when`` excludes the geometry, are
    left out; ``mode="online"`` plans each step's online form. The block's weights are checked
    against ``LIMITS["block_weights"]`` before anything is allocated.
    """
    planned: list[PlannedBranch] = []
    source = spec.source
    for i, bspec in enumerate(spec.branches):  # plan and check every branch first
        loc = f"branches.{i}"
        btype = BRANCHES.get(bspec.type)
        try:
            parts = plan_entry(bspec, geometry, mode)
        except NotApplicable as exc:
            raise SpecError(
                exc.rule + "; mark the branch `optional: true` to drop it where it cannot apply",
                f"{loc}.{exc.location}".rstrip("."), source) from None
        except SpecError as exc:
            raise exc.located(loc, source) from None
        planned += [PlannedBranch(loc + suffix, bspec, btype, plan, placement) for suffix, plan, placement in parts]
    check_cost(planned, geometry, source)
    return planned


def plan_entry(bspec: BranchSpec, geometry: BlockGeometry, mode: str = "offline"
               ) -> list[tuple[str, list[Step], Placement]]:
    """One branch entry of a spec planned and checked for ``geometry``: ``(suffix, plan, placement)`` per
    part (:meth:`BranchSpec.parts`), ``[]`` where its ``when`` excludes the geometry or it is optional and
    cannot apply. Raises :class:`NotApplicable` (it cannot apply and is not optional) or
    :class:`SpecError`, located relative to the entry. Also what a ``group`` branch plans its members with."""
    depthwise = geometry.groups == geometry.out_channels
    if bspec.when != "always" and (bspec.when == "depthwise") != depthwise:
        return []
    parts = []
    try:
        for suffix, plan in bspec.parts(geometry):
            plan = finalize([step.for_block(geometry) for step in plan], geometry.stride)
            if bspec.gate != "none":
                plan.append(GateStep(geometry.out_channels, learnable=bspec.gate == "learnable"))
            if mode == "online":
                plan = [step.online() for step in plan]
            parts.append((suffix, plan, analyze(plan, geometry)))
    except NotApplicable:
        if bspec.optional:
            return []
        raise
    if bspec.train_as == "kernel" and any(step.needs_features for _, plan, _ in parts for step in plan):
        raise SpecError("train_as: kernel composes the branch's kernel every step, which a "
                        "BatchNorm (it needs the features) does not allow; use norm: scale or none", "train_as")
    return parts


def check_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"Expected {name} to be an int >= {minimum} but got {value!r}", name)
    return value


def check_cost(planned: list[PlannedBranch], g: BlockGeometry, source: str | None) -> None:
    """Refuse, before anything is allocated, a block whose weights (every conv of every branch copy,
    plus the folded kernel) would exceed ``LIMITS["block_weights"]`` values (the error gives the estimate),
    or whose ``group`` branches would build more chains than 64 branches of 64 copies."""
    total = g.out_channels * (g.in_channels // g.groups) * math.prod(g.window)  # the folded kernel
    for branch in planned:
        total += branch.spec.count * plan_weights(branch.plan)
    chains = sum(b.spec.count * s.chains for b in planned for s in b.plan if isinstance(s, GroupStep))
    limit = LIMITS["branches"] * LIMITS["count"]  # what a block of plain branches can ask for
    if chains > limit:
        raise SpecError(f"the block's groups build {chains:,} chains (copies of their members, nested groups "
                        f"included), above the limit {limit:,} (docs/spec.md, Limits)", "branches", source)
    if total > LIMITS["block_weights"]:
        raise SpecError(f"this block at {g.in_channels} -> {g.out_channels} channels would hold about {total:.2e} "
                        f"weights ({total * 4 / 2**30:,.1f} GiB in float32, twice that to fold in float64); the "
                        f"limit is {LIMITS['block_weights']:.2e} (docs/spec.md, Limits)", "branches", source)


def plan_weights(plan: list[Step]) -> int:
    """The conv weights a planned chain holds, those of the members of a ``group`` step (each copy) included."""
    total = 0
    for step in plan:
        if isinstance(step, ConvStep):
            total += step.out_channels * (step.in_channels // step.groups) * math.prod(step.kernel)
        elif isinstance(step, GroupStep):
            total += sum(member.count * plan_weights(list(member.plan)) for member in step.members)
    return total
