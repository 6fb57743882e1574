"""ultralytics' ``RepConv`` (ultralytics/nn/modules/conv.py; RT-DETR's ``RepC3``, YOLOv9's ``RepBottleneck``):
``conv1`` (an ultralytics ``Conv``: ``conv`` + ``bn`` + ``act``, the act an Identity; the 3x3), ``conv2``
(the same, 1x1), ``bn`` (a BatchNorm on the input where ``bn=True``, in == out and stride 1, else None),
``act`` on the sum. ``fuse_convs()`` deploys it as ``conv`` (an ``nn.Conv2d`` with bias; ``forward_fuse`` is
``act(conv(x))``), so ``fold_model(layout="original")`` gives the keys ``conv.weight``, ``conv.bias``.

Recognised by structure; ultralytics is not imported."""

from __future__ import annotations

from torch import nn

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import AdoptRefused, Recognised, conv_part, identity_part, is_identity


def ultralytics_conv(module: nn.Module, what: str) -> tuple[nn.Module, nn.Module]:
    """``(conv, bn)`` of an ultralytics ``Conv`` (``conv`` -> ``bn`` -> ``act``) whose act is an Identity."""
    children = dict(module.named_children()) if isinstance(module, nn.Module) else {}
    if "conv" in children and "bn" not in children and set(children) <= {"conv", "act"}:
        raise AdoptRefused(f"{what} is already fused (a conv without its bn)")
    if set(children) != {"conv", "bn", "act"}:
        raise AdoptRefused(f"{what} has children {sorted(children)}, expected ultralytics' Conv (conv, bn, act)")
    if not is_identity(children["act"]):
        raise AdoptRefused(f"{what} applies {type(children['act']).__name__} inside the branch (not linear)")
    return children["conv"], children["bn"]


@register_adopter("ultralytics RepConv", "RepConv")
def recognise(m) -> Recognised:
    children = dict(m.named_children())
    if "conv" in children and "conv1" not in children:
        raise AdoptRefused("already fused (it holds conv: fuse_convs() has run)")
    if not {"conv1", "conv2", "act"} <= set(children) or set(children) - {"conv1", "conv2", "bn", "act"}:
        raise AdoptRefused(f"not ultralytics' layout (conv1, conv2, bn, act): children {sorted(children)}")
    conv, bn = ultralytics_conv(m.conv1, "conv1")
    found = Recognised.like("ultralytics_repconv", conv, post=[("act", m.act)], deploy="conv")
    found.branches.append(conv_part(found, conv, bn, "conv1"))
    found.branches.append(conv_part(found, *ultralytics_conv(m.conv2, "conv2"), "conv2"))
    if getattr(m, "bn", None) is not None:
        found.branches.append(identity_part(m.bn, "bn"))
    return found
