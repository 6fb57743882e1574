"""``reparam-zoo export``: fold -> ONNX, checked by onnxruntime; with ``--int8`` also an INT8 model
quantized by ONNX Runtime. The outputs are checked writable before any work; every bad checkpoint or
data set is a one-line error (exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reparam_zoo.bench.data import DataError, load_data
from reparam_zoo.cli import fail
from reparam_zoo.cli.argtypes import DATA_HELP, add_int8_args, add_model_args, model_options, positive_int
from reparam_zoo.errors import SpecError
from reparam_zoo.interop.checkpoints import CheckpointError
from reparam_zoo.interop.deployed import model_from_checkpoint
from reparam_zoo.interop.export import ExportError, export_onnx
from reparam_zoo.interop.quantize import quantize_onnx, worst
from reparam_zoo.outputs import OutputError, check_writable


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="fold and export to ONNX, checked by onnxruntime",
                       description="Fold NET (with CKPT's weights: deployed or train-time), export to ONNX, "
                                   "check that every folded block is one Conv and that onnxruntime matches "
                                   "PyTorch; with --int8 also an INT8 model quantized by ONNX Runtime. "
                                   "Needs: pip install 'reparam_zoo[onnx]'.")
    add_model_args(p)
    p.add_argument("checkpoint", nargs="?", metavar="CKPT", help="checkpoint (default: random weights)")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the (FP32) ONNX file")
    add_int8_args(p, "writes OUT.int8.onnx, checks the quantized graph and reports INT8 vs FP32 agreement on "
                     "--check-images test images of --data")
    p.add_argument("--check-images", type=positive_int, default=1000, metavar="M",
                   help="with --int8: held-out (test) images for the INT8 vs FP32 agreement (default 1000)")
    p.add_argument("--data", default="auto", help=f"with --int8: {DATA_HELP} (default auto)")
    p.set_defaults(func=cmd_export)


def int8_path(onnx_path: str) -> Path:
    """Where ``export --int8`` writes the INT8 model: ``OUT.onnx`` -> ``OUT.int8.onnx``."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".int8.onnx")


def channels_hint(data: str, data_channels: int, net_channels: int) -> str:
    """The one-line refusal of ``--int8`` calibration data whose channels do not fit the net, with the fix."""
    other = ("cifar10:DIR or imagefolder:DIR (3 channels)" if net_channels == 3 else
             "digits, fashion-mnist or mnist:DIR (1 channel)" if net_channels == 1 else "a data set")
    return (f"--data {data} has {data_channels} channel(s) but the net takes --in-channels {net_channels}: "
            f"pass --in-channels {data_channels} if the net (and its checkpoint) takes {data_channels}-channel "
            f"input, or give --data images with {net_channels} channel(s), e.g. {other}")


def cmd_export(args: argparse.Namespace) -> int:
    try:
        check_writable(args.onnx, "--onnx")
        if args.int8:
            check_writable(str(int8_path(args.onnx)), "the INT8 model")
        net, model, _ = model_from_checkpoint(args.net, args.checkpoint, deployed_ok=True, **model_options(args))
        data = None
        if args.int8:  # before any file is written: bad data is a one-line error, not a half export
            data = load_data(args.data, net.input_size, limit=args.calibration)
            if data.in_channels != args.in_channels:
                raise ExportError(channels_hint(args.data, data.in_channels, args.in_channels))
        if data is None:
            print(export_onnx(model, (1, args.in_channels, net.input_size, net.input_size), args.onnx))
        else:  # quantize_onnx exports (and checks) the FP32 model itself, into --onnx
            calibration, check = data.train_x[: args.calibration], data.val_x[: args.check_images]
            report8 = quantize_onnx(model, calibration, int8_path(args.onnx), check=check,
                                    fp32_path=Path(args.onnx))
            print(report8.fp32_export)
            print(report8)
            widest = max(report8.layers, key=lambda r: r["range_ratio"])
            print(f"folded kernels: worst max/median channel range {widest['range_ratio']:.1f} ({widest['layer']}), "
                  f"max channel kurtosis {worst(report8.layers, 'kurtosis_max'):.1f} "
                  "(per-channel weight scales absorb the first; docs/deploy.md)")
    except (CheckpointError, DataError, ExportError, OutputError, SpecError) as exc:
        return fail(exc)
    return 0
