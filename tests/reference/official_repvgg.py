"""A RepVGG network with the official repository's module names (stage0, stageN.i, rbr_dense,
rbr_1x1, rbr_identity, linear), to produce checkpoints in that format without downloads."""

import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, k, stride, padding, groups=1):
    m = nn.Sequential()
    m.add_module("conv", nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False))
    m.add_module("bn", nn.BatchNorm2d(cout))
    return m


class RepVGGBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1):
        super().__init__()
        self.rbr_identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.rbr_dense = conv_bn(cin, cout, 3, stride, 1, groups)
        self.rbr_1x1 = conv_bn(cin, cout, 1, stride, 0, groups)

    def forward(self, x):
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return F.relu(y)


class OfficialRepVGG(nn.Module):
    """stage0: one block; stages 1..: blocks, first with stride 2; global pool; linear."""

    def __init__(self, in_channels, stem, stages, num_classes, stem_stride=1):
        super().__init__()
        self.stage0 = RepVGGBlock(in_channels, stem, stem_stride)
        cin = stem
        for i, (width, depth) in enumerate(stages, start=1):
            blocks = []
            for j in range(depth):
                blocks.append(RepVGGBlock(cin, width, 2 if j == 0 else 1))
                cin = width
            setattr(self, f"stage{i}", nn.Sequential(*blocks))
        self.num_stages = len(stages)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stage0(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{i}")(x)
        return self.linear(self.gap(x).flatten(1))
