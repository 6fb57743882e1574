"""Compositions by matrix products (engine/products.py) and on dilation grids (chain_kernel): the same numbers
as the full convolution of the dense kernels, with no work on the dilated window (issue 24)."""

import math

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.steps import chain_kernel
from reparam_zoo.engine.verify import relative_error


def _full_convolution(first, second, groups, stride, dilation):
    """The reference: both kernels dense (dilated, inflated by the stride) and regrouped, one full convolution."""
    (w1, b1), (w2, b2) = first, second
    d = w1.dim() - 2
    s1 = K.as_tuple(stride, d)
    w1 = K.dilate(w1, dilation[0])
    w2 = K.dilate(w2, tuple(a * b for a, b in zip(K.as_tuple(dilation[1], d), s1)))
    g = math.gcd(*groups)
    w1, w2 = K.regroup(w1, groups[0], g), K.regroup(w2, groups[1], g)
    c_out, cmid_g, *k2 = w2.shape
    spatial = tuple(range(2, 2 + d))
    w = K.CONV[d](w1.transpose(0, 1), w2.flip(spatial), padding=tuple(n - 1 for n in k2), groups=g).transpose(0, 1)
    b = b2 + (w2.sum(dim=spatial) * b1.reshape(g, cmid_g).repeat_interleave(c_out // g, dim=0)).sum(1)
    return w, b, g


CASES = [  # cin, cmid, cout, g1, g2, k1, k2, stride, dilation of the second
    (4, 6, 8, 1, 1, 1, 3, 1, 1), (4, 6, 8, 2, 1, 1, 3, 1, 2), (4, 8, 8, 2, 2, 1, 3, 2, 1),
    (6, 6, 6, 1, 6, 1, 3, 1, 1), (6, 6, 6, 3, 6, 1, 2, 1, 3), (4, 6, 8, 1, 1, 3, 1, 2, 1),
    (4, 6, 8, 2, 2, 3, 1, 1, 2), (6, 6, 6, 2, 3, 1, 3, 1, 1), (4, 4, 4, 1, 1, 3, 3, 1, 1),
]


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_compose_equals_the_full_convolution_of_the_dense_kernels(dims, case):
    cin, cmid, cout, g1, g2, k1, k2, stride, dil = case
    torch.manual_seed(0)
    first = (torch.randn(cmid, cin // g1, *([k1] * dims), dtype=torch.float64), torch.randn(cmid, dtype=torch.float64))
    second = (torch.randn(cout, cmid // g2, *([k2] * dims), dtype=torch.float64),
              torch.randn(cout, dtype=torch.float64))
    w, b, g = K.compose(first, second, groups=(g1, g2), stride=stride, dilation=(1, dil))
    rw, rb, rg = _full_convolution(first, second, (g1, g2), stride, (1, dil))
    assert relative_error(K.regroup(w, g, rg) if g != rg else w, rw) <= 1e-14
    assert relative_error(b, rb) <= 1e-14


def test_a_dilated_chain_is_composed_on_its_taps():
    """A 1x1 -> BN -> dilated 3x3 chain (DBB's branch of an ASPP conv): undilated=True gives the 3x3 taps and
    their spacing; the dense kernel is the same numbers as composing the dilated kernels."""
    chain = nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6), nn.Conv2d(6, 5, 3, dilation=24,
                                                                                       bias=False)).double()
    rz.randomize_norms(chain, seed=0).eval()
    taps = chain_kernel(list(chain), 4, undilated=True)
    assert tuple(taps.weight.shape) == (5, 4, 3, 3) and taps.dilation == (24, 24)
    dense = chain_kernel(list(chain), 4)
    assert tuple(dense.weight.shape) == (5, 4, 49, 49) and dense.dilation is None
    assert torch.equal(K.dilate(taps.weight, 24), dense.weight)
    x = torch.randn(1, 4, 60, 60, dtype=torch.float64)
    with torch.no_grad():
        want = chain(x)
        got = nn.functional.conv2d(x, dense.weight, dense.bias)
    assert relative_error(got, want) <= 1e-12


@pytest.mark.parametrize("dilation", [2, 24, 36])
def test_a_dilated_dbb_block_folds_exactly(dilation):
    """DeepLabV3's ASPP convs (dilation 12 to 36) expanded with dbb fold exactly (they could not: the fold
    composed on the 73x73 window and asked for 189 GB at dilation 24)."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(8))
    expanded, report = rz.expand(conv.double(), "dbb", init="fresh")
    assert len(report.expanded) == 1
    block = rz.randomize_norms(expanded[0], seed=1).eval()
    assert rz.verify(block, (1, 8, 2 * dilation + 5, 2 * dilation + 5), dtype=torch.float64).max_rel <= 1e-12


def test_the_fold_of_a_dilated_block_never_builds_its_dilated_window(monkeypatch):
    """Structural, not timed: folding a dbb block of dilation 36 places no kernel into its 73x73 window
    (every branch is assembled as 3x3 taps on the block's grid)."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=36, dilation=36, bias=False), nn.BatchNorm2d(8))
    block = rz.randomize_norms(rz.expand(conv, "dbb", init="fresh")[0][0], seed=1).eval()
    extents = []
    place, dilate = K.place, K.dilate

    def spy_place(weight, window, offset=None):
        extents.append(max(K.as_tuple(window, weight.dim() - 2)))
        return place(weight, window, offset)

    def spy_dilate(weight, dilation):
        out = dilate(weight, dilation)
        extents.append(max(out.shape[2:]))
        return out

    monkeypatch.setattr(K, "place", spy_place)
    monkeypatch.setattr(K, "dilate", spy_dilate)
    folded = rz.fold_model(block)
    assert max(extents, default=3) <= 3, extents
    x = torch.randn(1, 8, 80, 80)
    with torch.no_grad():
        assert relative_error(folded(x), block(x)) <= 1e-5
