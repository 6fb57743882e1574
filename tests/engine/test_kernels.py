"""The kernel algebra, each identity checked against F.conv2d on random data (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reparam_zoo.engine import kernels as K

from tests.conftest import assert_close, rand


def test_fuse_bn_matches_conv_then_bn_with_eps_and_conv_bias():
    x, w, b = rand(2, 4, 7, 6), rand(5, 4, 3, 3), rand(5)
    bn = nn.BatchNorm2d(5, eps=1e-2).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    ref = bn(F.conv2d(x, w, b, padding=1))
    fw, fb = K.fuse_bn(w, b, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    assert_close(ref, F.conv2d(x, fw, fb, padding=1))
    # the BN's own eps matters: a constant 1e-5 would be wrong here
    fw2, fb2 = K.fuse_bn(w, b, bn.running_mean, bn.running_var, 1e-5, bn.weight, bn.bias)
    assert (F.conv2d(x, fw2, fb2, padding=1) - ref).abs().max() > 1e-4


def test_fuse_bn_without_affine_and_without_conv_bias():
    x, w = rand(1, 3, 5, 5), rand(3, 3, 1, 1)
    bn = nn.BatchNorm2d(3, affine=False).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 2)
    fw, fb = K.fuse_bn(w, None, bn.running_mean, bn.running_var, bn.eps)
    assert_close(bn(F.conv2d(x, w)), F.conv2d(x, fw, fb))


def test_bn_without_running_stats_is_refused():
    bn = nn.BatchNorm2d(3, track_running_stats=False)
    with pytest.raises(ValueError, match="running statistics"):
        K.bn_scale_shift(bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)


def test_scale_channels_is_a_per_channel_affine_after_the_conv():
    x, w, b, s, t = rand(1, 2, 5, 5), rand(3, 2, 3, 3), rand(3), rand(3), rand(3)
    fw, fb = K.scale_channels(w, b, s, t)
    ref = F.conv2d(x, w, b) * s.view(1, -1, 1, 1) + t.view(1, -1, 1, 1)
    assert_close(ref, F.conv2d(x, fw, fb))
    with pytest.raises(ValueError, match="per-channel scale"):
        K.scale_channels(w, b, rand(4))


@pytest.mark.parametrize("kernel,window,padding", [((1, 3), (3, 3), (1, 1)), ((3, 1), (5, 5), (2, 2)),
                                                   ((1, 1), (3, 5), (1, 2)), ((3, 5), (3, 5), (1, 2))])
def test_place_centres_a_small_kernel_in_the_window(kernel, window, padding):
    x, w = rand(2, 3, 8, 9), rand(4, 3, *kernel)
    own_pad = ((window[0] - kernel[0]) // 2, (window[1] - kernel[1]) // 2)
    ref = F.conv2d(x, w, padding=(padding[0] - own_pad[0], padding[1] - own_pad[1]))
    assert_close(ref, F.conv2d(x, K.place(w, window), padding=padding))


def test_place_at_an_explicit_offset_and_refuses_what_does_not_fit():
    w = rand(1, 1, 1, 2)
    placed = K.place(w, (3, 3), (2, 1))
    assert placed.shape == (1, 1, 3, 3) and torch.equal(placed[0, 0, 2, 1:], w[0, 0, 0])
    assert placed.abs().sum() == w.abs().sum()
    with pytest.raises(ValueError, match="does not fit"):
        K.place(rand(1, 1, 5, 5), (3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        K.place(rand(1, 1, 1, 3), (3, 3), (0, 1))
    with pytest.raises(ValueError, match="cannot be centred"):
        K.place(rand(1, 1, 2, 2), (3, 3))


@pytest.mark.parametrize("dilation", [(2, 2), (1, 3), (3, 2)])
def test_dilate_is_the_inflated_dense_kernel_and_undilate_inverts_it(dilation):
    x, w = rand(1, 2, 11, 12), rand(3, 2, 3, 2)
    dense = K.dilate(w, dilation)
    assert dense.shape[-2:] == (dilation[0] * 2 + 1, dilation[1] * 1 + 1)
    assert_close(F.conv2d(x, w, dilation=dilation), F.conv2d(x, dense))
    assert torch.equal(K.undilate(dense, dilation), w)


@pytest.mark.parametrize("channels,groups,ks", [(4, 1, 1), (4, 2, 3), (6, 3, 3), (4, 4, 5), (6, 1, (1, 3))])
def test_identity_kernel_is_group_aware(channels, groups, ks):
    x = rand(2, channels, 5, 6)
    w = K.identity_kernel(channels, groups, ks, dtype=torch.float64)
    kh, kw = K.as_pair(ks)
    assert w.shape == (channels, channels // groups, kh, kw)
    assert torch.equal(F.conv2d(x, w, padding=(kh // 2, kw // 2), groups=groups), x)


def test_identity_kernel_is_built_on_the_requested_dtype():
    assert K.identity_kernel(2, dtype=torch.float16).dtype == torch.float16
    with pytest.raises(ValueError, match="odd"):
        K.identity_kernel(2, 1, 2)


@pytest.mark.parametrize("ks,stride,groups", [(3, 1, None), (3, 2, None), ((1, 3), 1, 2), (5, 1, 1)])
def test_avgpool_kernel_matches_avg_pool2d_with_count_include_pad(ks, stride, groups):
    x = rand(2, 4, 9, 8)
    kh, kw = K.as_pair(ks)
    pad = (kh // 2, kw // 2)
    ref = F.avg_pool2d(x, (kh, kw), stride, pad, count_include_pad=True)
    w = K.avgpool_kernel(4, ks, groups, dtype=torch.float64)
    g = 4 if groups is None else groups
    assert_close(ref, F.conv2d(x, w, stride=stride, padding=pad, groups=g))


def test_avgpool_kernel_refuses_count_include_pad_false():
    with pytest.raises(ValueError, match="count_include_pad"):
        K.avgpool_kernel(4, 3, count_include_pad=False)


@pytest.mark.parametrize("g_from,g_to", [(4, 1), (4, 2), (2, 1), (8, 4)])
def test_regroup_writes_a_grouped_conv_with_fewer_groups(g_from, g_to):
    x, w = rand(2, 8, 5, 5), rand(8, 8 // g_from, 3, 3)
    w2 = K.regroup(w, g_from, g_to)
    assert w2.shape == (8, 8 // g_to, 3, 3)
    assert_close(F.conv2d(x, w, groups=g_from), F.conv2d(x, w2, groups=g_to))


def test_regroup_refuses_more_groups():
    with pytest.raises(ValueError, match="must divide"):
        K.regroup(rand(8, 8, 1, 1), 1, 2)


COMPOSE_CASES = [
    # (C_in, C_mid, C_out, k1, k2, g1, g2, dilation1, dilation2, stride1, stride2)
    (4, 6, 5, 1, 3, 1, 1, 1, 1, 1, 1),  # 1x1 -> kxk
    (4, 6, 5, 3, 1, 1, 1, 1, 1, 1, 1),  # kxk -> 1x1
    (4, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1),  # kxk -> kxk (= 5x5)
    (4, 8, 6, 3, 1, 4, 1, 1, 1, 1, 1),  # depthwise with multiplier 2 -> 1x1
    (4, 8, 8, 1, 3, 2, 2, 1, 1, 1, 2),  # grouped 1x1 -> grouped kxk, stride 2 at the end
    (6, 6, 6, (1, 3), (3, 1), 3, 2, 1, 1, 1, 1),  # groups 3 then 2 -> gcd 1
    (4, 4, 4, 3, 3, 1, 1, 2, 1, 1, 1),  # dilated first
    (4, 4, 4, 3, 3, 1, 4, 1, 2, 2, 1),  # stride in the first step, dilated depthwise second
]


@pytest.mark.parametrize("case", COMPOSE_CASES)
def test_compose_equals_two_unpadded_convs_in_sequence_bias_included(case):
    ci, cm, co, k1, k2, g1, g2, d1, d2, s1, s2 = case
    k1, k2 = K.as_pair(k1), K.as_pair(k2)
    x = rand(2, ci, 15, 14)
    w1, b1 = rand(cm, ci // g1, *k1), rand(cm)
    w2, b2 = rand(co, cm // g2, *k2), rand(co)
    ref = F.conv2d(F.conv2d(x, w1, b1, stride=s1, dilation=d1, groups=g1), w2, b2, stride=s2, dilation=d2,
                   groups=g2)
    w, b, g = K.compose((w1, b1), (w2, b2), groups=(g1, g2), stride=s1, dilation=(d1, d2))
    assert_close(ref, F.conv2d(x, w, b, stride=s1 * s2, groups=g))


def test_compose_with_a_per_channel_second_step_is_a_scale():
    w1, b1 = rand(3, 2, 3, 3), rand(3)
    s, t = rand(3, 1, 1, 1), rand(3)
    w, b, g = K.compose((w1, b1), (s, t), groups=(1, 3))
    x = rand(1, 2, 6, 6)
    assert g == 1
    assert_close(F.conv2d(F.conv2d(x, w1, b1), s, t, groups=3), F.conv2d(x, w, b))


def test_compose_checks_channels():
    with pytest.raises(ValueError, match="take 3 channels"):
        K.compose((rand(3, 2, 1, 1), None), (rand(4, 4, 1, 1), None))


def test_sum_kernels_is_the_sum_of_branches():
    x = rand(1, 3, 6, 6)
    parts = [(rand(4, 3, 3, 3), rand(4)), (rand(4, 3, 3, 3), None)]
    w, b = K.sum_kernels(parts)
    ref = sum(F.conv2d(x, pw, pb, padding=1) for pw, pb in parts)
    assert_close(ref, F.conv2d(x, w, b, padding=1))
    with pytest.raises(ValueError, match="shape"):
        K.sum_kernels([(rand(4, 3, 3, 3), None), (rand(4, 3, 1, 1), None)])
    with pytest.raises(ValueError, match="at least one"):
        K.sum_kernels([])


def test_functions_are_differentiable():
    w = rand(4, 4, 1, 1).requires_grad_()
    scale = rand(4).requires_grad_()
    out, _, _ = K.compose((K.place(w, 3), None), (K.identity_kernel(4, 1, 3, dtype=torch.float64), None))
    (K.scale_channels(out, None, scale)[0].sum()).backward()
    assert w.grad is not None and scale.grad is not None
