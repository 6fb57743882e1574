"""timm's ``MobileOneBlock``: byobnet's (timm/models/byobnet.py: ``conv_kxk`` (a ModuleList of
ConvNormAct, the paper's k), ``conv_scale`` (1x1 ConvNormAct, only for kernel > 1), ``identity`` (a BN,
or None), ``drop_path``, ``attn`` (SE in S4), ``act``) and FastViT's (timm/models/fastvit.py: the same
branches, ``conv_kxk`` possibly None, then ``se`` and ``act``); deployed ``reparam_conv``."""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt._build import AdoptRefused, Recognised, conv_part, identity_part
from reparam_zoo.interop.adopt._timm import conv_norm, tail


@register_adopter("timm MobileOneBlock", "MobileOneBlock")
def recognise(m) -> Recognised:
    if not hasattr(m, "conv_kxk") or not hasattr(m, "conv_scale"):
        raise AdoptRefused("not timm's layout (conv_kxk, conv_scale, identity)")
    if hasattr(m, "attn"):  # byobnet: drop_path -> attn -> act
        post = tail(m)
    else:  # fastvit: se -> act
        if getattr(m, "reparam_conv", None) is not None:
            raise AdoptRefused("already reparameterized (it holds reparam_conv)")
        post = [("se", m.se), ("act", m.act)]
    convs = list(m.conv_kxk) if m.conv_kxk is not None else []
    if convs:
        found = Recognised.like("timm_mobileoneblock", conv_norm(convs[0], "conv_kxk.0")[0], post=post,
                                deploy="reparam_conv")
    elif m.identity is not None:  # fastvit's RepMixer norm: the BN skip alone, as a kxk depthwise conv
        k = m.kernel_size
        found = Recognised("timm_mobileoneblock", m.in_chs, m.out_chs, (k, k), (1, 1), (k // 2, k // 2),
                           groups=m.groups, post=post, deploy="reparam_conv")
    else:
        raise AdoptRefused("no conv_kxk branch and no identity")
    for i, branch in enumerate(convs):
        found.branches.append(conv_part(found, *conv_norm(branch, f"conv_kxk.{i}"), f"conv_kxk.{i}"))
    if m.conv_scale is not None:
        found.branches.append(conv_part(found, *conv_norm(m.conv_scale, "conv_scale"), "conv_scale"))
    if m.identity is not None:
        found.branches.append(identity_part(m.identity, "identity"))
    return found
