"""``reparam-zoo convert`` (train-time checkpoint -> deployed checkpoint) and ``reparam-zoo export``
(fold -> ONNX, checked by onnxruntime). The output is checked writable before any work and written
atomically; every bad checkpoint is a one-line error (exit 2)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from reparam_zoo.interop.checkpoints import CheckpointError, load_checkpoint, read_file, read_state
from reparam_zoo.errors import SpecError
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.outputs import OutputError, check_writable, save_torch
from reparam_zoo.spec.schema import resolve_spec
from reparam_zoo.cli import expand as expand_cmd
from reparam_zoo.cli import fail
from reparam_zoo.engine.verify import relative_error, within


def _infer_classes(state: dict) -> int | None:
    for key in ("head.weight", "linear.weight", "fc.weight", "head.fc.weight"):
        if key in state and state[key].dim() >= 1:
            return int(state[key].shape[0])
    return None


def _header(raw) -> dict | None:
    header = raw.get("reparam_zoo") if isinstance(raw, dict) else None
    return header if isinstance(header, dict) else None


def model_from_checkpoint(args: argparse.Namespace, deployed_ok: bool, raw=None):
    """``(net, model, deployed)`` a checkpoint describes: a deployed reparam_zoo checkpoint loads into
    the plain network (strict); anything else into the training network via the --from adapter."""
    from reparam_zoo.engine.nets import build_model, load_net

    net = load_net(args.net)
    if raw is None and args.checkpoint:
        raw = read_file(args.checkpoint)
    header = _header(raw)
    state = read_state(raw, args.checkpoint) if args.checkpoint else {}
    num_classes = args.num_classes or _infer_classes(state) or 1000
    if header and header.get("mode") == "deploy":
        if not deployed_ok:
            raise CheckpointError(f"{args.checkpoint} is already a deployed checkpoint")
        model = build_model(net, num_classes, block=args.block, in_channels=args.in_channels, deployed=True)
        load_checkpoint(model, state, source=args.checkpoint)
        return net, model, True
    model = build_model(net, num_classes, block=args.block, in_channels=args.in_channels)
    if args.checkpoint:
        load_checkpoint(model, state, format=args.from_format, source=args.checkpoint)
    return net, model, False


def _check_fold(model, folded, shape) -> None:
    """The folded network computes what the loaded one computes (eval, float32, a random input);
    NaN/inf weights or outputs and any relative difference above TOLERANCES['convert'] refuse the conversion."""
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"the weights have NaN/inf values in {len(bad)} tensor(s), e.g. {bad[0]}; "
                              "nothing written")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model(x), folded(x)
    if not bool(torch.isfinite(want).all() and torch.isfinite(got).all()):
        raise CheckpointError("the network gives NaN/inf outputs with these weights; nothing written")
    rel = relative_error(got, want)
    if not within("convert", rel):
        raise CheckpointError(f"the folded network differs from the loaded one by {rel:.1e} (relative); "
                              "nothing written")


def cmd_convert(args: argparse.Namespace) -> int:
    import yaml

    try:
        check_writable(args.output, "OUT")
        raw = read_file(args.checkpoint)
        header = _header(raw)
        if header and header.get("mode") == expand_cmd.MODE:
            return expand_cmd.convert_expanded(args, raw)
        if args.model:
            return expand_cmd.convert_adopted(args)
        if not args.net:
            return fail("--net or --model is required (except for a checkpoint written by `reparam-zoo expand`)")
        net, model, _ = model_from_checkpoint(args, deployed_ok=False, raw=raw)
        folded = fold_model(model.eval())
        _check_fold(model, folded, (2, args.in_channels, net.input_size, net.input_size))
        block_yaml = resolve_spec(args.block or net.block).to_yaml() if (args.block or net.block) else ""
        net_yaml = yaml.safe_dump(net.model_dump(mode="json"), sort_keys=False)
        header = {"mode": "deploy", "net": net_yaml, "block": block_yaml,
                  "spec_sha256": hashlib.sha256((net_yaml + block_yaml).encode()).hexdigest(),
                  "num_classes": int(folded.head.out_features), "in_channels": args.in_channels}
        save_torch({"reparam_zoo": header, "state_dict": folded.state_dict()}, args.output)
    except (CheckpointError, OutputError, SpecError) as exc:
        return fail(exc)
    print(f"wrote {args.output}: deployed {net.name} ({sum(p.numel() for p in folded.parameters()):,} parameters, "
          f"spec sha256 {header['spec_sha256'][:12]})")
    return 0


def int8_path(onnx_path: str) -> Path:
    """Where ``export --int8`` writes the INT8 model: ``OUT.onnx`` -> ``OUT.int8.onnx``."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".int8.onnx")


def cmd_export(args: argparse.Namespace) -> int:
    from reparam_zoo.bench.data import DataError, load_data
    from reparam_zoo.interop.export import ExportError, export_onnx

    try:
        check_writable(args.onnx, "--onnx")
        if args.int8:
            check_writable(str(int8_path(args.onnx)), "the INT8 model")
        net, model, _ = model_from_checkpoint(args, deployed_ok=True)
        data = None
        if args.int8:  # before any file is written: bad data is a one-line error, not a half export
            data = load_data(args.data, net.input_size, limit=args.calibration)
            if data.in_channels != args.in_channels:
                raise ExportError(f"--data {args.data} has {data.in_channels} channel(s) but the net takes "
                                  f"--in-channels {args.in_channels}")
        if data is None:
            print(export_onnx(model, (1, args.in_channels, net.input_size, net.input_size), args.onnx))
        else:  # quantize_onnx exports (and checks) the FP32 model itself, into --onnx
            from reparam_zoo.interop.quantize import quantize_onnx, worst

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

