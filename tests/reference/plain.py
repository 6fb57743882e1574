"""The control: a plain conv (no bias) -> BatchNorm -> ReLU, as any VGG-style network writes it."""

import torch.nn.functional as F
from torch import nn

from .common import ConvBN


class RefPlain(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1):
        super().__init__()
        self.dense = ConvBN(cin, cout, 3, stride, 1, groups)

    def forward(self, x):
        return F.relu(self.dense(x))
