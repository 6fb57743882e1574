"""The one registry every extension point uses: name -> object, duplicates refused, close names suggested.

Step types, step converters, conv parameterisations, branch types, activations, adopters, checkpoint
formats and CLI commands are each a :class:`Registry`; ``REGISTRY.register("name")`` decorates.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from reparam_zoo.errors import SpecError

T = TypeVar("T")


def closest(name: str, candidates, cutoff: float = 0.5) -> str | None:
    """The candidate closest to ``name`` other than ``name`` itself (``None`` when nothing is close):
    the one close-name hint of the package (registries, shipped specs, spec keys)."""
    match = [m for m in difflib.get_close_matches(name, list(candidates), n=2, cutoff=cutoff) if m != name]
    return match[0] if match else None


class Registry(Generic[T]):
    """``Registry("branch type")``: register once per name, look up with a helpful error."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}
        self.version = 0  # bumped on every registration (caches key on it)

    def register(self, name: str, obj: T | None = None):
        """``register(name, obj)`` returns ``obj``; ``register(name)`` is a decorator that registers
        what it decorates (as fvcore's ``Registry``). A name registered twice raises ``ValueError``."""
        if obj is None:
            def wrap(o: T) -> T:
                return self.register(name, o)

            return wrap
        if not (isinstance(name, str) and name or isinstance(name, type)):
            raise ValueError(f"Expected a non-empty string (or a class) as {self.what} name but got {name!r}")
        if name in self._items:
            raise ValueError(
                f"{self.what} {name!r} is already registered ({self._items[name]!r}); "
                "pick another name"
            )
        self._items[name] = obj
        self.version += 1
        return obj

    def unknown_message(self, name: str) -> str:
        names = sorted(k if isinstance(k, str) else k.__name__ for k in self._items)
        msg = f"unknown {self.what} {name!r}; registered: {', '.join(names)}"
        hint = closest(str(name), names)
        if hint:
            msg += f"; did you mean {hint!r}?"
        return msg

    def get(self, name) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise SpecError(self.unknown_message(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self):
        return self._items.items()
