import torch.nn as nn


class ConvBN(nn.Sequential):
    """conv (no bias) then BatchNorm, the `conv_bn` of the RepVGG/ACNet/DBB/MobileOne code."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, groups=1, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
