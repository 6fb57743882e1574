"""Independent re-statements of the research repos' block *layouts* — class names, child and
parameter names, constructor conditions and forward order as the papers' code documents them —
written for these tests (none of the upstream code). ``rz.adopt`` recognises blocks by exactly
these names and structures, so each class must keep its upstream class name."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dbb import BNAndPad
from .dbb import IdentityBasedConv1x1 as RefIdentityConv1x1


def conv_bn(cin, cout, k, stride=1, padding=0, groups=1, dilation=1):
    m = nn.Sequential()
    m.add_module("conv", nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=False))
    m.add_module("bn", nn.BatchNorm2d(cout))
    return m


class SEBlock(nn.Module):
    """RepVGG/MobileOne squeeze-excite: global pool, 1x1 down, ReLU, 1x1 up, sigmoid, scale."""

    def __init__(self, channels, internal):
        super().__init__()
        self.down = nn.Conv2d(channels, internal, 1, bias=True)
        self.up = nn.Conv2d(internal, channels, 1, bias=True)

    def forward(self, x):
        s = torch.sigmoid(self.up(F.relu(self.down(F.adaptive_avg_pool2d(x, 1)))))
        return x * s


def fused(weight, bias, bn):
    """The kernel and bias of a conv (bias or None) followed by a BN in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = torch.zeros_like(bn.running_mean) if bias is None else bias
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + (bias - bn.running_mean) * scale


class ConvBN(nn.Module):
    """DBB's plain helper (convnet_utils.py): ``nonlinear`` (Identity unless given), ``conv`` (no bias), ``bn``;
    built with ``deploy=True``, or after ``switch_to_deploy``, a biased ``conv`` alone; ``nonlinear(bn(conv))``."""

    def __init__(self, cin, cout, k, stride=1, padding=0, dilation=1, groups=1, deploy=False, nonlinear=None):
        super().__init__()
        self.nonlinear = nn.Identity() if nonlinear is None else nonlinear
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=deploy)
        if not deploy:
            self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.nonlinear(self.bn(self.conv(x)) if hasattr(self, "bn") else self.conv(x))

    def switch_to_deploy(self):
        weight, bias = fused(self.conv.weight, None, self.bn)
        c = self.conv
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups)
        conv.weight.data, conv.bias.data = weight.detach(), bias.detach()
        del self.conv, self.bn
        self.conv = conv


#: YOLOv6 shares one instance of each activation between its ConvModules
ACTIVATION_TABLE = {"relu": nn.ReLU(), "silu": nn.SiLU(), "hardswish": nn.Hardswish()}


class ConvModule(nn.Module):
    """YOLOv6's conv + BN + activation: ``conv`` (bias optional), ``bn``, ``act`` (only where
    ``activation_type`` is not None); ``fuse_model`` makes ``conv`` a biased conv, drops ``bn`` and
    runs ``forward_fuse``."""

    def __init__(self, cin, cout, k, stride, activation_type, padding=None, groups=1, bias=False):
        super().__init__()
        padding = k // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout)
        if activation_type is not None:
            self.act = ACTIVATION_TABLE[activation_type]
        self.activation_type = activation_type

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y if self.activation_type is None else self.act(y)

    def forward_fuse(self, x):
        y = self.conv(x)
        return y if self.activation_type is None else self.act(y)


def _yolov6_wrapper(name, activation_type, qualname=None):
    """YOLOv6's ``ConvBNReLU``, ``ConvBNSiLU``, ``ConvBN`` and ``ConvBNHS``: a ConvModule as ``block``."""

    def __init__(self, cin, cout, k=3, stride=1, padding=None, groups=1, bias=False):
        nn.Module.__init__(self)
        self.block = ConvModule(cin, cout, k, stride, activation_type, padding, groups, bias)

    return type(name, (nn.Module,), {"__init__": __init__, "forward": lambda self, x: self.block(x),
                                     "__qualname__": qualname or name})


ConvBNReLU = _yolov6_wrapper("ConvBNReLU", "relu")
ConvBNSiLU = _yolov6_wrapper("ConvBNSiLU", "silu")
ConvBNHS = _yolov6_wrapper("ConvBNHS", "hardswish")
YOLOv6ConvBN = _yolov6_wrapper("ConvBN", None, "YOLOv6ConvBN")  # DBB's ConvBN's class name, another layout


