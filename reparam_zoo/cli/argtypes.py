"""Typed command-line values and the option groups several commands share: a bad value is
argparse's usage line and one error line, exit 2, before any work — never a silent default or a
crash minutes into training."""

from __future__ import annotations

import argparse
import math

from reparam_zoo.interop.checkpoints import FORMATS


def _int(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected {what} but got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"Expected {what} but got {value}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1, "an int >= 1")


def nonneg_int(text: str) -> int:
    return _int(text, 0, "an int >= 0")


def _float(text: str, positive: bool) -> float:
    what = "a finite number > 0" if positive else "a finite number >= 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected {what} but got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"Expected {what} but got {text}")
    return value


def positive_float(text: str) -> float:
    return _float(text, True)


def nonneg_float(text: str) -> float:
    return _float(text, False)


def shape_nchw(text: str) -> tuple[int, ...]:
    """``N,C,H,W``: four positive ints (an input shape)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected N,C,H,W (ints) but got {text!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"Expected four positive ints N,C,H,W but got {text!r}")
    return shape


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, except where there is nothing to say (no value,
    a switch) or the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "default" in text \
                or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


DATA_HELP = ("auto (Fashion-MNIST when installed, else the embedded digits), fashion-mnist[:DIR], mnist:DIR, digits, "
             "cifar10:DIR (python-pickle batches) or imagefolder:DIR")


def add_int8_args(parser: argparse.ArgumentParser, what: str) -> None:
    """``--int8`` (what it does: ``what``) and ``--calibration N``, shared by export and compare."""
    parser.add_argument("--int8", action="store_true",
                        help="also quantize with ONNX Runtime (QDQ, int8 weights per output channel, int8 "
                             f"activations calibrated on --calibration training images): {what}; needs "
                             "reparam_zoo[onnx]")
    parser.add_argument("--calibration", type=positive_int, default=256, metavar="N",
                        help="with --int8: calibration images, the first N of the training set (default 256)")


def add_model_args(parser: argparse.ArgumentParser, net_required: bool = True) -> None:
    """``--net``, ``--block``, ``--num-classes``, ``--in-channels``, ``--from``: the network a checkpoint
    is loaded into, shared by convert and export (read back with :func:`model_options`)."""
    parser.add_argument("--net", required=net_required, help="net spec: shipped name or YAML path"
                        + ("" if net_required else " (not needed for a `reparam-zoo expand` checkpoint)"))
    parser.add_argument("--block", help="block spec replacing the net's block")
    parser.add_argument("--num-classes", type=positive_int, help="classes (default: read from the checkpoint's head)")
    parser.add_argument("--in-channels", type=positive_int, default=3, help="input channels (default 3)")
    others = ", ".join(name for name in FORMATS.names() if name != "reparam_zoo")
    parser.add_argument("--from", dest="from_format", default="reparam_zoo", metavar="FORMAT",
                        help=f"checkpoint format (its key names): reparam_zoo (default: this library's own keys) "
                             f"or a registered upstream format: {others} (docs/deploy.md)")


def model_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``interop.deployed.model_from_checkpoint`` that :func:`add_model_args` gave."""
    return {"block": args.block, "num_classes": args.num_classes, "in_channels": args.in_channels,
            "from_format": args.from_format}
