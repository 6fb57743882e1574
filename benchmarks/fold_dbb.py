"""Fold of DBB-class blocks (1x1 -> kxk chains, average pooling, dilation): our `fold_model` side by side
with DBB's documented conversion re-stated (its `transI` ... `transVI`: per-branch BN fusion, the 1x1 -> kxk
merge as a conv of the kxk kernel with the permuted 1x1, the pooling kernel, padding to kxk, the sum; deep
copy and a new conv per block), in one process, medians of interleaved runs; plus the same expanded
network folded with ACB-style blocks, and a dilated ASPP-like conv. Peak memory of our fold per row is
measured in a spawned child: its peak resident set during the fold beyond its resident set before it (Linux:
/proc/self/clear_refs resets the peak).

Rows:
- dbb_resnet18: torchvision resnet18 whose every 3x3 conv + BN is a DiverseBranchBlock (DBB's layout, re-stated
  in tests/reference/upstream_blocks.py), adopted with `rz.adopt` (outside the timing);
- resnet50 dbb / acb: torchvision resnet50 expanded with `dbb` and with `acb` (min_kernel=1, 53 blocks);
- dilated: one 3x3 conv, 64 channels, dilation 36 (DeepLabV3's largest ASPP rate), expanded with `dbb`.
"""

import copy
import multiprocessing as mp

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from _common import interleaved, parser, report

import reparam_zoo as rz
from tests.reference.upstream_blocks import DiverseBranchBlock


# ----------------------------------------------------------------------------- DBB's conversion, re-stated


def _trans_i(kernel, bn):  # BN fusion
    std = (bn.running_var + bn.eps).sqrt()
    return kernel * (bn.weight / std).reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * bn.weight / std


def _trans_iii(k1, b1, k2, b2, groups):  # 1x1 then kxk: a conv of the kxk kernel with the permuted 1x1
    if groups == 1:
        k = F.conv2d(k2, k1.permute(1, 0, 2, 3))
        b_hat = (k2 * b1.reshape(1, -1, 1, 1)).sum((1, 2, 3))
    else:
        ks, bs = [], []
        k1_t = k1.permute(1, 0, 2, 3)
        w1, w2 = k1.size(0) // groups, k2.size(0) // groups
        for g in range(groups):
            k1_g = k1_t[:, g * w1:(g + 1) * w1, :, :]
            k2_g = k2[g * w2:(g + 1) * w2, :, :, :]
            ks.append(F.conv2d(k2_g, k1_g))
            bs.append((k2_g * b1[g * w1:(g + 1) * w1].reshape(1, -1, 1, 1)).sum((1, 2, 3)))
        k, b_hat = torch.cat(ks), torch.cat(bs)
    return k, b_hat + b2


def _trans_v(channels, k, groups):  # the average pooling kernel
    cin_g = channels // groups
    w = torch.zeros(channels, cin_g, k, k)
    w[torch.arange(channels), torch.arange(cin_g).tile(groups), :, :] = 1.0 / k ** 2
    return w


def _trans_vi(kernel, k):  # pad to kxk
    p = (k - kernel.size(2)) // 2
    return F.pad(kernel, [p, p, p, p])


def _dbb_kernel(block: DiverseBranchBlock):
    conv = block.dbb_origin.conv
    k, groups = conv.kernel_size[0], conv.groups
    kernel, bias = _trans_i(conv.weight, block.dbb_origin.bn)
    if hasattr(block, "dbb_1x1"):
        k1, b1 = _trans_i(block.dbb_1x1.conv.weight, block.dbb_1x1.bn)
        kernel, bias = kernel + _trans_vi(k1, k), bias + b1
    chain = block.dbb_1x1_kxk
    first = chain.idconv1.weight + chain.idconv1.id_tensor if hasattr(chain, "idconv1") else chain.conv1.weight
    kf, bf = _trans_i(first, chain.bn1.bn)
    ks, bs = _trans_i(chain.conv2.weight, chain.bn2)
    km, bm = _trans_iii(kf, bf, ks, bs, groups)
    kernel, bias = kernel + km, bias + bm
    avg = block.dbb_avg
    ka, ba = _trans_i(_trans_v(conv.out_channels, k, groups).to(kernel), avg.avgbn)
    if hasattr(avg, "conv"):
        kc, bc = _trans_i(avg.conv.weight, avg.bn.bn)
        ka, ba = _trans_iii(kc, bc, ka, ba, groups)
    return kernel + ka, bias + ba


