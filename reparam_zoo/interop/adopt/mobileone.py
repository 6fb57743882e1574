"""Apple's ``MobileOneBlock`` (apple/ml-mobileone, mobileone.py): ``rbr_conv`` (a ModuleList of k
Sequential conv + bn), ``rbr_scale`` (1x1 conv + bn, only for kernel > 1), ``rbr_skip`` (a BN where in ==
out and stride 1, else None), ``se`` (Identity or SEBlock), ``activation``; deployed ``reparam_conv``.
Stems, depthwise kxk and pointwise 1x1 blocks are all this class."""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt._build import AdoptRefused, Recognised, conv_part, identity_part
from reparam_zoo.interop.adopt._seq import seq_conv_bn


@register_adopter("Apple MobileOneBlock", "MobileOneBlock")
def recognise(m) -> Recognised:
    if getattr(m, "reparam_conv", None) is not None:
        raise AdoptRefused("already reparameterized (it holds reparam_conv)")
    if not hasattr(m, "rbr_conv") or not len(m.rbr_conv):
        raise AdoptRefused("not Apple's layout (rbr_conv, rbr_scale, rbr_skip)")
    first = seq_conv_bn(m.rbr_conv[0], "rbr_conv.0")
    found = Recognised.like("mobileoneblock", first[0], post=[("se", m.se), ("activation", m.activation)],
                            deploy="reparam_conv")
    for i, branch in enumerate(m.rbr_conv):
        found.branches.append(conv_part(found, *seq_conv_bn(branch, f"rbr_conv.{i}"), f"rbr_conv.{i}"))
    if getattr(m, "rbr_scale", None) is not None:
        found.branches.append(conv_part(found, *seq_conv_bn(m.rbr_scale, "rbr_scale"), "rbr_scale"))
    if getattr(m, "rbr_skip", None) is not None:
        found.branches.append(identity_part(m.rbr_skip, "rbr_skip"))
    return found
