"""``reparam-zoo compare``: the same net (or the user's model) trained with each block on real data,
every block against a plain conv+BN control on the same seeds, folded, verified and measured."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from reparam_zoo.cli import fail
from reparam_zoo.cli.argtypes import DATA_HELP, DefaultsHelp, add_int8_args, positive_float, positive_int
from reparam_zoo.spec.lookup import list_specs

#: the prefix of a block trained as a RepOptimizer
REPOPT = "repopt:"


def add_parser(sub) -> None:
    pm = sub.add_parser(
        "compare", help="train the same net with each block on real data against a plain conv+BN control",
        description="Train NET with each BLOCK (default: every shipped block that fits the net) and with the "
                    "'plain' control (one conv + BN + ReLU) on the same data, seeds, data order and schedule; fold "
                    "the whole network and check the folded accuracy; report each block's accuracy difference to "
                    "the control with a 95% interval over paired seeds and a verdict, training step time and "
                    "memory, and one latency per distinct deployed network. Writes results.json, results.csv, "
                    "results.md (starting with the conclusion in words) and plot.png into --out. Under "
                    "`torchrun --nproc_per_node N -m reparam_zoo compare ...` it trains with DistributedDataParallel "
                    "(and SyncBatchNorm on CUDA).",
        formatter_class=DefaultsHelp)
    pm.add_argument("blocks", nargs="*", metavar="BLOCK",
                    help="block specs (shipped names or YAML paths); default: every shipped block that fits. "
                         "repopt:NAME trains block NAME as a RepOptimizer instead: its CSLA form's scales searched "
                         "for --repopt-search-epochs, then the plain net trained by RepOptSGD (docs/repopt.md)")
    pm.add_argument("--repopt-search-epochs", type=positive_int, default=1, metavar="N",
                    help="epochs of the scale hyper-search before each repopt:NAME training (not counted in --epochs)")
    pm.add_argument("--net", default="tiny_vgg", help="net spec: shipped name or YAML path")
    pm.add_argument("--model", help="compare inside YOUR model instead of a net spec: torchvision:NAME, timm:NAME "
                                    "or FILE.py:FACTORY; the model as it is is the control ('plain'), each block "
                                    "is expanded into its conv+BN layers (docs/any_model.md)")
    pm.add_argument("--weights", metavar="FILE", help="with --model: its pretrained checkpoint; the blocks then "
                                                      "start from it (init=preserve) and the model keeps its head")
    pm.add_argument("--size", type=positive_int, default=32, help="with --model: input size the data is resized to")
    pm.add_argument("--data", default="auto", help=DATA_HELP)
    pm.add_argument("--train-limit", "--limit", dest="limit", type=positive_int, default=6000,
                    help="train on the first N training images (Fashion-MNIST has 60,000; validation always uses "
                         "the whole test set); a value above the data's size uses all of it")
    pm.add_argument("--epochs", type=positive_int, default=3, help="training epochs")
    pm.add_argument("--seeds", type=positive_int, default=3, help="seeds per block (pairs with the control: 3 or "
                                                                  "more give intervals)")
    pm.add_argument("--time-budget", type=positive_float, metavar="SECONDS",
                    help="stop after the last round of seeds that fits (every block keeps the same seeds)")
    pm.add_argument("--no-control", dest="control", action="store_false",
                    help="do not train the plain conv+BN control (then nothing is compared with it)")
    pm.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device")
    pm.add_argument("--out", default="runs/compare", help="output folder")
    pm.add_argument("--batch-size", type=positive_int, default=64, help="batch size per process")
    pm.add_argument("--lr", type=positive_float, default=0.05, help="peak learning rate, one-cycle SGD")
    pm.add_argument("--latency-batch", type=positive_int, default=64, help="large batch for the latency")
    pm.add_argument("--latency-runs", type=positive_int, default=20, help="timed forwards per latency measurement")
    pm.add_argument("--mode", choices=["offline", "online"], default="offline",
                    help="offline: branches on the features (as the papers); online: branch BNs become scales, "
                         "one BN after the sum, one conv per block per step (OREPA)")
    add_int8_args(pm, "every deployed net, reporting its INT8 accuracy, the drop from FP32 (paired with the "
                      "control) and the folded kernels' statistics")
    pm.add_argument("--quiet", action="store_true", help="no progress bars")
    pm.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from reparam_zoo.bench.compare import CONTROL, default_blocks
    from reparam_zoo.bench.data import load_data
    from reparam_zoo.bench.trainer import RepOpt
    from reparam_zoo.engine.nets import load_net
    from reparam_zoo.outputs import check_out_dir

    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda but no CUDA device is available")
    check_out_dir(args.out)  # before any work: an unwritable --out is found now, not after training
    if args.int8 and any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        from reparam_zoo.interop.quantize import INSTALL_HINT  # before any training: a missing quantizer is found now

        return fail(INSTALL_HINT)
    if args.model:
        if any(b.startswith(REPOPT) for b in args.blocks):
            return fail("repopt:NAME trains a net spec's blocks as RepOptimizers; it is not for --model")
        return _compare_model(args)
    net = load_net(args.net)
    data = load_data(args.data, net.input_size, args.limit)
    blocks = [RepOpt(b[len(REPOPT):], args.repopt_search_epochs) if b.startswith(REPOPT) else b
              for b in args.blocks or default_blocks(net)]
    if args.control:
        blocks = [CONTROL, *[b for b in blocks if b != CONTROL]]
    return _run_compare(args, net, data, blocks)


def _compare_model(args: argparse.Namespace) -> int:
    """compare --model: the user's model as it is (the control) and with each block expanded into it."""
    from reparam_zoo.bench.data import load_data
    from reparam_zoo.interop.expand import expand
    from reparam_zoo.interop.user_models import PLAIN, UserModel, build_user_model

    if args.mode != "offline":
        return fail("--model trains the expanded blocks offline; --mode online is for net specs")
    data = load_data(args.data, args.size, args.limit)
    if data.in_channels == 1:  # torchvision/timm models take RGB: the grey image on every channel
        data.train_x = data.train_x.expand(-1, 3, -1, -1).contiguous()
        data.val_x = data.val_x.expand(-1, 3, -1, -1).contiguous()
    subject = UserModel(args.model, args.size, args.weights)
    probe = build_user_model(args.model)
    if args.weights:
        probe = subject.build(PLAIN, data.num_classes)  # loads the weights (one-line error if they do not fit)
        with torch.no_grad():
            width = probe.eval()(data.train_x[:2]).shape[-1]
        if width < data.num_classes:
            return fail(f"{args.model} with {args.weights} has {width} outputs, the data {data.num_classes} "
                         "classes (with --weights the model keeps its own head)")
    init = "preserve" if args.weights else "fresh"  # as UserModel.build expands
    blocks = args.blocks
    if not blocks:  # every shipped spec that expands at least one layer of this model
        blocks = [n for n in list_specs() if n != PLAIN and expand(probe, n, init=init)[1].expanded]
    others = [b for b in blocks if b != PLAIN]
    return _run_compare(args, subject, data, [PLAIN, *others] if args.control else others)


