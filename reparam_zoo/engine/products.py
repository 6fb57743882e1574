"""Two convs in sequence as ONE kernel by matrix products, where one of them is pointwise.

``kernels.compose`` writes ``second(first(x))`` as one conv. In general that is a full convolution of
the two kernels; where one kernel has extent 1 on every axis (DBB's and ExpandNet's 1x1 -> kxk
chains, a 1x1 -> average pooling branch) every output tap is ONE product over the middle channels,
per group — ``W[o, i, t] = sum_m W2[o, m, t] W1[m, i]`` (or ``W2[o, m] W1[m, i, t]``) — and the full
convolution would multiply k^d times as many zeros (and, through im2col, allocate k^d times the
composite per input channel). A depthwise second kernel after a pointwise first (average pooling
after a 1x1) is a broadcast product, no regrouping to a dense kernel at all. The same float64
products and sums as the convolution, in another order (docs/math.md §13).

Pure tensor functions; no other import of the package.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pointwise(weight: Tensor) -> bool:
    return all(n == 1 for n in weight.shape[2:])


def depthwise_after_pointwise(w1: Tensor, w2: Tensor, g1: int, g2: int) -> Tensor | None:
    """``second(first(x))`` for a pointwise ``first`` (``(C, C_in/g1, 1..)``) and a depthwise ``second``
    (``(C, 1, *k)``, groups C): ``W[o, i, t] = W2[o, 0, t] * W1[o, i]``, with the first conv's ``g1`` groups;
    None where the kernels are not of that form."""
    c = w1.shape[0]
    if not (_pointwise(w1) and g2 == c == w2.shape[0] and w2.shape[1] == 1 and c % g1 == 0):
        return None
    k2 = w2.shape[2:]
    return w2 * w1.reshape(c, w1.shape[1], *([1] * len(k2)))


def pointwise_product(w1: Tensor, w2: Tensor, groups: int) -> Tensor | None:
    """``second(first(x))`` with both kernels already in ``groups`` groups, where one of them is pointwise:
    one matrix product over the middle channels per group and tap; None where both are spatial."""
    c_mid, cin_g, *k1 = w1.shape
    c_out, cmid_g, *k2 = w2.shape
    g = groups
    if _pointwise(w2):  # W[o, i, t] = sum_m W2[o, m] W1[m, i, t]
        a = w2.reshape(g, c_out // g, cmid_g)
        b = w1.reshape(g, c_mid // g, cin_g * max(1, torch.Size(k1).numel()))
        return torch.bmm(a, b).reshape(c_out, cin_g, *k1)
    if _pointwise(w1):  # W[o, i, t] = sum_m W2[o, m, t] W1[m, i]
        taps = torch.Size(k2).numel()
        a = w2.reshape(g, c_out // g, cmid_g, taps).transpose(2, 3).reshape(g, (c_out // g) * taps, cmid_g)
        b = w1.reshape(g, c_mid // g, cin_g)
        out = torch.bmm(a, b).reshape(g, c_out // g, taps, cin_g).transpose(2, 3)
        return out.reshape(c_out, cin_g, *k2)
    return None


__all__ = ["depthwise_after_pointwise", "pointwise_product"]
