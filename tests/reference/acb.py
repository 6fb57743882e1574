"""ACNet ACB (Ding et al., ICCV 2019): BN(kxk*x) + BN(1xk*x) + BN(kx1*x), then ReLU."""

import torch.nn as nn
import torch.nn.functional as F

from .common import ConvBN


class RefACB(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3):
        super().__init__()
        p = k // 2
        self.square = ConvBN(cin, cout, (k, k), stride, (p, p), groups)
        self.hor = ConvBN(cin, cout, (1, k), stride, (0, p), groups)
        self.ver = ConvBN(cin, cout, (k, 1), stride, (p, 0), groups)

    def forward(self, x):
        return F.relu(self.square(x) + self.hor(x) + self.ver(x))
