"""``reparam-zoo convert``: a train-time checkpoint -> a deployed checkpoint (``interop.deployed``);
also an expanded checkpoint folded back into its original model, and with ``--model`` a model's own
train-time checkpoint folded into its upstream's deployed keys. The output is checked writable before
any work and written atomically; every bad checkpoint is a one-line error (exit 2)."""

from __future__ import annotations

import argparse

from reparam_zoo.cli import fail
from reparam_zoo.cli.argtypes import add_model_args, model_options, shape_nchw
from reparam_zoo.errors import SpecError
from reparam_zoo.interop.checkpoints import CheckpointError, read_file
from reparam_zoo.interop.deployed import (
    EXPANDED,
    INPUT_SHAPE,
    adopt_checkpoint,
    fold_adopted,
    fold_checked,
    fold_expanded,
    header_mode,
    model_from_checkpoint,
    read_header,
    save_deployed,
)
from reparam_zoo.interop.user_models import ModelError
from reparam_zoo.outputs import OutputError, check_writable, save_torch


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="train-time checkpoint -> deployed checkpoint (folded, verified keys)",
                       description="Load a train-time checkpoint (any registered format) into NET, fold it and "
                                   "save the deployed weights with a header (mode, specs as YAML, their hash). "
                                   "Load it with build_model(..., deployed=True) and strict=True. A checkpoint "
                                   "written by `reparam-zoo expand` (and fine-tuned) is folded back into its "
                                   "original model instead: the output is a bare state dict that the original "
                                   "torchvision/timm/your model loads with strict=True (no --net needed). With "
                                   "--model, IN is that model's own train-time checkpoint: its re-parameterized "
                                   "blocks (official RepVGG, timm, MobileOne, ...) are adopted and folded into "
                                   "their upstream's deployed keys.")
    add_model_args(p, net_required=False)
    p.add_argument("--model", help="instead of --net: torchvision:NAME, timm:NAME or FILE.py:FACTORY whose own "
                                   "train-time checkpoint IN is; its re-parameterized blocks are adopted and "
                                   "folded into their upstream's deployed keys (docs/any_model.md)")
    p.add_argument("--input-shape", type=shape_nchw, default=INPUT_SHAPE, metavar="N,C,H,W",
                   help="input of the check with --model (default 2,3,64,64)")
    p.add_argument("checkpoint", metavar="IN.pth")
    p.add_argument("output", metavar="OUT.pth")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        check_writable(args.output, "OUT")
        raw = read_file(args.checkpoint)
        if header_mode(raw) == EXPANDED:
            return _convert_expanded(args, raw)
        if args.model:
            return _convert_adopted(args)
        if not args.net:
            return fail("--net or --model is required (except for a checkpoint written by `reparam-zoo expand`)")
        net, model, _ = model_from_checkpoint(args.net, args.checkpoint, raw=raw, deployed_ok=False,
                                              **model_options(args))
        folded = fold_checked(net, model, args.in_channels)
        header = save_deployed(args.output, folded, net, block=args.block, in_channels=args.in_channels)
    except (CheckpointError, ModelError, OutputError, SpecError) as exc:
        return fail(exc)
    print(f"wrote {args.output}: deployed {net.name} ({sum(p.numel() for p in folded.parameters()):,} parameters, "
          f"spec sha256 {header['spec_sha256'][:12]})")
    return 0


def _convert_expanded(args: argparse.Namespace, raw: dict) -> int:
    """An expanded checkpoint folded back into the original classes and keys."""
    folded, check = fold_expanded(raw, args.checkpoint, args.model)
    print(f"original model loaded with the fold == expanded (eval, input {check.input_shape}): "
          f"relative difference {check.rel:.2e}")
    if not check.ok:
        return fail(f"the folded model differs from the expanded one by {check.rel:.2e}; nothing written")
    save_torch(folded.state_dict(), args.output)
    print(f"wrote {args.output}: a state dict of {read_header(raw)['model']} "
          f"({sum(p.numel() for p in folded.parameters()):,} parameters): the original model loads it with "
          "load_state_dict(..., strict=True)")
    return 0


def _convert_adopted(args: argparse.Namespace) -> int:
    """``convert --model M IN OUT``: the model's own train-time checkpoint, its re-parameterized blocks
    adopted and folded into their upstream's deployed form (``rbr_reparam``, ``reparam_conv``, ...)."""
    model, adopted, report = adopt_checkpoint(args.model, args.checkpoint, args.num_classes)
    print(report)
    if not report.adopted:
        return fail(f"{args.model} holds no re-parameterized block that an adapter recognises; nothing written")
    folded, check = fold_adopted(model, adopted, args.input_shape)
    print(f"folded == {args.model} (eval, input {check.input_shape}): relative difference {check.rel:.2e}")
    if not check.ok:
        return fail(f"the folded model differs from the model by {check.rel:.2e}; nothing written")
    save_torch(folded.state_dict(), args.output)
    print(f"wrote {args.output}: the deployed state dict of {args.model} ({len(report.adopted)} block(s) folded into "
          "their upstream's deployed keys); load it into the model's own deployed form")
    return 0
