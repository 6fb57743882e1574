"""Block-level supernets: every optional branch of a search space in one block, trained with a
gating scheme, then cut down to the branches the gates kept.

A *gate* is the part of a branch that can switch it off exactly. Three schemes, measured against
each other in ``docs/search.md``. On their own none separates: the optional branches of a block
are redundant in function with its kxk branch, so the gates shrink together. With progressive
elimination (:func:`eliminator`) the gates end exactly zero or clearly alive, the derived block
needs no retraining, and ``group-lasso`` derives the same block in every seed measured — it is
the default:

``gate-l1``
    a scalar gate after each optional branch (``gate: learnable``, the engine's ``gate`` step)
    with an L1 penalty on it. The branch's own BatchNorm sits before the gate, so its gamma can
    grow while the gate shrinks: the gates do not separate.
``group-lasso`` (offline training)
    no extra parameter: the gate of an optional branch IS the affine part of its last BatchNorm
    (gamma and beta, one group per branch). BatchNorm normalises what comes before it, so
    nothing upstream can undo a shrinking gamma; after every optimizer step a proximal
    group-lasso update (``v <- v * max(0, 1 - lr * lam * sqrt(len(v)) / ||v||)``) sets the
    group of a branch the loss does not need to exactly zero — and a branch whose last BN has
    gamma = beta = 0 contributes exactly nothing in eval mode.
``scale-lasso`` (online training)
    the branches' BatchNorms become per-channel scales and one BN follows the sum (OREPA's
    online mode); the gate is the branch's last scale vector, with the same proximal update.
    A scale has no normalisation before it: the branch's convolutions can grow back what the
    scale loses.

Every gate state folds exactly (the gates are ordinary linear steps), and a branch whose gate is
zero is removed exactly: the supernet with the dropped gates at zero computes the derived
sub-network, so "derived, no retraining" is measured on that network and on its fold.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from reparam_zoo.engine.block import RepBlock, build_block
from reparam_zoo.engine.steps import BranchGate, ChannelScale
from reparam_zoo.errors import SpecError
from reparam_zoo.registry import Registry
from reparam_zoo.search.space import CHOICE, SearchSpace, is_choice
from reparam_zoo.spec.lookup import spec_from_data
from reparam_zoo.spec.schema import BlockSpec

if TYPE_CHECKING:
    from reparam_zoo.bench.trainer import AfterStep, OnEpoch, Penalty

@dataclass(frozen=True)
class Scheme:
    """A gating scheme: what a supernet's optional branch ends in (its gate), how it trains, and how
    the gates are pushed to zero (``proximal``: group soft-thresholding after every step; otherwise an
    L1 term in the loss)."""

    name: str
    gate: Callable[[nn.Module], list[nn.Parameter] | None]  # a branch module -> its gate's parameters
    mode: str  # the RepBlock mode the supernet trains in
    spec_gate: str  # the ``gate:`` the supernet spec gives each optional branch
    proximal: bool
    default_lam: float  # measured in docs/search.md
    needs: str  # what the branch must end in (for the error)


#: gating scheme name -> :class:`Scheme` (``register_scheme`` decorates the gate finder)
SCHEMES: Registry[Scheme] = Registry("gating scheme")


def register_scheme(name: str, *, mode: str, proximal: bool, default_lam: float, needs: str,
                    spec_gate: str = "none"):
    """Register ``gate(branch_module) -> parameters or None`` as the gating scheme ``name``."""

    def wrap(gate: Callable[[nn.Module], list[nn.Parameter] | None]):
        SCHEMES.register(name, Scheme(name, gate, mode, spec_gate, proximal, default_lam, needs))
        return gate

    return wrap


def _last(module: nn.Module) -> nn.Module | None:
    return module[-1] if isinstance(module, nn.Sequential) and len(module) else None


@register_scheme("group-lasso", mode="offline", proximal=True, default_lam=0.03, needs="an affine BatchNorm")
def bn_gate(module: nn.Module) -> list[nn.Parameter] | None:
    """The affine part of the branch's last BatchNorm."""
    last = _last(module)
    return [last.weight, last.bias] if isinstance(last, nn.BatchNorm2d) and last.affine else None


@register_scheme("scale-lasso", mode="online", proximal=True, default_lam=0.1, needs="a scale (online mode)")
def scale_gate(module: nn.Module) -> list[nn.Parameter] | None:
    """The branch's last per-channel scale (online mode turns its BatchNorm into one)."""
    last = _last(module)
    return [last.weight] if isinstance(last, ChannelScale) else None


@register_scheme("gate-l1", mode="offline", proximal=False, default_lam=0.01, needs="a gate step",
                 spec_gate="learnable")
