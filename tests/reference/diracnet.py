"""DiracNet (Zagoruyko & Komodakis, 2017), as the authors' v2 code trains it (szagoruyko/diracnets,
diracnet.py): every unit is ReLU -> conv(x, diag(alpha) delta + diag(beta) W / ||W||) -> BatchNorm, the
filters L2-normalised over in x kh x kw, alpha = 1 and beta = 0.1 per output channel, W kaiming-normal, the
BatchNorm affine. Their net is stem -> unit x n -> ReLU -> pool, so moving every ReLU to the end of the unit
before it gives the same net: this module is one unit in that order, ReLU(BN(conv(x, W'))). The Dirac delta
is the identity where in == out and stride 1 (the spec's `identity` branch is optional the same way)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefDirac(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3):
        super().__init__()
        self.stride, self.groups, self.k = stride, groups, k
        self.W = nn.Parameter(nn.init.kaiming_normal_(torch.empty(cout, cin // groups, k, k)))
        self.beta = nn.Parameter(torch.full((cout,), 0.1))
        self.has_delta = cin == cout and stride == 1
        if self.has_delta:
            self.alpha = nn.Parameter(torch.ones(cout))
            self.register_buffer("delta", nn.init.dirac_(torch.empty(cout, cin // groups, k, k), groups))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        w = self.beta.view(-1, 1, 1, 1) * F.normalize(self.W.flatten(1)).view_as(self.W)
        if self.has_delta:
            w = w + self.alpha.view(-1, 1, 1, 1) * self.delta.to(w)
        return F.relu(self.bn(F.conv2d(x, w, None, self.stride, self.k // 2, groups=self.groups)))
