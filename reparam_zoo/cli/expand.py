"""``reparam-zoo expand``: a user's model (torchvision, timm or their own file) with its conv+BN layers
expanded into RepBlocks, saved as a checkpoint whose header records how to rebuild it; and the other
direction, used by ``reparam-zoo convert``: such a checkpoint folded back into the ORIGINAL model's
classes and keys (a bare state dict the original model loads with ``strict=True``)."""

from __future__ import annotations

import argparse

import torch

from reparam_zoo.interop.checkpoints import CheckpointError, read_state
from reparam_zoo.outputs import OutputError, check_writable, save_torch
from reparam_zoo.cli.argtypes import DefaultsHelp, positive_int
from reparam_zoo.errors import SpecError
from reparam_zoo.interop.expand import expand
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.spec.schema import resolve_spec, spec_from_data
from reparam_zoo.interop.user_models import ModelError, build_user_model, load_weights
from reparam_zoo.cli import fail
from reparam_zoo.engine.verify import relative_error, within

MODE = "expanded"


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected N,C,H,W (ints) but got {text!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"Expected four positive ints N,C,H,W but got {text!r}")
    return shape


def add_parser(sub) -> None:
    p = sub.add_parser(
        "expand", help="expand a torchvision/timm/your own model's conv+BN layers into re-parameterized blocks",
        description="Build --model, load --weights (strict), replace every conv whose output only a BatchNorm "
                    "consumes by a block of --block with the conv's own geometry, check (init=preserve) that "
                    "the expanded model computes what the original computed, and save it: a checkpoint whose "
                    "header records the model, the block and the options. Fine-tune it with your code "
                    "(rz.expand with the same arguments rebuilds the module), then `reparam-zoo convert` it "
                    "back into the original model's classes and keys.",
        formatter_class=DefaultsHelp)
    p.add_argument("output", metavar="OUT.pth", help="where to write the expanded checkpoint")
    p.add_argument("--model", required=True, help="torchvision:NAME, timm:NAME or FILE.py:FACTORY")
    p.add_argument("--block", required=True, help="block spec: shipped name or YAML path")
    p.add_argument("--weights", metavar="FILE", help="the model's own checkpoint (.pth or .safetensors); "
                                                     "default: random weights")
    p.add_argument("--num-classes", type=positive_int, help="passed to the model factory (default: its own)")
    p.add_argument("--include", action="append", metavar="PATTERN", help="only convs whose path matches "
                                                                          "(fnmatch; repeatable)")
    p.add_argument("--exclude", action="append", metavar="PATTERN", help="skip convs whose path matches")
    p.add_argument("--min-kernel", type=positive_int, default=3, help="leave convs with smaller kernels (1x1 by default)")
    p.add_argument("--init", choices=["preserve", "fresh"], default="preserve",
                   help="preserve: the expanded model computes exactly what the original computes")
    p.add_argument("--input-shape", type=_shape, default=(2, 3, 64, 64), metavar="N,C,H,W",
                   help="input of the equality check")
    p.set_defaults(func=cmd_expand)


