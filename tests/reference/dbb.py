"""Diverse Branch Block (Ding et al., CVPR 2021), structured as the official code.

Non-depthwise: kxk+BN, 1x1+BN, 1x1 -> BN-and-pad -> avg -> BN, idconv1x1 -> BN-and-pad -> kxk -> BN.
Depthwise (groups == out): kxk+BN, avg(padded) -> BN, 1x1 (2x) -> BN-and-pad -> kxk -> BN.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import ConvBN


class BNAndPad(nn.Module):
    """BN, then pad with the BN's output for a zero input (DBB's BNAndPadLayer)."""

    def __init__(self, channels, pad):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.pad = pad

    def forward(self, x):
        y = self.bn(x)
        if self.pad == 0:
            return y
        bn = self.bn
        values = bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        y = F.pad(y, [self.pad] * 4)
        v = values.view(1, -1, 1, 1)
        p = self.pad
        y[:, :, :p, :] = v
        y[:, :, -p:, :] = v
        y[:, :, :, :p] = v
        y[:, :, :, -p:] = v
        return y


class IdentityBasedConv1x1(nn.Conv2d):
    """1x1 conv with kernel W + I, W zero-initialised."""

    def __init__(self, channels, groups=1):
        super().__init__(channels, channels, 1, groups=groups, bias=False)
        nn.init.zeros_(self.weight)
        eye = torch.zeros(channels, channels // groups, 1, 1)
        for i in range(channels):
            eye[i, i % (channels // groups)] = 1
        self.register_buffer("eye", eye)

    def forward(self, x):
        return F.conv2d(x, self.weight + self.eye.to(self.weight), groups=self.groups)


class RefDBB(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3, padding=None):
        super().__init__()
        p = k // 2 if padding is None else padding
        self.crop_1x1 = k // 2 - p  # the 1x1 branch sits at the window's centre
        self.depthwise = groups == cout
        self.origin = ConvBN(cin, cout, k, stride, p, groups)
        self.avg = nn.Sequential()
        if not self.depthwise:
            self.avg.add_module("conv", nn.Conv2d(cin, cout, 1, groups=groups, bias=False))
            self.avg.add_module("bn", BNAndPad(cout, p))
            self.avg.add_module("avg", nn.AvgPool2d(k, stride, 0))
            self.one = ConvBN(cin, cout, 1, stride, 0, groups)
        else:
            self.avg.add_module("avg", nn.AvgPool2d(k, stride, p))
        self.avg.add_module("avgbn", nn.BatchNorm2d(cout))
        mid = cin if not self.depthwise else 2 * cin
        self.kxk = nn.Sequential()
        if mid == cin:
            self.kxk.add_module("idconv1", IdentityBasedConv1x1(cin, groups))
        else:
            self.kxk.add_module("conv1", nn.Conv2d(cin, mid, 1, groups=groups, bias=False))
        self.kxk.add_module("bn1", BNAndPad(mid, p))
        self.kxk.add_module("conv2", nn.Conv2d(mid, cout, k, stride, 0, groups=groups, bias=False))
        self.kxk.add_module("bn2", nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.origin(x) + self.avg(x) + self.kxk(x)
        if not self.depthwise:
            c = self.crop_1x1
            y = y + self.one(x[:, :, c:x.shape[2] - c, c:x.shape[3] - c] if c else x)
        return F.relu(y)
