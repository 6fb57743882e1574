"""pydantic's validation errors as one :class:`~reparam_zoo.errors.SpecError`: clean locations
(``branches.2.kernel``), the rule in words, close-name suggestions for unknown keys and types."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from reparam_zoo.errors import SpecError
from reparam_zoo.registry import closest
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.registry import BRANCHES, SEQ_STEPS
from reparam_zoo.spec.schema import BlockSpec, NormSpec, short


def _vocabulary(extra_models: tuple = ()) -> list[str]:
    models = [BlockSpec, NormSpec, *(m for _, m in SEQ_STEPS.items()), *(t.spec for _, t in BRANCHES.items()), *extra_models]
    return sorted({k for m in models for k in m.model_fields})


def _tags() -> set[str]:
    return set(BRANCHES.names()) | set(SEQ_STEPS.names())


def translate(err: ValidationError, source: str | None, extra_models: tuple = ()) -> SpecError:
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
                            rule = SEQ_STEPS.unknown_message(str(tag))
            else:
                rule = BRANCHES.unknown_message(str(tag))
            loc.append("type")
        elif kind == "union_tag_not_found":
            rule = "missing key 'type' (the branch or step type)"
        elif kind == "extra_forbidden":
            key = loc[-1] if loc else "?"
            rule = f"unknown key {key!r}"
            hint = closest(key, _vocabulary(extra_models), cutoff=0.6)  # never the key itself: a key valid
            if hint:  # elsewhere (a BN's eps on a branch) is no suggestion
                rule += f"; did you mean {hint!r}?"
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
                rule = f"Expected a value {op} {bound} but got {short(value)}" + (
                    " (docs/spec.md, Limits)" if op.startswith("<") and bound in LIMITS.values() else "")
        elif kind == "too_long":
            rule = (f"Expected at most {ctx.get('max_length')} items but got {ctx.get('actual_length')} "
                    "(docs/spec.md, Limits)")
        elif kind == "int_type":
            rule = f"Expected a whole number (an int) but got {short(e.get('input'))}"
        else:
            rule = e["msg"]
            if rule.startswith("Value error, "):
                rule = rule[len("Value error, "):]
        problems.append((".".join(loc), rule))
    problems.sort(key=lambda p: not p[1].startswith("unknown key"))
    return SpecError("", problems=problems, source=source)
