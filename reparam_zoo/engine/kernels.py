"""Kernel algebra: pure functions on tensors, no ``nn.Module`` anywhere.

Every structural re-parameterization reduces to a handful of identities between
convolutions (derived in ``docs/math.md``):

* a BatchNorm in eval mode after a conv is a per-channel affine map, so it folds
  into the conv's weight and bias (:func:`fuse_bn`, :func:`bn_scale_shift`);
* a smaller kernel equals a larger one padded with zeros at its offset inside the
  larger window (:func:`place`); a dilated kernel equals an inflated dense kernel
  with zeros between the taps (:func:`dilate`, :func:`undilate`);
* identity and average pooling are convolutions with fixed kernels
  (:func:`identity_kernel`, :func:`avgpool_kernel`);
* two convolutions in sequence, without padding in between, are one convolution
  whose kernel is the full convolution of the two kernels (:func:`compose`);
* convolution is linear, so parallel branches sum (:func:`sum_kernels`; :func:`sum_placed` sums
  kernels of different extents and groupings without padding or expanding each one).

Conventions: weights are ``(C_out, C_in // groups, *k)`` as in ``F.conv1d/2d/3d``, with
``len(k) = d`` spatial axes (d = 1, 2, 3; a Linear layer is the d = 1 kernel of extent 1 on a
length-1 signal); the 2-D names (``kh, kw``) below stand for every axis. A transposed
convolution's kernel is kept in this same layout (``transpose_layout`` converts it to and from
``ConvTranspose``'s ``(C_in, C_out // groups, *k)``). A bias of ``None`` means zero. Functions that build or combine kernels work in the
dtype they are given; the engine calls them in float64 to fold, and casts at the very end. All functions are differentiable with respect to their tensor
arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from reparam_zoo.engine.products import depthwise_after_pointwise, pointwise_product

Pair = tuple[int, int]

class _ByAxes:
    """``CONV[d]`` is ``F.conv{d}d``, looked up at each call (so a profiler's or a test's wrapper sees it)."""

    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, axes: int):
        return getattr(F, self.name.format(axes))


CONV = _ByAxes("conv{}d")
CONV_TRANSPOSE = _ByAxes("conv_transpose{}d")

__all__ = [
    "as_pair",
    "as_tuple",
    "transpose_layout",
    "bn_scale_shift",
    "fuse_bn",
    "scale_channels",
    "dilate",
    "undilate",
    "place",
    "identity_kernel",
    "avgpool_kernel",
    "basis_kernel",
    "normalize_filters",
    "regroup",
    "compose",
    "sum_kernels",
    "sum_placed",
]


def as_pair(value: int | Sequence[int], name: str = "value") -> Pair:
    """``3 -> (3, 3)``, ``(1, 3) -> (1, 3)``."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"Expected {name} to be an int or a pair of ints but got {value!r}")
    return pair  # type: ignore[return-value]


def as_tuple(value: int | Sequence[int], n: int, name: str = "value") -> tuple[int, ...]:
    """``3 -> (3,) * n``; a sequence must have ``n`` entries (one per axis)."""
    if isinstance(value, int):
        return (value,) * n
    out = tuple(int(v) for v in value)
    if len(out) != n:
        raise ValueError(f"Expected {name} to be an int or {n} ints (one per axis) but got {value!r}")
    return out


def _axes(weight: Tensor) -> int:
    return weight.dim() - 2


def _per_channel(v: Tensor, d: int) -> Tensor:
    """``(C,)`` as ``(C, 1, *[1] * d)`` to broadcast over a kernel's input channels and taps."""
    return v.reshape(-1, *([1] * (d + 1)))


