"""``reparam-zoo space``: draw candidates of a search space and print each one's cost."""

from __future__ import annotations

import argparse
import random

from reparam_zoo.cli.argtypes import DefaultsHelp, nonneg_int, positive_int


def add_parser(sub) -> None:
    pa = sub.add_parser("space", help="sample a search space of block specs and print each candidate's cost",
                        description="Load a search space (shipped name under specs/spaces/ or a YAML path), draw "
                                    "valid candidates and print their train/deploy parameters and MACs, training "
                                    "activation memory and deployed latency on this device.",
                        formatter_class=DefaultsHelp)
    pa.add_argument("space", help="search space: shipped name or YAML path")
    pa.add_argument("--sample", type=positive_int, default=10, help="candidates to draw")
    pa.add_argument("--seed", type=nonneg_int, default=0, help="sampling seed")
    pa.add_argument("--size", type=positive_int, default=56, help="input size for the costs")
    pa.add_argument("--enumerate", action="store_true", help="only count the valid distinct candidates")
    pa.set_defaults(func=cmd_space)


def cmd_space(args: argparse.Namespace) -> int:
    from reparam_zoo.engine.block import build_block
    from reparam_zoo.search.space import SearchSpace, candidate_cost

    space = SearchSpace.load(args.space)
    if args.enumerate:
        cands = space.enumerate()
        print(f"{space.name}: {space.size():,} resolutions, {len(cands):,} valid distinct candidates")
        return 0
    rng = random.Random(args.seed)
    g = space.geometry
    print(f"{space.name}: {space.size():,} resolutions; {args.sample} samples (seed {args.seed}); "
          f"costs at {g.in_channels}->{g.out_channels}, stride {g.stride}, groups {g.groups}, {args.size}x{args.size}")
    head = (f"{'hash':12s} {'k':>3s} {'act':6s} {'train p':>9s} {'deploy p':>9s} {'train MMACs':>11s} "
            f"{'deploy MMACs':>12s} {'act MB':>7s} {'deploy ms':>9s}  branches")
    print(head)
    print("-" * len(head))
    for _ in range(args.sample):
        spec = space.sample(rng)
        c = candidate_cost(spec, g, args.size)
        block = build_block(spec, g.in_channels, g.out_channels, stride=g.stride, groups=g.groups)
        print(f"{c['hash']:12s} {str(spec.kernel):>3s} {spec.act:6s} {c['train_params']:9,d} {c['deploy_params']:9,d} "
              f"{c['train_macs'] / 1e6:11.1f} {c['deploy_macs'] / 1e6:12.1f} {c['train_act_mb']:7.2f} "
              f"{c['deploy_ms']:9.2f}  " + "; ".join(line.split(": ", 1)[1] for line in block.describe()))
    return 0
