"""DO-Conv (Cao et al., TIP 2022): W' = D^T o W with D = D_param + D_diag, trained as the
composed kernel: y = ReLU(BN(conv(x, W') + b)) — the conv-BN-ReLU layer of the paper's networks."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefDOConv(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3, d_mul=None):
        super().__init__()
        self.k, self.stride, self.groups = k, stride, groups
        mn = k * k
        self.d_mul = d_mul or mn
        self.D = nn.Parameter(torch.zeros(cin, mn, self.d_mul))
        diag = torch.zeros(cin, mn, self.d_mul)
        diag[:, torch.arange(mn), torch.arange(mn)] = 1
        self.register_buffer("D_diag", diag)
        self.W = nn.Parameter(torch.randn(cout, cin // groups, self.d_mul) * 0.1)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)
        self.bn = nn.BatchNorm2d(cout)

    def kernel(self):
        g, k = self.groups, self.k
        cin, mn, s = self.D.shape
        cout = self.W.shape[0]
        D = (self.D + self.D_diag.to(self.D)).reshape(g, cin // g, mn, s)
        W = self.W.reshape(g, cout // g, cin // g, s)
        return torch.einsum("gims,gois->goim", D, W).reshape(cout, cin // g, k, k)

    def forward(self, x):
        y = F.conv2d(x, self.kernel(), self.bias, self.stride, self.k // 2, groups=self.groups)
        return F.relu(self.bn(y))
