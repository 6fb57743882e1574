"""Apple's MobileOne (github.com/apple/ml-mobileone) blocks with k = 4: ``rbr_conv.{i}.conv/bn``,
``rbr_scale.conv/bn``, ``rbr_skip`` (a BN); deployed ``reparam_conv``. Spec: ``mobileone``."""

from . import register_format
from ._blocks import adapt_blocks

TRAIN = {**{f"rbr_conv.{i}.conv.": f"branches.{i}.0." for i in range(4)},
         **{f"rbr_conv.{i}.bn.": f"branches.{i}.1." for i in range(4)},
         "rbr_scale.conv.": "branches.4.0.", "rbr_scale.bn.": "branches.4.1.", "rbr_skip.": "branches.5.1."}
DEPLOY = {"reparam_conv.": "conv."}


@register_format("mobileone")
def adapt(state, model):
    return adapt_blocks(state, model, "MobileOne", TRAIN, DEPLOY)