def dbb_deploy(model: nn.Module) -> nn.Module:
    """DBB's switch_to_deploy over a network, as its repository does it: deep copy, then each block's
    kernel and bias into a new conv."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DiverseBranchBlock):
                w, b = _dbb_kernel(child)
                c = child.dbb_origin.conv
                conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups)
                conv.weight.data, conv.bias.data = w.detach(), b.detach()
                setattr(parent, name, nn.Sequential(conv, child.nonlinear))
    return model


# ----------------------------------------------------------------------------- the networks


def dbb_resnet18() -> nn.Module:
    """torchvision resnet18 with every 3x3 conv + BN a DiverseBranchBlock (its BN slot an Identity)."""
    model = torchvision.models.resnet18(num_classes=1000)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3):
                bn = name.replace("conv", "bn")
                setattr(parent, name, DiverseBranchBlock(child.in_channels, child.out_channels, 3, child.stride[0],
                                                         relu=False))
                setattr(parent, bn, nn.Identity())
    return rz.randomize_norms(model, seed=0).eval()


def _make(kind: str) -> nn.Module:
    if kind == "dbb_resnet18":
        return rz.adopt(dbb_resnet18())[0]
    return _dilated() if kind == "dilated" else _expanded(kind)()


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_child(kind, queue):
    model = _make(kind)
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak resident set (VmHWM) to the current
        f.write("5")
    base = _rss_kb("VmRSS")
    with torch.no_grad():
        rz.fold_model(model)
    queue.put((_rss_kb("VmHWM") - base) / 1024)


def peak_mb(kind: str) -> float:
    """The fold's peak memory beyond the process's own: a fresh (spawned) child builds the model, then folds it."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_peak_child, args=(kind, queue))
    child.start()
    out = queue.get(timeout=600)
    child.join()
    return out


def _expanded(spec: str):
    def make():
        torch.manual_seed(0)
        net = rz.randomize_norms(torchvision.models.resnet50(num_classes=1000), seed=1)
        return rz.randomize_norms(rz.expand(net, spec, min_kernel=1, init="fresh")[0], seed=2).eval()
    return make


def _dilated():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=36, dilation=36, bias=False), nn.BatchNorm2d(64))
    return rz.randomize_norms(rz.expand(conv, "dbb", init="fresh")[0], seed=1).eval()


def main():
    args = parser(__doc__).parse_args()
    repeats = 3 if args.quick else 7
    rows = []
    with torch.no_grad():
        dbb = dbb_resnet18().to(args.device)
        adopted, _ = rz.adopt(dbb)
        t = interleaved({"ours": lambda: rz.fold_model(adopted), "dbb": lambda: dbb_deploy(dbb)}, args.device,
                        repeats)
        x = torch.randn(1, 3, 64, 64, device=args.device)
        diff = (rz.fold_model(adopted)(x) - dbb_deploy(dbb)(x)).abs().max().item()
        rows.append({"row": "dbb_resnet18", "blocks": sum(isinstance(m, rz.RepBlock) for m in adopted.modules()),
                     "ours ms": 1e3 * t["ours"], "baseline": "DBB's own conversion", "baseline ms": 1e3 * t["dbb"],
                     "baseline / ours": t["dbb"] / t["ours"], "max |diff|": diff,
                     "peak MB": None if args.device != "cpu" else peak_mb("dbb_resnet18")})
        if not args.quick:
            nets = {s: _expanded(s)().to(args.device) for s in ("dbb", "acb")}
            t = interleaved({s: (lambda m=m: rz.fold_model(m)) for s, m in nets.items()}, args.device, repeats)
            rows.append({"row": "resnet50 dbb vs acb", "blocks": sum(isinstance(m, rz.RepBlock)
                                                                        for m in nets["dbb"].modules()),
                         "ours ms": 1e3 * t["dbb"], "baseline": "the same net with acb", "baseline ms": 1e3 * t["acb"],
                         "baseline / ours": t["acb"] / t["dbb"], "max |diff|": None,
                         "peak MB": None if args.device != "cpu" else peak_mb("dbb")})
        block = _dilated().to(args.device)
        t = interleaved({"ours": lambda: rz.fold_model(block)}, args.device, repeats)
        xd = torch.randn(1, 64, 90, 90, device=args.device)
        rows.append({"row": "dilated 3x3 d36 64ch dbb", "blocks": 1, "ours ms": 1e3 * t["ours"], "baseline": None,
                     "baseline ms": None, "baseline / ours": None,
                     "max |diff|": (rz.fold_model(block)(xd) - block(xd)).abs().max().item(),
                     "peak MB": None if args.device != "cpu" else peak_mb("dilated")})
    report("fold_dbb", args, rows, ["row", "blocks", "ours ms", "baseline", "baseline ms", "baseline / ours",
                                    "max |diff|", "peak MB"],
           "Medians of interleaved runs in one process. DBB's own conversion: its transI-transVI re-stated (deep copy, "
           "per-branch BN fusion, 1x1->kxk as a conv of the kxk kernel with the permuted 1x1, the pooling kernel, a "
           "new conv per block). resnet50 row: baseline / ours is acb time / dbb time (1 = as fast as ACB). peak MB: "
           "our fold's maximum resident set beyond the process's own, in a spawned child (CPU only).")


if __name__ == "__main__":
    main()
