"""timm's re-parameterized blocks (timm/models/byobnet.py, timm/models/fastvit.py) and their checkpoints.

Adapters (every block deployed as ``reparam_conv``):

- ``RepVggBlock`` (byobnet): ``conv_kxk`` and ``conv_1x1`` (ConvNormAct), ``identity`` (a BN, or None),
  ``drop_path``, ``attn``, ``act``.
- ``MobileOneBlock``: byobnet's (``conv_kxk`` (a ModuleList of ConvNormAct, the paper's k), ``conv_scale``
  (1x1 ConvNormAct, only for kernel > 1), ``identity`` (a BN, or None), ``drop_path``, ``attn`` (SE in
  S4), ``act``) and FastViT's (the same branches, ``conv_kxk`` possibly None, then ``se`` and ``act``).
- ``ReparamLargeKernelConv`` (FastViT's RepLKNet-style conv): ``large_conv`` and ``small_conv``
  (ConvNormAct; the small one may be absent), then ``se`` and ``act``. (RepLKNet's own class of the
  same name: :mod:`reparam_zoo.interop.upstream.replknet`.)
- ``RepMixer`` (FastViT): ``x + layer_scale * (mixer(x) - norm(x))``, ``mixer`` and ``norm`` MobileOneBlocks
  without SE or activation, ``layer_scale`` a ``LayerScale2d`` (``gamma``, one per channel) or None: the
  identity beside a ``group`` of the mixer's branches and the norm's (factor -1), times the layer scale.
- ``RepConditionalPosEnc`` (FastViT's RepCPE): ``x + pos_enc(x)``, a biased depthwise kxk conv beside the
  identity.

What the byobnet blocks share: ``ConvNormAct`` branches (``conv`` + ``bn``, a ``BatchNormAct2d`` whose
drop/act are identities: :func:`conv_norm`) and the ``drop_path -> attn -> act`` tail (:func:`tail`).

Checkpoints of the byobnet nets: format ``timm_repvgg`` (``RepVggBlock``: ``conv_kxk.conv/bn``,
``conv_1x1.conv/bn``, ``identity``; spec ``repvgg``) and ``timm_mobileone`` (``MobileOneBlock``:
``conv_kxk.{i}.conv/bn``, ``conv_scale.conv/bn``, ``identity``; spec ``mobileone``); deployed
``reparam_conv``; head ``head.fc``."""

from __future__ import annotations

from torch import nn

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import (
    AdoptRefused,
    Recognised,
    conv_part,
    group_part,
    identity_part,
    is_identity,
)
from reparam_zoo.interop.checkpoints import FORMATS
from reparam_zoo.interop.checkpoints.renames import adapt_blocks, branch_renames, conv_bn


def conv_norm(module: nn.Module, what: str) -> tuple[nn.Module, nn.Module]:
    """``(conv, bn)`` of a timm ``ConvNormAct`` (refused when it anti-aliases or is something else)."""
    children = dict(module.named_children()) if module is not None else {}
    if set(children) - {"conv", "bn", "aa"} or "conv" not in children or "bn" not in children:
        raise AdoptRefused(f"{what} has children {sorted(children)}, expected conv and bn")
    if not is_identity(children.get("aa")):
        raise AdoptRefused(f"{what} applies anti-aliasing pooling after its BN")
    return children["conv"], children["bn"]


