"""OREPA (Hu et al., CVPR 2022), linear branches with linear scaling, computed the OREPA way:
the kernel is generated from the branch parameters every forward, then one conv and a BN.

W = v0 * W_kxk + v1 * pad(W_1x1) + v2 * ((W_id1x1 + I) composed with W_kxk2) + v3 * (W_avg1x1 composed with avg).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefOREPA(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3):
        super().__init__()
        self.cin, self.cout, self.k, self.stride, self.groups = cin, cout, k, stride, groups
        g = groups
        self.w_origin = nn.Parameter(torch.randn(cout, cin // g, k, k) * 0.1)
        self.w_1x1 = nn.Parameter(torch.randn(cout, cin // g, 1, 1) * 0.1)
        self.w_idconv1 = nn.Parameter(torch.zeros(cin, cin // g, 1, 1))
        self.w_conv2 = nn.Parameter(torch.randn(cout, cin // g, k, k) * 0.1)
        self.w_avg = nn.Parameter(torch.randn(cout, cin // g, 1, 1) * 0.1)
        self.vector = nn.Parameter(torch.ones(4, cout))  # per-branch, per-channel linear scaling
        eye = torch.zeros(cin, cin // g, 1, 1)
        for i in range(cin):
            eye[i, i % (cin // g)] = 1
        self.register_buffer("eye", eye)
        self.bn = nn.BatchNorm2d(cout)

    def _compose_1x1(self, w1, w2):
        """W[o, i] = sum_m w2[o, m] * w1[m, i], per group (w1 is 1x1)."""
        g = self.groups
        mid, cin_g = w1.shape[0], w1.shape[1]
        cout, mid_g, kh, kw = w2.shape
        a = w1.reshape(g, mid // g, cin_g)
        b = w2.reshape(g, cout // g, mid_g, kh, kw)
        return torch.einsum("gomhw,gmi->goihw", b, a).reshape(cout, cin_g, kh, kw)

    def kernel(self):
        k, p = self.k, self.k // 2
        v = self.vector.view(4, -1, 1, 1, 1)
        w = v[0] * self.w_origin
        w = w + v[1] * F.pad(self.w_1x1, [p, p, p, p])
        w = w + v[2] * self._compose_1x1(self.w_idconv1 + self.eye, self.w_conv2)
        avg = torch.full((k, k), 1.0 / (k * k), dtype=self.w_avg.dtype)
        w = w + v[3] * self.w_avg * avg
        return w

    def forward(self, x):
        y = F.conv2d(x, self.kernel(), None, self.stride, self.k // 2, groups=self.groups)
        return F.relu(self.bn(y))
