"""The fold at memory speed: a block's deployed ``(weight, bias)`` with the least work, for
:meth:`RepBlock.fold` (no autograd; :meth:`RepBlock.equivalent_kernel` stays the differentiable
reference).

The arithmetic is the same as the reference's — every product and sum in float64, the result
rounded once to the block's dtype — but it never holds a float64 copy of a large kernel:

* a branch that is one plain conv followed by per-channel affine steps (BatchNorm, scales,
  gates) — the big kxk branches of every shipped spec — stays *lazy*: its conv weight as it is,
  its steps collapsed into a float64 ``scale, shift`` per output channel;
* every other branch (identity, pooling, composed chains, parameterised convs) is composed in
  float64 as in the reference, kept at its own extent (not padded to the window);
* the output is produced in chunks of output channels: each chunk is accumulated in a float64
  scratch buffer small enough to stay in cache (``W * scale`` computed in float64, the other
  branches added at their offsets, ``norm_after`` applied) and written once, rounded, into the
  deployed kernel.

So a float32 RepVGG kernel costs about one float32 read of the trained weights and one write
of the deployed ones, and the result is bitwise what rounding the float64 fold gives up to
the order of the float64 additions (docs/math.md §13).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import kernels as K
from .spec import chain_converter
from .steps import Chain, step_kernel

#: float64 elements of one chunk's scratch buffer (2 MiB: inside a core's L2 on common CPUs)
CHUNK = 1 << 18

_local = threading.local()  # per thread: the scratch buffer of each device, reused from block to block


def _scratch(numel: int, device: torch.device) -> Tensor:
    """A float64 buffer of at least ``numel`` elements, kept for the next block: a fresh 2 MiB
    allocation per block costs more in page faults than folding a small block."""
    cache = getattr(_local, "buffers", None)
    if cache is None:
        cache = _local.buffers = {}
    # on CUDA one buffer per stream: work queued on another stream may still be reading the previous one
    key = (device, torch.cuda.current_stream(device).stream_id if device.type == "cuda" else None)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = cache[key] = torch.empty(numel, dtype=torch.float64, device=device)
    return buf[:numel]


@dataclass
class _Lazy:
    """``scale[o] * W[o]`` placed at ``offset`` (undilated coordinates); ``shift`` goes to the bias.
    ``bn``: the branch's single BatchNorm, whose scale and shift are computed with the block's
    other such BatchNorms in one batch (then ``scale``/``shift`` are filled in)."""
    weight: Tensor
    scale: Tensor | None
    shift: Tensor | None
    offset: tuple[int, int]
    bn: nn.Module | None = None
    conv_bias: Tensor | None = None
    diagonal: bool = False  # the identity: weight None, ``scale[o]`` at input o (o mod C_in/groups)


@dataclass
class _Dense:
    """A float64 kernel composed as the reference does, at ``offset``; ``diagonal``: a
    depthwise kernel ``(C, 1, kh, kw)`` to spread over the block's groups."""
    weight: Tensor
    bias: Tensor | None
    offset: tuple[int, int]
    diagonal: bool


def _lazy(module: nn.Module, info, g, offset) -> _Lazy | None:
    """A plain conv then per-channel affine steps, with the block's groups and dilation."""
    if info.type.converter is not chain_converter or type(module) is not Chain or not len(module):
        return None
    conv = module[0]
    if (type(conv) is nn.Identity and g.in_channels == g.out_channels and len(module) == 2
            and _single_bn(list(module)[1:])):  # identity -> BatchNorm: RepVGG's third branch
        return _Lazy(None, None, None, offset, bn=module[1], diagonal=True)
    if type(conv) is not nn.Conv2d or conv.groups != g.groups or K.as_pair(conv.dilation) != g.dilation:
        return None
    if isinstance(conv.padding, str) or K.as_pair(conv.padding) != (0, 0):
        return None  # the reference refuses it, with its message
    if conv.weight.shape[1] * conv.groups != g.in_channels or conv.out_channels != g.out_channels:
        return None
    weight, conv_bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
    rest = list(module)[1:]
    if _single_bn(rest):
        return _Lazy(weight, None, None, offset, bn=rest[0], conv_bias=conv_bias)
    device = weight.device
    scale = torch.ones(g.out_channels, dtype=torch.float64, device=device)
    shift = (conv_bias.to(torch.float64) if conv_bias is not None
             else torch.zeros(g.out_channels, dtype=torch.float64, device=device))
    for m in rest:
        sk = step_kernel(m, g.out_channels, device)
        if sk.weight is not None:
            return None
        s = sk.scale.detach().to(torch.float64)
        scale = scale * s
        shift = shift * s
        if sk.shift is not None:
            shift = shift + sk.shift.detach().to(torch.float64)
    return _Lazy(weight, scale, shift, offset)


def _single_bn(rest: list) -> bool:
    return (len(rest) == 1 and isinstance(rest[0], _BatchNorm) and rest[0].affine
            and rest[0].track_running_stats and rest[0].running_mean is not None)


def _batch_bn(parts: list[_Lazy]) -> None:
    """Eval-mode scale and shift of every conv -> BatchNorm branch of a block at once:
    ``kernels.bn_scale_shift`` on the stacked statistics, then the conv bias as ``scale_channels``
    scales it."""
    f64 = torch.float64
    bns = [p.bn for p in parts]

    def stacked(name):
        return torch.stack([getattr(m, name).detach().to(f64) for m in bns])

    eps = torch.tensor([float(m.eps) for m in bns], dtype=f64, device=bns[0].running_mean.device).view(-1, 1)
    scale, shift = K.bn_scale_shift(stacked("running_mean"), stacked("running_var"), eps, stacked("weight"),
                                    stacked("bias"))
    for i, p in enumerate(parts):
        p.scale = scale[i]
        p.shift = shift[i] if p.conv_bias is None else p.conv_bias.to(f64) * scale[i] + shift[i]


