"""``reparam-zoo list``: the shipped block specs (and the registered branch types).

The module is ``listing``, not ``list``, so that it does not shadow the builtin."""

from __future__ import annotations

import argparse

from reparam_zoo.spec.lookup import get_spec, list_specs
from reparam_zoo.spec.registry import BRANCHES


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list the shipped block specs")
    p.add_argument("--branches", action="store_true", help="also list the registered branch types")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_specs():
        spec = get_spec(name)
        print(f"{name:12s} {spec.description}")
    if args.branches:
        print("\nbranch types:", ", ".join(BRANCHES.names()))
    return 0
