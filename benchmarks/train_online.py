"""Online training: one block layer trained online vs offline vs a plain conv+BN and (when timm is
installed) timm's own block, at RepVGG-B1 and MobileOne-S0 layer shapes: 1 branch (kxk+BN),
4 branches (4 x kxk+BN), RepVGG (kxk, 1x1, identity; timm RepVggBlock), MobileOne depthwise with
4 kxk copies (timm MobileOneBlock), DBB (kxk, 1x1, 1x1 -> avgpool, 1x1 -> kxk). Time of a forward+backward step and its memory, as ratios to
plain conv+BN; plus the time the online block spends composing its kernel."""

import torch
from torch import nn

from _common import interleaved, parser, report, train_memory_mb

import reparam_zoo as rz

#: (case, spec, depthwise, timm block factory or None, layer shape)
CASES = [
    ("1 branch", {"name": "one", "branches": [{"type": "kxk"}]}, False, None, "b1"),
    ("4 branches", {"name": "four", "branches": [{"type": "kxk", "count": 4}]}, False, None, "b1"),
    ("repvgg", "repvgg", False, "RepVggBlock", "b1"),
    ("mobileone dw k4", "mobileone", True, "MobileOneBlock", "s0"),
    ("dbb", "dbb", False, None, "b1"),  # 1x1 -> kxk and 1x1 -> avgpool chains: composed by matrix products
]
#: channels and feature size of the layer: RepVGG-B1 stage 3 (512 ch, 14x14), MobileOne-S0 stage 3 (256 ch)
SHAPES = {"cuda": {"b1": (512, 14), "s0": (256, 14)}, "cpu": {"b1": (64, 28), "s0": (128, 28)},
          "quick": {"b1": (16, 12), "s0": (16, 12)}}


def layer_sizes(args) -> tuple[dict, list[int]]:
    """The layer shapes (name -> (channels, feature size)) and batch sizes for ``args`` (device, --quick)."""
    shapes = SHAPES["quick" if args.quick else args.device]
    return shapes, [4] if args.quick else ([8, 32, 64] if args.device == "cpu" else [64, 256])


def plain_layer(c: int, groups: int, dev) -> nn.Module:
    """The baseline every layer benchmark divides by: a 3x3 conv + BatchNorm + ReLU, c -> c channels."""
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(c),
                         nn.ReLU()).to(dev)


def _timm_block(name, c, depthwise, dev):
    try:
        from timm.models import byobnet
    except Exception:  # not installed, or a torchvision that does not match torch: the column stays empty
        return None
    kwargs = {"group_size": 1} if depthwise else {}
    if name == "MobileOneBlock":
        kwargs["num_conv_branches"] = 4
    return getattr(byobnet, name)(c, c, **kwargs).to(dev).train()


def main():
    p = parser(__doc__)
    p.add_argument("--blocks", nargs="+", choices=[c[0] for c in CASES], help="only these cases (default: all)")
    args = p.parse_args()
    dev = args.device
    shapes, batches = layer_sizes(args)
    repeats = 3 if args.quick else 10
    rows = []
    for case, spec, depthwise, timm_name, shape in CASES:
        if args.blocks and case not in args.blocks:
            continue
        c, size = shapes[shape]
        groups = c if depthwise else 1
        for b in batches:
            torch.manual_seed(0)
            plain = plain_layer(c, groups, dev)
            models = {"plain": plain,
                      "offline": rz.build_block(spec, c, c, groups=groups).to(dev).train(),
                      "online": rz.build_block(spec, c, c, groups=groups, mode="online").to(dev).train()}
            tm = _timm_block(timm_name, c, depthwise, dev) if timm_name else None
            if tm is not None:
                models["timm"] = tm
            x = torch.randn(b, c, size, size, device=dev)

            def step(m):
                def run():
                    m.zero_grad(set_to_none=True)
                    m(x).square().mean().backward()
                return run

            t = interleaved({k: step(m) for k, m in models.items()}, dev, repeats)
            mem = {k: train_memory_mb(step(m), dev) for k, m in models.items()}
            on = models["online"]

            def compose():
                w, bias = on._online_kernel(x.dtype, x.device)
                (w.sum() + bias.sum()).backward()

            t_kernel = interleaved({"k": compose}, dev, repeats)["k"]
            row = {"block": case, "channels": c, "batch": b, "plain ms": 1e3 * t["plain"]}
            for k in ("offline", "online", "timm"):
                row[f"{k} x"] = t[k] / t["plain"] if k in t else None
            row["kernel ms"] = 1e3 * t_kernel
            for k in ("offline", "online", "timm"):
                row[f"{k} mem x"] = mem[k] / mem["plain"] if k in mem else None
            rows.append(row)
    report("train_online", args, rows, ["block", "channels", "batch", "plain ms", "offline x", "online x", "timm x",
                                        "kernel ms", "offline mem x", "online mem x", "timm mem x"],
           "ratios to plain conv+BN of the same layer (time of forward+backward; memory: peak CUDA memory, on CPU "
           "the bytes autograd saves for backward). timm: timm.models.byobnet's block trained as timm trains it. "
           "target: online <= 1.10x at GPU-bound batch")


if __name__ == "__main__":
    main()
