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

import math
import threading
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.steps import PLAIN, Chain, chain_converter, chain_kernel, step_kernel

#: float64 elements of one chunk's scratch buffer: 4 MiB, within the last-level cache and large enough
#: to hold a 192-channel 3x3 kernel in one chunk (the fastest of 2**15 ... 2**21 in benchmarks/fold.py)
CHUNK = 1 << 19

_local = threading.local()  # per thread: the scratch buffer of each device, reused from block to block


def _scratch(numel: int, device: torch.device) -> Tensor:
    """A float64 buffer of at least ``numel`` elements, kept for the next block: a fresh 4 MiB
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
    offset: tuple[int, ...]
    bn: nn.Module | None = None
    conv_bias: Tensor | None = None
    diagonal: bool = False  # the identity: weight None, ``scale[o]`` at input o (o mod C_in/groups)


@dataclass
class _Dense:
    """A float64 kernel composed as the reference does, at ``offset``; ``diagonal``: a
    depthwise kernel ``(C, 1, *k)`` to spread over the block's groups."""
    weight: Tensor
    bias: Tensor | None
    offset: tuple[int, ...]
    diagonal: bool


def _lazy(module: nn.Module, info, g, offset) -> _Lazy | None:
    """A plain conv then per-channel affine steps, with the block's groups and dilation (called under
    ``no_grad`` for every branch of every block: kept to plain attribute checks)."""
    if info.type.converter is not None or type(module) is not Chain:
        return None
    steps = list(module)
    if not steps:
        return None
    conv, rest = steps[0], steps[1:]
    bn = rest[0] if len(rest) == 1 and _folds_as_bn(rest[0]) else None
    if type(conv) is nn.Identity:  # identity -> BatchNorm: RepVGG's third branch
        return _Lazy(None, None, None, offset, bn=bn, diagonal=True) if bn is not None and \
            g.in_channels == g.out_channels else None
    if type(conv) is not PLAIN[(g.axes, False)] or g.transposed or conv.groups != g.groups or \
            tuple(conv.dilation) != g.dilation:
        return None
    if conv.padding != (0,) * g.axes:  # a string or a non-zero padding: the reference refuses it, with its message
        return None
    weight, conv_bias = conv.weight, conv.bias
    if weight.shape[1] * conv.groups != g.in_channels or conv.out_channels != g.out_channels:
        return None
    if bn is not None:
        return _Lazy(weight, None, None, offset, bn=bn, conv_bias=conv_bias)
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


def _folds_as_bn(m: nn.Module) -> bool:
    """An affine BatchNorm with running statistics (eval mode: one per-channel scale and shift)."""
    return isinstance(m, _BatchNorm) and m.affine and m.track_running_stats and m.running_mean is not None


def _batch_bn(parts: list[_Lazy]) -> None:
    """Eval-mode scale and shift of every conv -> BatchNorm branch given (of one block or of a whole
    network) at once: ``kernels.bn_scale_shift`` on the concatenated statistics, then the conv bias as
    ``scale_channels`` scales it. Each element gets the same float64 operations as alone."""
    f64 = torch.float64
    groups: dict = {}
    for p in parts:  # torch.cat needs one device (and, to stay exact, one dtype)
        groups.setdefault((p.bn.running_mean.device, p.bn.running_mean.dtype), []).append(p)
    for (device, _), group in groups.items():
        bns = [p.bn for p in group]
        counts = [m.running_mean.numel() for m in bns]  # what is concatenated, whatever num_features says

        def cat(name):  # under no_grad: no detach needed
            return torch.cat([getattr(m, name) for m in bns]).to(f64)

        eps_values = {float(m.eps) for m in bns}
        if len(eps_values) == 1:
            eps = eps_values.pop()
        else:  # each channel its own BatchNorm's eps
            eps = torch.repeat_interleave(torch.tensor([float(m.eps) for m in bns], dtype=f64, device=device),
                                          torch.tensor(counts, device=device))
        scale, shift = K.bn_scale_shift(cat("running_mean"), cat("running_var"), eps, cat("weight"), cat("bias"))
        for p, s, t in zip(group, scale.split(counts), shift.split(counts)):
            p.scale = s
            p.shift = t if p.conv_bias is None else p.conv_bias.to(f64) * s + t


