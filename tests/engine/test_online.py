"""Online mode: branch BNs become scales, one BN after the sum, one conv per forward."""

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.steps import ChannelScale

from tests.conftest import assert_close


def _offline_online(name, cin=4, cout=4, stride=1, groups=1):
    torch.manual_seed(0)
    off = rz.randomize_norms(rz.build_block(name, cin, cout, stride=stride, groups=groups), seed=1).double().eval()
    on = rz.build_block(name, cin, cout, stride=stride, groups=groups, mode="online").double().eval()
    return off, on


@pytest.mark.parametrize("name", rz.list_specs())
def test_online_block_with_equivalent_scales_computes_the_offline_output(name):
    off, on = _offline_online(name)
    off_state, on_state = off.state_dict(), {}
    off_modules = dict(off.named_modules())
    for key, m in on.named_modules():
        if not key.startswith("branches."):
            continue
        src = off_modules[key]
        if isinstance(m, ChannelScale) and isinstance(src, nn.BatchNorm2d):  # the BN's eval-mode scale
            on_state[f"{key}.weight"] = src.weight / torch.sqrt(src.running_var + src.eps)
        elif isinstance(m, ChannelScale):
            on_state[f"{key}.weight"] = src.weight
        else:  # convs: the same weights
            for n, _ in m.named_parameters(recurse=False):
                on_state[f"{key}.{n}"] = off_state[f"{key}.{n}"]
    with torch.no_grad():
        for k, v in on_state.items():
            on.state_dict()[k].copy_(v)
        # the BN after the sum absorbs the shifts the branch BNs added (on top of an offline norm_after)
        w_off, b_off = off._branch_kernel(torch.float64, torch.device("cpu"))
        w_on, b_on = on._branch_kernel(torch.float64, torch.device("cpu"))
        assert_close(w_off, w_on)
        bn = on.norm_after
        if isinstance(off.norm_after, nn.BatchNorm2d):
            bn.load_state_dict(off.norm_after.state_dict())
        else:
            assert off.norm_after is None
            bn.weight.fill_(1)
            bn.bias.zero_()
            bn.running_var.fill_(1 - bn.eps)
            bn.running_mean.zero_()
        bn.running_mean.add_(b_on - b_off)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    assert_close(off(x), on(x))


@pytest.mark.parametrize("name", rz.list_specs())
def test_online_training_reaches_every_parameter_and_folds_exactly(name):
    block = rz.build_block(name, 4, 8, stride=2, groups=2 if name != "doconv" else 1, mode="online")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.branches.modules())
    assert isinstance(block.norm_after, nn.BatchNorm2d)
    block.train()
    x = torch.randn(3, 4, 10, 9)
    block(x).square().mean().backward()
    for n, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert rz.verify(block, (2, 4, 10, 9), dtype=torch.float64, randomize=True).ok
    assert rz.verify(block, (2, 4, 10, 9), dtype=torch.float32, randomize=True).ok


def test_online_is_one_conv_per_forward():
    block = rz.build_block("dbb", 4, 4, mode="online").eval()
    calls = []
    orig = torch.nn.functional.conv2d

    def counting(*a, **k):
        calls.append(a[0].shape)
        return orig(*a, **k)

    torch.nn.functional.conv2d = counting
    try:
        block(torch.randn(2, 4, 8, 8))
    finally:
        torch.nn.functional.conv2d = orig
    # kernel composition convolves tiny kernels; exactly one conv runs on the features
    assert sum(1 for s in calls if s[0] == 2) == 1


def test_online_net_and_mode_errors():
    model = rz.build_model("tiny_vgg", 10, block="acb", mode="online")
    assert {b.mode for b in model.modules() if isinstance(b, rz.RepBlock)} == {"online"}
    with pytest.raises(rz.SpecError, match="mode 'offline' or 'online'"):
        rz.build_block("repvgg", 4, 4, mode="onlin")


