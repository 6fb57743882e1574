"""Finding and reading specs: shipped ones by name (blocks, nets, spaces), files, YAML text, mappings.

:func:`shipped_path` is the one lookup of shipped specs (with the close-name hint);
:func:`load_spec` reads any source into a validated :class:`BlockSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from reparam_zoo.errors import SpecError
from reparam_zoo.registry import closest
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.reader import parse_yaml, read_text
from reparam_zoo.spec.registry import block_model
from reparam_zoo.spec.schema import BlockSpec, short
from reparam_zoo.spec.translate import translate


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


def shipped(kind: str) -> list[str]:
    """Names of the shipped specs of a kind: ``blocks``, ``nets`` or ``spaces``."""
    return sorted(p.stem for p in (specs_root() / kind).glob("*.yaml"))


def shipped_path(kind: str, name: str) -> Path:
    """The file of a shipped spec; a SpecError listing the shipped names (and the closest) otherwise."""
    path = specs_root() / kind / f"{name}.yaml"
    if not path.is_file():
        names = shipped(kind)
        what = {"blocks": "block spec", "nets": "net spec", "spaces": "search space"}.get(kind, kind)
        msg = f"no shipped {what} {name!r}; shipped: {', '.join(names)}"
        hint = closest(str(name), names)
        if hint:
            msg += f"; did you mean {hint!r}?"
        raise SpecError(msg)
    return path


def list_specs() -> list[str]:
    """Names of the shipped block specs."""
    return shipped("blocks")


def spec_from_data(data: Any, source: str | None = None) -> BlockSpec:
    """Validate already-parsed data (a mapping) into a :class:`BlockSpec`."""
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise SpecError(f"a block spec must be a YAML mapping of keys, got {got}", "", source)
    try:  # strict throughout, the models of extensions (a seq branch's steps) too: see SPEC_CONFIG
        spec = block_model().model_validate(dict(data), strict=True)
    except ValidationError as exc:
        raise translate(exc, source) from None
    except RecursionError:
        raise SpecError(f"nested deeper than {LIMITS['yaml_depth']} levels", "", source) from None
    spec._source = source
    return spec


def _with_field(spec: BlockSpec, kind: str, name: str, value: Any) -> BlockSpec:
    """``spec`` with ``name: value`` on every model of ``type: kind`` that has that field, at any depth (a
    norm, a seq step, a group's member's norm), validated again."""

    def walk(node: Any) -> Any:
        if isinstance(node, BaseModel):
            update = {k: walk(getattr(node, k)) for k in type(node).model_fields}
            if name in update and getattr(node, "type", None) == kind:
                update[name] = value
            return node.model_copy(update=update)
        return [walk(v) for v in node] if isinstance(node, (list, tuple)) else node

    return spec_from_data(walk(spec).to_dict(), spec.source)


def with_frozen_norms(spec: BlockSpec) -> BlockSpec:
    """``spec`` with every BatchNorm frozen (``frozen: true``: running statistics in training too), for
    layers whose own norm has fixed statistics (:func:`~reparam_zoo.interop.expand.expand`)."""
    return _with_field(spec, "bn", "frozen", True)


def with_constant_scales(spec: BlockSpec) -> BlockSpec:
    """``spec`` with every branch's ``scale`` norm a constant (``learnable: false``; ``norm_after`` stays as it
    is): RepOptimizer's CSLA form after its scales were searched (:func:`~reparam_zoo.engine.repopt.freeze_scales`)."""
    constant = _with_field(spec, "scale", "learnable", False)
    return spec_from_data({**constant.to_dict(), "norm_after": spec.to_dict().get("norm_after", "none")}, spec.source)


def csla_form(spec: BlockSpec, learnable: bool = True) -> BlockSpec:
    """``spec`` in RepOptimizer's CSLA form: every branch's BatchNorm (or scale) a per-channel ``scale``
    (``learnable``: for the hyper-search; ``False``: the constants a RepOptimizer needs) and one BatchNorm after the sum
    (``norm_after: bn``), as RepOpt-VGG turns RepVGG into its CSLA block. BatchNorms inside a branch's steps (a
    chain's middle norm) stay, and :func:`~reparam_zoo.engine.repopt.repopt` refuses them naming the branch."""
    data = spec.to_dict()
    branches = []
    for branch, model in zip(data["branches"], spec.branches):
        norm = getattr(model, "norm", None)
        if norm is not None and norm.type == "bn":
            branch = {**branch, "norm": {"type": "scale", "learnable": learnable}}
        elif norm is not None and norm.type == "scale":  # a scale already: searched or constant as asked
            branch = {**branch, "norm": {"type": "scale", "learnable": learnable, "init": norm.init}}
        branches.append(branch)
    return spec_from_data({**data, "name": f"{spec.name}_csla", "branches": branches, "norm_after": "bn",
                           "description": f"{spec.name} in RepOptimizer's CSLA form (branch BatchNorms as "
                                          f"{'learnable' if learnable else 'constant'} scales, one BatchNorm "
                                          "after the sum)"}, spec.source)


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
                                          and not path_exists(path_or_text)
                                          and not path_or_text.rstrip().endswith((".yaml", ".yml"))):
        data = parse_yaml(path_or_text, None)
        if "\n" not in path_or_text and not isinstance(data, Mapping):
            raise SpecError(f"neither a spec file nor YAML text of a mapping: {short(path_or_text, 200)!r}")
        return spec_from_data(data)
    path = Path(path_or_text)
    if not path_exists(path, file=True):
        name = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
        raise SpecError("not a regular file" if path_exists(path) else "no such spec file", "", name)
    return spec_from_data(parse_yaml(read_text(path), str(path)), str(path))


def path_exists(path, file: bool = False) -> bool:
    """Path.exists/is_file that treat an impossible name (too long, NUL byte) as absent."""
    try:
        return Path(path).is_file() if file else Path(path).exists()
    except (OSError, ValueError):
        return False


def get_spec(name: str) -> BlockSpec:
    """A shipped block spec by name (see :func:`list_specs`)."""
    return load_spec(shipped_path("blocks", name))


def resolve_spec(spec: str | Path | Mapping | BlockSpec) -> BlockSpec:
    """A spec object from a spec, a mapping, a shipped name, a path or YAML text."""
    if isinstance(spec, str) and "\n" not in spec and ":" not in spec and not spec.endswith(
            (".yaml", ".yml")) and "/" not in spec:
        return get_spec(spec)
    return load_spec(spec)
