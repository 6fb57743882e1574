"""UniRepLKNet DilatedReparamBlock (Ding et al., CVPR 2024), kernel 7: BN(W7*x) plus
BN(W_{k,r} *_r x) for (k, r) in (5, 1), (3, 2), (3, 3); no activation."""

import torch.nn as nn

from .common import ConvBN


class RefUniRepLK(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=7, kernels=(5, 3, 3), dilates=(1, 2, 3)):
        super().__init__()
        self.origin = ConvBN(cin, cout, k, stride, k // 2, groups)
        self.dil = nn.ModuleList(
            ConvBN(cin, cout, kk, stride, (r * (kk - 1) + 1) // 2, groups, dilation=r)
            for kk, r in zip(kernels, dilates))

    def forward(self, x):
        y = self.origin(x)
        for m in self.dil:
            y = y + m(x)
        return y