def test_torch_compile_of_an_online_block_on_cpu():
    block = rz.build_block("repvgg", 4, 4, mode="online").eval()
    compiled = torch.compile(block)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert_close(block(x), compiled(x), rel=1e-5)
    # a training step through the compiled block (sum_placed's in-place slice and diagonal adds under
    # autograd): the same gradients as eager
    torch.manual_seed(0)
    block = rz.build_block("repvgg", 4, 4, mode="online").train()
    compiled = torch.compile(block)
    grads = []
    for m in (block, compiled):
        block.zero_grad(set_to_none=True)
        m(x).square().mean().backward()
        grads.append([p.grad.clone() for p in block.parameters()])
    for a, b in zip(*grads):
        assert_close(a, b, rel=1e-4)


GEOMS = [(8, 8, 1, 1), (8, 16, 2, 1), (8, 8, 1, 2), (8, 8, 1, 8)]


@pytest.mark.parametrize("name", rz.list_specs())
def test_online_forward_kernel_is_the_reference_sum_and_has_its_gradients(name):
    """The online forward accumulates the branches (kernels.sum_placed: slices, diagonals) instead of
    padding and stacking each one: the same kernel and the same gradients as the reference sum."""
    checked = 0
    for ci, co, stride, groups in GEOMS:
        try:
            block = rz.build_block(name, ci, co, stride=stride, groups=groups, mode="online").double()
        except rz.SpecError:
            continue
        torch.manual_seed(ci + co + groups)
        with torch.no_grad():
            for p in block.parameters():
                p.add_(0.3 * torch.randn_like(p))
        params = [p for p in block.parameters() if p.requires_grad]
        dev = torch.device("cpu")
        fast, ref = block._online_kernel(torch.float64, dev), block._branch_kernel(torch.float64, dev)
        probe = [torch.randn_like(t) for t in ref]
        g_fast = torch.autograd.grad(sum((t * u).sum() for t, u in zip(fast, probe)), params, allow_unused=True)
        g_ref = torch.autograd.grad(sum((t * u).sum() for t, u in zip(ref, probe)), params, allow_unused=True)
        for a, b in zip(fast, ref):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-13, atol=1e-13), (name, ci, co, groups)
        for a, b in zip(g_fast, g_ref):
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), (name, ci, co, groups)
        checked += 1
    assert checked


def test_sum_placed_adds_slices_and_diagonals_and_never_writes_into_its_parts():
    from reparam_zoo.engine import kernels as K

    torch.manual_seed(0)
    c = 6
    w3 = torch.randn(c, c // 2, 3, 3, dtype=torch.float64)  # groups 2
    w1 = torch.randn(c, c // 2, 1, 3, dtype=torch.float64)
    dw = torch.randn(c, 1, 1, 1, dtype=torch.float64)  # depthwise: onto the diagonal
    b = torch.randn(c, dtype=torch.float64)
    copies = [t.clone() for t in (w3, w1, dw)]
    parts = [(w3, None, 2, (0, 0)), (w1, b, 2, (2, 0)), (dw, None, c, (1, 1))]
    out, bias = K.sum_placed(parts, 3, c, 2)
    ref, ref_b = K.sum_kernels([(K.place(K.regroup(w, g, 2), 3, off), bb) for w, bb, g, off in parts])
    assert torch.equal(out, ref) and torch.equal(bias, ref_b)
    assert all(torch.equal(t, u) for t, u in zip((w3, w1, dw), copies))
    # any order of the parts (the whole-window kernel last, two of them, none at all)
    for order in (parts[::-1], [parts[1], parts[0], (w3, None, 2, (0, 0))], parts[1:]):
        out, bias = K.sum_placed(order, 3, c, 2)
        ref, ref_b = K.sum_kernels([(K.place(K.regroup(w, g, 2), 3, off), bb) for w, bb, g, off in order])
        assert torch.allclose(out, ref, rtol=0, atol=1e-14) and torch.allclose(bias, ref_b, rtol=0, atol=1e-14)
    assert all(torch.equal(t, u) for t, u in zip((w3, w1, dw), copies))
    with pytest.raises(ValueError, match="does not fit"):
        K.sum_placed([(w3, None, 2, (0, 0)), (w1, None, 2, (2, 1))], 3, c, 2)
    with pytest.raises(ValueError, match="at least one"):
        K.sum_placed([], 3, c, 2)
