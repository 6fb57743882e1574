"""timm's byobnet blocks: ``RepVggBlock`` (``conv_kxk.conv/bn``, ``conv_1x1.conv/bn``, ``identity``)
and ``MobileOneBlock`` (``conv_kxk.{i}.conv/bn``, ``conv_scale.conv/bn``, ``identity``); deployed
``reparam_conv``; head ``head.fc``. Specs: ``repvgg`` and ``mobileone``."""

from . import register_format
from ._blocks import adapt_blocks

REPVGG = {"conv_kxk.conv.": "branches.0.0.", "conv_kxk.bn.": "branches.0.1.",
          "conv_1x1.conv.": "branches.1.0.", "conv_1x1.bn.": "branches.1.1.", "identity.": "branches.2.1."}
MOBILEONE = {**{f"conv_kxk.{i}.conv.": f"branches.{i}.0." for i in range(4)},
             **{f"conv_kxk.{i}.bn.": f"branches.{i}.1." for i in range(4)},
             "conv_scale.conv.": "branches.4.0.", "conv_scale.bn.": "branches.4.1.", "identity.": "branches.5.1."}
DEPLOY = {"reparam_conv.": "conv."}


@register_format("timm_repvgg")
def adapt_repvgg(state, model):
    return adapt_blocks(state, model, "timm RepVggBlock", REPVGG, DEPLOY)


@register_format("timm_mobileone")
def adapt_mobileone(state, model):
    return adapt_blocks(state, model, "timm MobileOneBlock", MOBILEONE, DEPLOY)
