"""Offline training: train-step time and memory of a spec-built RepVGG / DBB / MobileOne network vs
the same network made of hand-written blocks written the way the papers' code does it (the
references in tests/reference), same shapes, same weights."""

import torch
import torch.nn.functional as F
from torch import nn

from _common import interleaved, parser, report, train_memory_mb

import reparam_zoo as rz
from tests.reference.dbb import RefDBB
from tests.reference.mobileone import RefMobileOne
from tests.reference.repvgg import RefRepVGG

REFS = {"repvgg": RefRepVGG, "dbb": RefDBB, "mobileone": RefMobileOne}
# (in, out, stride) of a small VGG: the cifar_vgg shapes
LAYERS = [(3, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)]


def nets(name):
    spec_layers, ref_layers = [], []
    for cin, cout, s in LAYERS:
        spec_layers.append(rz.build_block(name, cin, cout, stride=s))
        ref_layers.append(REFS[name](cin, cout, s, 1))
    head = lambda c: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))  # noqa: E731
    return nn.Sequential(*spec_layers, head(256)), nn.Sequential(*ref_layers, head(256))


def main():
    args = parser(__doc__).parse_args()
    dev = args.device
    batch = 16 if args.quick else 64
    repeats = 3 if args.quick else 10
    rows = []
    for name in REFS:
        torch.manual_seed(0)
        spec_net, ref_net = (m.to(dev).train() for m in nets(name))
        x = torch.randn(batch, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (batch,), device=dev)

        def step(net):
            opt = torch.optim.SGD(net.parameters(), lr=1e-3)

            def run():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                opt.step()
            return run

        t = interleaved({"spec": step(spec_net), "ref": step(ref_net)}, dev, repeats)
        m_spec, m_ref = train_memory_mb(step(spec_net), dev), train_memory_mb(step(ref_net), dev)
        rows.append({"block": name, "batch": batch, "spec ms": 1e3 * t["spec"], "hand-written ms": 1e3 * t["ref"],
                     "time ratio": t["spec"] / t["ref"], "spec MB": m_spec, "hand-written MB": m_ref,
                     "memory ratio": m_spec / m_ref,
                     "params equal": sum(p.numel() for p in spec_net.parameters()) == sum(
                         p.numel() for p in ref_net.parameters())})
    report("train_offline", args, rows, ["block", "batch", "spec ms", "hand-written ms", "time ratio", "spec MB",
                                         "hand-written MB", "memory ratio", "params equal"],
           "target: ratio <= 1.00 (memory on CPU: bytes autograd saves for backward)")


if __name__ == "__main__":
    main()
