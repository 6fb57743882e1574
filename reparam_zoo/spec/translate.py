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
    models = [BlockSpec, NormSpec, *(m for _, m in SEQ_STEPS.items()), *(t.spec for _, t in BRANCHES.items()),
              *extra_models]
    return sorted({k for m in models for k in m.model_fields})


def _tags() -> set[str]:
    return set(BRANCHES.names()) | set(SEQ_STEPS.names())


_TYPE_LABELS = {"int", "float", "str", "bool", "none", "list", "dict", "tuple", "any"}


def _is_union_label(part: Any) -> bool:
    """Whether a location part is the label pydantic gives a member of a plain union (``constrained-int``,
    ``literal['in','out']``, ``list[constrained-int]``, ``int``): no spec key looks like one."""
    return isinstance(part, str) and (not part.isidentifier() or part in _TYPE_LABELS)


def _merge_unions(problems: list[tuple[str, str, str | None]]) -> list[tuple[str, str]]:
    """One problem per value that matched no member of a union, in the place of its first: the deepest
    location its members' errors name (a list's bad item rather than the list), their rules joined by "; or "."""
    merged: list[tuple[str, str]] = []
    members: dict[str, tuple[int, list[tuple[str, str]]]] = {}  # the union's value -> (index in merged, errors)
    for loc, rule, union in problems:
        if union is None:
            merged.append((loc, rule))
            continue
        if union not in members:
            members[union] = (len(merged), [])
            merged.append((union, rule))
        members[union][1].append((loc, rule))
    for i, errors in members.values():
        deepest = max(loc.count(".") for loc, _ in errors)
        kept = [(loc, rule) for loc, rule in errors if loc.count(".") == deepest]
        merged[i] = (kept[0][0], "; or ".join(dict.fromkeys(rule for _, rule in kept)))
    return merged


def translate(err: ValidationError, source: str | None, extra_models: tuple = ()) -> SpecError:
    """A pydantic error as a SpecError: clean locations, suggestions, one problem per value (a value no
    member of a union accepts included); typos first (they explain the "missing key" errors that come
    with them)."""
    tags = _tags()
    problems: list[tuple[str, str, str | None]] = []
    for e in err.errors():
        loc: list[str] = []
        union: str | None = None  # the location of the value a plain union refused
        prev: Any = None
        parts = e["loc"]
        for i, part in enumerate(parts):
            if isinstance(part, str) and isinstance(prev, int) and part in tags:
                prev = part
                continue  # the discriminator tag pydantic inserts after a list index
            if _is_union_label(part) and not (i == len(parts) - 1 and e["type"] == "extra_forbidden"):
                union = ".".join(loc) if union is None else union
                prev = part
                continue  # the member of a plain union pydantic tried (an unknown key is no label)
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
                rule = "Input should be a finite number but got nan"  # as pydantic's own finite check says
            else:
                rule = f"Expected a value {op} {bound} but got {short(value)}" + (
                    " (docs/spec.md, Limits)" if op.startswith("<") and bound in LIMITS.values() else "")
        elif kind == "too_long":
            rule = (f"Expected at most {ctx.get('max_length')} items but got {ctx.get('actual_length')} "
                    "(docs/spec.md, Limits)")
        elif kind == "int_type":
            rule = f"Expected a whole number (an int) but got {short(e.get('input'))}"
        elif kind == "bool_type":
            rule = f"Expected true or false but got {short(e.get('input'))}"
        elif kind == "float_type":
            rule = f"Expected a number but got {short(e.get('input'))}"
        elif kind == "finite_number":
            rule = f"Input should be a finite number but got {short(e.get('input'))}"
        else:
            rule = e["msg"]
            if rule.startswith("Value error, "):
                rule = rule[len("Value error, "):]
        problems.append((".".join(loc), rule, union))
    merged = _merge_unions(problems)
    merged.sort(key=lambda p: not p[1].startswith("unknown key"))
    return SpecError("", problems=merged, source=source)
