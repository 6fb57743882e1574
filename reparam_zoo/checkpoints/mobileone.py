"""Apple's MobileOne (github.com/apple/ml-mobileone) blocks with k = 4: ``rbr_conv.{i}.conv/bn``,
``rbr_scale.conv/bn``, ``rbr_skip`` (a BN); deployed ``reparam_conv``. Spec: ``mobileone``."""

from . import register_format
from ._blocks import adapt_blocks, conv_bn

TRAIN = {k: v for i in range(4) for k, v in conv_bn(f"rbr_conv.{i}.conv.", f"rbr_conv.{i}.bn.", i).items()}
TRAIN.update({**conv_bn("rbr_scale.conv.", "rbr_scale.bn.", 4), "rbr_skip.": "branches.5.1."})
DEPLOY = {"reparam_conv.": "conv."}


@register_format("mobileone")
def adapt(state, model):
    return adapt_blocks(state, model, "MobileOne", TRAIN, DEPLOY)
