"""Fold: whole-network fold time of RepVGG-A0, RepVGG-B1 and MobileOne-S0 with `fold_model`, side by
side with the official RepVGG conversion re-stated from its documented algorithm (fuse each branch's
BN, pad the 1x1, build the identity kernel with numpy, sum, deep-copy the net and swap modules) and
timm's `reparameterize_model` on timm's model of the same name (timm: a benchmark extra, never a
runtime dependency), plus the memory floor of any fold."""

import copy

import numpy as np
import torch
from torch import nn

from _common import parser, report

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
                kid, bid = _fuse_bn_tensor(torch.from_numpy(value).to(k3.device), child.branches[2][1])
            conv = nn.Conv2d(g.in_channels, g.out_channels, 3, g.stride, 1, groups=g.groups)
            conv.weight.data = (k3 + k1 + kid).detach()
            conv.bias.data = (b3 + b1 + bid).detach()
            setattr(parent, name, nn.Sequential(conv, nn.ReLU()))
    return model


def _interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turns (A B C A B C ...) after one warm-up each, so
    that a slow spell of the machine hits every contender alike."""
    import time

    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def _floor(model: nn.Module):
    """The memory floor of any fold: read every block's trained weights once and write deploy-sized
    tensors once (float32 copies of the same bytes, no arithmetic)."""
    blocks = [m for m in model.modules() if isinstance(m, rz.RepBlock)]
    srcs = [p for b in blocks for p in b.parameters()]
    outs = [(b.geometry.out_channels, b.geometry.in_channels // b.geometry.groups, *b.geometry.kernel)
            for b in blocks]

    def run():
        total = sum(float(p.sum()) for p in srcs)  # read
        return total, [torch.empty(shape).fill_(1.0) for shape in outs]  # write

    return run


def main():
    args = parser(__doc__).parse_args()
    dev = args.device
    repeats = 3 if args.quick else 11
    nets = {"repvgg_a0": "repvgg_a0", "repvgg_b1": B1, "mobileone_s0": "mobileone_s0"}
    try:
        import timm
        from timm.utils.model import reparameterize_model
    except Exception as e:  # not installed, or a torchvision that does not match torch
        print(f"timm not available ({type(e).__name__}): its column stays empty")
        timm = None
    rows = []
    for name, net in nets.items():
        if args.quick and name != "repvgg_a0":
            continue
        torch.manual_seed(0)
        model = rz.randomize_norms(rz.build_model(net, 1000)).to(dev).eval()
        fns = {"ours": lambda: rz.fold_model(model), "floor": _floor(model)}
        if name.startswith("repvgg"):
            fns["official"] = lambda: naive_fold(model)
        if timm is not None:
            tm = timm.create_model(name, pretrained=False, num_classes=1000).to(dev).eval()
            fns["timm"] = lambda: reparameterize_model(tm, inplace=False)
        with torch.no_grad():
            t = _interleaved(fns, repeats)
            x = torch.randn(1, 3, 64, 64, device=dev)
            same = (rz.fold_model(model)(x) - naive_fold(model)(x)).abs().max().item() if "official" in fns else None
        row = {"net": name, "blocks": sum(isinstance(m, rz.RepBlock) for m in model.modules()),
               "fold_model ms": 1e3 * t["ours"], "floor ms": 1e3 * t["floor"],
               "official ms": 1e3 * t["official"] if "official" in t else None,
               "timm ms": 1e3 * t["timm"] if "timm" in t else None}
        row["official / ours"] = t["official"] / t["ours"] if "official" in t else None
        row["timm / ours"] = t["timm"] / t["ours"] if "timm" in t else None
        row["ours / floor"] = t["ours"] / t["floor"]
        row["max |diff| vs official"] = same
        rows.append(row)
    report("fold", args, rows, ["net", "blocks", "fold_model ms", "official ms", "timm ms", "official / ours",
                                "timm / ours", "floor ms", "ours / floor", "max |diff| vs official"],
           "Medians of 11 interleaved runs in one process. official: the official RepVGG conversion re-stated from its "
           "documented algorithm (deep copy, per-branch BN fusion, numpy identity kernel, new nn.Conv2d per block); "
           "timm: timm.utils.model.reparameterize_model on timm's own model of the same name; floor: reading the "
           "blocks' trained weights once and writing deploy-sized float32 tensors once.")


if __name__ == "__main__":
    main()
