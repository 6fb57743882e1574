"""The research repos' ``conv_bn``: an ``nn.Sequential`` with children ``conv`` and ``bn``."""

from __future__ import annotations

from torch import nn

from reparam_zoo.interop.adopt._build import AdoptRefused


def seq_conv_bn(module: nn.Module, what: str) -> tuple[nn.Module, nn.Module]:
    children = dict(module.named_children()) if module is not None else {}
    if set(children) != {"conv", "bn"}:
        raise AdoptRefused(f"{what} has children {sorted(children)}, expected conv and bn")
    return children["conv"], children["bn"]
