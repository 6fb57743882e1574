"""Planning a block: from a spec and a geometry to checked branch plans, before anything is built.

:func:`block_geometry` is the one conv a spec folds into; :func:`plan_branches` plans every
branch (its steps, the gate, the online form), checks it against the geometry and the cost
limit, and says where it sits. :class:`~reparam_zoo.engine.block.RepBlock` builds modules from
the result; nothing here allocates a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.steps import BlockGeometry, ConvStep, GateStep, Placement, Step, analyze, finalize
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


def block_geometry(spec: BlockSpec, in_channels: int, out_channels: int, *, stride=1, groups: int = 1
                   ) -> BlockGeometry:
    """The one conv a spec folds into, for these channels, stride and groups (checked)."""
    try:
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels")):
            check_int(value, name)
            if value > LIMITS["channels"]:
                raise SpecError(f"{name}={value} is above the limit {LIMITS['channels']:,}", name)
        check_int(groups, "groups")
        if not (isinstance(stride, int) or isinstance(stride, (tuple, list)) and len(stride) == 2):
            raise SpecError(f"Expected stride to be an int or a pair of ints but got {stride!r}"[:200], "stride")
        stride = K.as_pair(stride, "stride")
        for s in stride:
            check_int(s, "stride")
        if in_channels % groups or out_channels % groups:
            raise SpecError(f"in_channels={in_channels} and out_channels={out_channels} must both be "
                            f"divisible by groups={groups}", "groups")
    except (SpecError, ValueError) as exc:
        raise (exc if isinstance(exc, SpecError) else SpecError(str(exc))).located("", spec.source) from None
    kernel, dilation = K.as_pair(spec.kernel), K.as_pair(spec.dilation)
    if spec.padding == "same":
        padding = (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
    else:
        padding = K.as_pair(spec.padding)
    return BlockGeometry(in_channels, out_channels, kernel, stride, dilation, groups, padding)


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
    out_channels, stride, source = geometry.out_channels, geometry.stride, spec.source
    depthwise = geometry.groups == out_channels
    for i, bspec in enumerate(spec.branches):  # plan and check every branch first
        loc = f"branches.{i}"
        btype = BRANCHES.get(bspec.type)
        if bspec.when != "always" and (bspec.when == "depthwise") != depthwise:
            continue
        try:
            plan = finalize(bspec.plan(geometry), stride)
            if bspec.gate != "none":
                plan.append(GateStep(out_channels, learnable=bspec.gate == "learnable"))
            if mode == "online":
                plan = [step.online() for step in plan]
            placement = analyze(plan, geometry)
        except NotApplicable as exc:
            if bspec.optional:
                continue
            raise SpecError(
                exc.rule + "; mark the branch `optional: true` to drop it where it cannot apply",
                f"{loc}.{exc.location}".rstrip("."), source) from None
        except SpecError as exc:
            raise exc.located(loc, source) from None
        if bspec.train_as == "kernel":
            if any(step.needs_features for step in plan):
                raise SpecError("train_as: kernel composes the branch's kernel every step, which a "
                                "BatchNorm (it needs the features) does not allow; use norm: scale or none",
                                f"{loc}.train_as", source)
        planned.append(PlannedBranch(loc, bspec, btype, plan, placement))
    check_cost(planned, geometry, source)
    return planned


def check_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"Expected {name} to be an int >= {minimum} but got {value!r}", name)
    return value


def check_cost(planned: list[PlannedBranch], g: BlockGeometry, source: str | None) -> None:
    """Refuse, before anything is allocated, a block whose weights (every conv of every branch copy,
    plus the folded kernel) would exceed ``LIMITS["block_weights"]`` values; the error gives the estimate."""
    total = g.out_channels * (g.in_channels // g.groups) * g.window[0] * g.window[1]  # the folded kernel
    for branch in planned:
        bspec, plan = branch.spec, branch.plan
        for step in plan:
            if isinstance(step, ConvStep):
                kh, kw = step.kernel
                total += bspec.count * step.out_channels * (step.in_channels // step.groups) * kh * kw
    if total > LIMITS["block_weights"]:
        raise SpecError(f"this block at {g.in_channels} -> {g.out_channels} channels would hold about {total:.2e} "
                        f"weights ({total * 4 / 2**30:,.1f} GiB in float32, twice that to fold in float64); the "
                        f"limit is {LIMITS['block_weights']:.2e} (docs/spec.md, Limits)", "branches", source)
