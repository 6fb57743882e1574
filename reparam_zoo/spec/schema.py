"""Block specs: pydantic v2 data, read from YAML, validated before anything is built.

A block spec is a :class:`BlockSpec` whose ``branches`` is a discriminated union
(on ``type``) of every registered branch spec model. The union is rebuilt when a new
branch type is registered, so user types validate like the built-in ones.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from torch import nn

from reparam_zoo.errors import SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.engine.modules import ACTIVATIONS
from reparam_zoo.registry import Registry
from reparam_zoo.engine.steps import BlockGeometry, BranchKernel, Chain, NormStep, Step, chain_kernel

# ----------------------------------------------------------------------------- limits



def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never embed unbounded input)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


# ----------------------------------------------------------------------------- field types


def _positive_pair(value: Any, what: str, allow_zero: bool = False, limit: int | None = None
                   ) -> int | tuple[int, int]:
    low = 0 if allow_zero else 1
    ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low  # noqa: E731
    if ok_int(value) or isinstance(value, (list, tuple)) and len(value) == 2 and all(ok_int(v) for v in value):
        big = [v for v in ((value,) if isinstance(value, int) else value) if limit is not None and v > limit]
        if big:
            raise ValueError(f"{what.split(' ')[0]} {_short(big[0])} is above the limit {limit} (a spec may not ask "
                             f"for more; see docs/spec.md, Limits)")
        return value if isinstance(value, int) else (value[0], value[1])
    kind = "a non-negative" if allow_zero else "a positive"
    verb = "" if what.endswith(" or") else " must be"
    raise ValueError(f"{what}{verb} {kind} int or a pair [h, w] of such ints, got {_short(value)}")


def _kernel(value: Any) -> int | tuple[int, int]:
    return _positive_pair(value, "kernel", limit=LIMITS["kernel"])


def _dilation(value: Any) -> int | tuple[int, int]:
    return _positive_pair(value, "dilation", limit=LIMITS["dilation"])


def _padding(value: Any) -> str | int | tuple[int, int]:
    if value == "same":
        return value
    return _positive_pair(value, "padding must be 'same' or", allow_zero=True, limit=LIMITS["padding"])


_PairSchema = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]
#: ``k`` or ``[kh, kw]``
KernelSize = Annotated[Any, PlainValidator(_kernel, json_schema_input_type=_PairSchema)]
Dilation = Annotated[Any, PlainValidator(_dilation, json_schema_input_type=_PairSchema)]
Padding = Annotated[Any, PlainValidator(
    _padding, json_schema_input_type=Union[Literal["same"], int, tuple[int, int]])]


class NormSpec(BaseModel):
    """The norm after a branch (or after the sum): ``bn``, ``scale`` or ``none``.

    In YAML either the short form ``norm: bn`` or a mapping with options.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["bn", "scale", "none"] = "bn"
    eps: float = Field(1e-5, gt=0, allow_inf_nan=False, description="BatchNorm eps (the fold uses this exact value)")
    momentum: Optional[float] = Field(0.1, ge=0, le=1, description="BatchNorm momentum")
    affine: bool = Field(True, description="BatchNorm with learnable gamma/beta")
    track_running_stats: bool = Field(True, description="must stay true: batch statistics cannot fold")
    init: float = Field(1.0, allow_inf_nan=False, ge=-LIMITS["scale_init"], le=LIMITS["scale_init"],
                        description="initial value of a `scale` norm")

    @model_validator(mode="after")
    def _foldable(self) -> "NormSpec":
        if self.type == "bn" and not self.track_running_stats:
            raise ValueError(
                "a BatchNorm without running statistics (track_running_stats: false) normalises "
                "with batch statistics and cannot be folded")
        return self

    def steps(self, channels: int, loc: str = "norm") -> list[Step]:
        if self.type == "none":
            return []
        return [NormStep(channels, kind=self.type, eps=self.eps, momentum=self.momentum,
                         affine=self.affine, init=self.init, loc=loc)]

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

    model_config = ConfigDict(extra="forbid")

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

    def label(self) -> str:
        """A short human description, e.g. ``conv 1x1 + bn``."""
        norm = self.norm.label()
        return f"{self.type}" + ("" if norm == "none" else f" + {norm}")


@dataclass(frozen=True)
class BranchType:
    """What a branch type registers: its spec model, training module and converter."""

    name: str
    spec: type[BranchSpec]
    module: Callable[[BranchSpec, list[Step], BlockGeometry], nn.Module]
    converter: Callable[[nn.Module, BlockGeometry], BranchKernel]


def chain_module(spec: BranchSpec, plan: list[Step], block: BlockGeometry) -> nn.Module:
    """Default training module: the planned steps in sequence."""
    return Chain.from_plan(plan)


