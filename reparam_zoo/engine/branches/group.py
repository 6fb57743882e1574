"""``group``: member branches summed, each times a constant factor, then the group's norm — a signed,
per-channel-scaled sum of linear branches such as FastViT's RepMixer, ``x + layer_scale * (mixer(x) - norm(x))``:

```yaml
- type: identity                # x
  norm: none
- type: group                   # layer_scale * (mixer(x) - norm(x))
  norm: {type: scale, init: 1.0e-5}
  factors: [1, 1, 1, -1]
  branches: [{type: kxk}, {type: conv, kernel: 1}, {type: identity}, {type: identity}]
```

Members are any registered branch types (groups included), planned and checked like a block's branches
(``optional``, ``count``, ``when``, ``gate``, ``train_as`` mean what they mean there); the group folds by
the same converters (:mod:`reparam_zoo.engine.steps.group`). No fold code here.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, PlainValidator, TypeAdapter, field_validator

from reparam_zoo.engine.geometry import chain_taps
from reparam_zoo.engine.plan import plan_entry
from reparam_zoo.engine.steps import BlockGeometry, Step, norm_steps
from reparam_zoo.engine.steps.group import GroupMember, GroupStep
from reparam_zoo.errors import NotApplicable, SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.registry import BRANCHES, block_model, register_branch
from reparam_zoo.spec.schema import BranchSpec, Norm, NormSpec, short

_ADAPTERS: dict[int, TypeAdapter] = {}


def _members(value: Any) -> list[BranchSpec]:
    """A list of branch entries validated as a block's ``branches`` (every registered type, groups
    included); pydantic locates the errors inside it (``branches.3.branches.1.kernel``)."""
    adapter = _ADAPTERS.get(BRANCHES.version)
    if adapter is None:
        field = block_model().model_fields["branches"]
        adapter = TypeAdapter(Annotated[(field.annotation, *field.metadata)])
        _ADAPTERS.clear()
        _ADAPTERS[BRANCHES.version] = adapter
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"Expected a list of branches but got {short(value)}")
    return adapter.validate_python(list(value))


Members = Annotated[list[BranchSpec], PlainValidator(_members, json_schema_input_type=list[dict[str, Any]])]
Factor = Annotated[float, Field(allow_inf_nan=False, ge=-LIMITS["scale_init"], le=LIMITS["scale_init"])]


@register_branch("group")
class GroupBranch(BranchSpec):
    type: Literal["group"] = "group"
    norm: Norm = Field(default_factory=lambda: NormSpec(type="none"),
                       description="norm on the group's sum: scale (a learnable per-channel factor, a layer scale), "
                                   "bn or none (the default)")
    branches: Members = Field(description="the member branches (any registered types), summed")
    factors: Optional[list[Factor]] = Field(None, description="a constant factor per member (default 1 each; -1 "
                                                              "subtracts the member)")

    @field_validator("factors")
    @classmethod
    def _one_per_member(cls, v, info):
        members = info.data.get("branches")
        if v is not None and members is not None and len(v) != len(members):
            raise ValueError(f"Expected one factor per entry of branches ({len(members)}) but got {len(v)}")
        return v

    def plan(self, block: BlockGeometry) -> list[Step]:
        if block.transposed:
            raise NotApplicable("a group cannot fold into a transposed block (each member would need its own "
                                "output crop); give its members as branches of their own")
        factors = self.factors or [1.0] * len(self.branches)
        found = []
        for j, (member, factor) in enumerate(zip(self.branches, factors)):
            try:
                for _, plan, placement in plan_entry(member, block):
                    taps, _ = chain_taps(plan, block.axes)
                    found.append((member, factor, plan, placement, tuple(tuple(sorted(t)) for t in taps)))
            except SpecError as exc:
                raise exc.located(f"branches.{j}") from None
        if not found:
            raise NotApplicable(f"no member of the group applies to in_channels={block.in_channels}, "
                                f"out_channels={block.out_channels}, stride={block.stride}, groups={block.groups} "
                                "(every member was dropped: optional or `when`)", "branches")
        start = [min(axis) for axis in zip(*[p.offset for _, _, _, p, _ in found])]  # the group's window
        members = tuple(GroupMember(tuple(plan), tuple(o - s for o, s in zip(p.offset, start)), p.extent, taps,
                                    float(factor), member.count, member.train_as == "kernel")
                        for member, factor, plan, p, taps in found)
        groups = math.gcd(*(p.groups for _, _, _, p, _ in found))
        step = GroupStep(block.in_channels, block.out_channels, members, groups, block.stride)
        return [step, *norm_steps(self.norm, block.out_channels)]

    def label(self) -> str:
        factors = self.factors or [1.0] * len(self.branches)
        inner = ", ".join(_signed(f, b.label()) for f, b in zip(factors, self.branches))
        norm = "" if self.norm.type == "none" else f" x {self.norm.type}"
        return f"group({inner}){norm}"


def _signed(factor: float, label: str) -> str:
    if factor == 1:
        return label
    return f"-{label}" if factor == -1 else f"{factor:g} * {label}"

