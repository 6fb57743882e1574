"""timm's ``ReparamLargeKernelConv`` (timm/models/fastvit.py, FastViT's RepLKNet-style conv):
``large_conv`` and ``small_conv`` (ConvNormAct; the small one may be absent), then ``se`` and
``act``; deployed ``reparam_conv``. (RepLKNet's own class of the same name: ``replknet.py``.)"""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt._build import AdoptRefused, Recognised, conv_part
from reparam_zoo.interop.adopt._timm import conv_norm


@register_adopter("timm ReparamLargeKernelConv", "ReparamLargeKernelConv")
def recognise(m) -> Recognised:
    if getattr(m, "reparam_conv", None) is not None:
        raise AdoptRefused("already reparameterized (it holds reparam_conv)")
    conv, bn = conv_norm(getattr(m, "large_conv", None), "large_conv")
    found = Recognised.like("timm_reparamlargekernelconv", conv, post=[("se", m.se), ("act", m.act)],
                            deploy="reparam_conv")
    found.branches.append(conv_part(found, conv, bn, "large_conv"))
    if getattr(m, "small_conv", None) is not None:
        found.branches.append(conv_part(found, *conv_norm(m.small_conv, "small_conv"), "small_conv"))
    return found
