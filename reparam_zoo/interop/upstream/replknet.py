"""RepLKNet's ``ReparamLargeKernelConv`` (DingXiaoH/RepLKNet-pytorch, replknet.py): ``lkb_origin``
(Sequential conv + bn, the large kernel) and ``small_conv`` (the same with the small kernel, or absent);
no activation (RepLKBlock applies one after it); deployed ``lkb_reparam``. RepLKNet's optional
``DepthWiseConv2dImplicitGEMM`` convs are not plain ``nn.Conv2d`` and are refused."""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import AdoptRefused, Recognised, conv_part, seq_conv_bn


@register_adopter("RepLKNet ReparamLargeKernelConv", "ReparamLargeKernelConv")
def recognise(m) -> Recognised:
    if hasattr(m, "lkb_reparam"):
        raise AdoptRefused("already merged (it holds lkb_reparam)")
    conv, bn = seq_conv_bn(getattr(m, "lkb_origin", None), "lkb_origin")
    found = Recognised.like("reparamlargekernelconv", conv, deploy="lkb_reparam")
    found.branches.append(conv_part(found, conv, bn, "lkb_origin"))
    if getattr(m, "small_conv", None) is not None:
        found.branches.append(conv_part(found, *seq_conv_bn(m.small_conv, "small_conv"), "small_conv"))
    return found
