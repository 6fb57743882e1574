"""``seq``: any chain of linear steps (conv / bn / scale / avgpool), e.g. ExpandNet's 1x1 -> kxk -> 1x1.

Steps run unpadded on the block's padded input (the block pads once), so every
chain folds exactly, borders included. The block's stride goes to the last conv or
avgpool step.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from reparam_zoo.errors import SpecError
from reparam_zoo.engine.kernels import as_pair
from reparam_zoo.spec.registry import SEQ_STEPS, register_branch
from reparam_zoo.spec.schema import BranchSpec, Dilation, KernelSize, NormSpec, linear_pooling
from reparam_zoo.engine.steps import CONV_PARAMS, AvgStep, BlockGeometry, ConvStep, NormStep, Step, norm_steps
from reparam_zoo.engine.branches.conv import Groups, resolve_groups


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvStepSpec(_Step):
    type: Literal["conv"] = "conv"
    kernel: KernelSize = Field(description="k or [kh, kw]")
    dilation: Dilation = Field(1, description="the step's dilation")
    groups: Groups = Field("block", description="'block', 'depthwise' (groups = its input channels) or an int")
    out_channels: Union[PositiveInt, Literal["in", "out"]] = Field(
        "out", description="an int, 'in' or 'out' (the block's), times `multiplier`")
    multiplier: PositiveInt = Field(1, description="channel multiplier applied to out_channels")
    bias: bool = Field(False, description="conv bias")
    param: str = Field("plain", description="weight parameterisation: plain, identity (W + I), basis (DO-Conv's "
                                            "W + E), normalized (W / ||W||)")

    @field_validator("param")
    @classmethod
    def _known_param(cls, v: str) -> str:
        if v not in CONV_PARAMS:
            raise ValueError(CONV_PARAMS.unknown_message(v))
        return v


class BNStepSpec(_Step):
    type: Literal["bn"] = "bn"
    eps: float = Field(1e-5, gt=0)
    momentum: Optional[float] = Field(0.1, ge=0, le=1)
    affine: bool = True
    track_running_stats: bool = True

    @model_validator(mode="after")
    def _foldable(self) -> "BNStepSpec":
        NormSpec(type="bn", track_running_stats=self.track_running_stats)  # same rule, same message
        return self


class ScaleStepSpec(_Step):
    type: Literal["scale"] = "scale"
    init: float = Field(1.0, description="initial scale")


class AvgPoolStepSpec(_Step):
    type: Literal["avgpool"] = "avgpool"
    kernel: KernelSize = Field(description="pooling window")
    dilation: Dilation = Field(1)
    count_include_pad: bool = Field(True, description="must be true")

    _linear = field_validator("count_include_pad")(linear_pooling)


for _model in (ConvStepSpec, BNStepSpec, ScaleStepSpec, AvgPoolStepSpec):
    SEQ_STEPS.register(_model.model_fields["type"].default, _model)
StepSpec = Annotated[Union[ConvStepSpec, BNStepSpec, ScaleStepSpec, AvgPoolStepSpec], Field(discriminator="type")]


@register_branch("seq")
class SeqBranch(BranchSpec):
    type: Literal["seq"] = "seq"
    steps: list[StepSpec] = Field(min_length=1, description="the chain, first step first")

    def plan(self, block: BlockGeometry) -> list[Step]:
        plan: list[Step] = []
        channels = block.in_channels
        for i, s in enumerate(self.steps):
            loc = f"steps.{i}"
            if isinstance(s, ConvStepSpec):
                base = {"in": block.in_channels, "out": block.out_channels}.get(s.out_channels, s.out_channels)
                out = base * s.multiplier
                groups = resolve_groups(s.groups, channels, block, f"{loc}.groups")
                plan.append(ConvStep(channels, out, as_pair(s.kernel), as_pair(s.dilation), groups,
                                     bias=s.bias, param=s.param, loc=loc))
                channels = out
            elif isinstance(s, BNStepSpec):
                plan.append(NormStep(channels, "bn", s.eps, s.momentum, s.affine, loc=loc))
            elif isinstance(s, ScaleStepSpec):
                plan.append(NormStep(channels, "scale", init=s.init, loc=loc))
            elif isinstance(s, AvgPoolStepSpec):
                plan.append(AvgStep(channels, as_pair(s.kernel), as_pair(s.dilation), loc=loc))
            else:  # pragma: no cover - the union is closed
                raise SpecError(f"unknown step {s!r}", loc)
        return [*plan, *norm_steps(self.norm, channels)]

    def label(self) -> str:
        parts = []
        for s in self.steps:
            if isinstance(s, (ConvStepSpec, AvgPoolStepSpec)):
                kh, kw = as_pair(s.kernel)
                parts.append(f"{s.type} {kh}x{kw}")
            else:
                parts.append(s.type)
        norm = "" if self.norm.type == "none" else f" + {self.norm.type}"
        return "seq(" + " -> ".join(parts) + ")" + norm