def fuse_model(model):
    """YOLOv6's ``fuse_model``: every ConvModule (exactly that class) with a BN becomes its fused conv."""
    for m in list(model.modules()):
        if type(m) is ConvModule and hasattr(m, "bn"):
            weight, bias = fused(m.conv.weight, m.conv.bias, m.bn)
            c = m.conv
            conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups)
            conv.weight.data, conv.bias.data = weight.detach(), bias.detach()
            m.conv = conv
            del m.bn
            m.forward = m.forward_fuse
    return model


class RepVGGBlock(nn.Module):
    """Official RepVGG (and YOLOv6): dense 3x3, 1x1, identity BN; SE then ReLU on the sum. YOLOv6's branches
    are ConvModules without activation (``yolov6=True``); ``switch_to_deploy`` sums them into ``rbr_reparam``
    (YOLOv6 takes a ConvModule's conv as it is, so ``fuse_model`` must have run)."""

    def __init__(self, cin, cout, stride=1, groups=1, use_se=False, yolov6=False):
        super().__init__()
        self.nonlinearity = nn.ReLU()
        self.se = SEBlock(cout, max(cout // 16, 1)) if use_se else nn.Identity()
        self.rbr_identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        if yolov6:
            self.rbr_dense = ConvModule(cin, cout, 3, stride, None, 1, groups)
            self.rbr_1x1 = ConvModule(cin, cout, 1, stride, None, 0, groups)
        else:
            self.rbr_dense = conv_bn(cin, cout, 3, stride, 1, groups)
            self.rbr_1x1 = conv_bn(cin, cout, 1, stride, 0, groups)

    def forward(self, x):
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.se(self.rbr_reparam(x)))
        id_out = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.nonlinearity(self.se(self.rbr_dense(x) + self.rbr_1x1(x) + id_out))

    def switch_to_deploy(self):
        kernel, bias = 0, 0
        for branch in (self.rbr_dense, self.rbr_1x1):
            if isinstance(branch, ConvModule):
                assert not hasattr(branch, "bn"), "YOLOv6 fuses its ConvModules (fuse_model) first"
                w, b = branch.conv.weight, branch.conv.bias
            else:
                w, b = fused(branch.conv.weight, None, branch.bn)
            kernel, bias = kernel + F.pad(w, [(3 - w.shape[-1]) // 2] * 4), bias + b
        dense = self.rbr_dense.conv
        if self.rbr_identity is not None:
            per_group = dense.in_channels // dense.groups
            eye = torch.zeros_like(dense.weight)
            eye[torch.arange(dense.in_channels), torch.arange(dense.in_channels) % per_group, 1, 1] = 1
            w, b = fused(eye, None, self.rbr_identity)
            kernel, bias = kernel + w, bias + b
        self.rbr_reparam = nn.Conv2d(dense.in_channels, dense.out_channels, 3, dense.stride, 1, groups=dense.groups)
        self.rbr_reparam.weight.data, self.rbr_reparam.bias.data = kernel.detach(), bias.detach()
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity


class ACBlock(nn.Module):
    """ACNet: square kxk + vertical kx1 + horizontal 1xk, each with a BN; no activation."""

    def __init__(self, cin, cout, k=3, stride=1, padding=1, groups=1, use_last_bn=False):
        super().__init__()
        if use_last_bn:  # older ACNet versions: a BN on the sum
            self.last_bn = nn.BatchNorm2d(cout)
        self.square_conv = nn.Conv2d(cin, cout, (k, k), stride, padding, groups=groups, bias=False)
        self.square_bn = nn.BatchNorm2d(cout)
        c = padding - k // 2
        self.crop = -c if c < 0 else 0
        ver_pad, hor_pad = ((padding, c), (c, padding)) if c >= 0 else ((padding, 0), (0, padding))
        self.ver_conv = nn.Conv2d(cin, cout, (k, 1), stride, ver_pad, groups=groups, bias=False)
        self.hor_conv = nn.Conv2d(cin, cout, (1, k), stride, hor_pad, groups=groups, bias=False)
        self.ver_bn = nn.BatchNorm2d(cout)
        self.hor_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        xv = x[:, :, :, self.crop:-self.crop] if self.crop else x
        xh = x[:, :, self.crop:-self.crop, :] if self.crop else x
        y = self.square_bn(self.square_conv(x)) + self.ver_bn(self.ver_conv(xv)) + self.hor_bn(self.hor_conv(xh))
        return self.last_bn(y) if hasattr(self, "last_bn") else y


class BNAndPadLayer(BNAndPad):
    """DBB's BN-and-pad under its upstream name: the pad width is ``pad_pixels`` there."""

    def __init__(self, pad_pixels, channels):
        super().__init__(channels, pad_pixels)

    @property
    def pad_pixels(self):
        return self.pad


class IdentityBasedConv1x1(RefIdentityConv1x1):
    """W + I with W zero-initialised; upstream keeps I as a plain attribute ``id_tensor``, not state."""

    def __init__(self, channels, groups=1):
        super().__init__(channels, groups)
        self.id_tensor = self._buffers.pop("eye")

    def forward(self, x):
        return F.conv2d(x, self.weight + self.id_tensor.to(self.weight), groups=self.groups)


class DiverseBranchBlock(nn.Module):
    """DBB: origin kxk, 1x1 (not depthwise), avg branch, 1x1 -> kxk branch; nonlinear. Built with
    ``deploy=True``: ``dbb_reparam`` (a biased kxk conv) alone."""

    def __init__(self, cin, cout, k=3, stride=1, groups=1, internal_channels_1x1_3x3=None, relu=True, deploy=False):
        super().__init__()
        p = k // 2
        self.nonlinear = nn.ReLU() if relu else nn.Identity()
        if deploy:
            self.dbb_reparam = nn.Conv2d(cin, cout, k, stride, p, groups=groups, bias=True)
            return
        self.dbb_origin = conv_bn(cin, cout, k, stride, p, groups)
        self.dbb_avg = nn.Sequential()
        if groups < cout:
            self.dbb_avg.add_module("conv", nn.Conv2d(cin, cout, 1, 1, 0, groups=groups, bias=False))
            self.dbb_avg.add_module("bn", BNAndPadLayer(p, cout))
            self.dbb_avg.add_module("avg", nn.AvgPool2d(k, stride, 0))
            self.dbb_1x1 = conv_bn(cin, cout, 1, stride, 0, groups)
        else:
            self.dbb_avg.add_module("avg", nn.AvgPool2d(k, stride, p))
        self.dbb_avg.add_module("avgbn", nn.BatchNorm2d(cout))
        internal = internal_channels_1x1_3x3 or (cin if groups < cout else 2 * cin)
        self.dbb_1x1_kxk = nn.Sequential()
        if internal == cin:
            self.dbb_1x1_kxk.add_module("idconv1", IdentityBasedConv1x1(cin, groups))
        else:
            self.dbb_1x1_kxk.add_module("conv1", nn.Conv2d(cin, internal, 1, groups=groups, bias=False))
        self.dbb_1x1_kxk.add_module("bn1", BNAndPadLayer(p, internal))
        self.dbb_1x1_kxk.add_module("conv2", nn.Conv2d(internal, cout, k, stride, 0, groups=groups, bias=False))
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(cout))

    def forward(self, x):
        if hasattr(self, "dbb_reparam"):
            return self.nonlinear(self.dbb_reparam(x))
        out = self.dbb_origin(x)
        if hasattr(self, "dbb_1x1"):
            out = out + self.dbb_1x1(x)
        out = out + self.dbb_avg(x)
        out = out + self.dbb_1x1_kxk(x)
        return self.nonlinear(out)


class MobileOneBlock(nn.Module):
    """Apple's MobileOne: k conv-BN branches, a 1x1 scale conv-BN (kernel > 1), a BN skip; SE, ReLU."""

    def __init__(self, cin, cout, k, stride=1, padding=0, groups=1, use_se=False, num_conv_branches=1):
        super().__init__()
        self.se = SEBlock(cout, max(int(cout * 0.0625), 1)) if use_se else nn.Identity()
        self.activation = nn.ReLU()
        self.rbr_skip = nn.BatchNorm2d(cin) if cout == cin and stride == 1 else None
        self.rbr_conv = nn.ModuleList([conv_bn(cin, cout, k, stride, padding, groups)
                                       for _ in range(num_conv_branches)])
        self.rbr_scale = conv_bn(cin, cout, 1, stride, 0, groups) if k > 1 else None

    def forward(self, x):
        out = 0
        if self.rbr_scale is not None:
            out = self.rbr_scale(x)
        if self.rbr_skip is not None:
            out = out + self.rbr_skip(x)
        for conv in self.rbr_conv:
            out = out + conv(x)
        return self.activation(self.se(out))


class QARepVGGBlock(nn.Module):
    """YOLOv6 QARepVGG: dense 3x3 conv-BN, plain 1x1 conv, bare identity; BN on the sum; ReLU."""

    def __init__(self, cin, cout, stride=1, groups=1):
        super().__init__()
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()
        self.rbr_dense = conv_bn(cin, cout, 3, stride, 1, groups)
        self.rbr_1x1 = nn.Conv2d(cin, cout, 1, stride, 0, groups=groups, bias=False)
        self.rbr_identity = nn.Identity() if cin == cout and stride == 1 else None
        self.bn = nn.BatchNorm2d(cout)

    def branches(self, x):
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        return out if self.rbr_identity is None else out + self.rbr_identity(x)

    def forward(self, x):
        return self.nonlinearity(self.bn(self.se(self.branches(x))))


class QARepVGGBlockV2(QARepVGGBlock):
    """QARepVGG V2: also an average pooling branch where in == out and stride 1."""

    def __init__(self, cin, cout, stride=1, groups=1):
        super().__init__(cin, cout, stride, groups)
        self.rbr_avg = nn.AvgPool2d(3, stride, 1) if cin == cout and stride == 1 else None

    def branches(self, x):
        out = super().branches(x)
        return out if self.rbr_avg is None else out + self.rbr_avg(x)


class ReparamLargeKernelConv(nn.Module):
    """RepLKNet: a large-kernel conv-BN plus a small-kernel conv-BN (or none); no activation."""

    def __init__(self, cin, cout, k, stride, groups, small_kernel):
        super().__init__()
        self.lkb_origin = conv_bn(cin, cout, k, stride, k // 2, groups)
        if small_kernel is not None:
            self.small_conv = conv_bn(cin, cout, small_kernel, stride, small_kernel // 2, groups)

    def forward(self, x):
        out = self.lkb_origin(x)
        if hasattr(self, "small_conv"):
            out = out + self.small_conv(x)
        return out


class OREPA(nn.Module):
    """Just enough of OREPA's parameter layout for recognition (its kernel generator is not restated)."""

    def __init__(self, cin, cout, k=3):
        super().__init__()
        self.weight_orepa_origin = nn.Parameter(torch.randn(cout, cin, k, k))
        self.weight_orepa_pfir_conv = nn.Parameter(torch.randn(cout, cin, 1, 1))
        self.register_buffer("weight_orepa_prior", torch.randn(cout, k, k))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        w = self.weight_orepa_origin + self.weight_orepa_pfir_conv * self.weight_orepa_prior.unsqueeze(1)
        return self.bn(F.conv2d(x, w, padding=self.weight_orepa_origin.shape[-1] // 2))

    def switch_to_deploy(self):  # the repos' protocol marks it re-parameterizable
        raise NotImplementedError


class MobileOne(nn.Module):
    """Apple's MobileOne network layout: ``stage0`` (a 3x3 stride-2 block with one conv branch), stages
    ``stage1`` ... ``stage4`` of (depthwise 3x3, pointwise 1x1) block pairs, ``gap``, ``linear``."""

    def __init__(self, num_blocks=(2, 8, 10, 1), width_multipliers=(0.75, 1.0, 1.0, 2.0), k=4, num_classes=1000):
        super().__init__()
        w = width_multipliers
        self.in_planes = min(64, int(64 * w[0]))
        self.stage0 = MobileOneBlock(3, self.in_planes, 3, stride=2, padding=1)
        for i, (planes, n) in enumerate(zip((64 * w[0], 128 * w[1], 256 * w[2], 512 * w[3]), num_blocks), start=1):
            setattr(self, f"stage{i}", self._make_stage(int(planes), n, k))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(int(512 * w[3]), num_classes)

    def _make_stage(self, planes, n, k):
        blocks = []
        for stride in [2] + [1] * (n - 1):
            blocks.append(MobileOneBlock(self.in_planes, self.in_planes, 3, stride, 1, groups=self.in_planes,
                                         num_conv_branches=k))
            blocks.append(MobileOneBlock(self.in_planes, planes, 1, 1, 0, num_conv_branches=k))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        for i in range(5):
            x = getattr(self, f"stage{i}")(x)
        return self.linear(self.gap(x).flatten(1))