def transpose_layout(weight: Tensor, groups: int) -> Tensor:
    """``(A, B // groups, *k)`` -> ``(B, A // groups, *k)``: swap the channel roles inside each group.

    Between the conv layout ``(C_out, C_in // g, *k)`` the engine computes in and
    ``ConvTranspose``'s ``(C_in, C_out // g, *k)``; its own inverse. No flip: a transposed
    conv's tap ``j`` is the conv's tap ``j`` (docs/math.md, transposed convolutions)."""
    a, bg, *k = weight.shape
    if a % groups:
        raise ValueError(f"Expected {a} channels divisible by groups={groups}")
    w = weight.reshape(groups, a // groups, bg, *k).transpose(1, 2)
    return w.reshape(groups * bg, a // groups, *k)


def _bias_or_zeros(bias: Tensor | None, weight: Tensor) -> Tensor:
    if bias is not None:
        return bias
    return torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)


# ----------------------------------------------------------------------------- BatchNorm


def bn_scale_shift(
    running_mean: Tensor,
    running_var: Tensor,
    eps: float | Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``y = scale * x + shift`` per channel.

    ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``; ``weight``
    and ``bias`` (gamma, beta) are ``None`` for ``affine=False``. ``eps`` is the BN's
    own eps: never substitute a constant. Several BatchNorms of the same width at once:
    statistics stacked as ``(n, C)`` and ``eps`` a ``(n, 1)`` tensor.
    """
    if running_mean is None or running_var is None:
        raise ValueError(
            "Expected a BatchNorm with running statistics but got running_mean/running_var None "
            "(track_running_stats=False); such a BatchNorm normalises with batch statistics "
            "and is not a fixed linear map, so it cannot be folded"
        )
    if running_mean.shape != running_var.shape or running_mean.dim() not in (1, 2):
        raise ValueError(
            f"Expected running_mean and running_var of the same shape, (C,) or stacked (n, C), but got "
            f"{tuple(running_mean.shape)} and {tuple(running_var.shape)}"
        )
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def scale_channels(
    weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Apply ``y -> scale * y + shift`` (per output channel) after the conv ``(weight, bias)``."""
    if scale.shape != (weight.shape[0],):
        raise ValueError(
            f"Expected a per-channel scale of shape ({weight.shape[0]},) but got {tuple(scale.shape)}"
        )
    w = weight * _per_channel(scale, _axes(weight))
    b = _bias_or_zeros(bias, weight) * scale
    if shift is not None:
        b = b + shift
    return w, b


def fuse_bn(
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    bn_weight: Tensor | None = None,
    bn_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows the conv ``(weight, bias)``.

    ``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``.
    """
    scale, shift = bn_scale_shift(running_mean, running_var, eps, bn_weight, bn_bias)
    return scale_channels(weight, bias, scale, shift)


# ----------------------------------------------------------------------------- geometry


def dilate(weight: Tensor, dilation: int | Sequence[int]) -> Tensor:
    """Inflate a dilated kernel into the equivalent dense kernel (zeros between taps).

    ``(.., k_i)`` with dilation ``d_i`` becomes ``(.., d_i*(k_i-1)+1)`` on every axis.
    """
    dil = as_tuple(dilation, _axes(weight), "dilation")
    if any(d < 1 for d in dil):
        raise ValueError(f"Expected a dilation >= 1 but got {dil}")
    if all(d == 1 for d in dil):
        return weight
    k = weight.shape[2:]
    out = weight.new_zeros(*weight.shape[:2], *(d * (n - 1) + 1 for d, n in zip(dil, k)))
    out[(..., *(slice(None, None, d) for d in dil))] = weight
    return out


def undilate(weight: Tensor, dilation: int | Sequence[int]) -> Tensor:
    """Inverse of :func:`dilate`: keep the taps on the dilation grid.

    The caller guarantees (the engine checks it structurally when a block is built)
    that every off-grid entry is zero.
    """
    dil = as_tuple(dilation, _axes(weight), "dilation")
    ext = tuple(weight.shape[2:])
    if any((e - 1) % d for e, d in zip(ext, dil)):
        raise ValueError(
            f"Expected a dense kernel of extent 1 + dilation*(k-1) but got {_x(ext)} for dilation {dil}"
        )
    if all(d == 1 for d in dil):
        return weight
    return weight[(..., *(slice(None, None, d) for d in dil))]


def _x(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def place(weight: Tensor, window: int | Sequence[int], offset: int | Sequence[int] | None = None) -> Tensor:
    """Zero-pad ``weight`` (``.., *k``) into a ``window`` at ``offset`` (the first tap on each axis).

    ``offset=None`` centres the kernel; that needs ``window - k`` even on each axis.
    Raises ``ValueError`` when the kernel does not fit the window.
    """
    d = _axes(weight)
    win = as_tuple(window, d, "window")
    k = tuple(weight.shape[2:])
    if offset is None:
        if any((w - n) % 2 for w, n in zip(win, k)):
            raise ValueError(
                f"A {_x(k)} kernel cannot be centred in a {_x(win)} window: "
                "the size difference must be even on each axis"
            )
        offset = tuple((w - n) // 2 for w, n in zip(win, k))
    off = as_tuple(offset, d, "offset")
    if any(o < 0 or o + n > w for o, n, w in zip(off, k, win)):
        raise ValueError(f"A {_x(k)} kernel at offset {off} does not fit in a {_x(win)} window")
    if k == win:
        return weight
    pad: list[int] = []
    for o, n, w in reversed(list(zip(off, k, win))):  # F.pad takes the last axis first
        pad += [o, w - n - o]
    return F.pad(weight, pad)


# ----------------------------------------------------------------------------- fixed kernels


def identity_kernel(
    channels: int,
    groups: int = 1,
    kernel_size: int | Sequence[int] = 1,
    *,
    dims: int = 2,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The conv kernel of the identity map: ``W[i, i % (C / groups), centre] = 1``.

    ``kernel_size`` an int: that extent on ``dims`` axes; a sequence: one entry per axis."""
    k = as_tuple(kernel_size, dims if isinstance(kernel_size, int) else len(kernel_size), "kernel_size")
    if any(n % 2 == 0 for n in k):
        raise ValueError(f"Expected an odd kernel size for an identity kernel but got {k}")
    if channels < 1 or groups < 1 or channels % groups:
        raise ValueError(f"Expected channels divisible by groups but got channels={channels}, groups={groups}")
    per_group = channels // groups
    w = torch.zeros(channels, per_group, *k, dtype=dtype, device=device)
    idx = torch.arange(channels, device=w.device)
    w[(idx, idx % per_group, *(n // 2 for n in k))] = 1
    return w


def avgpool_kernel(
    channels: int,
    kernel_size: int | Sequence[int],
    groups: int | None = None,
    *,
    count_include_pad: bool = True,
    dims: int = 2,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Depthwise average pooling as a conv kernel: ``1 / prod(k)`` on the diagonal.

    ``groups`` is the conv's groups (``None``: depthwise, ``groups=channels``).
    Only ``count_include_pad=True`` is linear at the borders (the divisor is always
    ``prod(k)``); with ``False`` border outputs are divided by the number of valid
    pixels, which no convolution does, so it is rejected. ``kernel_size`` an int: that
    extent on ``dims`` axes.
    """
    if not count_include_pad:
        raise ValueError(
            "Average pooling with count_include_pad=False divides border outputs by the number "
            "of valid pixels, which is not a convolution; use count_include_pad=True"
        )
    k = as_tuple(kernel_size, dims if isinstance(kernel_size, int) else len(kernel_size), "kernel_size")
    w = torch.full((channels, 1, *k), 1.0 / math.prod(k), dtype=dtype, device=device)
    return regroup(w, channels, channels if groups is None else groups)


def basis_kernel(
    channels: int,
    multiplier: int,
    kernel_size: int | Sequence[int],
    *,
    dims: int = 2,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """DO-Conv's depthwise "identity": a depthwise conv (``groups=channels``) with
    ``multiplier`` outputs per channel, output ``d`` of each channel being the one-hot
    kernel at spatial position ``d`` (row-major), zero for ``d >= prod(k)``.

    Followed by a 1x1 conv ``W[o, c * multiplier + d]``, it composes to the kxk kernel
    ``W[o, c, d]`` laid out row-major: the over-parameterisation starts as a plain conv.
    Shape ``(channels * multiplier, 1, *k)``; needs ``multiplier >= prod(k)``.
    """
    k = as_tuple(kernel_size, dims if isinstance(kernel_size, int) else len(kernel_size), "kernel_size")
    taps = math.prod(k)
    if multiplier < taps:
        raise ValueError(f"Expected a depth multiplier >= prod(k) = {taps} but got {multiplier}")
    eye = torch.zeros(multiplier, taps, dtype=dtype, device=device)
    eye[:taps] = torch.eye(taps, dtype=dtype, device=device)
    return eye.reshape(1, multiplier, *k).expand(channels, -1, *k).reshape(channels * multiplier, 1, *k)


def normalize_filters(weight: Tensor, eps: float = 1e-12) -> Tensor:
    """Each output filter divided by its L2 norm (DiracNet's ``normalize(W)``):
    ``W[o] / max(||W[o]||_2, eps)``, the norm over input channels and taps."""
    norm = weight.flatten(1).norm(dim=1).clamp_min(eps)
    return weight / _per_channel(norm, _axes(weight))


# ----------------------------------------------------------------------------- groups


def regroup(weight: Tensor, groups_from: int, groups_to: int) -> Tensor:
    """Re-express a conv with ``groups_from`` groups as one with ``groups_to`` groups.

    Needs ``groups_from % groups_to == 0``: a finer grouping is a coarser one with
    zeros off the diagonal blocks; the other direction is not a conv with fewer
    connections, so it raises.
    """
    if groups_from == groups_to:
        return weight
    if groups_to < 1 or groups_from % groups_to:
        raise ValueError(
            f"A conv with groups={groups_from} cannot be written with groups={groups_to}: "
            "the target groups must divide the source groups"
        )
    c_out, cin_g, *k = weight.shape
    r = groups_from // groups_to  # source groups per target group
    if c_out % groups_from:
        raise ValueError(f"Expected C_out={c_out} divisible by groups={groups_from}")
    out_g = c_out // groups_from
    # (groups_to, r, out_g, cin_g, taps) -> block-diagonal over r inside each target group
    w = weight.reshape(groups_to, r, out_g, cin_g, -1)
    eye = torch.eye(r, dtype=weight.dtype, device=weight.device)
    # out[t, i, o, j, c] = w[t, i, o, c] * eye[i, j]
    out = torch.einsum("tiock,ij->tiojck", w, eye)
    return out.reshape(c_out, r * cin_g, *k)


# ----------------------------------------------------------------------------- composition


def compose(
    first: tuple[Tensor, Tensor | None],
    second: tuple[Tensor, Tensor | None],
    *,
    groups: tuple[int, int] = (1, 1),
    stride: int | Sequence[int] = 1,
    dilation: tuple[int | Sequence[int], int | Sequence[int]] = (1, 1),
) -> tuple[Tensor, Tensor, int]:
    """One conv equal to ``second(first(x))`` with NO padding between the two.

    ``first = (W1, b1)`` maps C_in -> C_mid with ``groups[0]``, dilation ``dilation[0]``
    and ``stride``; ``second = (W2, b2)`` maps C_mid -> C_out with ``groups[1]`` and
    ``dilation[1]``. The result ``(W, b, g)`` is a DENSE (undilated) kernel with ``g = gcd(groups)``: the
    composite is ``W = sum_m W2[o,m] (*) W1[m,i]`` (full convolution, W2 inflated by the first conv's stride;
    matrix products where one side is pointwise, :mod:`reparam_zoo.engine.products`) and
    ``b = b2 + sum_{m, taps} W2[o,m] * b1[m]``. Its stride is ``stride * stride2``, which the caller tracks."""
    (w1, b1), (w2, b2) = first, second
    g1, g2 = groups
    d = _axes(w1)
    s1 = as_tuple(stride, d, "stride")
    w1 = dilate(w1, dilation[0])
    d2 = as_tuple(dilation[1], d, "dilation")
    w2 = dilate(w2, tuple(a * b for a, b in zip(d2, s1)))
    c_mid = w1.shape[0]
    if w2.shape[1] * g2 != c_mid:
        raise ValueError(
            f"Expected the second conv to take {c_mid} channels but got "
            f"{w2.shape[1]} x groups {g2} = {w2.shape[1] * g2}"
        )
    dw = depthwise_after_pointwise(w1, w2, g1, g2)
    if dw is not None:  # pooling (any depthwise kernel) after a 1x1: a broadcast product, nothing regrouped
        return dw, _bias_or_zeros(b2, w2) + (0 if b1 is None else w2.flatten(1).sum(1) * b1), g1
    g = math.gcd(g1, g2)
    w1 = regroup(w1, g1, g)
    w2 = regroup(w2, g2, g)
    c_out, cmid_g, *k2 = w2.shape
    if all(n == 1 for n in k2) and cmid_g == 1 and c_out == c_mid and g == c_mid:
        # the second step is per-channel (depthwise 1x1): a scale, no conv needed
        w, b = scale_channels(w1, b1, w2.reshape(-1), b2)
        return w, b, g
    spatial = tuple(range(2, 2 + d))
    w = pointwise_product(w1, w2, g)  # one side pointwise: matrix products over the middle channels
    if w is None:  # full convolution via cross-correlation with the flipped second kernel
        w = CONV[d](w1.transpose(0, 1), w2.flip(spatial), padding=tuple(n - 1 for n in k2), groups=g).transpose(0, 1)
    b = _bias_or_zeros(b2, w2)
    if b1 is not None:
        out_g = c_out // g
        b1_per_out = b1.reshape(g, cmid_g).repeat_interleave(out_g, dim=0)  # (C_out, C_mid/g)
        b = b + (w2.sum(dim=spatial) * b1_per_out).sum(dim=1)
    return w, b, g


def sum_kernels(kernels: Sequence[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor]:
    """Sum parallel branches that already share one shape, groups and geometry."""
    if not kernels:
        raise ValueError("Expected at least one kernel to sum but got none")
    shape = kernels[0][0].shape
    for i, (w, _) in enumerate(kernels):
        if w.shape != shape:
            raise ValueError(f"Expected every kernel of shape {tuple(shape)} but kernel {i} is {tuple(w.shape)}")
    weight = torch.stack([w for w, _ in kernels]).sum(0)
    bias = torch.stack([_bias_or_zeros(b, w) for w, b in kernels]).sum(0)
    return weight, bias


def sum_placed(
    parts: Sequence[tuple[Tensor, Tensor | None, int, Sequence[int]]],
    window: int | Sequence[int],
    in_channels: int,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """The sum of parallel branches ``(weight, bias, groups, offset)`` of different extents and
    groupings as one ``(C_out, in_channels // groups, *window)`` kernel (undilated), differentiable —
    what ``sum_kernels`` of every part regrouped and placed in the window gives, with less work:
    whole-window kernels are added, a smaller one goes into its slice, and a depthwise kernel
    (``groups == C_out == in_channels``: identity, pooling) on a block with fewer groups is added
    on the diagonal ``o -> o mod (in_channels / groups)`` instead of being expanded to a dense one.
    The parts' tensors are never written to."""
    if not parts:
        raise ValueError("Expected at least one kernel to sum but got none")
    d = _axes(parts[0][0])
    win = as_tuple(window, d, "window")
    c_out = parts[0][0].shape[0]
    cin_g = in_channels // groups
    full, placed = [], []
    for w, _, g, offset in parts:
        diagonal = g != groups and g == c_out == in_channels and w.shape[1] == 1
        if not diagonal:
            w = regroup(w, g, groups)
        if w.shape[0] != c_out or (not diagonal and w.shape[1] != cin_g):
            raise ValueError(f"Expected kernels of {c_out} x {cin_g} channels but got {tuple(w.shape[:2])}")
        if not diagonal and tuple(w.shape[2:]) == win:
            full.append(w)
        else:
            placed.append((w, diagonal, as_tuple(offset, d, "offset")))
    if len(full) >= 2:
        out = full[0] + full[1]
        for w in full[2:]:
            out += w  # into the fresh sum, never into a part
    elif full and not placed:
        out = full[0]
    elif full:
        out = full[0].clone()
    else:
        ref = parts[0][0]
        out = torch.zeros(c_out, cin_g, *win, dtype=ref.dtype, device=ref.device)
    for w, diagonal, off in placed:
        k = tuple(w.shape[2:])
        if any(o < 0 or o + n > e for o, n, e in zip(off, k, win)):
            raise ValueError(f"A {_x(k)} kernel at offset {off} does not fit in a {_x(win)} window")
        window_slice = tuple(slice(o, o + n) for o, n in zip(off, k))
        if diagonal:  # out[t*cin_g + j, j] for each group t: a diagonal view, (G, *k, cin_g)
            view = out.view(groups, cin_g, cin_g, *win)[(..., *window_slice)].diagonal(0, 1, 2)
            view += w.reshape(groups, cin_g, *k).movedim(1, -1)
        else:
            out[(slice(None), slice(None), *window_slice)] += w
    biases = [b for _, b, _, _ in parts if b is not None]
    bias = biases[0] if biases else torch.zeros(c_out, dtype=out.dtype, device=out.device)
    for b in biases[1:]:
        bias = bias + b
    return out, bias