def _dense(module: nn.Module, info, g) -> _Dense:
    offset = info.placement.offset
    if info.type.converter is None and isinstance(module, Chain):  # its taps, on their own dilation grid
        bk = chain_kernel(list(module), g.in_channels, dims=g.axes, undilated=True)
    else:
        bk = info.type.converter(module, g) if info.type.converter is not None else chain_converter(module, g)
    w = bk.weight.detach()
    bias = None if bk.bias is None else bk.bias.detach()
    diagonal = bk.groups != g.groups and bk.groups == g.out_channels == g.in_channels and w.shape[1] == 1
    if not diagonal:
        w = K.regroup(w, bk.groups, g.groups)
    on_grid = bk.dilation is not None and all(
        o % d == 0 and (n == 1 or e == d) for o, d, e, n in zip(offset, g.dilation, bk.dilation, w.shape[2:]))
    if on_grid:  # the block's taps already: never the dilated window
        offset = tuple(o // d for o, d in zip(offset, g.dilation))
    elif g.dilation != g.ones:  # on the dilated grid: place in the window and take the block's taps
        w = K.undilate(K.place(K.dilate(w, bk.dilation or g.ones), g.window, offset), g.dilation)
        offset = (0,) * g.axes
    elif bk.dilation is not None:
        w = K.dilate(w, bk.dilation)
    return _Dense(w, bias, offset, diagonal)


@dataclass
class _Plan:
    """What one block's fold needs, before any arithmetic: its lazy parts (their BatchNorms batched
    with the other blocks'); the other branches are composed only when the block is assembled, so
    no more than one block's float64 kernels exist at a time."""
    block: object
    parts: list  # _Lazy, or (module, info) of a branch composed in float64 (_dense) when assembled
    dtype: torch.dtype
    device: torch.device


def _plan(block) -> _Plan | None:
    if block.mode == "deployed":
        return None
    g = block.geometry
    dtype, device = block._dtype_device()
    parts = []
    for module, info in zip(block.branches, block.branch_info):
        offset = info.placement.offset
        on_grid = all(o % d == 0 for o, d in zip(offset, g.dilation))
        part = _lazy(module, info, g, tuple(o // d for o, d in zip(offset, g.dilation))) if on_grid else None
        parts.append((module, info) if part is None else part)
    return _Plan(block, parts, dtype, device)


def fold_blocks(blocks, *, norm_after: bool = True) -> list[tuple[Tensor, Tensor]]:
    """``fold_weights`` of several blocks (a whole network's), with the BatchNorms of all their
    conv -> BN branches computed in one batch: the same numbers as one block at a time."""
    with torch.no_grad():
        plans = [_plan(b) for b in blocks]
        _batch_bn([p for plan in plans if plan is not None for p in plan.parts
                   if isinstance(p, _Lazy) and p.bn is not None])
        return [_deployed_weights(b) if plan is None else _assemble(plan, norm_after)
                for b, plan in zip(blocks, plans)]


def fold_weights(block, *, norm_after: bool = True) -> tuple[Tensor, Tensor]:
    """``(weight, bias)`` of the conv equal to ``block`` in eval mode, in the block's dtype
    (``norm_after=False``: the sum of the branches alone, for a layout that keeps that norm)."""
    return fold_blocks([block], norm_after=norm_after)[0]


def _deployed_weights(block) -> tuple[Tensor, Tensor]:
    """A block already re-parameterized in place: its conv is the fold."""
    conv = block.deployed.conv if isinstance(block.deployed, nn.Sequential) else block.deployed
    return conv.weight.detach().clone(), conv.bias.detach().clone()


def _assemble(plan: _Plan, norm_after: bool) -> tuple[Tensor, Tensor]:
    """The block's kernel, chunk by chunk of output channels, and its bias."""
    block, dtype, device = plan.block, plan.dtype, plan.device
    g = block.geometry
    kernel = tuple(g.kernel)
    taps = math.prod(kernel)
    cin_g = g.in_channels // g.groups
    parts = []
    bias = None
    for p in plan.parts:
        if not isinstance(p, _Lazy):
            p = _dense(*p, g)
            if p.bias is not None:
                bias = p.bias if bias is None else bias + p.bias
        parts.append(p)
    for p in parts:
        if isinstance(p, _Lazy):
            bias = p.shift if bias is None else bias + p.shift
    if bias is None:
        bias = torch.zeros(g.out_channels, dtype=torch.float64, device=device)
    after = None
    if block.norm_after is not None and norm_after:
        sk = step_kernel(block.norm_after, g.out_channels, device)
        after = sk.scale.detach()
        bias = bias * after + (sk.shift.detach() if sk.shift is not None else 0)
    # the first lazy branch that covers the whole window initialises each chunk (no zero fill)
    full = next((p for p in parts if isinstance(p, _Lazy) and p.weight is not None and not any(p.offset)
                 and tuple(p.weight.shape[2:]) == kernel), None)
    weight = torch.empty((g.out_channels, cin_g, *kernel), dtype=dtype, device=device)
    per_row = cin_g * taps
    rows = max(1, min(g.out_channels, CHUNK // max(per_row, 1)))
    direct = dtype == torch.float64
    scratch = None if direct else _scratch(rows * per_row, device).view(rows, cin_g, *kernel)
    ones = (1,) * (g.axes + 1)
    for i in range(0, g.out_channels, rows):
        j = min(i + rows, g.out_channels)
        tmp = weight[i:j] if direct else scratch[: j - i]
        if full is not None:
            tmp.copy_(full.weight[i:j])  # exact widening, then the float64 product in place
            tmp.mul_(full.scale[i:j].view(-1, *ones))
        else:
            tmp.zero_()
        for p in parts:
            if p is not full:
                _add(tmp, p, i, j, g, device)
        if after is not None:
            tmp.mul_(after[i:j].view(-1, *ones))
        if not direct:
            weight[i:j].copy_(tmp)
    bias = bias.to(dtype, copy=True)  # never a view of the batch's shared statistics
    if g.transposed or g.dims == 0:  # the deployed layer's own layout (block.deploy_layout)
        weight = (K.transpose_layout(weight, g.groups).contiguous() if g.transposed
                  else weight.reshape(g.out_channels, g.in_channels))
    return weight, bias


def _window(offset, shape) -> tuple[slice, ...]:
    return (slice(None), slice(None), *(slice(o, o + n) for o, n in zip(offset, shape)))


def _add(tmp: Tensor, p, i: int, j: int, g, device) -> None:
    """Add part ``p``'s output channels ``i:j`` to the float64 chunk ``tmp``."""
    kernel = tuple(g.kernel)
    taps = math.prod(kernel)
    cin_g = g.in_channels // g.groups
    per_row = cin_g * taps
    ones = (1,) * (g.axes + 1)
    if p.diagonal and (p.weight is None or all(n == 1 for n in p.weight.shape[2:])):
        values = p.scale[i:j] if p.weight is None else p.weight[i:j].reshape(-1)
        at = 0
        for o, n in zip(p.offset, kernel):  # row-major position of the tap in the window
            at = at * n + o
        if cin_g == g.out_channels:  # one group: (r, i + r) is a strided line of the chunk
            tmp.view(-1)[i * taps + at::per_row + taps][: j - i].add_(values)
        elif cin_g == 1:  # depthwise: (r, 0)
            tmp.view(-1)[at::per_row][: j - i].add_(values)
        else:
            o = torch.arange(i, j, device=device)
            flat = (o - i) * per_row + (o % cin_g) * taps + at
            tmp.view(-1).index_add_(0, flat, values)
    elif isinstance(p, _Lazy):
        tmp[_window(p.offset, p.weight.shape[2:])].addcmul_(p.weight[i:j], p.scale[i:j].view(-1, *ones))
    elif p.diagonal:  # output o reads input o: position o % (C_in / groups) in its group
        r = torch.arange(j - i, device=device)
        c = torch.arange(i, j, device=device) % cin_g
        sl = (r, c, *_window(p.offset, p.weight.shape[2:])[2:])
        tmp[sl] = tmp[sl] + p.weight[i:j, 0]
    else:
        tmp[_window(p.offset, p.weight.shape[2:])] += p.weight[i:j]


__all__ = ["fold_blocks", "fold_weights"]
