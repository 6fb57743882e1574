"""Apple's MobileOne (github.com/apple/ml-mobileone): blocks ``stage0``, ``stage1.0`` ... with
``rbr_conv.{i}.conv/bn`` (k branches), ``rbr_scale.conv/bn`` (kernel > 1 only), ``rbr_skip`` (a BN, where
in == out and stride 1); deployed ``reparam_conv``; head ``linear``. Renames are computed per block from
the model's block (any k, stems, depthwise and pointwise blocks). Nets: ``mobileone_s0`` ... ``s3``;
block spec ``mobileone``."""

from reparam_zoo.interop.checkpoints import register_format
from reparam_zoo.interop.checkpoints._blocks import adapt_blocks, branch_renames

TRAIN = branch_renames("rbr_conv.", "rbr_scale.", "rbr_skip.")
DEPLOY = {"reparam_conv.": "conv."}


@register_format("mobileone")
def adapt(state, model):
    return adapt_blocks(state, model, "MobileOne", TRAIN, DEPLOY)
