"""``reparam-zoo expand``: a user's model (torchvision, timm or their own file) with its conv+BN layers
expanded into RepBlocks, saved as a checkpoint whose header records how to rebuild it
(``interop.deployed.save_expanded``); ``reparam-zoo convert`` folds such a checkpoint back into the
ORIGINAL model's classes and keys."""

from __future__ import annotations

import argparse

from reparam_zoo.cli import fail
from reparam_zoo.cli.argtypes import DefaultsHelp, positive_int
from reparam_zoo.errors import SpecError
from reparam_zoo.interop.checkpoints import CheckpointError
from reparam_zoo.interop.deployed import INPUT_SHAPE, agreement, save_expanded
from reparam_zoo.interop.expand import expand
from reparam_zoo.interop.user_models import ModelError, build_user_model, load_weights
from reparam_zoo.outputs import OutputError, check_writable
from reparam_zoo.spec.lookup import resolve_spec


def input_shape(text: str) -> tuple[int, ...]:
    """``N,C[,L | ,H,W | ,D,H,W]``: 2 to 5 positive ints, the input of a Linear, 1-D, 2-D or 3-D model."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected N,C[,L | ,H,W | ,D,H,W] (ints) but got {text!r}") from None
    if not 2 <= len(shape) <= 5 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"Expected 2 to 5 positive ints N,C[,L | ,H,W | ,D,H,W] but got {text!r}")
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
    p.add_argument("--block", required=True, help="block spec: shipped name or YAML path (for every conv, "
                                                  "1-D, 2-D or 3-D; Linear layers: rz.expand's kinds mapping)")
    p.add_argument("--weights", metavar="FILE", help="the model's own checkpoint (.pth or .safetensors); "
                                                     "default: random weights")
    p.add_argument("--num-classes", type=positive_int, help="passed to the model factory (default: its own)")
    p.add_argument("--include", action="append", metavar="PATTERN", help="only convs whose path matches "
                                                                          "(fnmatch; repeatable)")
    p.add_argument("--exclude", action="append", metavar="PATTERN", help="skip convs whose path matches")
    p.add_argument("--min-kernel", type=positive_int, default=3,
                   help="leave convs with smaller kernels (1x1 by default)")
    p.add_argument("--init", choices=["preserve", "fresh"], default="preserve",
                   help="preserve: the expanded model computes exactly what the original computes")
    p.add_argument("--input-shape", type=input_shape, default=INPUT_SHAPE, metavar="N,C,H,W",
                   help="input of the equality check (N,C,L for a 1-D model, N,C,D,H,W for a 3-D one)")
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
        try:
            check = agreement(new, model, args.input_shape)
        except RuntimeError as exc:
            return fail(f"the model does not run on --input-shape {','.join(map(str, args.input_shape))}: "
                        f"{str(exc).splitlines()[0]}")
        print(f"expanded == original (eval, input {check.input_shape}): relative difference {check.rel:.2e}")
        if not check.ok:
            return fail(f"the expanded model differs from the original by {check.rel:.2e}; nothing written")
    save_expanded(args.output, new, report, model=args.model, spec=spec, num_classes=args.num_classes,
                  include=args.include, exclude=args.exclude, min_kernel=args.min_kernel,
                  input_shape=args.input_shape)
    print(f"wrote {args.output}: {args.model} with {len(report.expanded)} layer(s) expanded by {spec.name} "
          f"({sum(p.numel() for p in new.parameters()):,} parameters)")
    return 0
