"""The block spec language: pydantic v2 models of a block and its branches, nothing built.

A :class:`BlockSpec` is parallel linear branches summed, an optional norm on the sum and an
activation. :class:`BranchSpec` is the base of every branch type's model (the types themselves
live in ``reparam_zoo/engine/branches/`` and register with
:func:`~reparam_zoo.spec.registry.register_branch`). Field types (``KernelSize``, ``Dilation``,
``Padding``, ``Norm``) are shared by every model. Validation here is per field and per model;
what needs a geometry (fit, centring, groups, stride) is checked by the engine when a block is
built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PositiveInt,
    PrivateAttr,
    field_validator,
    model_validator,
)

from reparam_zoo.spec.activations import ACTIVATIONS
from reparam_zoo.spec.limits import LIMITS

if TYPE_CHECKING:  # annotations only: the spec language imports nothing from the engine
    from reparam_zoo.engine.geometry import BlockGeometry
    from reparam_zoo.engine.steps import Step


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never embed unbounded input)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


#: the config of every spec model: unknown keys refused; booleans, ints and floats strict (YAML 1.2's string
#: ``'yes'`` or ``'3'`` and the float ``3.0`` are refused where a bool or an int is expected, never coerced; an int
#: is a float where a float is expected); floats finite (``.nan``, ``.inf`` refused)
SPEC_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def axes_of(value: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """A validated per-axis value as a tuple (an int: one entry, meaning every axis)."""
    return (value,) if isinstance(value, int) else tuple(value)


def _positive_axes(value: Any, what: str, allow_zero: bool = False, limit: int | None = None
                   ) -> int | tuple[int, ...]:
    low = 0 if allow_zero else 1
    ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low  # noqa: E731
    if ok_int(value) or isinstance(value, (list, tuple)) and 1 <= len(value) <= 3 and all(ok_int(v) for v in value):
        big = [v for v in ((value,) if isinstance(value, int) else value) if limit is not None and v > limit]
        if big:
            raise ValueError(f"{what.split(' ')[0]} {short(big[0])} is above the limit {limit} (a spec may not ask "
                             f"for more; see docs/spec.md, Limits)")
        return value if isinstance(value, int) else tuple(value)
    kind = "a non-negative" if allow_zero else "a positive"
    verb = "" if what.endswith(" or") else " must be"
    raise ValueError(f"{what}{verb} {kind} int or a list of 1 to 3 such ints (one per spatial axis, e.g. "
                     f"[h, w]), got {short(value)}")


def _kernel(value: Any) -> int | tuple[int, int]:
    return _positive_axes(value, "kernel", limit=LIMITS["kernel"])


def _dilation(value: Any) -> int | tuple[int, int]:
    return _positive_axes(value, "dilation", limit=LIMITS["dilation"])


def _padding(value: Any) -> str | int | tuple[int, int]:
    if value == "same":
        return value
    return _positive_axes(value, "padding must be 'same' or", allow_zero=True, limit=LIMITS["padding"])


_PairSchema = Union[PositiveInt, list[PositiveInt]]
#: ``k`` or ``[kh, kw]``
KernelSize = Annotated[Any, PlainValidator(_kernel, json_schema_input_type=_PairSchema)]
Dilation = Annotated[Any, PlainValidator(_dilation, json_schema_input_type=_PairSchema)]
Padding = Annotated[Any, PlainValidator(
    _padding, json_schema_input_type=Union[Literal["same"], int, list[int]])]


class NormSpec(BaseModel):
    """The norm after a branch (or after the sum): ``bn``, ``scale`` or ``none``.

    In YAML either the short form ``norm: bn`` or a mapping with options.
    """

    model_config = SPEC_CONFIG

    type: Literal["bn", "scale", "none"] = "bn"
    eps: float = Field(1e-5, gt=0, allow_inf_nan=False, description="BatchNorm eps (the fold uses this exact value)")
    momentum: Optional[float] = Field(0.1, ge=0, le=1, description="BatchNorm momentum")
    affine: bool = Field(True, description="BatchNorm with learnable gamma/beta")
    track_running_stats: bool = Field(True, description="must stay true: batch statistics cannot fold")
    frozen: bool = Field(False, description="BatchNorm normalising with its running statistics in training too, "
                         "never updating them (detection backbones' FrozenBatchNorm2d); gamma/beta still learn")
    init: float = Field(1.0, allow_inf_nan=False, ge=-LIMITS["scale_init"], le=LIMITS["scale_init"],
                        description="initial value of a `scale` norm")
    learnable: bool = Field(True, description="a `scale` that trains, or (false) a constant per-channel buffer "
                            "(RepOptimizer's CSLA form; its values settable from a trained model)")

    @model_validator(mode="after")
    def _foldable(self) -> "NormSpec":
        if self.type == "bn" and not self.track_running_stats:
            raise ValueError(
                "a BatchNorm without running statistics (track_running_stats: false) normalises "
                "with batch statistics and cannot be folded")
        if self.frozen and self.type != "bn":
            raise ValueError(f"frozen: true is for a BatchNorm (type: bn), not type: {self.type}")
        if not self.learnable and self.type != "scale":
            raise ValueError(f"learnable: false is for a scale (type: scale), not type: {self.type}")
        return self

    def label(self) -> str:
        return self.type


def linear_pooling(count_include_pad: bool) -> bool:
    """Validator: only ``count_include_pad: true`` average pooling is a convolution at borders."""
    if not count_include_pad:
        raise ValueError(
            "count_include_pad: false divides border outputs by the number of valid pixels, "
            "which is not a convolution and cannot fold; use true")
    return count_include_pad


def _norm_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


Norm = Annotated[NormSpec, BeforeValidator(_norm_shorthand)]


# ----------------------------------------------------------------------------- branches


class BranchSpec(BaseModel):
    """Base of every branch spec model. Subclasses declare ``type: Literal["name"] = "name"``
    and implement :meth:`plan`."""

    model_config = SPEC_CONFIG

    norm: Norm = Field(default_factory=NormSpec, description="norm after the branch: bn | scale | none")
    optional: bool = Field(False, description="drop the branch where it cannot apply (channels/stride)")
    count: PositiveInt = Field(1, le=LIMITS["count"], description="number of parallel copies (MobileOne's k)")
    when: Literal["always", "depthwise", "not_depthwise"] = Field(
        "always", description="use the branch only in depthwise blocks (groups == out_channels) or only in others")
    gate: Literal["none", "learnable", "fixed"] = Field(
        "none", description="a scalar gate on the branch output (search): learnable, fixed (at 1), or none")
    train_as: Literal["features", "kernel"] = Field(
        "features", description="train on the features (the branch's steps in turn) or as its composed kernel "
                                "(one conv per step of training; no BatchNorm inside)")

    def plan(self, block: BlockGeometry) -> list[Step]:
        """The branch as a chain of linear steps for this block geometry.

        Raise :class:`~reparam_zoo.errors.NotApplicable` when the branch cannot apply
        to the geometry (e.g. identity with a channel change) and
        :class:`~reparam_zoo.errors.SpecError` for any other broken rule; locations are
        relative to the branch (``"kernel"``, ``"steps.2"``). The block's stride is
        given to the last spatial step by the engine.
        """
        raise NotImplementedError

    def parts(self, block: BlockGeometry) -> list[tuple[str, list[Step]]]:
        """The parallel sub-branches this entry stands for, ``(suffix, plan)`` each: one (``""``, its
        :meth:`plan`) for most types; several for an entry such as ``line`` with ``axis: all``."""
        return [("", self.plan(block))]

    def label(self) -> str:
        """A short human description, e.g. ``conv 1x1 + bn``."""
        norm = self.norm.label()
        return f"{self.type}" + ("" if norm == "none" else f" + {norm}")



# ----------------------------------------------------------------------------- block


class BlockSpec(BaseModel):
    """A re-parameterizable block: parallel linear branches summed, then an activation."""

    model_config = SPEC_CONFIG

    name: str = Field(description="the block's name")
    description: str = Field("", description="free text: the paper, what the spec reproduces")
    kernel: KernelSize = Field(3, description="kernel of the folded conv: k (every axis) or one entry per axis")
    dilation: Dilation = Field(1, description="dilation of the folded conv")
    padding: Padding = Field("same", validate_default=True,
                             description="'same' (needs an odd dilated kernel), p or one entry per axis")
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = Field(
        "zeros", description="padding mode; the block pads once, at its input")
    norm_after: Norm = Field(default_factory=lambda: NormSpec(type="none"),
                             description="norm on the sum of the branches (QARepVGG): none | bn | scale")
    act: str = Field("relu", description="activation after the (normed) sum")
    branches: list[BranchSpec] = Field(min_length=1, max_length=LIMITS["branches"], description="the parallel branches")

    _source: Optional[str] = PrivateAttr(None)

    @field_validator("act")
    @classmethod
    def _known_act(cls, v: str) -> str:
        if v not in ACTIVATIONS:
            raise ValueError(ACTIVATIONS.unknown_message(v))
        return v

    @field_validator("padding")
    @classmethod
    def _same_needs_odd(cls, v, info):
        # a field validator (kernel and dilation are declared before padding), so that the error
        # is located at `padding`; skipped when kernel or dilation was itself invalid
        if v == "same" and "kernel" in info.data and "dilation" in info.data:
            kernel, dilation = info.data["kernel"], info.data["dilation"]
            k, d = axes_of(kernel), axes_of(dilation)
            if len(k) != len(d) and 1 not in (len(k), len(d)):
                return v  # the engine names the mismatch against the block's axes
            k, d = k * (len(d) if len(k) == 1 else 1), d * (len(k) if len(d) == 1 else 1)
            if any((b * (a - 1)) % 2 for a, b in zip(k, d)):
                raise ValueError(
                    f"padding 'same' needs an odd (dilated) kernel on each axis, got kernel "
                    f"{kernel} with dilation {dilation}; give an explicit padding")
        return v

    # -- convenience ------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        """Specs are equal when they say the same thing (where they were read from aside)."""
        if not isinstance(other, BlockSpec):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    @property
    def source(self) -> str | None:
        """The file this spec was read from (``None`` for text or Python)."""
        return self._source

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, defaults omitted (``type`` always kept)."""
        return _dump(self)

    def to_yaml(self) -> str:
        """YAML text that :func:`load_spec` reads back to an equal spec."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _dump(value: Any) -> Any:
    if isinstance(value, NormSpec):
        data = {k: _dump(getattr(value, k)) for k, f in type(value).model_fields.items()
                if getattr(value, k) != f.get_default(call_default_factory=True)}
        return value.type if set(data) <= {"type"} else {"type": value.type, **data}
    if isinstance(value, BaseModel):
        out = {}
        for k, f in type(value).model_fields.items():
            v = getattr(value, k)
            if k == "type" or v != f.get_default(call_default_factory=True):
                out[k] = _dump(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


_MODEL_CACHE: dict[int, type[BlockSpec]] = {}
