"""Block and network folding: new modules, nothing mutated, exact, idempotent, shared blocks."""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.cost import count_macs

from .conftest import assert_close


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


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        shared = rz.build_block("repvgg", 8, 8)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(rz.build_block("dbb", 8, 8), shared, nn.BatchNorm2d(8),
                                  rz.build_block("acb", 8, 16, stride=2), shared_holder(shared))
        self.again = shared
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.body[:2](self.stem(x))
        x = self.again(self.body[2](x))
        x = self.body[3](x)
        return self.head(x.mean((2, 3)))


def shared_holder(m):
    return nn.ModuleDict({"inner": m})


def test_fold_model_replaces_every_block_and_keeps_the_original():
    net = rz.randomize_norms(Net(), seed=1).double().eval()
    before = _state(net)
    folded, report = rz.fold_model(net, return_report=True)
    assert report.count == 3  # the shared block counts once
    assert sorted(report.blocks[1][0]) == ["again", "body.1", "body.4.inner"]
    assert not any(isinstance(m, rz.RepBlock) for m in folded.modules())
    assert all(type(m) in (nn.Conv2d, nn.ReLU, nn.Sequential, nn.BatchNorm2d, nn.Linear, nn.ModuleDict, Net)
               for m in folded.modules())
    assert folded.again is folded.body[1] is folded.body[4]["inner"]
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64)
    assert_close(net(x), folded(x))
    assert any(isinstance(m, rz.RepBlock) for m in net.modules())


def test_fold_model_is_idempotent_and_inplace_works():
    net = rz.randomize_norms(Net(), seed=2).eval()
    once = rz.fold_model(net)
    twice, report = rz.fold_model(once, return_report=True)
    assert report.count == 0
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(once(x), twice(x))
    ref = net(x)
    same = rz.fold_model(net, inplace=True)
    assert same is net and not any(isinstance(m, rz.RepBlock) for m in net.modules())
    assert_close(ref, net(x), rel=1e-6)


def test_fold_model_on_a_bare_block_and_verify_on_a_network():
    block = _block()
    assert isinstance(rz.fold_model(block), nn.Sequential)
    res = rz.verify(Net(), (2, 3, 12, 12), dtype=torch.float64, randomize=True)
    assert res.ok and len(res.shapes) >= 4, res


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


def test_mac_count_sees_every_branch_conv_on_the_fast_path():
    block = rz.build_block("repvgg", 16, 16)
    assert None not in block._direct  # every branch takes the unpadded input
    # 3x3 + 1x1 branches on 56x56: 56*56*16*16*(9 + 1) multiply-accumulates
    assert count_macs(block, (1, 16, 56, 56)) == 56 * 56 * 16 * 16 * 10
    assert None not in block._direct  # restored


def _mobileone_style_reparameterize(model):  # Apple's reparameterize_model: in place, on a deep copy
    model = copy.deepcopy(model)

    def visit(module):
        for child in module.children():
            visit(child)
        if hasattr(module, "reparameterize"):
            module.reparameterize()

    visit(model)
    return model


def _timm_style_reparameterize(model):  # timm's: a child's fuse() result replaces it in its parent
    model = copy.deepcopy(model)

    def visit(module):
        for name, child in module.named_children():
            if hasattr(child, "fuse"):
                setattr(module, name, child.fuse())
            elif hasattr(child, "reparameterize"):
                child.reparameterize()
            visit(child)

    visit(model)
    return model


def _research_repo_switch_to_deploy(model):  # RepVGG/ACNet/DBB/YOLOv6: in place over model.modules()
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "switch_to_deploy"):
            module.switch_to_deploy()
    return model


@pytest.mark.parametrize("protocol", [_mobileone_style_reparameterize, _timm_style_reparameterize,
                                      _research_repo_switch_to_deploy])
def test_repblocks_answer_the_reparameterize_protocols(protocol):
    net = rz.randomize_norms(Net(), seed=4).double().eval()
    deployed = protocol(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.body[0].modules())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert_close(net(x), deployed(x))
    assert any(isinstance(m, rz.RepBlock) and m.mode == "offline" for m in net.modules())  # original untouched
    again = rz.fold_model(deployed)  # a reparameterized block still folds (to its conv)
    assert_close(net(x), again(x))
