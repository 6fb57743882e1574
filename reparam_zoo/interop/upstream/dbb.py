"""DBB's ``DiverseBranchBlock`` (DingXiaoH/DiverseBranchBlock, diversebranchblock.py), every variant:
``dbb_origin`` (conv + bn); ``dbb_1x1`` (conv + bn, only where groups < out_channels); ``dbb_avg``
(``conv`` -> ``bn`` (BNAndPadLayer) -> ``avg`` -> ``avgbn`` where groups < out_channels, else the padded
``avg`` -> ``avgbn``); ``dbb_1x1_kxk`` (``idconv1`` (IdentityBasedConv1x1, W + I) or ``conv1`` (a plain
1x1 to the internal channels: 2x in depthwise blocks, or any ``internal_channels_1x1_3x3``) -> ``bn1``
(BNAndPadLayer) -> ``conv2`` -> ``bn2``); ``nonlinear``; deployed ``dbb_reparam``.

DBB's plain helper ``ConvBN`` (convnet_utils.py, the ``conv_bn``/``conv_bn_relu`` of its ResNets and
MobileNet where a layer is not a DBB: 1x1 and 7x7 layers, or every layer of the base model): ``conv``
(no bias), ``bn``, ``nonlinear`` (Identity or ReLU); ``switch_to_deploy`` makes ``conv`` a conv with bias
and drops ``bn``.

BNAndPadLayer pads with the BN's output for zero; the spec runs the 1x1 -> BN on the padded input
instead: equal in eval mode (and so in the fold), but in training mode that BN's batch statistics
also count the border, so training-mode outputs differ slightly (``train_exact=False``).

Its checkpoints (format ``dbb``), non-depthwise variant: ``dbb_origin.conv/bn``, ``dbb_1x1.conv/bn``,
``dbb_avg.conv``, ``dbb_avg.bn.bn`` (BN-and-pad), ``dbb_avg.avgbn``, ``dbb_1x1_kxk.idconv1.weight`` (+ its
fixed ``id_tensor``), ``dbb_1x1_kxk.bn1.bn``, ``dbb_1x1_kxk.conv2``, ``dbb_1x1_kxk.bn2``; deployed
``dbb_reparam``. Spec: ``dbb``."""

from __future__ import annotations

import torch
from torch import nn

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import (
    AdoptRefused,
    Part,
    Recognised,
    conv_part,
    norm_spec,
    plain_conv,
    seq_conv_bn,
)
from reparam_zoo.interop.checkpoints import FORMATS, CheckpointError
from reparam_zoo.interop.checkpoints.renames import adapt_blocks, conv_bn


def _bn_and_pad(layer, block: Recognised, what: str) -> nn.Module:
    bn = getattr(layer, "bn", None)
    pad = getattr(layer, "pad_pixels", getattr(layer, "pad", None))
    if bn is None or pad is None:
        raise AdoptRefused(f"{what} is not a BNAndPadLayer (bn, pad_pixels)")
    if (pad, pad) != block.padding:
        raise AdoptRefused(f"{what} pads {pad} pixels, the block {block.padding}")
    return bn


def _pool(pool, block: Recognised, padding, what: str) -> None:
    if not isinstance(pool, nn.AvgPool2d) or pool.ceil_mode or pool.divisor_override is not None:
        raise AdoptRefused(f"{what} is not a plain AvgPool2d")
    k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
    s = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * 2
    p = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,) * 2
    if k != block.kernel or s != block.stride or p != padding or (p != (0, 0) and not pool.count_include_pad):
        raise AdoptRefused(f"{what} pools {k} stride {s} padding {p}; expected the block's kernel and stride, "
                           f"padding {padding} (counting the padding)")


