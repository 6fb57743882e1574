"""``reparam-zoo zoo``: every shipped spec measured on the reference layer (the docs/zoo.md table)."""

from __future__ import annotations

import argparse

from reparam_zoo.bench.zoo import zoo_markdown
from reparam_zoo.outputs import atomic_write, check_writable


def add_parser(sub) -> None:
    p = sub.add_parser("zoo", help="measure every shipped spec on the reference layer (the docs/zoo.md table)")
    p.add_argument("--write", metavar="FILE", help="write the markdown to FILE instead of printing it")
    p.set_defaults(func=cmd_zoo)


def cmd_zoo(args: argparse.Namespace) -> int:
    if args.write:
        check_writable(args.write, "--write")
    text = zoo_markdown()
    if args.write:
        with atomic_write(args.write, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.write}")
    else:
        print(text)
    return 0
