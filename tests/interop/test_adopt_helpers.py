"""Whole DBB-style and YOLOv6-style networks (re-stated layouts, tests/reference/upstream_blocks.py): their
plain conv + BN helpers (DBB's ``ConvBN``, YOLOv6's ``ConvModule`` inside ``ConvBNReLU`` & co.) are adopted
beside their re-parameterized blocks, so ``fold_model(layout="original")`` loads strictly into the upstream's
deploy model (DBB: built with ``deploy=True``, the layout ``switch_to_deploy`` leaves; YOLOv6: ``fuse_model``
then ``switch_to_deploy``) and computes the same."""

import copy

import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.interop.adopt import adopt
from tests.conftest import assert_close
from tests.reference import upstream_blocks as up


class DBBNet(nn.Module):
    """A DBB ResNet's layout in small (DBB's resnet.py): ``conv_bn_relu`` 7x7 stem and 1x1 layers are
    ``ConvBN``, the 3x3 layers ``DiverseBranchBlock``; a Linear head."""

    def __init__(self, deploy=False):
        super().__init__()
        self.stage0 = nn.Sequential()
        self.stage0.add_module("conv1", up.ConvBN(3, 8, 7, 2, 3, deploy=deploy, nonlinear=nn.ReLU()))
        self.stage0.add_module("maxpool", nn.MaxPool2d(3, 2, 1))
        self.stage1 = nn.Sequential(
            up.DiverseBranchBlock(8, 8, deploy=deploy),
            up.ConvBN(8, 16, 1, deploy=deploy),  # a 1x1 conv_bn: always ConvBN, no nonlinear
            up.DiverseBranchBlock(16, 16, stride=2, groups=16, relu=False, deploy=deploy),
        )
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(16, 10)

    def forward(self, x):
        return self.linear(self.gap(self.stage1(self.stage0(x))).flatten(1))


class YOLOv6Net(nn.Module):
    """A YOLOv6 backbone's layout in small: ``ConvBNReLU``/``ConvBNSiLU``/``ConvBN``/``ConvBNHS`` helpers (a
    ``ConvModule`` as ``block``), a bare biased ``ConvModule``, ``RepVGGBlock``s whose branches are
    ConvModules."""

    def __init__(self):
        super().__init__()
        self.stem = up.ConvBNReLU(3, 8, 3, 2)
        self.stage = nn.Sequential(up.RepVGGBlock(8, 8, yolov6=True), up.RepVGGBlock(8, 16, stride=2, yolov6=True),
                                   up.ConvBNSiLU(16, 16, 1, 1))
        self.neck = nn.Sequential(up.YOLOv6ConvBN(16, 16, 3, 1), up.ConvBNHS(16, 12, 3, 1, groups=4),
                                  up.ConvModule(12, 12, 3, 1, "relu", bias=True))

    def forward(self, x):
        return self.neck(self.stage(self.stem(x)))


def _random(model, seed=0):
    torch.manual_seed(seed)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    return rz.randomize_norms(model, seed=seed + 1).double().eval()


def test_a_dbb_network_folds_into_dbbs_deploy_model():
    net = _random(DBBNet())
    new, report = adopt(net)
    assert sorted(a[2] for a in report.adopted) == ["DBB ConvBN"] * 2 + ["DBB DiverseBranchBlock"] * 2
    assert not report.left, str(report)
    assert not any(type(m).__name__ in ("ConvBN", "DiverseBranchBlock") for m in new.modules())
    folded = rz.fold_model(new, layout="original")
    deployed = DBBNet(deploy=True).double().eval()
    deployed.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 30, dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)
        assert_close(ref, new(x))
        assert_close(ref, deployed(x))
    # the helpers' own switch_to_deploy gives the same layers, key for key
    switched = copy.deepcopy(net)
    for m in switched.modules():
        if isinstance(m, up.ConvBN):
            m.switch_to_deploy()
    ours = folded.state_dict()
    for key, value in switched.state_dict().items():
        if key.startswith(("stage0.conv1.", "stage1.1.")):
            assert_close(value, ours[key])


def test_a_yolov6_network_folds_into_yolov6s_deploy_model():
    net = _random(YOLOv6Net())
    new, report = adopt(net)
    kinds = sorted(a[2] for a in report.adopted)
    assert kinds == ["RepVGGBlock (official RepVGG, YOLOv6)"] * 2 + ["YOLOv6 ConvModule"] * 5, str(report)
    assert not report.left, str(report)
    assert not any(type(m).__name__ in ("ConvModule", "RepVGGBlock") for m in new.modules())
    assert isinstance(new.neck[0], up.YOLOv6ConvBN)  # walked into, not taken by DBB's ConvBN adapter
    deployed = up.fuse_model(copy.deepcopy(net))  # YOLOv6's order: fuse_model, then switch_to_deploy
    for m in deployed.modules():
        if isinstance(m, up.RepVGGBlock):
            m.switch_to_deploy()
    folded = rz.fold_model(new, layout="original")
    assert set(folded.state_dict()) == set(deployed.state_dict())
    x = torch.randn(2, 3, 32, 30, dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)
        upstream = deployed(x)
        deployed.load_state_dict(folded.state_dict(), strict=True)
        assert_close(ref, new(x))
        assert_close(ref, upstream)  # the re-stated deploy is right
        assert_close(ref, deployed(x))


def test_helper_classes_of_another_layout_are_walked_into_not_reported():
    class ConvModule(nn.Module):  # mmcv's ConvModule: conv, bn, activate (no activation_type)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.activate = nn.ReLU()

        def forward(self, x):
            return self.activate(self.bn(self.conv(x)))

    class ConvBN(nn.Sequential):  # a conv_bn Sequential under the name ConvBN, holding a RepVGGBlock
        def __init__(self):
            super().__init__()
            self.conv = up.RepVGGBlock(4, 4)

    net = nn.Sequential(ConvModule(), ConvBN())
    new, report = adopt(net)
    assert not report.left, str(report)
    assert [a[:3] for a in report.adopted] == [("1.conv", "RepVGGBlock", "RepVGGBlock (official RepVGG, YOLOv6)")]
    assert type(new[0]) is ConvModule
    _, report = adopt(ConvBN())  # at the root as well
    assert [a[0] for a in report.adopted] == ["conv"] and not report.left


def test_a_deployed_dbb_convbn_is_reported_left():
    _, report = adopt(nn.Sequential(up.ConvBN(4, 4, 3, 1, 1, deploy=True)))
    assert not report.adopted and report.left[0][:2] == ("0", "ConvBN") and "already deployed" in report.left[0][2]
