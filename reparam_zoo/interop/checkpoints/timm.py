"""timm's byobnet blocks: ``RepVggBlock`` (``conv_kxk.conv/bn``, ``conv_1x1.conv/bn``, ``identity``)
and ``MobileOneBlock`` (``conv_kxk.{i}.conv/bn``, ``conv_scale.conv/bn``, ``identity``); deployed
``reparam_conv``; head ``head.fc``. Specs: ``repvgg`` and ``mobileone``."""

from reparam_zoo.interop.checkpoints import register_format
from reparam_zoo.interop.checkpoints._blocks import adapt_blocks, branch_renames, conv_bn

REPVGG = {**conv_bn("conv_kxk.conv.", "conv_kxk.bn.", 0), **conv_bn("conv_1x1.conv.", "conv_1x1.bn.", 1),
          "identity.": "branches.2.1."}
MOBILEONE = branch_renames("conv_kxk.", "conv_scale.", "identity.")  # per block: any k, stems, 1x1 blocks
DEPLOY = {"reparam_conv.": "conv."}
ORDER = ("stem", "stages", "final_conv")  # timm byobnet: stem, stages.N.i, final_conv


@register_format("timm_repvgg")
def adapt_repvgg(state, model):
    return adapt_blocks(state, model, "timm RepVggBlock", REPVGG, DEPLOY, order=ORDER)


@register_format("timm_mobileone")
def adapt_mobileone(state, model):
    return adapt_blocks(state, model, "timm MobileOneBlock", MOBILEONE, DEPLOY, order=ORDER)
