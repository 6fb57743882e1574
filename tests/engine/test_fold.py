"""Whole-network folding: every block replaced, the original kept, idempotent, in place, shared blocks,
and the upstreams' in-place reparameterize protocols on a network of RepBlocks."""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.cost import count_macs

from tests.conftest import assert_close


def _block(name="dbb", cin=8, cout=8, **kw):
    return rz.randomize_norms(rz.build_block(name, cin, cout, **kw), seed=3)


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


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
