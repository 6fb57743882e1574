"""Finding layer -> BatchNorm pairs in any model, for :func:`~reparam_zoo.interop.expand.expand`.

The model is traced with ``torch.fx``; where it does not trace as a whole (ultralytics, a
``DataParallel`` wrapper, control flow), its largest submodules that do are traced, recursively, so
module-local units (a ``Conv2dNormActivation``, ultralytics' ``Conv``, a wrapper's ``.module``) are
still found. A pair is taken only from a graph: a layer whose output only a BatchNorm consumes, both
applied once, both children of one module. An ``nn.Sequential`` that does not trace pairs adjacent
children (its order is its dataflow).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine.steps import CONVS

LAYERS = (*CONVS, nn.Linear)
#: the state of a norm with fixed statistics and affine (torchvision's and timm's FrozenBatchNorm2d)
FIXED_STATE = {"weight", "bias", "running_mean", "running_var"}
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
        try:
            graph = _Tracer().trace(module)
        except Exception as exc:  # noqa: BLE001 - any failure to trace: its children are tried
            first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")[:160]
            untraced[path] = first or type(exc).__name__
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
