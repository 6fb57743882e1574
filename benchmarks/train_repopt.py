"""RepOptimizer's training step against a plain conv+BN's: one layer at the shapes of train_online.py (RepVGG-B1
and MobileOne-S0 stage 3; smaller on CPU) and the whole tiny_vgg net compare trains, each a full SGD step
(forward, backward, optimizer step: momentum 0.9, weight decay 1e-4, Nesterov). "repopt": rz.repopt's plain
layer (a one-branch block) with RepOptSGD, compiled from the block's CSLA form (spec.lookup.csla_form);
"plain": nn.Conv2d + nn.BatchNorm2d + ReLU with torch.optim.SGD (the net: compare's plain control); "csla":
the multi-branch CSLA block that RepOptSGD's trajectory equals, trained by SGD. Times as ratios to plain,
the functions run alternately in one process."""

import torch

from _common import interleaved, parser, report
from train_online import layer_sizes, plain_layer

import reparam_zoo as rz
from reparam_zoo.bench.trainer import MOMENTUM, WEIGHT_DECAY
from reparam_zoo.engine.nets import build_model, load_net
from reparam_zoo.spec.lookup import csla_form, get_spec

#: (case, block, depthwise, layer shape) as in train_online.py
CASES = [("repvgg", "repvgg", False, "b1"), ("acb", "acb", False, "b1"), ("mobileone dw k4", "mobileone", True, "s0")]
LR = 0.01


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)


def _step(model, opt, x):
    def run():
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
    return run


def _row(case, channels, batch, models, x, dev, repeats):
    t = interleaved({k: _step(m, o, x) for k, (m, o) in models.items()}, dev, repeats, warmup=10)
    return {"case": case, "channels": channels, "batch": batch, "plain ms": 1e3 * t["plain"],
            "repopt x": t["repopt"] / t["plain"], "csla x": t["csla"] / t["plain"]}


def main():
    p = parser(__doc__)
    args = p.parse_args()
    dev = args.device
    shapes, batches = layer_sizes(args)  # train_online.py's
    repeats = 3 if args.quick else 100
    rows = []
    for case, block, depthwise, shape in CASES:
        c, size = shapes[shape]
        groups = c if depthwise else 1
        for b in batches:
            torch.manual_seed(0)
            plain = plain_layer(c, groups, dev)
            csla = rz.build_block(csla_form(get_spec(block), learnable=False), c, c, groups=groups).to(dev)
            compiled, opt = rz.repopt(csla, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
            models = {"plain": (plain, _sgd(plain)), "repopt": (compiled, opt), "csla": (csla, _sgd(csla))}
            rows.append(_row(case, c, b, models, torch.randn(b, c, size, size, device=dev), dev, repeats))
    net = load_net("tiny_vgg")
    for b in ([4] if args.quick else [64]):
        torch.manual_seed(0)
        plain = build_model(net, 10, block="plain", in_channels=1).to(dev)
        csla = build_model(net, 10, block=csla_form(get_spec("acb"), learnable=False), in_channels=1).to(dev)
        compiled, opt = rz.repopt(csla, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
        models = {"plain": (plain, _sgd(plain)), "repopt": (compiled, opt), "csla": (csla, _sgd(csla))}
        x = torch.randn(b, 1, net.input_size, net.input_size, device=dev)
        rows.append(_row("tiny_vgg net (acb)", "-", b, models, x, dev, repeats))
    report("train_repopt", args, rows, ["case", "channels", "batch", "plain ms", "repopt x", "csla x"],
           "ratios to plain conv+BN trained by torch SGD (forward, backward, optimizer step). target: repopt <= 1.05")


if __name__ == "__main__":
    main()