def chain_converter(module: nn.Module, block: BlockGeometry) -> BranchKernel:
    """Default converter: compose the chain's steps with the kernel algebra."""
    return chain_kernel(list(module), block.in_channels)


BRANCHES: Registry[BranchType] = Registry("branch type")


def register_branch(
    name: str,
    *,
    module: Callable[[BranchSpec, list[Step], BlockGeometry], nn.Module] = chain_module,
    converter: Callable[[nn.Module, BlockGeometry], BranchKernel] = chain_converter,
) -> Callable[[type[BranchSpec]], type[BranchSpec]]:
    """Register a branch type under its YAML name (decorates the spec model).

    ``module(spec, plan, block)`` builds the training module (default: a
    :class:`~reparam_zoo.steps.Chain` of the planned steps) and
    ``converter(module, block)`` turns it into a kernel (default: compose the chain).
    Registering a name twice raises ``ValueError``.
    """

    def wrap(cls: type[BranchSpec]) -> type[BranchSpec]:
        if not (isinstance(cls, type) and issubclass(cls, BranchSpec)):
            raise TypeError(f"Expected a BranchSpec subclass but got {cls!r}")
        field = cls.model_fields.get("type")
        if field is None or field.default != name:
            raise TypeError(
                f"{cls.__name__} must declare `type: Literal[{name!r}] = {name!r}` to register as {name!r}")
        BRANCHES.register(name, BranchType(name, cls, module, converter))
        return cls

    return wrap


# ----------------------------------------------------------------------------- block


