"""YOLOv6's plain conv + BN helper (meituan/YOLOv6, yolov6/layers/common.py). ``ConvModule``: ``conv`` (an
``nn.Conv2d``, with or without bias), ``bn``, and ``act`` where ``activation_type`` is not None (ReLU, SiLU
or Hardswish); ``forward`` is ``act(bn(conv(x)))``. ``ConvBNReLU``, ``ConvBNSiLU``, ``ConvBN`` and ``ConvBNHS``
wrap one as ``block``, so adopt walks into them and takes the ``ConvModule``. ``fuse_model`` deploys it as
``conv`` (with bias; ``forward_fuse`` is ``act(conv(x))``) and drops ``bn``: ``fold_model(layout="original")``
gives ``conv.weight``, ``conv.bias``. (YOLOv6's ``RepVGGBlock``: :mod:`reparam_zoo.interop.upstream.repvgg`;
``QARepVGGBlock``: :mod:`reparam_zoo.interop.upstream.qarepvgg`.)"""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import AdoptRefused, Recognised, conv_part, plain_conv


@register_adopter("YOLOv6 ConvModule", "ConvModule", helper=True)
def recognise(m) -> Recognised:
    children = dict(m.named_children())
    if not hasattr(m, "activation_type"):
        raise AdoptRefused("not YOLOv6's layout (conv, bn, act, activation_type)")
    if "bn" not in children:
        raise AdoptRefused("already fused (fuse_model removed its bn)")
    want = {"conv", "bn"} if m.activation_type is None else {"conv", "bn", "act"}
    if set(children) != want:
        raise AdoptRefused(f"has children {sorted(children)}, expected {sorted(want)} for activation_type "
                           f"{m.activation_type!r}")
    conv = plain_conv(children["conv"], "conv")
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise AdoptRefused("a dilated or non-zero-padded conv (fuse_model's conv would drop it)")
    post = [] if m.activation_type is None else [("act", m.act)]
    found = Recognised.like("yolov6_convmodule", conv, post=post, deploy="conv")
    found.branches.append(conv_part(found, conv, children["bn"], "conv"))
    return found
