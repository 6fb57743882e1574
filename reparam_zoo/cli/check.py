"""``reparam-zoo check``: build a block for a geometry, fold it, and measure the fold error, parameters
and MACs (exit 0: within tolerance; 1: above; 2: bad spec or arguments)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from reparam_zoo.cli.argtypes import nonneg_int, positive_float, positive_int
from reparam_zoo.engine.block import RepBlock, build_block
from reparam_zoo.engine.cost import train_deploy_costs
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.verify import TOLERANCE, check_size, verify
from reparam_zoo.errors import SpecError
from reparam_zoo.outputs import atomic_write, check_writable
from reparam_zoo.spec.lookup import list_specs, resolve_spec

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}

#: geometries `check --all` sweeps when no geometry flag is given: (in, out, stride, groups)
DEFAULT_GEOMETRIES = [(16, 16, 1, 1), (16, 32, 2, 1), (16, 16, 1, 4), (16, 16, 2, 16)]
#: the same for Linear blocks (--dims 0), which have no stride and no groups
LINEAR_GEOMETRIES = [(16, 16, 1, 1), (16, 32, 1, 1)]
#: what --dims builds
DIMS = {0: "a Linear layer, inputs (N, C)", 1: "Conv1d, (N, C, L)", 2: "Conv2d, (N, C, H, W)",
        3: "Conv3d, (N, C, D, H, W)"}


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _axes(values) -> str:
    """Per-axis values as one number when every axis has it, else ``a x b (x c)``."""
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _macs_at(size: int, axes: int) -> str:
    """Where MACs were counted: ``56x56`` for a 2-D block, ``56`` (1-D), ``56x56x56``; a Linear block's one sample."""
    return "x".join([str(size)] * axes) if axes else "one (N, C) sample"


def geometry_line(block: RepBlock) -> str:
    """The block's geometry in words: what it folds into, its kernel per axis and the rest."""
    g = block.geometry
    if g.dims == 0:
        return f"block: Linear, {g.in_channels} -> {g.out_channels} features (folds into one nn.Linear)"
    kind = f"{g.dims}-D {'transposed conv' if g.transposed else 'conv'}"
    tail = f", output padding {_axes(g.output_padding)}" if g.transposed else f" ({block.padding_mode})"
    return (f"block: {kind}, {g.in_channels} -> {g.out_channels} channels, kernel {'x'.join(map(str, g.kernel))}, "
            f"stride {_axes(g.stride)}, dilation {_axes(g.dilation)}, groups {g.groups}, "
            f"padding {_axes(g.padding)}{tail}")


