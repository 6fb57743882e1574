"""The ``reparam-zoo`` command line: one table of commands, each a module of ``reparam_zoo.cli``
with ``add_parser(subparsers)`` (its subparser, options and ``func``); commands parse, call the
library and print. Shared option groups and value types live in ``cli/argtypes.py``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reparam_zoo import __version__
from reparam_zoo.bench.data import DataError
from reparam_zoo.cli import check, compare, convert, expand, export, fail, listing, schema, search, space, zoo
from reparam_zoo.errors import SpecError
from reparam_zoo.interop.checkpoints import CheckpointError
from reparam_zoo.interop.export import ExportError
from reparam_zoo.interop.user_models import ModelError
from reparam_zoo.outputs import OutputError

#: command name -> its module, in the order ``reparam-zoo --help`` lists them
COMMANDS = {
    "list": listing,
    "check": check,
    "compare": compare,
    "convert": convert,
    "export": export,
    "space": space,
    "search": search,
    "zoo": zoo,
    "expand": expand,
    "schema": schema,
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the rule and where the help is, not the whole usage."""

    def error(self, message: str):
        message = " ".join(message.split())
        if len(message) > 500:
            message = message[:500] + "..."
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="reparam-zoo",
        description="Structural re-parameterization: blocks declared in YAML, trained as branches, "
                    "folded exactly into one conv.")
    p.add_argument("--version", action="version", version=f"reparam_zoo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub)
        if name not in sub.choices:
            raise RuntimeError(f"Expected {module.__name__}.add_parser to add the command {name!r} but got "
                               f"{sorted(sub.choices)}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, CheckpointError, ModelError, OutputError, DataError, ExportError) as exc:
        return fail(exc)
    except KeyboardInterrupt:  # what was kept has been said where it was kept
        print("reparam-zoo: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
