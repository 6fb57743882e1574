"""Gradient re-parameterization (RepOptimizer; Ding et al., ICLR 2023) derived from any block in CSLA form.

A block whose every branch is linear in ONE trainable conv weight ``W_b`` times constant per-output-channel
scales ``s_b`` (``norm: {type: scale, learnable: false}``), placed into the block's window by ``P_b``, plus
constant branches (an identity times a constant scale), computes the conv
``W = sum_b s_b * P_b(W_b) + C``. SGD with momentum ``mu`` and weight decay ``lam`` on the branch weights
moves ``W`` exactly as SGD on ``W`` whose gradient is multiplied elementwise by ``M = sum_b s_b^2 * P_b(1)``
and whose weight decay pulls toward ``C`` instead of 0 (docs/math.md §16). ``M``, ``C`` and the initial
``W`` come from the fold itself: the block is folded three times, as it is (``W``), with every trainable
weight 1 and every scale squared and the constant branches off (``M``), and with every trainable weight 0
(``C``) — no per-block code. Adam-type optimizers are outside the equivalence.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from reparam_zoo.engine.block import RepBlock
from reparam_zoo.engine.fastfold import fold_weights
from reparam_zoo.engine.steps import CONVS, ChannelScale
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.lookup import spec_from_data, with_constant_scales


def _csla_parts(block: RepBlock) -> list[tuple[nn.Module | None, list[ChannelScale]]]:
    """Per branch: its one trainable conv (None: a constant branch) and its constant scales; refuses, naming
    the branch and the rule, every branch that is not linear in one trainable weight with constant scales."""
    if block.mode != "offline" or block.geometry.transposed:
        raise SpecError(f"RepOptimizer needs an offline, non-transposed block; got mode {block.mode!r}"
                        f"{' (transposed)' if block.geometry.transposed else ''}")
    parts = []
    for chain, info in zip(block.branches, block.branch_info):
        where = f"{info.name} ({info.spec.label()})"
        steps = list(chain)
        convs = [m for m in steps if type(m) in CONVS]
        scales = [m for m in steps if isinstance(m, ChannelScale)]
        others = [m for m in steps if m not in convs and m not in scales and not isinstance(m, nn.Identity)]
        trainable = [p for m in steps for p in m.parameters()]
        if others:
            names = sorted({type(m).__name__ for m in others})
            raise SpecError(f"{where}: {', '.join(names)} inside the branch is not linear in one weight with "
                            "constant scales (RepOptimizer's equivalence: a conv, then norm: {type: scale, "
                            "learnable: false} or none)", info.name)
        if len(convs) > 1 or any(s.weight.requires_grad for s in scales):
            raise SpecError(f"{where}: {'a chain of convs' if len(convs) > 1 else 'a learnable scale'} is not "
                            "linear in one weight with constant scales (RepOptimizer's equivalence)", info.name)
        if convs and (convs[0].bias is not None or trainable != [convs[0].weight]):
            raise SpecError(f"{where}: its conv has a bias or parameterisation; RepOptimizer's equivalence needs "
                            "one plain weight per branch", info.name)
        parts.append((convs[0] if convs else None, scales))
    return parts


def csla_terms(block: RepBlock) -> tuple[Tensor, Tensor, Tensor]:
    """``(W, M, C)`` in float64 and in the deployed layer's layout: the block's conv without ``norm_after``,
    the gradient multiplier and the constant the weight decay pulls toward."""
    parts = _csla_parts(block)
    probes = {}
    for name in ("W", "M", "C"):
        probe = copy.deepcopy(block).double()
        with torch.no_grad():
            for (conv, scales), (conv_p, scales_p) in zip(parts, _csla_parts(probe)):
                if name == "M":
                    for s in scales_p:
                        s.weight.mul_(s.weight)
                    if conv_p is None:  # a constant branch has no weight to move
                        for s in scales_p:
                            s.weight.zero_()
                        if not scales_p:
                            info = block.branch_info[[c for c, _ in parts].index(conv)]
                            raise SpecError(f"{info.name} ({info.spec.label()}): a constant branch without a "
                                            "scale cannot be switched off to probe the multiplier; give it "
                                            "norm: {type: scale, learnable: false}", info.name)
                    else:
                        conv_p.weight.fill_(1.0)
                elif name == "C" and conv_p is not None:
                    conv_p.weight.zero_()
        weight, bias = fold_weights(probe, norm_after=False)
        if name == "W" and bias.abs().max().item() != 0.0:  # CSLA branches add no constant: the plain layer has no bias
            raise SpecError("the block's branches add a bias, which RepOptimizer's plain layer has no place for")
        probes[name] = weight
    return probes["W"], probes["M"], probes["C"]


class RepOptSGD(torch.optim.SGD):
    """torch's SGD (momentum buffer ``v = mu v + d``, dampening 0, optional Nesterov; its multi-tensor update) on
    a plain network, where ``d = M * grad + wd * (W - C)`` for the weights of :func:`repopt` (``terms``: parameter
    -> ``(M, C)``) and ``d = grad + wd * W`` for every other parameter: before torch's step, those weights'
    gradients are replaced in place by ``M * grad - wd * C`` (torch adds ``wd * W``). LR schedulers, momentum
    schedules (OneCycleLR) and ``state_dict`` work as on SGD."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, *, terms: dict | None = None):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"Expected lr, momentum and weight_decay >= 0 but got {lr}, {momentum}, {weight_decay}")
        if nesterov and momentum <= 0:
            raise ValueError("Expected momentum > 0 for Nesterov momentum but got 0")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        self.terms = dict(terms or {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["maximize"] or group["dampening"]:
                raise ValueError("Expected maximize=False and dampening=0: RepOptimizer's equivalence is for "
                                 "SGD descending with undampened momentum")
            for p in group["params"]:
                if p.grad is not None and p in self.terms:
                    multiplier, constant = self.terms[p]
                    if multiplier.device != p.device or multiplier.dtype != p.dtype:  # the net moved after repopt()
                        multiplier, constant = self.terms[p] = (multiplier.to(p), constant.to(p))
                    p.grad.mul_(multiplier)
                    if group["weight_decay"]:
                        p.grad.sub_(constant, alpha=group["weight_decay"])
        super().step()
        return loss


def freeze_scales(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose blocks' learnable scales are constants with their current values (and whose
    specs say ``learnable: false``): the RepOptimizer hyper-search — train the CSLA blocks with learnable
    scales briefly on the task (or take a trained multi-branch model's), freeze, then :func:`repopt`."""
    model = copy.deepcopy(model)
    for block in [m for m in model.modules() if isinstance(m, RepBlock)]:
        for chain, info in zip(block.branches, block.branch_info):  # a branch's norm, not its seq steps
            last = list(chain)[-1] if len(chain) else None
            if info.spec.norm.type == "scale" and isinstance(last, ChannelScale) and last.weight.requires_grad:
                w = last.weight.detach()
                constant = ChannelScale(w.numel(), learnable=False, dtype=w.dtype, device=w.device)
                with torch.no_grad():
                    constant.weight.copy_(w)
                chain[len(chain) - 1] = constant
        block.spec = with_constant_scales(block.spec)
    return model


def _plain_block(block: RepBlock) -> RepBlock:
    """The block's plain form: ONE conv branch filling its window (no norm, no bias), then the block's own
    ``norm_after`` (the same module, its state kept) and activation — a one-branch RepBlock, so that
    :func:`~reparam_zoo.engine.fold.fold_model` folds the trained plain net (its BatchNorm into the conv)."""
    g = block.geometry
    spec = {"name": f"{block.spec.name}_plain", "kernel": list(g.kernel), "dilation": list(g.dilation),
            "padding": list(g.padding), "padding_mode": block.padding_mode, "act": block.spec.act,
            "description": f"the plain layer RepOptimizer trains for {block.spec.name}",
            "norm_after": block.spec.to_dict().get("norm_after", "none"),
            "branches": [{"type": "conv", "kernel": list(g.kernel), "dilation": list(g.dilation), "norm": "none"}]}
    anchor = next(t for t in (*block.parameters(), *block.buffers()) if t.is_floating_point())
    dtype, device = anchor.dtype, anchor.device
    layer = RepBlock(spec_from_data(spec, block.spec.source), g.in_channels, g.out_channels, stride=g.stride,
                     groups=g.groups, dims=g.dims).to(dtype=dtype, device=device)
    layer.norm_after, layer.act = block.norm_after, block.act
    return layer.train(block.training)


def repopt(model: nn.Module, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
           nesterov: bool = False) -> tuple[nn.Module, RepOptSGD]:
    """``(plain, optimizer)``: a copy of ``model`` in which every RepBlock (in CSLA form) is its one layer
    (weight ``W``, no bias) followed by the block's own ``norm_after`` and activation — a one-branch RepBlock
    (``block.branches[0][0].weight`` is ``W``; ``fold_model(plain)`` deploys it) — and a
    :class:`RepOptSGD` on all of it whose steps follow the multi-branch model's SGD trajectory (same lr,
    momentum, weight decay, nesterov) exactly; everything else in the model is trained as by plain SGD."""
    plain = copy.deepcopy(model)
    terms = {}
    targets = [plain] if isinstance(plain, RepBlock) else []
    targets += [m for m in plain.modules() if isinstance(m, RepBlock) and m is not plain]
    replaced = {}
    for block in targets:
        trains = {c.weight.requires_grad for c, _ in _csla_parts(block) if c is not None}
        if len(trains) > 1:
            raise SpecError("some branch weights of a block are frozen (requires_grad=False) and others not: the "
                            "plain layer cannot be half frozen; freeze the whole block or none of it")
        w, mult, const = csla_terms(block)
        layer = _plain_block(block)
        weight = layer.branches[0][0].weight  # the engine's conv layout (a Linear block's W gains its axis)
        with torch.no_grad():
            weight.copy_(w.reshape(weight.shape))
        weight.requires_grad_(trains != {False})  # a frozen stage stays frozen
        terms[weight] = (mult.reshape(weight.shape).to(weight.dtype), const.reshape(weight.shape).to(weight.dtype))
        replaced[id(block)] = layer
    if id(plain) in replaced:
        plain = replaced[id(plain)]
    else:
        for parent in list(plain.modules()):
            for name, child in list(parent.named_children()):
                if id(child) in replaced:
                    setattr(parent, name, replaced[id(child)])
    return plain, RepOptSGD(plain.parameters(), lr, momentum, weight_decay, nesterov, terms=terms)


__all__ = ["RepOptSGD", "csla_terms", "freeze_scales", "repopt"]
