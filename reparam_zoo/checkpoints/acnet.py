"""ACNet's ACBlock (github.com/DingXiaoH/ACNet): ``square_conv/bn``, ``hor_conv/bn``,
``ver_conv/bn``; deployed ``fused_conv``. Spec: ``acb``."""

from . import register_format
from ._blocks import adapt_blocks

TRAIN = {"square_conv.": "branches.0.0.", "square_bn.": "branches.0.1.",
         "hor_conv.": "branches.1.0.", "hor_bn.": "branches.1.1.",
         "ver_conv.": "branches.2.0.", "ver_bn.": "branches.2.1."}
DEPLOY = {"fused_conv.": "conv."}


@register_format("acnet")
def adapt(state, model):
    return adapt_blocks(state, model, "ACNet", TRAIN, DEPLOY)
