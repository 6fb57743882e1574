"""``seq``: any chain of linear steps (conv / bn / scale / avgpool), e.g. ExpandNet's 1x1 -> kxk -> 1x1.

Steps run unpadded on the block's padded input (the block pads once), so every
chain folds exactly, borders included. The block's stride goes to the last conv or
avgpool step.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator

from reparam_zoo.engine.branches.conv import Groups, resolve_groups
from reparam_zoo.engine.geometry import per_axis
from reparam_zoo.engine.steps import CONV_PARAMS, AvgStep, BlockGeometry, ConvStep, NormStep, Step, norm_steps
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.registry import SEQ_STEPS, register_branch
from reparam_zoo.spec.schema import SPEC_CONFIG, BranchSpec, Dilation, KernelSize, NormSpec, linear_pooling


class SeqStepSpec(BaseModel):
    """Base of a ``seq`` step's model: ``plan_step`` turns it into an engine step for the channels
    it receives (the block's geometry at hand); ``label`` describes it."""

    model_config = SPEC_CONFIG  # strict booleans and integers, finite numbers, as every spec model

    def plan_step(self, channels: int, block: BlockGeometry, loc: str) -> Step:
        raise NotImplementedError

    def label(self) -> str:
        return self.type


class ConvStepSpec(SeqStepSpec):
    type: Literal["conv"] = "conv"
    kernel: KernelSize = Field(description="k (every axis) or one entry per axis, e.g. [kh, kw]")
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

    def plan_step(self, channels: int, block: BlockGeometry, loc: str) -> Step:
        base = {"in": block.in_channels, "out": block.out_channels}.get(self.out_channels, self.out_channels)
        groups = resolve_groups(self.groups, channels, block, f"{loc}.groups")
        n = block.axes
        return ConvStep(channels, base * self.multiplier, per_axis(self.kernel, n, f"{loc}.kernel"),
                        per_axis(self.dilation, n, f"{loc}.dilation"), groups, bias=self.bias, param=self.param,
                        loc=loc)

    def label(self) -> str:
        return f"conv {_label(self.kernel)}"


class BNStepSpec(SeqStepSpec):
    type: Literal["bn"] = "bn"
    eps: float = Field(1e-5, gt=0, allow_inf_nan=False)
    momentum: Optional[float] = Field(0.1, ge=0, le=1)
    affine: bool = True
    track_running_stats: bool = True
    frozen: bool = Field(False, description="normalise with the running statistics in training too")

    @model_validator(mode="after")
    def _foldable(self) -> "BNStepSpec":
        NormSpec(type="bn", track_running_stats=self.track_running_stats)  # same rule, same message
        return self

    def plan_step(self, channels: int, block: BlockGeometry, loc: str) -> Step:
        return NormStep(channels, "bn", self.eps, self.momentum, self.affine, loc=loc, frozen=self.frozen)


class ScaleStepSpec(SeqStepSpec):
    type: Literal["scale"] = "scale"
    init: float = Field(1.0, allow_inf_nan=False, ge=-LIMITS["scale_init"], le=LIMITS["scale_init"],
                        description="initial scale")

    def plan_step(self, channels: int, block: BlockGeometry, loc: str) -> Step:
        return NormStep(channels, "scale", init=self.init, loc=loc)


class AvgPoolStepSpec(SeqStepSpec):
    type: Literal["avgpool"] = "avgpool"
    kernel: KernelSize = Field(description="pooling window")
    dilation: Dilation = Field(1)
    count_include_pad: bool = Field(True, description="must be true")

    _linear = field_validator("count_include_pad")(linear_pooling)

    def plan_step(self, channels: int, block: BlockGeometry, loc: str) -> Step:
        if block.dims == 0:
            raise SpecError("average pooling needs a window and a Linear block (dims=0) has none", loc)
        n = block.axes
        return AvgStep(channels, per_axis(self.kernel, n, f"{loc}.kernel"),
                       per_axis(self.dilation, n, f"{loc}.dilation"), loc=loc)

    def label(self) -> str:
        return f"avgpool {_label(self.kernel)}"


def _label(kernel) -> str:
    return f"{kernel}x{kernel}" if isinstance(kernel, int) else "x".join(map(str, kernel))


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
            plan.append(s.plan_step(channels, block, f"steps.{i}"))
            channels = plan[-1].out
        return [*plan, *norm_steps(self.norm, channels)]

    def label(self) -> str:
        norm = "" if self.norm.type == "none" else f" + {self.norm.type}"
        return "seq(" + " -> ".join(s.label() for s in self.steps) + ")" + norm
