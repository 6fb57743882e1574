"""Fold whole networks: every ``RepBlock`` becomes one conv (+ its activation)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from reparam_zoo.engine.block import RepBlock, deploy_module
from reparam_zoo.engine.fastfold import fold_blocks

log = logging.getLogger("reparam_zoo")


class Origin(Protocol):
    """``block.origin``: what a RepBlock made from another model's layers replaced (set by the module
    that made it: :func:`~reparam_zoo.expand`, :func:`~reparam_zoo.adopt`). The origin knows its own
    deployed form; ``fold_model(layout="original")`` asks it for that form and knows nothing else of it."""

    def deployed(self, block: RepBlock, parent: nn.Module | None) -> dict[int, nn.Module]:
        """``id(module) -> replacement`` for ``block`` (a child of ``parent``; None at the root) and for any
        module beside it that belongs to it (a wrapper, a norm slot), in the original layout. The folded
        numbers come from :func:`~reparam_zoo.engine.fastfold.fold_weights` (as with
        ``layout="plain"``) and :func:`deployed_conv` builds the conv that holds them."""
        ...


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


def fold_model(model: nn.Module, inplace: bool = False, *, return_report: bool = False,
               layout: str = "plain"):
    """Replace every :class:`RepBlock` in ``model`` by its folded conv.

    Returns a NEW module (``inplace=False``, the default: ``model`` keeps its weights,
    dtype and device) or ``model`` itself with its blocks replaced (``inplace=True``).
    A block used at two places becomes one folded module used at both. Folding a
    folded model changes nothing. With ``return_report=True`` returns
    ``(module, FoldReport)``.

    ``layout="plain"`` (default): each block becomes its one layer with bias — ``nn.Conv{d}d``,
    ``nn.ConvTranspose{d}d`` or ``nn.Linear`` (see :func:`~reparam_zoo.engine.block.deploy_layer`) —
    (+ its activation).
    ``layout="original"``: a block with an ``origin`` (:class:`Origin`) becomes what its origin says.
    Blocks made by :func:`~reparam_zoo.expand` go back to the layers they
    replaced — the original conv or Linear class without bias under its name and the original norm class
    under the norm's name, a pass-through that adds the folded bias in eval mode — so the
    original architecture loads the result with ``load_state_dict(..., strict=True)``; blocks made
    by :func:`~reparam_zoo.adopt` become their upstream's deployed form (``rbr_reparam``,
    ``reparam_conv``, ... plus the upstream's SE/activation modules), which the upstream code loads
    in its deploy mode. Other blocks fold as with ``"plain"``.
    """
    if layout not in ("plain", "original"):
        raise ValueError(f"Expected layout 'plain' or 'original' but got {layout!r}")
    blocks: dict[int, tuple[RepBlock, list[str]]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, RepBlock):
            blocks.setdefault(id(m), (m, []))[1].append(name or "<root>")
    folded: dict[int, nn.Module] = {}
    if layout == "original":
        folded.update(_fold_original(model))
    rest = [b for bid, (b, _) in blocks.items() if bid not in folded]
    live = [b for b in rest if b.mode != "deployed"]  # deployed-mode blocks: a copy of their conv
    folded.update({id(b): b.fold() for b in rest if b.mode == "deployed"})
    # the whole network in one batch (all its BatchNorms at once): the same numbers as block by block
    folded.update({id(b): b._deployed_with(w, bias) for b, (w, bias) in zip(live, fold_blocks(live))})
    report = None
    if return_report or log.isEnabledFor(logging.INFO):  # counting every parameter costs a walk per block
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
    if report is not None:
        log.info("%s", report)
    return (result, report) if return_report else result


def deployed_conv(block: RepBlock, weight: Tensor, bias: Tensor | None) -> nn.Module:
    """The block's deployed layer (its geometry and padding mode, no activation) holding ``weight``
    and ``bias`` (None: a conv without bias, for a layout that puts the bias elsewhere)."""
    conv = deploy_module(block.geometry, block.padding_mode, nn.Identity(), device=weight.device,
                         dtype=weight.dtype, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _fold_original(model: nn.Module) -> dict[int, nn.Module]:
    """id(module) -> replacement for every block that has an origin (``layout="original"``): what its
    :meth:`Origin.deployed` returns (a block at the root is asked with ``parent=None``)."""
    out: dict[int, nn.Module] = {}
    origin = getattr(model, "origin", None)
    if isinstance(model, RepBlock) and origin is not None:
        if not callable(getattr(origin, "deployed", None)):
            raise TypeError(f"a block's origin {type(origin).__name__} has no deployed(block, parent) method")
        out.update(origin.deployed(model, None))
    for parent in model.modules():
        for child in parent.children():
            origin = getattr(child, "origin", None)
            if not isinstance(child, RepBlock) or origin is None or id(child) in out:
                continue
            if not callable(getattr(origin, "deployed", None)):
                raise TypeError(f"a block's origin {type(origin).__name__} has no deployed(block, parent) method")
            out.update(origin.deployed(child, parent))
    return out