class BlockSpec(BaseModel):
    """A re-parameterizable block: parallel linear branches summed, then an activation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the block's name")
    description: str = Field("", description="free text: the paper, what the spec reproduces")
    kernel: KernelSize = Field(3, description="kernel of the folded conv: k or [kh, kw]")
    dilation: Dilation = Field(1, description="dilation of the folded conv")
    padding: Padding = Field("same", validate_default=True, description="'same' (needs an odd dilated kernel), p or [ph, pw]")
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
            from reparam_zoo.engine.kernels import as_pair

            kernel, dilation = info.data["kernel"], info.data["dilation"]
            (kh, kw), (dh, dw) = as_pair(kernel), as_pair(dilation)
            if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
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


def block_model() -> type[BlockSpec]:
    """The :class:`BlockSpec` subclass whose ``branches`` is the union of registered types."""
    from reparam_zoo.engine import branches as _builtin  # noqa: F401  (registers the built-in types)
    from reparam_zoo.engine import primitives as _primitives  # noqa: F401  (registers the parameterised convs)

    cached = _MODEL_CACHE.get(BRANCHES.version)
    if cached is not None:
        return cached
    models = tuple(t.spec for _, t in BRANCHES.items())
    item = Annotated[Union[models], Field(discriminator="type")] if len(models) > 1 else models[0]
    model = create_model("BlockSpec", __base__=BlockSpec,
                         branches=(list[item], Field(min_length=1, max_length=LIMITS["branches"],
                                                     description="the parallel branches")))
    _MODEL_CACHE.clear()
    _MODEL_CACHE[BRANCHES.version] = model
    return model


def json_schema() -> dict[str, Any]:
    """JSON Schema of a block spec (for editor completion of the YAML files)."""
    schema = block_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reparam_zoo block spec"
    return schema


# ----------------------------------------------------------------------------- errors


def _vocabulary(extra_models: tuple = ()) -> list[str]:
    from reparam_zoo.engine.branches.seq import STEP_TYPES

    models = [BlockSpec, NormSpec, *STEP_TYPES.values(), *(t.spec for _, t in BRANCHES.items()), *extra_models]
    return sorted({k for m in models for k in m.model_fields})


def _tags() -> set[str]:
    from reparam_zoo.engine.branches.seq import STEP_TYPES

    return set(BRANCHES.names()) | set(STEP_TYPES)


def _translate(err: ValidationError, source: str | None, extra_models: tuple = ()) -> SpecError:
    """A pydantic error as a SpecError: clean locations, suggestions; typos first (they explain
    the "missing key" errors that come with them)."""
    tags = _tags()
    problems: list[tuple[str, str]] = []
    for e in err.errors():
        loc: list[str] = []
        prev: Any = None
        for part in e["loc"]:
            if isinstance(part, str) and isinstance(prev, int) and part in tags:
                prev = part
                continue  # the discriminator tag pydantic inserts after a list index
            loc.append(str(part))
            prev = part
        kind, ctx = e["type"], e.get("ctx") or {}
        if kind == "union_tag_invalid":
            tag = ctx.get("tag")
            if "steps" in loc:
                from reparam_zoo.engine.branches.seq import STEP_TYPES

                hint = difflib.get_close_matches(str(tag), list(STEP_TYPES), n=1, cutoff=0.5)
                rule = f"unknown step type {tag!r}; known: {', '.join(STEP_TYPES)}" + (
                    f"; did you mean {hint[0]!r}?" if hint else "")
            else:
                rule = BRANCHES.unknown_message(str(tag))
            loc.append("type")
        elif kind == "union_tag_not_found":
            rule = "missing key 'type' (the branch or step type)"
        elif kind == "extra_forbidden":
            key = loc[-1] if loc else "?"
            rule = f"unknown key {key!r}"
            hint = [h for h in difflib.get_close_matches(key, _vocabulary(extra_models), n=2, cutoff=0.6)
                    if h != key]  # a key valid elsewhere (a BN's eps on a branch) is no suggestion
            if hint:
                rule += f"; did you mean {hint[0]!r}?"
        elif kind == "missing":
            rule = f"missing required key {loc[-1]!r}" if loc else "missing required key"
        elif kind == "model_type" or kind == "model_attributes_type":
            rule = f"expected a mapping of keys, got {type(e.get('input')).__name__}"
        elif kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
            op = {"less_than_equal": "<=", "greater_than_equal": ">=", "less_than": "<", "greater_than": ">"}[kind]
            bound = next(iter(ctx.values()), "?")
            value = e.get("input")
            if isinstance(value, float) and value != value:
                rule = "Expected a finite number but got nan"
            else:
                rule = f"Expected a value {op} {bound} but got {_short(value)}" + (
                    " (docs/spec.md, Limits)" if op.startswith("<") and bound in LIMITS.values() else "")
        elif kind == "too_long":
            rule = (f"Expected at most {ctx.get('max_length')} items but got {ctx.get('actual_length')} "
                    "(docs/spec.md, Limits)")
        elif kind == "int_type":
            rule = f"Expected a whole number (an int) but got {_short(e.get('input'))}"
        else:
            rule = e["msg"]
            if rule.startswith("Value error, "):
                rule = rule[len("Value error, "):]
        problems.append((".".join(loc), rule))
    problems.sort(key=lambda p: not p[1].startswith("unknown key"))
    return SpecError("", problems=problems, source=source)


# ----------------------------------------------------------------------------- loading


def specs_root() -> Path:
    """Folder of the shipped YAML specs (``blocks/``), from a wheel or a checkout.

    The repository's top-level ``specs/`` folder is installed as the package
    ``reparam_zoo.specs``; running from a checkout without installing finds it beside
    the package.
    """
    try:
        return Path(str(resources.files("reparam_zoo.specs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "specs"


def list_specs() -> list[str]:
    """Names of the shipped block specs."""
    return sorted(p.stem for p in (specs_root() / "blocks").glob("*.yaml"))


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys and reads ``1:00`` as text (no YAML 1.1 sexagesimal ints)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                mark = key_node.start_mark
                raise SpecError(f"duplicate key {_short(key)} (a second value would silently replace the first)",
                                f"line {mark.line + 1}, column {mark.column + 1}")
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 core scalars: only true/false are booleans (`act: off`, `name: no` stay the strings they
# look like); ints are decimal without leading zeros, 0o octal or 0x hex (no base-60 `1:00`, no `1_000`,
# no YAML 1.1 `017` octal); floats as in YAML 1.2 (`1e-5` too); no implicit timestamps. Tags outside the core schema (!!binary, !!set,
# !!timestamp, !!omap, !!pairs, python tags) are refused.
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                                                   "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(  # after int: "3" is an int, "3.0", "1e3", ".inf", ".nan" are floats
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader, node) -> int:
    text = loader.construct_scalar(node)
    try:
        return int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)
    except ValueError:
        mark = node.start_mark
        raise SpecError(f"not an integer: {_short(text)}", f"line {mark.line + 1}, column {mark.column + 1}") from None


def _refuse_tag(loader, node):
    mark = node.start_mark
    raise SpecError(f"the YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed in a spec",
                    f"line {mark.line + 1}, column {mark.column + 1}")


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
for _tag in ("binary", "set", "timestamp", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)


def _check_size(node, source: str | None) -> None:
    """Refuse documents whose node tree, aliases expanded, is too large or too deep — before building it."""
    sizes: dict[int, int] = {}

    def walk(n, depth: int) -> int:
        if depth > LIMITS["yaml_depth"]:
            raise SpecError(f"nested deeper than {LIMITS['yaml_depth']} levels", f"line {n.start_mark.line + 1}",
                            source)
        if id(n) in sizes:
            return sizes[id(n)]
        if isinstance(n, yaml.MappingNode):
            size = 1 + sum(walk(k, depth + 1) + walk(v, depth + 1) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            size = 1 + sum(walk(v, depth + 1) for v in n.value)
        else:
            size = 1
        if size > LIMITS["yaml_nodes"]:
            raise SpecError(f"the document expands (aliases included) to more than {LIMITS['yaml_nodes']:,} "
                            "values", f"line {n.start_mark.line + 1}", source)
        sizes[id(n)] = size
        return size

    walk(node, 0)


def _parse_yaml(text: str, source: str | None) -> Any:
    if len(text) > LIMITS["file_bytes"]:
        raise SpecError(f"the spec is {len(text):,} characters long; the limit is {LIMITS['file_bytes']:,}", "",
                        source)
    loader = None
    try:
        loader = _Loader(text)  # the reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, source)
        return loader.construct_document(node)
    except SpecError as exc:
        raise exc.located("", source) from None
    except RecursionError:  # PyYAML composes recursively: thousands of levels exhaust the stack first
        raise SpecError(f"nested deeper than {LIMITS['yaml_depth']} levels", "", source) from None
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # a tag's constructor refused its value
        raise SpecError(f"not valid YAML: a tagged value cannot be read ({type(exc).__name__}: "
                        f"{str(exc)[:100]})", "", source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"not valid YAML: {str(problem)[:200]}", where, source) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text(path: Path, source: str | None = None) -> str:
    """A spec file's text: UTF-8 (a one-line SpecError otherwise), at most the file-size limit."""
    try:
        size = path.stat().st_size
        if size > LIMITS["file_bytes"]:
            raise SpecError(f"the file is {size:,} bytes; the limit is {LIMITS['file_bytes']:,}", "", str(path))
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte {exc.start}); save the spec as UTF-8", "", str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read it: {exc.strerror or exc}", "", str(path)) from None


