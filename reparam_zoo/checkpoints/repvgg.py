"""The official RepVGG checkpoints (github.com/DingXiaoH/RepVGG): blocks ``stage0``, ``stage1.0`` ...
with ``rbr_dense.conv/bn``, ``rbr_1x1.conv/bn``, ``rbr_identity`` (a BN); deployed ``rbr_reparam``;
head ``linear``. Spec: ``repvgg``."""

from . import register_format
from ._blocks import adapt_blocks

TRAIN = {"rbr_dense.conv.": "branches.0.0.", "rbr_dense.bn.": "branches.0.1.",
         "rbr_1x1.conv.": "branches.1.0.", "rbr_1x1.bn.": "branches.1.1.", "rbr_identity.": "branches.2.1."}
DEPLOY = {"rbr_reparam.": "conv."}


@register_format("repvgg")
def adapt(state, model):
    return adapt_blocks(state, model, "RepVGG", TRAIN, DEPLOY)