def _run_compare(args: argparse.Namespace, net, data, blocks) -> int:
    from reparam_zoo.bench.compare import CONTROL, CompareConfig, run_compare

    cfg = CompareConfig(net=net, data=data, blocks=blocks, epochs=args.epochs, seeds=args.seeds,
                        device=args.device, out=Path(args.out), batch_size=args.batch_size, lr=args.lr,
                        latency_batch=args.latency_batch, latency_runs=args.latency_runs,
                        progress=not args.quiet, mode=args.mode, control=CONTROL if args.control else None,
                        time_budget=args.time_budget, run_latency=False, int8=args.int8,
                        int8_calibration=args.calibration)
    summary = run_compare(cfg)
    if summary is None:  # a non-zero rank under torchrun
        return 0
    print((Path(args.out) / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {cfg.out}/results.json, results.csv, results.md, plot.png")
    diverged = [r["block"] for r in summary if not r.get("all_finite", True)]
    if diverged:
        print(f"reparam-zoo: non-finite (NaN/inf) outputs, training diverged or the weights are broken, for: "
              f"{', '.join(diverged)}", file=sys.stderr)
        return 1
    bad = [r["block"] for r in summary if not r["all_same_predictions"]]
    if bad:
        print(f"reparam-zoo: the folded network predicts differently for: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
