"""Fold whole networks: every ``RepBlock`` becomes one conv (+ its activation)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from torch import nn

from .block import RepBlock

log = logging.getLogger("reparam_zoo")


@dataclass
class FoldReport:
    """What :func:`fold_model` folded."""

    #: one entry per distinct block: (the places it is used, spec name, train params, deploy params)
    blocks: list[tuple[list[str], str, int, int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.blocks)

    @property
    def train_params(self) -> int:
        return sum(b[2] for b in self.blocks)

    @property
    def deploy_params(self) -> int:
        return sum(b[3] for b in self.blocks)

    def __str__(self) -> str:
        if not self.blocks:
            return "folded 0 blocks (nothing to fold)"
        return (f"folded {self.count} block(s): {self.train_params:,} -> {self.deploy_params:,} "
                f"parameters in the folded blocks")


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def fold_model(model: nn.Module, inplace: bool = False, *, return_report: bool = False):
    """Replace every :class:`RepBlock` in ``model`` by its folded conv.

    Returns a NEW module (``inplace=False``, the default: ``model`` keeps its weights,
    dtype and device) or ``model`` itself with its blocks replaced (``inplace=True``).
    A block used at two places becomes one folded module used at both. Folding a
    folded model changes nothing. With ``return_report=True`` returns
    ``(module, FoldReport)``.
    """
    blocks: dict[int, tuple[RepBlock, list[str]]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, RepBlock):
            blocks.setdefault(id(m), (m, []))[1].append(name or "<root>")
    folded = {bid: b.fold() for bid, (b, _) in blocks.items()}
    report = FoldReport([(names, b.spec.name, _params(b), _params(folded[bid]))
                         for bid, (b, names) in blocks.items()])
    if isinstance(model, RepBlock):
        result: nn.Module = folded[id(model)]
    elif inplace:
        for parent in list(model.modules()):
            for child_name, child in list(parent._modules.items()):
                if child is not None and id(child) in folded:
                    setattr(parent, child_name, folded[id(child)])
        result = model
    else:
        # deepcopy with the blocks pre-seeded in the memo: they are replaced, never copied
        memo = {bid: f for bid, f in folded.items()}
        result = copy.deepcopy(model, memo)
    log.info("%s", report)
    return (result, report) if return_report else result