def tail(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules after the sum: ``attn`` (SE) then ``act``; an active drop_path is refused."""
    if getattr(block, "reparam_conv", None) is not None:
        raise AdoptRefused("already reparameterized (it holds reparam_conv)")
    if not is_identity(getattr(block, "drop_path", None)):
        raise AdoptRefused("stochastic depth (drop_path) on some branches is not a sum of linear branches")
    return [("attn", block.attn), ("act", block.act)]


@register_adopter("timm MobileOneBlock", "MobileOneBlock")
def recognise_mobileone(m) -> Recognised:
    if not hasattr(m, "conv_kxk") or not hasattr(m, "conv_scale"):
        raise AdoptRefused("not timm's layout (conv_kxk, conv_scale, identity)")
    if hasattr(m, "attn"):  # byobnet: drop_path -> attn -> act
        post = tail(m)
    else:  # fastvit: se -> act
        if getattr(m, "reparam_conv", None) is not None:
            raise AdoptRefused("already reparameterized (it holds reparam_conv)")
        post = [("se", m.se), ("act", m.act)]
    convs = list(m.conv_kxk) if m.conv_kxk is not None else []
    if convs:
        found = Recognised.like("timm_mobileoneblock", conv_norm(convs[0], "conv_kxk.0")[0], post=post,
                                deploy="reparam_conv")
    elif m.identity is not None:  # fastvit's RepMixer norm: the BN skip alone, as a kxk depthwise conv
        k = m.kernel_size
        found = Recognised("timm_mobileoneblock", m.in_chs, m.out_chs, (k, k), (1, 1), (k // 2, k // 2),
                           groups=m.groups, post=post, deploy="reparam_conv")
    else:
        raise AdoptRefused("no conv_kxk branch and no identity")
    for i, branch in enumerate(convs):
        found.branches.append(conv_part(found, *conv_norm(branch, f"conv_kxk.{i}"), f"conv_kxk.{i}"))
    if m.conv_scale is not None:
        found.branches.append(conv_part(found, *conv_norm(m.conv_scale, "conv_scale"), "conv_scale"))
    if m.identity is not None:
        found.branches.append(identity_part(m.identity, "identity"))
    return found


@register_adopter("timm ReparamLargeKernelConv", "ReparamLargeKernelConv")
def recognise_replk(m) -> Recognised:
    if getattr(m, "reparam_conv", None) is not None:
        raise AdoptRefused("already reparameterized (it holds reparam_conv)")
    conv, bn = conv_norm(getattr(m, "large_conv", None), "large_conv")
    found = Recognised.like("timm_reparamlargekernelconv", conv, post=[("se", m.se), ("act", m.act)],
                            deploy="reparam_conv")
    found.branches.append(conv_part(found, conv, bn, "large_conv"))
    if getattr(m, "small_conv", None) is not None:
        found.branches.append(conv_part(found, *conv_norm(m.small_conv, "small_conv"), "small_conv"))
    return found


def linear_mobileone(m, what: str) -> Recognised:
    """A FastViT MobileOneBlock without SE or activation (RepMixer's ``mixer`` and ``norm``): its branches."""
    found = recognise_mobileone(m)
    kept = [name for name, module in found.post if not is_identity(module)]
    if kept:
        raise AdoptRefused(f"{what} applies {', '.join(kept)} after its branches (not linear)")
    return found


@register_adopter("timm RepMixer", "RepMixer")
def recognise_repmixer(m) -> Recognised:
    if getattr(m, "reparam_conv", None) is not None:
        raise AdoptRefused("already reparameterized (it holds reparam_conv)")
    mixer, norm = linear_mobileone(m.mixer, "mixer"), linear_mobileone(m.norm, "norm")
    k = m.kernel_size
    found = Recognised("timm_repmixer", m.dim, m.dim, (k, k), (1, 1), (k // 2, k // 2), groups=m.dim,
                       deploy="reparam_conv")
    for what, part in (("mixer", mixer), ("norm", norm)):
        got = (part.in_channels, part.out_channels, part.kernel, part.stride, part.padding, part.dilation,
               part.groups, part.padding_mode)
        want = (m.dim, m.dim, found.kernel, found.stride, found.padding, found.dilation, m.dim, "zeros")
        if got != want:
            raise AdoptRefused(f"Expected {what} with (in, out, kernel, stride, padding, dilation, groups, "
                               f"padding_mode) {want} but got {got}")
    scale = m.layer_scale
    if is_identity(scale):
        gamma = None
    elif type(scale).__name__ == "LayerScale2d" and getattr(scale, "gamma", None) is not None and \
            scale.gamma.numel() == m.dim and not list(scale.children()):
        gamma = scale.gamma
    else:
        raise AdoptRefused(f"layer_scale is a {type(scale).__name__}, not timm's LayerScale2d (gamma) or Identity")
    members = mixer.branches + norm.branches
    factors = [1.0] * len(mixer.branches) + [-1.0] * len(norm.branches)
    found.branches = [identity_part(None, "the skip"), group_part(members, factors, gamma)]
    return found


@register_adopter("timm RepConditionalPosEnc", "RepConditionalPosEnc")
def recognise_repcpe(m) -> Recognised:
    if getattr(m, "reparam_conv", None) is not None:
        raise AdoptRefused("already reparameterized (it holds reparam_conv)")
    found = Recognised.like("timm_repcpe", m.pos_enc, deploy="reparam_conv")
    found.branches = [conv_part(found, m.pos_enc, None, "pos_enc"), identity_part(None, "the skip")]
    return found


@register_adopter("timm RepVggBlock", "RepVggBlock")
def recognise_repvgg(m) -> Recognised:
    post = tail(m)
    conv, bn = conv_norm(m.conv_kxk, "conv_kxk")
    found = Recognised.like("timm_repvggblock", conv, post=post, deploy="reparam_conv")
    found.branches.append(conv_part(found, conv, bn, "conv_kxk"))
    found.branches.append(conv_part(found, *conv_norm(m.conv_1x1, "conv_1x1"), "conv_1x1"))
    if m.identity is not None:
        found.branches.append(identity_part(m.identity, "identity"))
    return found


REPVGG = {**conv_bn("conv_kxk.conv.", "conv_kxk.bn.", 0), **conv_bn("conv_1x1.conv.", "conv_1x1.bn.", 1),
          "identity.": "branches.2.1."}
MOBILEONE = branch_renames("conv_kxk.", "conv_scale.", "identity.")  # per block: any k, stems, 1x1 blocks
DEPLOY = {"reparam_conv.": "conv."}
ORDER = ("stem", "stages", "final_conv")  # timm byobnet: stem, stages.N.i, final_conv


@FORMATS.register("timm_repvgg")
def adapt_repvgg(state, model):
    return adapt_blocks(state, model, "timm RepVggBlock", REPVGG, DEPLOY, order=ORDER)


@FORMATS.register("timm_mobileone")
def adapt_mobileone(state, model):
    return adapt_blocks(state, model, "timm MobileOneBlock", MOBILEONE, DEPLOY, order=ORDER)
