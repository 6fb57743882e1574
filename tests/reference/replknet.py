"""RepLKNet ReparamLargeKernelConv (Ding et al., CVPR 2022): BN(Wk*x) + BN(W5*x), then ReLU."""

import torch.nn as nn
import torch.nn.functional as F

from .common import ConvBN


class RefRepLK(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=31, small=5):
        super().__init__()
        self.lkb_origin = ConvBN(cin, cout, k, stride, k // 2, groups)
        self.small_conv = ConvBN(cin, cout, small, stride, small // 2, groups)

    def forward(self, x):
        return F.relu(self.lkb_origin(x) + self.small_conv(x))
