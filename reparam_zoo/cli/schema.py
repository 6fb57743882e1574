"""``reparam-zoo schema``: the JSON Schema of block specs (for editor completion)."""

from __future__ import annotations

import argparse
import json

from reparam_zoo.spec.registry import json_schema


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of block specs (for editor completion)")
    p.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
