"""RepBlock: its fold (a new module, nothing mutated, exact, dtype and device kept), its forward paths
(padding once vs the zero-padding fast path) and its errors."""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz

from tests.conftest import assert_close


def _block(name="dbb", cin=8, cout=8, **kw):
    return rz.randomize_norms(rz.build_block(name, cin, cout, **kw), seed=3)


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_fold_returns_a_new_conv_and_leaves_the_block_untouched():
    block = _block().double().eval()
    before = _state(block)
    x = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    y_before = block(x)
    folded = block.fold()
    assert isinstance(folded, nn.Sequential) and isinstance(folded.conv, nn.Conv2d)
    assert isinstance(folded.act, nn.ReLU)
    for k, v in block.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(block(x), y_before)
    assert_close(y_before, folded(x))
    assert not any(p is q for p in folded.parameters() for q in block.parameters())


def test_folded_conv_has_the_block_geometry_dtype_and_device():
    spec = {"name": "g", "kernel": [3, 5], "dilation": 2, "padding_mode": "circular", "act": "identity",
            "branches": [{"type": "kxk"}, {"type": "1xk"}, {"type": "conv", "kernel": 1}]}
    block = rz.build_block(spec, 4, 8, stride=2, groups=2).double()
    conv = block.fold()
    assert isinstance(conv, nn.Conv2d)
    assert conv.kernel_size == (3, 5) and conv.stride == (2, 2) and conv.dilation == (2, 2)
    assert conv.padding == (2, 4) and conv.groups == 2 and conv.padding_mode == "circular"
    assert conv.bias is not None and conv.weight.dtype == torch.float64
    assert conv.weight.device == next(block.parameters()).device


def test_folding_twice_gives_identical_weights():
    block = _block()
    a, b = block.fold(), block.fold()
    assert torch.equal(a.conv.weight, b.conv.weight) and torch.equal(a.conv.bias, b.conv.bias)


@pytest.mark.parametrize("cast,tol", [("double", 1e-12), ("float", 1e-6)])
def test_fold_after_dtype_cast_is_exact(cast, tol):
    block = getattr(_block(), cast)()
    assert rz.verify(block, (2, 8, 9, 9), randomize=False, tolerance=tol).ok


def test_fold_after_half_keeps_half_and_is_computed_in_fp64():
    block = _block().half()
    ref = copy.deepcopy(block).double().fold()  # the same half parameters, folded in fp64
    half = block.fold()
    assert half.conv.weight.dtype == torch.float16
    assert torch.equal(ref.conv.weight.half(), half.conv.weight)
    assert torch.equal(ref.conv.bias.half(), half.conv.bias)
    res = rz.verify(block, (2, 8, 9, 9), randomize=False)
    assert res.dtype == torch.float16 and res.ok, res


def test_fold_uses_running_statistics_even_in_train_mode():
    block = _block().double().train()
    conv = block.fold()
    assert conv.training  # the folded module keeps the block's mode
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    assert block.training
    assert_close(block.eval()(x), conv(x))


def test_equivalent_kernel_is_differentiable():
    block = _block("acb").double()
    w, b = block.equivalent_kernel()
    (w.square().sum() + b.sum()).backward()
    grads = [p.grad for p in block.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_norm_after_is_folded():
    spec = {"name": "qa", "norm_after": "bn", "branches": [{"type": "kxk"}, {"type": "conv", "kernel": 1,
                                                                            "norm": "none"},
                                                          {"type": "identity", "norm": "none"}]}
    block = rz.build_block(spec, 4, 4)
    assert isinstance(block.norm_after, nn.BatchNorm2d)
    assert rz.verify(block, (2, 4, 8, 8), dtype=torch.float64, randomize=True).ok


def test_sync_batchnorm_folds():
    block = nn.SyncBatchNorm.convert_sync_batchnorm(_block())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in block.modules())
    assert rz.verify(block.double(), (2, 8, 7, 7), randomize=True).ok


def test_bn_swapped_for_one_without_running_stats_is_refused_at_fold():
    block = _block("repvgg")
    block.branches[0][1] = nn.BatchNorm2d(8, track_running_stats=False)
    with pytest.raises(rz.SpecError, match="running statistics"):
        block.fold()


def test_count_makes_independent_copies():
    spec = {"name": "m1", "branches": [{"type": "kxk", "count": 3}, {"type": "identity"}]}
    block = rz.build_block(spec, 4, 4)
    assert len(block.branches) == 4
    assert [i.name for i in block.branch_info] == ["branches.0#0", "branches.0#1", "branches.0#2", "branches.1"]
    assert block.branches[0][0].weight.data_ptr() != block.branches[1][0].weight.data_ptr()
    assert rz.verify(block, (2, 4, 8, 8), dtype=torch.float64, randomize=True).ok


def test_too_small_input_gets_a_clear_error():
    block = rz.build_block({"name": "v", "kernel": 5, "padding": 0, "branches": [{"type": "kxk"}]}, 2, 2)
    with pytest.raises(ValueError, match="at least 5x5"):
        block(torch.randn(1, 2, 3, 3))


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("name", rz.list_specs())
@pytest.mark.parametrize("padding", ["same", 0, 2])
def test_zero_padding_fast_path_equals_padding_once(name, padding):
    """Branches that start with a conv take the unpadded input and pad inside that conv; this
    must equal the pad-once path exactly, in training mode too (BN batch statistics)."""
    spec = rz.get_spec(name).model_copy(update={"padding": padding})
    if padding != "same" and rz.get_spec(name).kernel == 31:
        spec = spec.model_copy(update={"padding": 15 + padding})
    torch.manual_seed(0)
    fast = rz.build_block(spec, 4, 4, stride=2).double()
    slow = copy.deepcopy(fast)
    slow._direct = (None,) * len(slow._direct)
    x = torch.randn(2, 4, 35, 34, dtype=torch.float64)
    for mode in ("train", "eval"):
        getattr(fast, mode)()
        getattr(slow, mode)()
        assert_close(slow(x), fast(x))