def _dense(module: nn.Module, info, g) -> _Dense:
    offset = info.placement.offset
    bk = info.type.converter(module, g)
    w = bk.weight.detach()
    bias = None if bk.bias is None else bk.bias.detach()
    dh, dw = g.dilation
    diagonal = bk.groups != g.groups and bk.groups == g.out_channels == g.in_channels and w.shape[1] == 1
    if not diagonal:
        w = K.regroup(w, bk.groups, g.groups)
    if (dh, dw) != (1, 1):  # on the dilated grid: place in the window and take the block's taps
        w = K.undilate(K.place(w, g.window, offset), g.dilation)
        offset = (0, 0)
    return _Dense(w, bias, offset, diagonal)


def fold_weights(block, *, norm_after: bool = True) -> tuple[Tensor, Tensor]:
    """``(weight, bias)`` of the conv equal to ``block`` in eval mode, in the block's dtype
    (``norm_after=False``: the sum of the branches alone, for a layout that keeps that norm)."""
    if block.mode == "deployed":  # already re-parameterized in place: its conv is the fold
        conv = block.deployed if isinstance(block.deployed, nn.Conv2d) else block.deployed.conv
        return conv.weight.detach().clone(), conv.bias.detach().clone()
    g = block.geometry
    dtype, device = block._dtype_device()
    dh, dw = g.dilation
    kh, kw = g.kernel
    cin_g = g.in_channels // g.groups
    parts = []
    with torch.no_grad():
        bias = torch.zeros(g.out_channels, dtype=torch.float64, device=device)
        for module, info in zip(block.branches, block.branch_info):
            oh, ow = info.placement.offset
            part = None
            if oh % dh == 0 and ow % dw == 0:
                part = _lazy(module, info, g, (oh // dh, ow // dw))
            if part is None:
                part = _dense(module, info, g)
                if part.bias is not None:
                    bias += part.bias
            parts.append(part)
        batched = [p for p in parts if isinstance(p, _Lazy) and p.bn is not None]
        if len({p.bn.num_features for p in batched}) == 1:
            _batch_bn(batched)
        else:
            for p in batched:
                _batch_bn([p])
        for p in parts:
            if isinstance(p, _Lazy):
                bias += p.shift
        after = None
        if block.norm_after is not None and norm_after:
            sk = step_kernel(block.norm_after, g.out_channels, device)
            after = sk.scale.detach()
            bias = bias * after + (sk.shift.detach() if sk.shift is not None else 0)
        # the first lazy branch that covers the whole window initialises each chunk (no zero fill)
        full = next((p for p in parts if isinstance(p, _Lazy) and p.weight is not None and p.offset == (0, 0)
                     and tuple(p.weight.shape[-2:]) == (kh, kw)), None)
        shape = (g.out_channels, cin_g, kh, kw)
        weight = torch.empty(shape, dtype=dtype, device=device)
        per_row = cin_g * kh * kw
        rows = max(1, min(g.out_channels, CHUNK // max(per_row, 1)))
        direct = dtype == torch.float64
        scratch = None if direct else _scratch(rows * per_row, device).view(rows, cin_g, kh, kw)
        for i in range(0, g.out_channels, rows):
            j = min(i + rows, g.out_channels)
            tmp = weight[i:j] if direct else scratch[: j - i]
            if full is not None:
                tmp.copy_(full.weight[i:j])  # exact widening, then the float64 product in place
                tmp.mul_(full.scale[i:j].view(-1, 1, 1, 1))
            else:
                tmp.zero_()
            for p in parts:
                if p is full:
                    continue
                if p.diagonal and (p.weight is None or p.weight.shape[-2:] == (1, 1)):
                    values = p.scale[i:j] if p.weight is None else p.weight[i:j].reshape(-1)
                    at = p.offset[0] * kw + p.offset[1]
                    if cin_g == g.out_channels:  # one group: (r, i + r) is a strided line of the chunk
                        tmp.view(-1)[i * kh * kw + at::per_row + kh * kw][: j - i].add_(values)
                    elif cin_g == 1:  # depthwise: (r, 0)
                        tmp.view(-1)[at::per_row][: j - i].add_(values)
                    else:
                        o = torch.arange(i, j, device=device)
                        flat = (o - i) * per_row + (o % cin_g) * (kh * kw) + at
                        tmp.view(-1).index_add_(0, flat, values)
                elif isinstance(p, _Lazy):
                    ph, pw = p.weight.shape[-2:]
                    tmp[:, :, p.offset[0]: p.offset[0] + ph, p.offset[1]: p.offset[1] + pw].addcmul_(
                        p.weight[i:j], p.scale[i:j].view(-1, 1, 1, 1))
                elif p.diagonal:  # output o reads input o: position o % (C_in / groups) in its group
                    ph, pw = p.weight.shape[-2:]
                    r = torch.arange(j - i, device=device)
                    c = torch.arange(i, j, device=device) % cin_g
                    sl = (r, c, slice(p.offset[0], p.offset[0] + ph), slice(p.offset[1], p.offset[1] + pw))
                    tmp[sl] = tmp[sl] + p.weight[i:j, 0]
                else:
                    ph, pw = p.weight.shape[-2:]
                    tmp[:, :, p.offset[0]: p.offset[0] + ph, p.offset[1]: p.offset[1] + pw] += p.weight[i:j]
            if after is not None:
                tmp.mul_(after[i:j].view(-1, 1, 1, 1))
            if not direct:
                weight[i:j].copy_(tmp)
    return weight, bias.to(dtype)


__all__ = ["fold_weights"]
