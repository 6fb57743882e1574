"""Online training: one block layer trained online vs offline vs a plain conv+BN, for 1 branch
(a kxk + BN) and 4 branches (MobileOne-style 4 x kxk + BN), several batch sizes: time of a
forward+backward step and its memory, as ratios to plain conv+BN; plus the time the online
block spends composing its kernel."""

import torch
from torch import nn

from _common import interleaved, parser, report, train_memory_mb

import reparam_zoo as rz

SPECS = {1: {"name": "one", "branches": [{"type": "kxk"}]},
         4: {"name": "four", "branches": [{"type": "kxk", "count": 4}]}}


def main():
    args = parser(__doc__).parse_args()
    dev = args.device
    c, size = (32, 28) if args.quick else (64, 56)
    batches = [4, 16] if args.quick else ([8, 32, 64] if dev == "cpu" else [64, 256])
    repeats = 3 if args.quick else 10
    rows = []
    for nb, spec in SPECS.items():
        for b in batches:
            torch.manual_seed(0)
            plain = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()).to(dev)
            off = rz.build_block(spec, c, c).to(dev).train()
            on = rz.build_block(spec, c, c, mode="online").to(dev).train()
            x = torch.randn(b, c, size, size, device=dev, requires_grad=False)

            def step(m):
                def run():
                    m.zero_grad(set_to_none=True)
                    m(x).square().mean().backward()
                return run

            t = interleaved({"plain": step(plain), "offline": step(off), "online": step(on)}, dev, repeats)
            mem = {k: train_memory_mb(step(m), dev) for k, m in (("plain", plain), ("offline", off), ("online", on))}

            def compose():
                w, bias = on._branch_kernel(x.dtype, x.device)
                (w.sum() + bias.sum()).backward()

            t_kernel = interleaved({"k": compose}, dev, repeats)["k"]
            rows.append({"branches": nb, "batch": b, "plain ms": 1e3 * t["plain"],
                         "offline x": t["offline"] / t["plain"], "online x": t["online"] / t["plain"],
                         "kernel ms": 1e3 * t_kernel, "offline mem x": mem["offline"] / mem["plain"],
                         "online mem x": mem["online"] / mem["plain"]})
    report("train_online", args, rows, ["branches", "batch", "plain ms", "offline x", "online x", "kernel ms",
                                        "offline mem x", "online mem x"],
           "ratios to plain conv+BN (time of forward+backward; memory on CPU: bytes saved for backward). "
           "target: online <= 1.10x at GPU-bound batch, <= 1.2x at batch 64")


if __name__ == "__main__":
    main()
