"""DiracNet (Zagoruyko & Komodakis, 2017): y = ReLU(conv(x, diag(a) I + diag(b) W / ||W||))."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefDirac(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3):
        super().__init__()
        self.stride, self.groups, self.k = stride, groups, k
        self.W = nn.Parameter(torch.randn(cout, cin // groups, k, k))
        self.b = nn.Parameter(torch.full((cout,), 0.1))
        self.has_delta = cin == cout and stride == 1
        if self.has_delta:
            self.a = nn.Parameter(torch.ones(cout))
            delta = torch.zeros(cout, cin // groups, k, k)
            for i in range(cout):
                delta[i, i % (cin // groups), k // 2, k // 2] = 1
            self.register_buffer("delta", delta)

    def forward(self, x):
        norm = self.W.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        w = self.b.view(-1, 1, 1, 1) * self.W / norm
        if self.has_delta:
            w = w + self.a.view(-1, 1, 1, 1) * self.delta.to(w)
        return F.relu(F.conv2d(x, w, None, self.stride, self.k // 2, groups=self.groups))
