"""RepVGG (Ding et al., CVPR 2021), eq. (training form): y = ReLU(BN(W3*x) + BN(W1*x) + BN(x))."""

import torch.nn as nn
import torch.nn.functional as F

from .common import ConvBN


class RefRepVGG(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1):
        super().__init__()
        self.dense = ConvBN(cin, cout, 3, stride, 1, groups)
        self.one = ConvBN(cin, cout, 1, stride, 0, groups)
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None

    def forward(self, x):
        y = self.dense(x) + self.one(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return F.relu(y)