def scalar_gate(module: nn.Module) -> list[nn.Parameter] | None:
    """The branch's scalar gate step (``gate: learnable``)."""
    gate = next((m for m in module if isinstance(m, BranchGate)), None) if isinstance(module, nn.Sequential) else None
    return [gate.weight] if gate is not None else None


def _template(node: Any, gate: str) -> tuple[Any, list[bool]]:
    """The supernet template: every optional list item present (gated with ``gate`` unless
    ``none``), other choice points at their first option; and, for the top-level branch list,
    which branches are optional."""
    flags: list[bool] = []

    def walk(n: Any, top: bool) -> Any:
        if is_choice(n):
            return walk(n[CHOICE][0], False)
        if isinstance(n, Mapping):
            return {k: walk(v, top and k == "branches") for k, v in n.items()}
        if isinstance(n, list):
            out = []
            for item in n:
                if is_choice(item) and any(o is None for o in item[CHOICE]):
                    for o in item[CHOICE]:
                        if o is not None:
                            branch = walk(o, False)
                            out.append({**branch, "gate": gate} if gate != "none" else branch)
                            if top:
                                flags.append(True)
                else:
                    out.append(walk(item, False))
                    if top:
                        flags.append(False)
            return out
        return n

    return walk(node, True), flags


@dataclass(frozen=True)
class Supernet:
    """The supernet's block spec, which of its branches are optional, and how it is gated."""
    spec: BlockSpec
    optional: tuple[int, ...]  # indices into spec.branches
    scheme: str

    @property
    def mode(self) -> str:
        return SCHEMES.get(self.scheme).mode


def supernet_spec(space: SearchSpace, scheme: str = "group-lasso") -> Supernet:
    """The supernet of ``space`` under ``scheme`` (see the module docstring)."""
    if scheme not in SCHEMES:
        raise SpecError(SCHEMES.unknown_message(scheme), "scheme")
    template, flags = _template(space.template, SCHEMES.get(scheme).spec_gate)
    spec = spec_from_data({**template, "name": f"{space.name}_supernet"})
    optional = tuple(i for i, f in enumerate(flags) if f)
    if not optional:
        raise SpecError(f"the space {space.name!r} has no optional branch ({{choice: [null, ...]}}) to gate",
                        "block.branches", space.source)
    return Supernet(spec, optional, scheme)


def build_supernet(space: SearchSpace, scheme: str = "group-lasso", **geometry) -> RepBlock:
    """One supernet block at the space's reference geometry (or ``in_channels=...`` etc.)."""
    sn = supernet_spec(space, scheme)
    g = space.geometry
    kw = {"in_channels": g.in_channels, "out_channels": g.out_channels, "stride": g.stride, "groups": g.groups,
          **geometry}
    return build_block(sn.spec, kw.pop("in_channels"), kw.pop("out_channels"), mode=sn.mode, **kw)


def _branch_index(name: str) -> int:
    return int(name.split(".")[1].split("#")[0].split(":")[0])  # branches.3, branches.3#1, branches.3:axis0


def gate_groups(block: RepBlock, sn: Supernet) -> dict[str, list[nn.Parameter]]:
    """``{branch name: the parameters of its gate}`` for the optional branches of one block (the
    copies of a ``count: n`` branch, and the parts of a ``line`` with ``axis: all``, are one gate:
    ``branches.3``, not ``branches.3#0`` or ``branches.3:axis0`` ...)."""
    scheme = SCHEMES.get(sn.scheme)
    out = {}
    for module, info in zip(block.branches, block.branch_info):
        if _branch_index(info.name) not in sn.optional:
            continue
        params = scheme.gate(module)
        if params is None:
            raise SpecError(f"{sn.scheme}: the branch {info.name} ({info.spec.label()}) does not end in the gate "
                            f"this scheme needs ({scheme.needs})", info.name, block.spec.source)
        out.setdefault(f"branches.{_branch_index(info.name)}", []).extend(params)
    return out


def _blocks(model: nn.Module) -> list[RepBlock]:
    return [m for m in model.modules() if isinstance(m, RepBlock)]


def gate_value(params: list[torch.Tensor]) -> float:
    """A gate's size: the root mean square of its parameters (for a scalar gate, its absolute value)."""
    with torch.no_grad():
        v = torch.cat([p.detach().reshape(-1) for p in params])
        return float(v.pow(2).mean().sqrt())


def gate_table(model: nn.Module, sn: Supernet) -> dict[str, list[float]]:
    """``{branch name: [gate value in each block]}`` over every supernet block of ``model``."""
    table: dict[str, list[float]] = {}
    for b in _blocks(model):
        for name, params in gate_groups(b, sn).items():
            table.setdefault(name, []).append(gate_value(params))
    return table


