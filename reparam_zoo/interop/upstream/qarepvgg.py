"""YOLOv6's ``QARepVGGBlock`` and ``QARepVGGBlockV2`` (yolov6/layers/common.py): ``rbr_dense``
(ConvModule: conv + bn), ``rbr_1x1`` (a plain 1x1 conv, no BN), ``rbr_identity`` (nn.Identity where
in == out and stride 1, else None), V2 also ``rbr_avg`` (AvgPool2d, same condition), ``se``, then
``bn`` on the sum and ``nonlinearity``; deployed ``rbr_reparam`` (the ``bn`` is kept)."""

from __future__ import annotations

from torch import nn

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import (
    AdoptRefused,
    Part,
    Recognised,
    conv_part,
    identity_part,
    is_identity,
    plain_conv,
    seq_conv_bn,
)


@register_adopter("YOLOv6 QARepVGGBlock", ("QARepVGGBlock", "QARepVGGBlockV2"))
def recognise(m) -> Recognised:
    if hasattr(m, "rbr_reparam"):
        raise AdoptRefused("already deployed (it holds rbr_reparam)")
    if not is_identity(getattr(m, "se", None)):
        raise AdoptRefused("an SE between the sum and the BN is not linear")
    conv, bn = seq_conv_bn(m.rbr_dense, "rbr_dense")
    found = Recognised.like("qarepvggblock", conv, norm_after=m.bn, post=[("nonlinearity", m.nonlinearity)],
                            deploy="rbr_reparam", deploy_norm="bn")
    found.branches.append(conv_part(found, conv, bn, "rbr_dense"))
    found.branches.append(conv_part(found, plain_conv(m.rbr_1x1, "rbr_1x1"), None, "rbr_1x1"))
    if m.rbr_identity is not None:
        if not isinstance(m.rbr_identity, nn.Identity):
            raise AdoptRefused(f"rbr_identity is a {type(m.rbr_identity).__name__}, expected nn.Identity")
        found.branches.append(identity_part(None, "rbr_identity"))
    pool = getattr(m, "rbr_avg", None)
    if pool is not None:
        if (not isinstance(pool, nn.AvgPool2d) or not pool.count_include_pad or pool.ceil_mode
                or pool.divisor_override is not None):
            raise AdoptRefused("rbr_avg is not an AvgPool2d with count_include_pad=True (not a convolution)")
        found.branches.append(Part({"type": "avgpool", "norm": "none"}, [None]))
    return found
