"""Typed command-line values: a bad one is argparse's usage line and one error line, exit 2,
before any work — never a silent default or a crash minutes into training."""

from __future__ import annotations

import argparse
import math


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
