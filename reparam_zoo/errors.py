"""Errors raised for bad specs and impossible folds."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec (or a block built from it) that reparam_zoo refuses.

    The message names the file (``source``), the location inside the spec
    (``location``, e.g. ``branches.2.kernel``) and the rule that was broken.
    Several problems found at once are kept in ``problems`` as ``(location, rule)``.
    """

    def __init__(self, rule: str, location: str = "", source: str | None = None,
                 problems: list[tuple[str, str]] | None = None):
        self.problems = problems or [(location, rule)]
        self.source = source
        self.location, self.rule = self.problems[0]
        super().__init__(self._render())

    def _render(self) -> str:
        # bounded: a rule never embeds more than 500 characters of anything (user values included)
        parts = [(f"{loc}: {rule}" if loc else rule)[:500] for loc, rule in self.problems[:20]]
        head = f"{self.source}: {parts[0]}" if self.source else parts[0]
        if len(self.problems) > 1:
            rest = "; ".join(parts[1:]) + ("; ..." if len(self.problems) > len(parts) else "")
            head += f" (and {len(self.problems) - 1} more: " + rest + ")"
        return head

    def located(self, prefix: str = "", source: str | None = None) -> "SpecError":
        """A copy with ``prefix.`` put before every location and the source set."""
        def join(loc: str) -> str:
            return ".".join(p for p in (prefix, loc) if p)
        err = type(self)("", problems=[(join(loc), rule) for loc, rule in self.problems],
                         source=source or self.source)
        return err


class NotApplicable(SpecError):
    """A branch that cannot apply to this geometry (channels or stride).

    Raised while planning a branch; ``optional: true`` branches are dropped on it,
    other branches turn it into a :class:`SpecError`.
    """