def _measure(block: RepBlock, size: int, dtype: torch.dtype, seed: int, tolerance: float | None) -> dict:
    g = block.geometry
    folded = fold_model(block)
    # inputs at least as large as the block's window (and than reflect padding needs) on every axis, so that
    # the check always compares something; border_shapes adds the small sizes too
    sizes = check_size(g)
    size = max((size, *sizes))  # MACs at the asked size, or the smallest the block takes
    shape = (1, g.in_channels, *[size] * len(sizes))
    res = verify(block, (2, g.in_channels, *sizes), dtype=dtype, seed=seed, tolerance=tolerance, randomize=True)
    return {
        **train_deploy_costs(block, folded, shape),
        "max_abs": res.max_abs, "max_rel": res.max_rel, "fold_rel": res.fold_rel, "train_rel": res.train_rel,
        "tolerance": res.tolerance, "ok": res.ok, "compared": len(res.shapes), "nonfinite": res.nonfinite,
        "macs_size": size, "round_rel": res.round_rel,
    }


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check", help="build a block, fold it and measure the fold error, parameters and MACs",
        description="Build SPEC for a geometry, fold it, and compare both forms on border-heavy inputs "
                    "with randomised BatchNorm statistics. Exit 0: within tolerance; 1: above tolerance; "
                    "2: bad spec or arguments.")
    p.add_argument("spec", nargs="?", help="shipped spec name or path to a YAML file")
    p.add_argument("--all", action="store_true",
                   help="check every shipped spec (over several geometries unless one is given)")
    p.add_argument("--in-channels", type=positive_int, help="input channels (default 16)")
    p.add_argument("--out-channels", type=positive_int, help="output channels (default: in-channels)")
    p.add_argument("--stride", type=positive_int, help="stride (default 1)")
    p.add_argument("--groups", type=positive_int, help="groups (default 1)")
    p.add_argument("--dims", type=int, choices=sorted(DIMS), default=2,
                   help="spatial dimensions of the block: " + "; ".join(f"{k}: {v}" for k, v in DIMS.items()) +
                        " (default 2)")
    p.add_argument("--transposed", action="store_true",
                   help="a transposed block, folding into one ConvTranspose{1,2,3}d (default: off)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float64", help="dtype of the comparison")
    p.add_argument("--size", type=positive_int,
                   help="input size on every spatial axis for the MAC count (default 56; 16 with --dims 3, where "
                        "56x56x56 takes minutes for large kernels)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random statistics and inputs")
    p.add_argument("--tolerance", type=positive_float,
                   help="relative error allowed (default per dtype: " +
                        ", ".join(f"{str(k).replace('torch.', '')} {v:.0e}" for k, v in TOLERANCE.items()) + ")")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    dtype = DTYPES[args.dtype]
    if args.all:
        names: list = list_specs()
    elif args.spec:
        names = [args.spec]
    else:
        print("reparam-zoo check: error: give a SPEC (name or YAML file) or --all", file=sys.stderr)
        return 2
    if args.json:
        check_writable(args.json, "--json")
    explicit = any(v is not None for v in (args.in_channels, args.out_channels, args.stride, args.groups))
    if explicit or not args.all:
        cin = args.in_channels or 16
        geometries = [(cin, args.out_channels or cin, args.stride or 1, args.groups or 1)]
    else:
        geometries = LINEAR_GEOMETRIES if args.dims == 0 else DEFAULT_GEOMETRIES
    # the shipped specs are written for 2-D blocks: in a sweep of other dims, those that do not apply are
    # listed as skipped (a single spec that does not apply is an error, exit 2)
    skip_inapplicable = args.all and (args.dims != 2 or args.transposed)
    size = args.size or (16 if args.dims == 3 else 56)
    rows, skipped, failed = [], [], False
    for name in names:
        spec = resolve_spec(name)
        for cin, cout, stride, groups in geometries:
            try:
                block = build_block(spec, cin, cout, stride=stride, groups=groups, dims=args.dims,
                                    transposed=args.transposed)
            except SpecError as exc:
                if not skip_inapplicable:
                    raise
                skipped.append(f"{spec.name} ({cin}->{cout}, stride {stride}, groups {groups}): "
                               f"{f'{exc.location}: ' if exc.location else ''}{exc.rule}")
                continue
            m = _measure(block, size, dtype, args.seed, args.tolerance)
            failed |= not m["ok"]
            rows.append({"spec": spec.name, "in": cin, "out": cout, "stride": stride, "groups": groups,
                         "dims": args.dims, "transposed": args.transposed,
                         "branches": block.describe(), "dtype": args.dtype, **m})
            if len(names) == 1 and len(geometries) == 1:
                print(f"{spec.name}: {spec.description}".rstrip(": "))
                print(f"  {geometry_line(block)}")
                print("  branches:")
                for line in block.describe():
                    print(f"    {line}")
                print(f"  params: train {m['train_params']:,} -> deploy {m['deploy_params']:,}")
                print(f"  MACs @ {_macs_at(m['macs_size'], args.dims)}: train {_human(m['train_macs'])} -> "
                      f"deploy {_human(m['deploy_macs'])}")
                verdict = "OK" if m["ok"] else "FAIL"
                print(f"  checked with random BatchNorm statistics (seed {args.seed}): a spec check, not of trained weights")
                if not m["compared"] or m["nonfinite"]:
                    why = ("compared nothing (every input was too small)" if not m["compared"] else
                           "non-finite outputs from " + ", ".join(m["nonfinite"]))
                    print(f"  fold error: {why} FAIL")
                elif dtype == torch.float64:
                    print(f"  fold error (float64): max abs {m['max_abs']:.2e}, max rel {m['max_rel']:.2e} "
                          f"(tolerance {m['tolerance']:.0e}) {verdict}")
                else:
                    print(f"  fold error ({args.dtype}): {m['fold_rel']:.2e} relative (tolerance "
                          f"{m['tolerance']:.0e}); run in {args.dtype}: max abs {m['max_abs']:.2e}, max rel "
                          f"{m['max_rel']:.2e} (training form {m['train_rel']:.2e}) {verdict}")
    if not rows:  # a sweep where nothing applied: no evidence is not a pass
        print(f"reparam-zoo check: error: no shipped spec applies to --dims {args.dims}"
              f"{' --transposed' if args.transposed else ''} ({skipped[0]})", file=sys.stderr)
        return 2
    if len(rows) > 1:
        head = (f"{'spec':12s} {'in':>4s} {'out':>4s} {'s':>2s} {'g':>3s} {'br':>3s} {'train p':>9s} "
                f"{'deploy p':>9s} {'train MACs':>10s} {'deploy MACs':>11s} {'fold err':>9s} {'run err':>9s}  result")
        what = "" if args.dims == 2 and not args.transposed else \
            f"{'Linear' if args.dims == 0 else f'{args.dims}-D'}{' transposed' if args.transposed else ''} blocks, "
        print(f"fold check, {what}{args.dtype}, MACs at {_macs_at(size, args.dims)}")
        print(head)
        print("-" * len(head))
        for r in rows:
            print(f"{r['spec']:12s} {r['in']:4d} {r['out']:4d} {r['stride']:2d} {r['groups']:3d} "
                  f"{len(r['branches']):3d} {r['train_params']:9,d} {r['deploy_params']:9,d} "
                  f"{_human(r['train_macs']):>10s} {_human(r['deploy_macs']):>11s} {r['fold_rel']:9.2e} "
                  f"{r['max_rel']:9.2e}  "
                  f"{'OK' if r['ok'] else 'FAIL'}")
        worst = max(r["fold_rel"] for r in rows)
        print(f"{len(rows)} checks, worst relative fold error {worst:.2e} (tolerance {rows[0]['tolerance']:.0e}): "
              f"{'all OK' if not failed else 'FAILED'}" + (f"; {len(skipped)} skipped (below)" if skipped else ""))
        print(f"(fold err: folded weights in {args.dtype}, evaluated exactly; run err: the folded form run in "
              f"{args.dtype}; both relative to the exact output, see docs/math.md; BatchNorm statistics "
              f"randomised with seed {args.seed}: a check of the specs, not of trained weights)")
    for line in skipped:
        print(f"skipped, does not apply: {line}")
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 1 if failed else 0
