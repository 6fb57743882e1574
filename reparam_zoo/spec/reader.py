"""The hardened YAML reader every spec file goes through (blocks, nets, search spaces).

Bounded before anything is built: file size, node count (aliases expanded) and depth
(``spec/limits.py``); YAML 1.2 core scalars only (``act: off`` stays a string); duplicate keys and
non-core tags refused. Every problem is ONE :class:`~reparam_zoo.errors.SpecError` naming the
file, line and column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from reparam_zoo.errors import SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.schema import short


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys and reads ``1:00`` as text (no YAML 1.1 sexagesimal ints)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                mark = key_node.start_mark
                raise SpecError(f"duplicate key {short(key)} (a second value would silently replace the first)",
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
        raise SpecError(f"not an integer: {short(text)}", f"line {mark.line + 1}, column {mark.column + 1}") from None


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


def parse_yaml(text: str, source: str | None) -> Any:
    """YAML text as plain data, hardened: size, depth and alias expansion bounded, YAML 1.2 scalars,
    no duplicate keys, no tags outside the core schema; any problem is one located SpecError."""
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
