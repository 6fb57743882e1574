"""What timm's byobnet blocks share: ``ConvNormAct`` branches (``conv`` + ``bn``, a
``BatchNormAct2d`` whose drop/act are identities) and the ``drop_path -> attn -> act`` tail."""

from __future__ import annotations

from torch import nn

from reparam_zoo.interop.adopt._build import AdoptRefused, is_identity


def conv_norm(module: nn.Module, what: str) -> tuple[nn.Module, nn.Module]:
    """``(conv, bn)`` of a timm ``ConvNormAct`` (refused when it anti-aliases or is something else)."""
    children = dict(module.named_children()) if module is not None else {}
    if set(children) - {"conv", "bn", "aa"} or "conv" not in children or "bn" not in children:
        raise AdoptRefused(f"{what} has children {sorted(children)}, expected conv and bn")
    if not is_identity(children.get("aa")):
        raise AdoptRefused(f"{what} applies anti-aliasing pooling after its BN")
    return children["conv"], children["bn"]


def tail(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules after the sum: ``attn`` (SE) then ``act``; an active drop_path is refused."""
    if getattr(block, "reparam_conv", None) is not None:
        raise AdoptRefused("already reparameterized (it holds reparam_conv)")
    if not is_identity(getattr(block, "drop_path", None)):
        raise AdoptRefused("stochastic depth (drop_path) on some branches is not a sum of linear branches")
    return [("attn", block.attn), ("act", block.act)]
