"""timm's ``MobileOneBlock`` (timm/models/byobnet.py; also FastViT's): ``conv_kxk`` (a ModuleList of
ConvNormAct, the paper's k), ``conv_scale`` (1x1 ConvNormAct, only for kernel > 1), ``identity`` (a BN,
or None), ``drop_path``, ``attn`` (SE in S4), ``act``; deployed ``reparam_conv``."""

from __future__ import annotations

from . import register_adopter
from ._build import AdoptRefused, Recognised, conv_part, identity_part
from ._timm import conv_norm, tail


@register_adopter("timm MobileOneBlock", "MobileOneBlock")
def recognise(m) -> Recognised:
    if not hasattr(m, "conv_kxk") or not hasattr(m, "conv_scale"):
        raise AdoptRefused("not timm's layout (conv_kxk, conv_scale, identity)")
    post = tail(m)
    if not len(m.conv_kxk):
        raise AdoptRefused("no conv_kxk branch")
    first = conv_norm(m.conv_kxk[0], "conv_kxk.0")
    found = Recognised.like("timm_mobileoneblock", first[0], post=post)
    for i, branch in enumerate(m.conv_kxk):
        found.branches.append(conv_part(found, *conv_norm(branch, f"conv_kxk.{i}"), f"conv_kxk.{i}"))
    if m.conv_scale is not None:
        found.branches.append(conv_part(found, *conv_norm(m.conv_scale, "conv_scale"), "conv_scale"))
    if m.identity is not None:
        found.branches.append(identity_part(m.identity, "identity"))
    return found