def penalty(sn: Supernet, lam: float) -> Penalty | None:
    """The loss term of ``gate-l1`` (``lam * sum |gate|``); ``None`` for the proximal schemes."""
    if SCHEMES.get(sn.scheme).proximal or not lam:
        return None

    def l1(model: nn.Module) -> torch.Tensor:
        return lam * sum(p.abs().sum() for b in _blocks(model) for ps in gate_groups(b, sn).values() for p in ps)

    return l1


def proximal_step(sn: Supernet, lam: float) -> AfterStep | None:
    """The after-step update of the lasso schemes: group soft-thresholding of every gate with the
    step's learning rate (``None`` for ``gate-l1`` or ``lam == 0``)."""
    if not SCHEMES.get(sn.scheme).proximal or not lam:
        return None

    def step(model: nn.Module, lr: float) -> None:
        with torch.no_grad():
            for b in _blocks(model):
                for params in gate_groups(b, sn).values():
                    n = sum(p.numel() for p in params)
                    norm = math.sqrt(sum(float(p.pow(2).sum()) for p in params))
                    factor = max(0.0, 1.0 - lr * lam * math.sqrt(n) / norm) if norm > 0 else 0.0
                    for p in params:
                        p.mul_(factor)

    return step


def eliminator(sn: Supernet, top_k: int, epochs: int, log: Callable[[str], None] | None = None) -> OnEpoch:
    """The per-epoch hook of progressive elimination: after each epoch but the last, the optional
    branches with the smallest mean gate value are switched off for good (gate parameters set to
    zero and frozen), spread over the epochs so that ``top_k`` remain for the last epoch. The
    network trains on with the branches it keeps, so at the end the supernet IS the derived
    sub-network: cutting it needs no retraining."""

    if epochs < 2:
        raise SpecError("progressive elimination switches branches off between epochs: it needs --epochs 2 or "
                        "more (or --no-elimination)", "epochs")

    def on_epoch(epoch: int, model: nn.Module) -> None:
        table = {n: sum(v) / len(v) for n, v in gate_table(model, sn).items()}
        alive = sorted((n for n, v in table.items() if v > 0), key=lambda n: table[n])
        left = epochs - 1 - epoch  # epoch hooks still to come after this one
        drop = max(0, -(-(len(alive) - top_k) // max(left, 1)))  # ceil: done by the last epoch's start
        if not drop:
            return
        gone = set(alive[:drop])
        with torch.no_grad():
            for b in _blocks(model):
                for name, params in gate_groups(b, sn).items():
                    if name in gone:
                        for p in params:
                            p.zero_()
                            p.requires_grad_(False)
                            p.grad = None
        if log is not None:
            log(f"epoch {epoch + 1}: switched off " + ", ".join(f"{n} ({table[n]:.3f})" for n in sorted(gone)))

    return on_epoch


def derive(model: nn.Module, sn: Supernet, *, top_k: int | None = None, threshold: float | None = None):
    """The branches a trained supernet network keeps, and the network that computes exactly that choice.

    Ranks the optional branches by their mean gate value over the network's blocks and keeps the
    ``top_k`` largest, or those with a mean gate value above ``threshold`` (``threshold=0``: every
    branch whose gate is not exactly zero). Returns ``(derived spec, ranking, pruned)``:
    ``pruned`` is a copy of ``model`` with the dropped gates set to zero, which computes exactly
    the derived sub-network (and folds to it).
    """
    if (top_k is None) == (threshold is None):
        raise ValueError("Expected exactly one of top_k or threshold")
    table = gate_table(model, sn)
    ranking = sorted(((n, sum(v) / len(v)) for n, v in table.items()), key=lambda kv: -kv[1])
    if top_k is not None:
        keep = {n for n, _ in ranking[:top_k]}
    else:
        keep = {n for n, v in ranking if v > threshold}
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for b in _blocks(pruned):
            for name, params in gate_groups(b, sn).items():
                if name not in keep:
                    for p in params:
                        p.zero_()
    kept_index = {_branch_index(n) for n in keep}
    kept = [bs.model_copy(update={"gate": "none"}) for i, bs in enumerate(sn.spec.branches)
            if i not in sn.optional or i in kept_index]
    name = sn.spec.name.removesuffix("_supernet")
    spec = spec_from_data({**sn.spec.model_copy(update={"branches": kept}).to_dict(), "name": f"{name}_derived"})
    return spec, ranking, pruned


__all__ = ["SCHEMES", "Scheme", "Supernet", "register_scheme", "build_supernet", "derive", "eliminator", "gate_table", "gate_value", "penalty",
           "proximal_step", "supernet_spec"]
