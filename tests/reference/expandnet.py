"""ExpandNets (Guo et al., NeurIPS 2020): linear expansions of one conv, then BN and ReLU.

CL: 1x1 (C_in -> r C_in) -> kxk (r C_in -> r C_out, zero padding) -> 1x1 (r C_out -> C_out).
CK: a 5x5 conv as two 3x3 convs (C_in -> r C_in -> C_out), input padded once by 2.
"""

import torch.nn as nn
import torch.nn.functional as F


class RefExpandCL(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, k=3, r=4):
        super().__init__()
        self.c1 = nn.Conv2d(cin, r * cin, 1, groups=groups, bias=False)
        self.c2 = nn.Conv2d(r * cin, r * cout, k, stride, k // 2, groups=groups, bias=False)
        self.c3 = nn.Conv2d(r * cout, cout, 1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.c3(self.c2(self.c1(x)))))


class RefExpandCK(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, r=4):
        super().__init__()
        self.c1 = nn.Conv2d(cin, r * cin, 3, groups=groups, bias=False)
        self.c2 = nn.Conv2d(r * cin, cout, 3, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.c2(self.c1(F.pad(x, [2] * 4)))))


class RefExpandFC(nn.Module):
    """The FC expansion: Linear m -> r m -> r n -> n (no bias, no nonlinearity), then BN1d and ReLU."""

    def __init__(self, cin, cout, r=4):
        super().__init__()
        self.f1 = nn.Linear(cin, r * cin, bias=False)
        self.f2 = nn.Linear(r * cin, r * cout, bias=False)
        self.f3 = nn.Linear(r * cout, cout, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.f3(self.f2(self.f1(x)))))
