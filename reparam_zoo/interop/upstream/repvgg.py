"""RepVGG: ``RepVGGBlock`` of the official RepVGG (DingXiaoH/RepVGG, repvgg.py) and of YOLOv6
(yolov6/layers/common.py), which share the layout: ``rbr_dense`` and ``rbr_1x1`` (Sequential conv + bn),
``rbr_identity`` (a BN, or None), ``se`` (Identity, or an SE block applied to the sum),
``nonlinearity``; deployed ``rbr_reparam``.

Its checkpoints (format ``repvgg``): blocks ``stage0``, ``stage1.0`` ... with ``rbr_dense.conv/bn``,
``rbr_1x1.conv/bn``, ``rbr_identity`` (a BN); deployed ``rbr_reparam``; head ``linear``. Spec: ``repvgg``."""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import AdoptRefused, Recognised, conv_part, identity_part, seq_conv_bn
from reparam_zoo.interop.checkpoints import FORMATS
from reparam_zoo.interop.checkpoints.renames import adapt_blocks, conv_bn


@register_adopter("RepVGGBlock (official RepVGG, YOLOv6)", "RepVGGBlock")
def recognise(m) -> Recognised:
    if hasattr(m, "rbr_reparam"):
        raise AdoptRefused("already deployed (it holds rbr_reparam)")
    if not hasattr(m, "rbr_dense"):
        raise AdoptRefused("not the official layout (rbr_dense, rbr_1x1, rbr_identity)")
    conv, bn = seq_conv_bn(m.rbr_dense, "rbr_dense")
    post = [("se", m.se)] if hasattr(m, "se") else []
    found = Recognised.like("repvggblock", conv, post=[*post, ("nonlinearity", m.nonlinearity)],
                            deploy="rbr_reparam")
    found.branches.append(conv_part(found, conv, bn, "rbr_dense"))
    if getattr(m, "rbr_1x1", None) is not None:
        found.branches.append(conv_part(found, *seq_conv_bn(m.rbr_1x1, "rbr_1x1"), "rbr_1x1"))
    if m.rbr_identity is not None:
        found.branches.append(identity_part(m.rbr_identity, "rbr_identity"))
    return found


TRAIN = {**conv_bn("rbr_dense.conv.", "rbr_dense.bn.", 0), **conv_bn("rbr_1x1.conv.", "rbr_1x1.bn.", 1),
         "rbr_identity.": "branches.2.1."}
DEPLOY = {"rbr_reparam.": "conv."}


@FORMATS.register("repvgg")
def adapt(state, model):
    return adapt_blocks(state, model, "RepVGG", TRAIN, DEPLOY)