@register_adopter("DBB DiverseBranchBlock", "DiverseBranchBlock")
def recognise(m) -> Recognised:
    if hasattr(m, "dbb_reparam"):
        raise AdoptRefused("already deployed (it holds dbb_reparam)")
    conv, bn = seq_conv_bn(getattr(m, "dbb_origin", None), "dbb_origin")
    found = Recognised.like("diversebranchblock", conv, post=[("nonlinear", m.nonlinear)], train_exact=False,
                            deploy="dbb_reparam")
    found.branches.append(conv_part(found, conv, bn, "dbb_origin"))
    if hasattr(m, "dbb_1x1"):
        found.branches.append(conv_part(found, *seq_conv_bn(m.dbb_1x1, "dbb_1x1"), "dbb_1x1"))
    avg = dict(m.dbb_avg.named_children())
    if "conv" in avg:
        pre = plain_conv(avg["conv"], "dbb_avg.conv")
        if pre.kernel_size != (1, 1) or pre.stride != (1, 1) or pre.groups != found.groups or pre.bias is not None:
            raise AdoptRefused("dbb_avg.conv is not an unbiased 1x1 conv with the block's groups")
        mid = _bn_and_pad(avg["bn"], found, "dbb_avg.bn")
        _pool(avg["avg"], found, (0, 0), "dbb_avg.avg")
        found.branches.append(Part({"type": "avgpool", "pre_1x1": True, "mid_norm": norm_spec(mid, "dbb_avg.bn"),
                                    "norm": norm_spec(avg["avgbn"], "dbb_avg.avgbn")},
                                   [pre, mid, None, avg["avgbn"]]))
    else:
        _pool(avg["avg"], found, found.padding, "dbb_avg.avg")
        found.branches.append(Part({"type": "avgpool", "norm": norm_spec(avg["avgbn"], "dbb_avg.avgbn")},
                                   [None, avg["avgbn"]]))
    kxk = dict(m.dbb_1x1_kxk.named_children())
    first = kxk.get("idconv1", kxk.get("conv1"))
    if first is None or not isinstance(first, nn.Conv2d) or first.kernel_size != (1, 1) or first.bias is not None:
        raise AdoptRefused("dbb_1x1_kxk has no unbiased 1x1 idconv1/conv1")
    if "conv1" in kxk:
        plain_conv(first, "dbb_1x1_kxk.conv1")
    mid = _bn_and_pad(kxk["bn1"], found, "dbb_1x1_kxk.bn1")
    conv2 = plain_conv(kxk["conv2"], "dbb_1x1_kxk.conv2")
    found.branches.append(Part(
        {"type": "1x1_kxk", "mid_channels": first.out_channels, "identity_init": "idconv1" in kxk,
         "mid_norm": norm_spec(mid, "dbb_1x1_kxk.bn1"), "norm": norm_spec(kxk["bn2"], "dbb_1x1_kxk.bn2")},
        [{"weight": first.weight}, mid, conv2, kxk["bn2"]]))
    return found


@register_adopter("DBB ConvBN", "ConvBN", helper=True)
def recognise_convbn(m) -> Recognised:
    children = dict(m.named_children())
    if set(children) == {"conv", "nonlinear"}:
        raise AdoptRefused("already deployed (a conv with bias, no bn)")
    if set(children) != {"conv", "bn", "nonlinear"}:
        raise AdoptRefused(f"not DBB's layout (conv, bn, nonlinear): children {sorted(children)}")
    conv = plain_conv(children["conv"], "conv")
    if conv.bias is not None:
        raise AdoptRefused("conv has a bias (DBB's ConvBN has none; its switch_to_deploy would drop it)")
    found = Recognised.like("dbb_convbn", conv, post=[("nonlinear", m.nonlinear)], deploy="conv")
    found.branches.append(conv_part(found, conv, children["bn"], "conv"))
    return found


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


@FORMATS.register("dbb")
def adapt(state, model):
    return adapt_blocks(state, model, "DBB", TRAIN, DEPLOY, {"dbb_1x1_kxk.idconv1.id_tensor": _is_identity})
