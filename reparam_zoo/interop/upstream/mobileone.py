"""Apple's MobileOne (apple/ml-mobileone, mobileone.py). ``MobileOneBlock``: ``rbr_conv`` (a ModuleList
of k Sequential conv + bn), ``rbr_scale`` (1x1 conv + bn, only for kernel > 1), ``rbr_skip`` (a BN where
in == out and stride 1, else None), ``se`` (Identity or SEBlock), ``activation``; deployed
``reparam_conv``. Stems, depthwise kxk and pointwise 1x1 blocks are all this class.

Its checkpoints (format ``mobileone``): blocks ``stage0``, ``stage1.0`` ... with ``rbr_conv.{i}.conv/bn``
(k branches), ``rbr_scale.conv/bn`` (kernel > 1 only), ``rbr_skip`` (a BN, where in == out and stride 1);
deployed ``reparam_conv``; head ``linear``. Renames are computed per block from the model's block (any k,
stems, depthwise and pointwise blocks). Nets: ``mobileone_s0`` ... ``s3``; block spec ``mobileone``."""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import AdoptRefused, Recognised, conv_part, identity_part, seq_conv_bn
from reparam_zoo.interop.checkpoints import FORMATS
from reparam_zoo.interop.checkpoints.renames import adapt_blocks, branch_renames


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


TRAIN = branch_renames("rbr_conv.", "rbr_scale.", "rbr_skip.")
DEPLOY = {"reparam_conv.": "conv."}


@FORMATS.register("mobileone")
def adapt(state, model):
    return adapt_blocks(state, model, "MobileOne", TRAIN, DEPLOY)
