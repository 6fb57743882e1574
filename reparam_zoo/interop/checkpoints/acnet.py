"""ACNet's ACBlock (github.com/DingXiaoH/ACNet): ``square_conv/bn``, ``hor_conv/bn``,
``ver_conv/bn``; deployed ``fused_conv``. Spec: ``acb``."""

from reparam_zoo.interop.checkpoints import register_format
from reparam_zoo.interop.checkpoints._blocks import adapt_blocks, conv_bn

TRAIN = {**conv_bn("square_conv.", "square_bn.", 0), **conv_bn("hor_conv.", "hor_bn.", 1),
         **conv_bn("ver_conv.", "ver_bn.", 2)}
DEPLOY = {"fused_conv.": "conv."}


@register_format("acnet")
def adapt(state, model):
    return adapt_blocks(state, model, "ACNet", TRAIN, DEPLOY)
