"""timm's ``RepVggBlock`` (timm/models/byobnet.py): ``conv_kxk`` and ``conv_1x1`` (ConvNormAct),
``identity`` (a BN, or None), ``drop_path``, ``attn``, ``act``; deployed ``reparam_conv``."""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt._build import Recognised, conv_part, identity_part
from reparam_zoo.interop.adopt._timm import conv_norm, tail


@register_adopter("timm RepVggBlock", "RepVggBlock")
def recognise(m) -> Recognised:
    post = tail(m)
    conv, bn = conv_norm(m.conv_kxk, "conv_kxk")
    found = Recognised.like("timm_repvggblock", conv, post=post, deploy="reparam_conv")
    found.branches.append(conv_part(found, conv, bn, "conv_kxk"))
    found.branches.append(conv_part(found, *conv_norm(m.conv_1x1, "conv_1x1"), "conv_1x1"))
    if m.identity is not None:
        found.branches.append(identity_part(m.identity, "identity"))
    return found
