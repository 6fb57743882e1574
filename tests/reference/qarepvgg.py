"""QARepVGG (Chu et al., AAAI 2024): y = ReLU(BN(BN(W3*x) + W1*x + x))."""

import torch.nn as nn
import torch.nn.functional as F

from .common import ConvBN


class RefQARepVGG(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1):
        super().__init__()
        self.dense = ConvBN(cin, cout, 3, stride, 1, groups)
        self.one = nn.Conv2d(cin, cout, 1, stride, 0, groups=groups, bias=False)
        self.identity = cin == cout and stride == 1
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.dense(x) + self.one(x)
        if self.identity:
            y = y + x
        return F.relu(self.bn(y))
