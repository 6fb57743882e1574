"""Fold whole networks: every ``RepBlock`` becomes one conv (+ its activation)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from reparam_zoo.engine.block import RepBlock, deploy_module
from reparam_zoo.engine.fastfold import fold_blocks, fold_weights

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


def fold_model(model: nn.Module, inplace: bool = False, *, return_report: bool = False,
               layout: str = "plain"):
    """Replace every :class:`RepBlock` in ``model`` by its folded conv.

    Returns a NEW module (``inplace=False``, the default: ``model`` keeps its weights,
    dtype and device) or ``model`` itself with its blocks replaced (``inplace=True``).
    A block used at two places becomes one folded module used at both. Folding a
    folded model changes nothing. With ``return_report=True`` returns
    ``(module, FoldReport)``.

    ``layout="plain"`` (default): each block becomes ``nn.Conv2d`` with bias (+ its activation).
    ``layout="original"``: blocks made by :func:`~reparam_zoo.expand` go back to the layers they
    replaced — an ``nn.Conv2d`` without bias under the conv's name and the original norm class
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


def _conv(block: RepBlock, weight, bias) -> nn.Conv2d:
    """The block's deployed conv holding ``weight`` (and ``bias``; None: a conv without bias)."""
    conv = deploy_module(block.geometry, block.padding_mode, nn.Identity(), device=weight.device,
                         dtype=weight.dtype, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _upstream_deployed(block: RepBlock, origin) -> nn.Module:
    """An adopted block in its upstream's deployed form (conv named as upstream, kept BN, SE, act)."""
    from reparam_zoo.interop.adopt._build import UpstreamDeployed

    with torch.no_grad():
        norm = None
        if origin.norm is not None and block.norm_after is not None:  # QARepVGG keeps its BN when deployed
            weight, bias = fold_weights(block, norm_after=False)
            norm = copy.deepcopy(block.norm_after)
        else:
            weight, bias = fold_weights(block)  # the same numbers as layout="plain"
        conv = _conv(block, weight, bias)
    post = tuple((name, copy.deepcopy(m)) for name, m in origin.post)
    module = UpstreamDeployed(origin.deploy, conv, origin.norm if norm is not None else None, norm, post)
    return module.train(block.training)


def _fold_original(model: nn.Module) -> dict[int, nn.Module]:
    """id(module) -> replacement for every expanded block and its absorbed norm, and every adopted block
    (with its wrapper of upstream SE/activation modules) in its upstream's deployed form (``layout="original"``)."""
    from reparam_zoo.interop.adopt._build import AdoptedBlock, AdoptedFrom
    from reparam_zoo.interop.expand import AbsorbedNorm

    out: dict[int, nn.Module] = {}
    for parent in model.modules():
        for child in parent.children():
            origin = getattr(child, "origin", None)
            if not isinstance(child, RepBlock) or origin is None or id(child) in out:
                continue
            if isinstance(origin, AdoptedFrom):
                wrapped = isinstance(parent, AdoptedBlock) and parent[0] is child
                out[id(parent if wrapped else child)] = _upstream_deployed(child, origin)
                out[id(child)] = out[id(parent if wrapped else child)]
                continue
            if origin.norm is None:  # a lone biased conv: the block's own fold (a biased conv, no act)
                out[id(child)] = child.fold()
                continue
            slot = getattr(parent, origin.norm, None)
            if not isinstance(slot, AbsorbedNorm):
                raise ValueError(f"an expanded block's norm slot {origin.norm!r} holds a {type(slot).__name__}, "
                                 "not the AbsorbedNorm that expand() left there")
            with torch.no_grad():
                weight, bias = fold_weights(child)
                conv = _conv(child, weight, None)
            norm = slot.restore(bias)
            conv.train(child.training)
            norm.train(child.training)
            out[id(child)], out[id(slot)] = conv, norm
    return out
