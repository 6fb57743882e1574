"""Deploy: a folded RepVGG-A0 vs a hand-written plain nn.Sequential of Conv2d+ReLU with the
same weights. Throughput ratio (folded / plain, 1.00 = same speed) and bitwise equality."""

import torch
from torch import nn

from _common import interleaved, parser, report

import reparam_zoo as rz


def plain_copy(folded: nn.Module) -> nn.Sequential:
    """The deployed net written by hand: Conv2d + ReLU per block, pool, flatten, linear."""
    layers = []
    for m in [folded.stem, *folded.stages]:
        conv = m.conv if isinstance(m, nn.Sequential) else m
        c = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=conv.groups, bias=True)
        c.load_state_dict(conv.state_dict())
        layers += [c, nn.ReLU()]
    head = nn.Linear(folded.head.in_features, folded.head.out_features)
    head.load_state_dict(folded.head.state_dict())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def main():
    args = parser(__doc__).parse_args()
    dev = args.device
    size = 224
    batches = [1, 8] if args.quick else ([1, 64] if dev == "cpu" else [1, 64, 128, 256])
    repeats = 5 if args.quick else 20
    torch.manual_seed(0)
    model = rz.randomize_norms(rz.build_model("repvgg_a0", 1000)).eval()
    folded = rz.fold_model(model).to(dev).eval()
    plain = plain_copy(folded).to(dev).eval()
    rows = []
    dtypes = [torch.float32] + ([torch.bfloat16] if dev == "cuda" else [])
    for dtype in dtypes:
        for fmt in ["contiguous"] + (["channels_last"] if dev == "cuda" else []):
            f = folded.to(dtype=dtype, memory_format=torch.channels_last if fmt != "contiguous" else torch.contiguous_format)
            p = plain.to(dtype=dtype, memory_format=torch.channels_last if fmt != "contiguous" else torch.contiguous_format)
            for b in batches:
                x = torch.randn(b, 3, size, size, device=dev, dtype=dtype)
                if fmt == "channels_last":
                    x = x.to(memory_format=torch.channels_last)
                with torch.no_grad():
                    equal = torch.equal(f(x), p(x))
                    t = interleaved({"folded": lambda: f(x), "plain": lambda: p(x)}, dev, repeats)
                rows.append({"dtype": str(dtype).replace("torch.", ""), "format": fmt, "batch": b,
                             "folded img/s": b / t["folded"], "plain img/s": b / t["plain"],
                             "ratio folded/plain": t["plain"] / t["folded"], "bitwise equal": equal})
    report("deploy", args, rows, ["dtype", "format", "batch", "folded img/s", "plain img/s", "ratio folded/plain",
                                  "bitwise equal"], "target: ratio 1.00 +- 0.01, bitwise equal")


if __name__ == "__main__":
    main()
