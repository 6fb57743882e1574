"""Finding layer -> BatchNorm pairs in any model, for :func:`~reparam_zoo.interop.expand.expand`.

The model is traced with ``torch.fx``; where it does not trace as a whole (ultralytics, a
``DataParallel`` wrapper, control flow), its largest submodules that do are traced, recursively, so
module-local units (a ``Conv2dNormActivation``, ultralytics' ``Conv``, a wrapper's ``.module``) are
still found. A pair is taken only from a graph: a layer whose output only a BatchNorm consumes, both
applied once, both children of one module. An ``nn.Sequential`` that does not trace pairs adjacent
children (its order is its dataflow).
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine.steps import CONVS

LAYERS = (*CONVS, nn.Linear)
#: the state of a norm with fixed statistics and affine (torchvision's and timm's FrozenBatchNorm2d)
FIXED_STATE = {"weight", "bias", "running_mean", "running_var"}
#: per layer class: the block's ``dims`` and the BatchNorm class of the same number of spatial axes
DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3, nn.Linear: 0}
NORM_OF = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d,
            nn.Linear: nn.BatchNorm1d}


UNCALLED = "it is never called as a module on the torch.fx graph (its parent uses its weight, or is a leaf)"


class _Tracer(torch.fx.Tracer):
    """Keeps every conv, Linear and norm a leaf (timm's BatchNormAct2d would otherwise be traced through)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LAYERS) or is_norm(m) or super().is_leaf_module(m, qualname)


def is_fixed_norm(m: nn.Module) -> bool:
    """A norm with fixed statistics and affine, by its state: no parameters, no children, the buffers
    ``weight``, ``bias``, ``running_mean``, ``running_var`` (and maybe ``num_batches_tracked``) and a float
    ``eps`` (torchvision's and timm's ``FrozenBatchNorm2d``). Whether it computes a BatchNorm with them is
    probed by :func:`~reparam_zoo.interop.expand.expand` before it pairs."""
    if isinstance(m, _BatchNorm) or next(m.parameters(recurse=False), None) is not None or \
            next(m.children(), None) is not None or not isinstance(getattr(m, "eps", None), float):
        return False
    return {n for n, _ in m.named_buffers(recurse=False)} - {"num_batches_tracked"} == FIXED_STATE


def is_norm(m: nn.Module) -> bool:
    """A BatchNorm (any ``_BatchNorm``, timm's ``BatchNormAct2d`` too) or a norm with fixed statistics."""
    return isinstance(m, _BatchNorm) or is_fixed_norm(m)


def split_path(path: str) -> tuple[str, str]:
    """``"a.b.c"`` -> ``("a.b", "c")``; ``"c"`` -> ``("", "c")``."""
    return (path.rsplit(".", 1)[0], path.rsplit(".", 1)[1]) if "." in path else ("", path)


def layer_kind(layer: nn.Module) -> str:
    return "Linear" if isinstance(layer, nn.Linear) else "conv"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def find_conv_bn_pairs(model: nn.Module) -> tuple[dict[str, str], dict[str, str], dict[str, str], list[str]]:
    """``({layer path: norm path}, {layer path: why not}, {subtree path: why it did not trace}, [the subtrees
    traced])``: convs
    (1-D, 2-D, 3-D) and Linear layers whose output only a BatchNorm consumes, found on the torch.fx graph
    of the largest traceable subtrees (``""`` is the whole model; whether the norm's dims match the
    layer's is :func:`~reparam_zoo.interop.expand.expand`'s check)."""
    modules = dict(model.named_modules())
    pairs: dict[str, str] = {}
    why: dict[str, str] = {}
    untraced: dict[str, str] = {}
    traced: list[str] = []

    def visit(path: str, module: nn.Module) -> None:
        if type(module).forward is nn.Module.forward:  # a ModuleList/ModuleDict: nothing to trace, only children
            for name, child in module.named_children():
                if not isinstance(child, LAYERS) and not is_norm(child):
                    visit(_join(path, name), child)
            return
        saved = {m: dict(vars(m)) for m in module.modules()}  # a forward may set attributes while traced
        try:
            graph, error = _Tracer().trace(module), None
        except Exception as exc:  # noqa: BLE001 - any failure to trace: its children are tried
            graph, error = None, exc
        for m, attributes in saved.items():  # ... as Proxies: the model is left as it was
            vars(m).clear()
            vars(m).update(attributes)
        if graph is None:
            first = (str(error).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")[:160]
            untraced[path] = first or type(error).__name__
            if type(module) is nn.Sequential:  # a subclass may override forward: its order is not the dataflow
                children = list(module.named_children())
                for (cname, conv), (bname, bn) in zip(children, children[1:]):
                    if isinstance(conv, LAYERS) and is_norm(bn):
                        pairs[_join(path, cname)] = _join(path, bname)
            for name, child in module.named_children():
                if not isinstance(child, LAYERS) and not is_norm(child):
                    visit(_join(path, name), child)
            return
        traced.append(path)
        _graph_pairs(graph, path, modules, pairs, why)

    visit("", model)
    for path, m in modules.items():
        if isinstance(m, LAYERS) and path not in pairs and path not in why:
            why[path] = ("its parent did not trace with torch.fx (and is not an nn.Sequential with a BatchNorm "
                         "after it)")
    return _unshared(model, pairs, why), why, untraced, traced


def _graph_pairs(graph, prefix: str, modules: dict, pairs: dict, why: dict) -> None:
    """The pairs of one traced subtree (``prefix``: its path; node targets are relative to it)."""
    calls = Counter(_join(prefix, node.target) for node in graph.nodes if node.op == "call_module")
    sub = {p: m for p, m in modules.items() if p == prefix or p.startswith(f"{prefix}.") or not prefix}
    why.update({p: UNCALLED for p, m in sub.items() if isinstance(m, LAYERS) and p not in calls})
    for node in graph.nodes:
        target = _join(prefix, node.target) if node.op == "call_module" else None
        if target is None or not isinstance(modules.get(target), LAYERS):
            continue
        users = list(node.users)
        bn = users[0] if len(users) == 1 else None
        bn_target = _join(prefix, bn.target) if bn is not None and bn.op == "call_module" else None
        if bn_target is None or not is_norm(modules.get(bn_target, nn.Module())):
            why[target] = "its output is not consumed by a BatchNorm alone"
        elif calls[target] != 1 or calls[bn_target] != 1:
            why[target] = f"the {layer_kind(modules[target])} or its BatchNorm is applied more than once"
        elif bn.args[0] is not node or len(bn.args) != 1 or bn.kwargs:
            why[target] = "its BatchNorm is called with other arguments"
        elif split_path(target)[0] != split_path(bn_target)[0]:
            why[target] = f"the {layer_kind(modules[target])} and its BatchNorm are children of different modules"
        else:
            pairs[target] = bn_target


def _unshared(model: nn.Module, pairs: dict[str, str], why: dict[str, str]) -> dict[str, str]:
    """Drop pairs whose layer or BN object is registered at more than one place (shared weights)."""
    seen = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    modules = dict(model.named_modules(remove_duplicate=False))
    kept = {}
    for conv, bn in pairs.items():
        if seen[id(modules[conv])] > 1 or seen[id(modules[bn])] > 1:
            why[conv] = f"the {layer_kind(modules[conv])} or its BatchNorm is shared (registered at several places)"
        else:
            kept[conv] = bn
    return kept


# ----------------------------------------------------------------------------- which norms pair


def base_class(layer: nn.Module) -> type[nn.Module]:
    """The torch class among ``Conv1d/2d/3d``, ``Linear`` that ``layer`` is (an instance of)."""
    return next(cls for cls in LAYERS if isinstance(layer, cls))


def _probe(layer: nn.Module, norm: nn.Module) -> tuple[str | None, bool]:
    """``(why not, frozen)`` for a norm whose forward is not torch's BatchNorm's (a norm with fixed
    statistics, :func:`~reparam_zoo.interop.pairs.is_fixed_norm`, or a BatchNorm subclass with its own forward):
    probed in float64 on a copy, on an input of the layer's output rank, it must compute the BatchNorm of its
    state with its running statistics in eval mode, and in training mode with the batch's statistics
    (``frozen`` False) or its running ones (``frozen`` True: a FrozenBatchNorm2d). Anything else is not
    paired (a FrozenBatchNorm2d after a Conv1d, whose reshape is 2-D, neither)."""
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    state = {n: getattr(norm, n) for n in sorted(FIXED_STATE)}
    if any(not isinstance(t, Tensor) or t.shape != (out,) for t in state.values()):
        return f"its {type(norm).__name__}'s statistics are not {out} per-channel values, one per output", False
    rm, rv, w, b = (state[n].detach().to(torch.float64) for n in ("running_mean", "running_var", "weight", "bias"))
    x = torch.randn(2, out, *([3] * DIMS[base_class(layer)]), dtype=torch.float64, device=rm.device)
    wants = {"running": F.batch_norm(x, rm, rv, w, b, False, 0.0, norm.eps),
             "batch": F.batch_norm(x, rm.clone(), rv.clone(), w, b, True, 0.0, norm.eps)}
    probe, modes = copy.deepcopy(norm).to(torch.float64), {}
    for train in (False, True):
        try:
            with torch.no_grad():
                got = probe.train(train)(x)
        except Exception:  # noqa: BLE001 - whatever it does instead, it is not a BatchNorm
            got = None
        modes[train] = next((mode for mode, want in wants.items() if isinstance(got, Tensor) and got.shape ==
                             want.shape and (got - want).abs().max().item() <= 1e-9 * max(1.0, want.abs().max().item())),
                            None)
    if modes[False] != "running" or modes[True] is None:
        mode = "eval" if modes[False] != "running" else "training"
        return (f"its {type(norm).__name__} does not compute a BatchNorm of its statistics on the "
                f"{layer_kind(layer)}'s output in {mode} mode"), False
    return None, modes[True] == "running"


def norm_check(layer: nn.Module, norm: nn.Module) -> tuple[str | None, bool]:
    """``(why the norm cannot pair with the layer, whether its statistics are frozen in training)``."""
    if is_fixed_norm(norm):
        return _probe(layer, norm)
    if not norm.track_running_stats or norm.running_var is None:
        return "its BatchNorm has no running statistics (cannot fold)", False
    if not norm.affine:
        return "its BatchNorm has no affine parameters (affine=False), which the blocks' BNs have", False
    want = NORM_OF[base_class(layer)]
    if isinstance(norm, tuple(set(NORM_OF.values()) - {want})):
        return (f"its norm {type(norm).__name__} does not match the {base_class(layer).__name__} "
                f"(a {DIMS[base_class(layer)]}-D block's BN is a {want.__name__})"), False
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if norm.num_features != out:
        return (f"its BatchNorm normalises {norm.num_features} channels but the layer gives {out} "
                "(a Linear on (N, L, C) inputs?)"), False
    extra = {n for n, _ in norm.named_children()}
    if extra and (type(norm) in (*NORM_OF.values(), nn.SyncBatchNorm) or not extra <= {"drop", "act"}):
        return f"its norm {type(norm).__name__} has children {sorted(extra)} of unknown order", False
    if not extra and type(norm).forward not in (_BatchNorm.forward, nn.SyncBatchNorm.forward):
        return _probe(layer, norm)  # a subclass with its own forward: which statistics does it use in training?
    return None, False
