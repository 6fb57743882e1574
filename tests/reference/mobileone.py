"""MobileOne block (Vasu et al., CVPR 2023), kernel > 1: sum of k kxk conv-BN, a 1x1 conv-BN
("scale") and a BN skip (in == out, stride 1), then ReLU."""

import torch.nn as nn
import torch.nn.functional as F

from .common import ConvBN


class RefMobileOne(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3, branches=4):
        super().__init__()
        self.skip = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.convs = nn.ModuleList([ConvBN(cin, cout, k, stride, k // 2, groups) for _ in range(branches)])
        self.scale = ConvBN(cin, cout, 1, stride, 0, groups)

    def forward(self, x):
        y = self.scale(x)
        if self.skip is not None:
            y = y + self.skip(x)
        for c in self.convs:
            y = y + c(x)
        return F.relu(y)
