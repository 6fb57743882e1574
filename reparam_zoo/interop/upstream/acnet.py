"""ACNet's ``ACBlock`` (DingXiaoH/ACNet, acnet/acb.py): ``square_conv`` + ``square_bn`` (kxk),
``ver_conv`` + ``ver_bn`` (kx1), ``hor_conv`` + ``hor_bn`` (1xk), an optional ``last_bn`` on the sum;
no activation; deployed ``fused_conv``. Where ``padding < k // 2`` the official code crops the
input of the asymmetric convs (``crop``; older versions ``ver_conv_crop_layer``/``hor_conv_crop_layer``):
refused here.

Its checkpoints (format ``acnet``): ``square_conv/bn``, ``hor_conv/bn``, ``ver_conv/bn``; deployed
``fused_conv``. Spec: ``acb``."""

from __future__ import annotations

from torch import nn

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import AdoptRefused, Recognised, conv_part
from reparam_zoo.interop.checkpoints import FORMATS
from reparam_zoo.interop.checkpoints.renames import adapt_blocks, conv_bn


@register_adopter("ACNet ACBlock", "ACBlock")
def recognise(m) -> Recognised:
    if hasattr(m, "fused_conv"):
        raise AdoptRefused("already deployed (it holds fused_conv)")
    for name in ("square_conv", "square_bn", "ver_conv", "ver_bn", "hor_conv", "hor_bn"):
        if not isinstance(getattr(m, name, None), nn.Module):
            raise AdoptRefused(f"no {name}: not the official ACBlock layout")
    if getattr(m, "crop", 0):
        raise AdoptRefused(f"the asymmetric convs see a cropped input (crop={m.crop}, padding < kernel // 2)")
    for name in ("ver_conv_crop_layer", "hor_conv_crop_layer"):
        crop = getattr(m, name, None)
        if crop is not None and not isinstance(crop, nn.Identity):
            raise AdoptRefused(f"{name} crops the input (padding < kernel // 2): not supported")
    found = Recognised.like("acblock", m.square_conv, norm_after=getattr(m, "last_bn", None),
                            deploy="fused_conv")
    found.branches.append(conv_part(found, m.square_conv, m.square_bn, "square"))
    found.branches.append(conv_part(found, m.ver_conv, m.ver_bn, "ver"))
    found.branches.append(conv_part(found, m.hor_conv, m.hor_bn, "hor"))
    return found


TRAIN = {**conv_bn("square_conv.", "square_bn.", 0), **conv_bn("hor_conv.", "hor_bn.", 1),
         **conv_bn("ver_conv.", "ver_bn.", 2)}
DEPLOY = {"fused_conv.": "conv."}


@FORMATS.register("acnet")
def adapt(state, model):
    return adapt_blocks(state, model, "ACNet", TRAIN, DEPLOY)
