"""The official RepVGG checkpoints (github.com/DingXiaoH/RepVGG): blocks ``stage0``, ``stage1.0`` ...
with ``rbr_dense.conv/bn``, ``rbr_1x1.conv/bn``, ``rbr_identity`` (a BN); deployed ``rbr_reparam``;
head ``linear``. Spec: ``repvgg``."""

from reparam_zoo.interop.checkpoints import register_format
from reparam_zoo.interop.checkpoints._blocks import adapt_blocks, conv_bn

TRAIN = {**conv_bn("rbr_dense.conv.", "rbr_dense.bn.", 0), **conv_bn("rbr_1x1.conv.", "rbr_1x1.bn.", 1),
         "rbr_identity.": "branches.2.1."}
DEPLOY = {"rbr_reparam.": "conv."}


@register_format("repvgg")
def adapt(state, model):
    return adapt_blocks(state, model, "RepVGG", TRAIN, DEPLOY)
