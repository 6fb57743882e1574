"""Diverse Branch Block (github.com/DingXiaoH/DiverseBranchBlock), non-depthwise variant:
``dbb_origin.conv/bn``, ``dbb_1x1.conv/bn``, ``dbb_avg.conv``, ``dbb_avg.bn.bn`` (BN-and-pad),
``dbb_avg.avgbn``, ``dbb_1x1_kxk.idconv1.weight`` (+ its fixed ``id_tensor``), ``dbb_1x1_kxk.bn1.bn``,
``dbb_1x1_kxk.conv2``, ``dbb_1x1_kxk.bn2``; deployed ``dbb_reparam``. Spec: ``dbb``."""

import torch

from reparam_zoo.interop.checkpoints import CheckpointError, register_format
from reparam_zoo.interop.checkpoints._blocks import adapt_blocks, conv_bn

TRAIN = {**conv_bn("dbb_origin.conv.", "dbb_origin.bn.", 0), **conv_bn("dbb_1x1.conv.", "dbb_1x1.bn.", 1),
         "dbb_avg.conv.": "branches.2.0.", "dbb_avg.bn.bn.": "branches.2.1.", "dbb_avg.avgbn.": "branches.2.3.",
         "dbb_1x1_kxk.idconv1.weight": "branches.3.0.weight", "dbb_1x1_kxk.bn1.bn.": "branches.3.1.",
         "dbb_1x1_kxk.conv2.": "branches.3.2.", "dbb_1x1_kxk.bn2.": "branches.3.3."}
DEPLOY = {"dbb_reparam.": "conv."}


def _is_identity(value: torch.Tensor, key: str) -> None:
    c, per_group = value.shape[0], value.shape[1]
    eye = torch.zeros_like(value)
    eye[torch.arange(c), torch.arange(c) % per_group] = 1
    if not torch.equal(value, eye):
        raise CheckpointError(f"{key} should be the fixed identity of IdentityBasedConv1x1 but is not")


@register_format("dbb")
def adapt(state, model):
    return adapt_blocks(state, model, "DBB", TRAIN, DEPLOY, {"dbb_1x1_kxk.idconv1.id_tensor": _is_identity})