def spec_from_data(data: Any, source: str | None = None) -> BlockSpec:
    """Validate already-parsed data (a mapping) into a :class:`BlockSpec`."""
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise SpecError(f"a block spec must be a YAML mapping of keys, got {got}", "", source)
    try:
        spec = block_model().model_validate(dict(data))
    except ValidationError as exc:
        raise _translate(exc, source) from None
    except RecursionError:
        raise SpecError(f"nested deeper than {LIMITS['yaml_depth']} levels", "", source) from None
    spec._source = source
    return spec


def load_spec(path_or_text: str | Path | Mapping | BlockSpec) -> BlockSpec:
    """Read a block spec from a YAML file path, YAML text, a mapping or a spec.

    A string with a newline or a ``:`` is YAML text; any other string is a path.
    """
    if isinstance(path_or_text, BlockSpec):
        return path_or_text
    if isinstance(path_or_text, Mapping):
        return spec_from_data(path_or_text)
    if not isinstance(path_or_text, (str, Path)):
        raise SpecError(f"Expected a block spec (a BlockSpec, a mapping, YAML text or a path) but got "
                        f"{type(path_or_text).__name__}")
    if isinstance(path_or_text, str) and ("\n" in path_or_text or ":" in path_or_text
                                          and not _exists(path_or_text)
                                          and not path_or_text.rstrip().endswith((".yaml", ".yml"))):
        data = _parse_yaml(path_or_text, None)
        if "\n" not in path_or_text and not isinstance(data, Mapping):
            raise SpecError(f"neither a spec file nor YAML text of a mapping: {_short(path_or_text, 200)!r}")
        return spec_from_data(data)
    path = Path(path_or_text)
    if not _exists(path, file=True):
        name = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
        raise SpecError("not a regular file" if _exists(path) else "no such spec file", "", name)
    return spec_from_data(_parse_yaml(read_text(path), str(path)), str(path))


def _exists(path, file: bool = False) -> bool:
    """Path.exists/is_file that treat an impossible name (too long, NUL byte) as absent."""
    try:
        return Path(path).is_file() if file else Path(path).exists()
    except (OSError, ValueError):
        return False


def get_spec(name: str) -> BlockSpec:
    """A shipped block spec by name (see :func:`list_specs`)."""
    path = specs_root() / "blocks" / f"{name}.yaml"
    if not path.is_file():
        names = list_specs()
        msg = f"no shipped block spec {name!r}; shipped: {', '.join(names)}"
        hint = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        raise SpecError(msg)
    return load_spec(path)


def resolve_spec(spec: str | Path | Mapping | BlockSpec) -> BlockSpec:
    """A spec object from a spec, a mapping, a shipped name, a path or YAML text."""
    if isinstance(spec, str) and "\n" not in spec and ":" not in spec and not spec.endswith(
            (".yaml", ".yml")) and "/" not in spec:
        return get_spec(spec)
    return load_spec(spec)