def cmd_expand(args: argparse.Namespace) -> int:
    if args.min_kernel < 1:
        return fail(f"Expected --min-kernel >= 1 but got {args.min_kernel}")
    try:
        check_writable(args.output, "OUT.pth")
        model = build_user_model(args.model, args.num_classes)
        if args.weights:
            load_weights(model, args.weights)
        spec = resolve_spec(args.block)
        new, report = expand(model.eval(), spec, include=args.include, exclude=args.exclude,
                             min_kernel=args.min_kernel, init=args.init)
    except (ModelError, CheckpointError, SpecError, OutputError) as exc:
        return fail(exc)
    print(report)
    if not report.expanded:
        return fail("no layer was expanded; nothing written")
    if args.init == "preserve":
        x = torch.randn(*args.input_shape, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                rel = relative_error(new(x), model(x))
        except RuntimeError as exc:
            return fail(f"the model does not run on --input-shape {','.join(map(str, args.input_shape))}: "
                         f"{str(exc).splitlines()[0]}")
        print(f"expanded == original (eval, input {tuple(x.shape)}): relative difference {rel:.2e}")
        if not within("expand", rel):
            return fail(f"the expanded model differs from the original by {rel:.2e}; nothing written")
    header = {"mode": MODE, "model": args.model, "block": spec.to_yaml(), "num_classes": args.num_classes,
              "include": args.include, "exclude": args.exclude, "min_kernel": args.min_kernel,
              "input_shape": list(args.input_shape), "expanded": [p for p, _, _ in report.expanded]}
    save_torch({"reparam_zoo": header, "state_dict": new.state_dict()}, args.output)
    print(f"wrote {args.output}: {args.model} with {len(report.expanded)} layer(s) expanded by {spec.name} "
          f"({sum(p.numel() for p in new.parameters()):,} parameters)")
    return 0


def rebuild(header: dict, model_arg: str | None = None):
    """``(original, expanded, report)`` an expanded checkpoint's header describes (random weights)."""
    from reparam_zoo.spec.schema import _parse_yaml

    if not isinstance(header.get("model"), str) and not model_arg or not isinstance(header.get("block"), str):
        raise CheckpointError("the checkpoint's reparam_zoo header lacks the model or the block it was expanded with")
    original = build_user_model(model_arg or header["model"], header.get("num_classes"))
    spec = spec_from_data(_parse_yaml(header["block"], "<checkpoint header>"), "<checkpoint header>")
    expanded, report = expand(original, spec, include=header.get("include"), exclude=header.get("exclude"),
                              min_kernel=header.get("min_kernel", 3), init="fresh")
    return original, expanded, report


def convert_expanded(args: argparse.Namespace, raw: dict) -> int:
    """``convert`` of an expanded checkpoint: fold back into the original classes and keys."""
    header = raw["reparam_zoo"]
    try:
        original, expanded, report = rebuild(header, getattr(args, "model", None))
        if "expanded" in header and [p for p, _, _ in report.expanded] != header["expanded"]:
            raise CheckpointError("rebuilding the expanded model gave other layers than the checkpoint's "
                                  "(another version of the model or of reparam_zoo?)")
        state = read_state(raw, args.checkpoint)
        missing = [k for k in expanded.state_dict() if k not in state]
        unexpected = [k for k in state if k not in expanded.state_dict()]
        if missing or unexpected:
            raise CheckpointError(f"{args.checkpoint} does not fit the rebuilt expanded model", unexpected, missing)
        expanded.load_state_dict(state, strict=True)
    except (ModelError, CheckpointError, SpecError) as exc:
        return fail(exc)
    expanded.eval()
    x = torch.randn(*header.get("input_shape", (2, 3, 64, 64)), generator=torch.Generator().manual_seed(0))
    try:
        folded_layers = fold_model(expanded, layout="original")
        original.load_state_dict(folded_layers.state_dict(), strict=True)
        folded = original.eval()
        with torch.no_grad():
            rel = relative_error(folded(x), expanded(x))
    except (RuntimeError, ValueError) as exc:
        return fail(f"folding {args.checkpoint} back failed: {str(exc).splitlines()[0]}")
    print(f"original model loaded with the fold == expanded (eval, input {tuple(x.shape)}): "
          f"relative difference {rel:.2e}")
    if not within("expand", rel):
        return fail(f"the folded model differs from the expanded one by {rel:.2e}; nothing written")
    save_torch(folded.state_dict(), args.output)
    print(f"wrote {args.output}: a state dict of {raw['reparam_zoo']['model']} "
          f"({sum(p.numel() for p in folded.parameters()):,} parameters): the original model loads it with "
          "load_state_dict(..., strict=True)")
    return 0


def convert_adopted(args: argparse.Namespace) -> int:
    """``convert --model M IN OUT``: the model's own train-time checkpoint, its re-parameterized blocks
    adopted and folded into their upstream's deployed form (``rbr_reparam``, ``reparam_conv``, ...)."""
    from reparam_zoo.interop.adopt import adopt

    try:
        model = build_user_model(args.model, args.num_classes)
        load_weights(model, args.checkpoint)
    except (ModelError, CheckpointError) as exc:
        return fail(exc)
    model.eval()
    adopted, report = adopt(model)
    print(report)
    if not report.adopted:
        return fail(f"{args.model} holds no re-parameterized block that an adapter recognises; nothing written")
    x = torch.randn(*args.input_shape, generator=torch.Generator().manual_seed(0))
    try:
        folded = fold_model(adopted, layout="original")
        with torch.no_grad():
            rel = relative_error(folded(x), model(x))
    except (RuntimeError, ValueError) as exc:
        return fail(f"folding failed: {str(exc).splitlines()[0]}")
    print(f"folded == {args.model} (eval, input {tuple(x.shape)}): relative difference {rel:.2e}")
    if not within("expand", rel):
        return fail(f"the folded model differs from the model by {rel:.2e}; nothing written")
    save_torch(folded.state_dict(), args.output)
    print(f"wrote {args.output}: the deployed state dict of {args.model} ({len(report.adopted)} block(s) folded into "
          "their upstream's deployed keys); load it into the model's own deployed form")
    return 0
