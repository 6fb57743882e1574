"""The ``reparam-zoo`` command line."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence

import torch

from . import __version__
from .commands import compare as compare_cmd
from .commands import fail
from .commands import convert as convert_cmd
from .commands.argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from .block import RepBlock, build_block
from .errors import SpecError
from .fold import fold_model
from .outputs import RunLock, atomic_write, check_writable, publish
from .profile import count_macs, count_params
from .spec import BRANCHES, get_spec, json_schema, list_specs, resolve_spec
from .verify import TOLERANCE, check_size, verify

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}

#: geometries `check --all` sweeps when no geometry flag is given: (in, out, stride, groups)
DEFAULT_GEOMETRIES = [(16, 16, 1, 1), (16, 32, 2, 1), (16, 16, 1, 4), (16, 16, 2, 16)]


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _measure(block: RepBlock, size: int, dtype: torch.dtype, seed: int, tolerance: float | None) -> dict:
    g = block.geometry
    folded = fold_model(block)
    # inputs at least as large as the block's window (and than reflect padding needs), so that the check
    # always compares something; border_shapes adds the small sizes too
    h, w = check_size(g)
    size = max(size, h, w)  # MACs at the asked size, or the smallest the block takes
    shape = (1, g.in_channels, size, size)
    res = verify(block, (2, g.in_channels, h, w), dtype=dtype, seed=seed, tolerance=tolerance, randomize=True)
    return {
        "train_params": count_params(block), "deploy_params": count_params(folded),
        "train_macs": count_macs(block, shape), "deploy_macs": count_macs(folded, shape),
        "max_abs": res.max_abs, "max_rel": res.max_rel, "fold_rel": res.fold_rel, "train_rel": res.train_rel,
        "tolerance": res.tolerance, "ok": res.ok, "compared": len(res.shapes), "nonfinite": res.nonfinite,
        "macs_size": size, "round_rel": res.round_rel,
    }


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_specs():
        spec = get_spec(name)
        print(f"{name:12s} {spec.description}")
    if args.branches:
        print("\nbranch types:", ", ".join(BRANCHES.names()))
    return 0


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
        geometries = DEFAULT_GEOMETRIES
    rows, failed = [], False
    for name in names:
        spec = resolve_spec(name)
        for cin, cout, stride, groups in geometries:
            block = build_block(spec, cin, cout, stride=stride, groups=groups)
            m = _measure(block, args.size, dtype, args.seed, args.tolerance)
            failed |= not m["ok"]
            rows.append({"spec": spec.name, "in": cin, "out": cout, "stride": stride, "groups": groups,
                         "branches": block.describe(), "dtype": args.dtype, **m})
            if len(names) == 1 and len(geometries) == 1:
                g = block.geometry
                print(f"{spec.name}: {spec.description}".rstrip(": "))
                print(f"  block: {cin} -> {cout} channels, kernel {g.kernel[0]}x{g.kernel[1]}, stride {stride}, "
                      f"dilation {g.dilation}, groups {groups}, padding {g.padding} ({block.padding_mode})")
                print("  branches:")
                for line in block.describe():
                    print(f"    {line}")
                print(f"  params: train {m['train_params']:,} -> deploy {m['deploy_params']:,}")
                print(f"  MACs @ {m['macs_size']}x{m['macs_size']}: train {_human(m['train_macs'])} -> "
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
    if len(rows) > 1:
        head = (f"{'spec':12s} {'in':>4s} {'out':>4s} {'s':>2s} {'g':>3s} {'br':>3s} {'train p':>9s} "
                f"{'deploy p':>9s} {'train MACs':>10s} {'deploy MACs':>11s} {'fold err':>9s} {'run err':>9s}  result")
        print(f"fold check, {args.dtype}, MACs at {args.size}x{args.size}")
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
              f"{'all OK' if not failed else 'FAILED'}")
        print(f"(fold err: folded weights in {args.dtype}, evaluated exactly; run err: the folded form run in "
              f"{args.dtype}; both relative to the exact output, see docs/math.md; BatchNorm statistics "
              f"randomised with seed {args.seed}: a check of the specs, not of trained weights)")
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 1 if failed else 0


def cmd_space(args: argparse.Namespace) -> int:
    import random

    from .search import SearchSpace, candidate_cost

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


def cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .compare import CompareConfig
    from .data import load_data
    from .nets import load_net
    from .search import SearchSpace

    space = SearchSpace.load(args.space)
    net = load_net(args.net)
    data = load_data(args.data, net.input_size, args.limit)  # a DataError is main()'s one line
    out = Path(args.out)
    cfg = CompareConfig(net=net, data=data, blocks=[], epochs=args.epochs, seeds=1, out=out,
                        latency_batch=args.latency_batch, latency_runs=args.latency_runs, progress=not args.quiet)
    with RunLock(out, "reparam-zoo search " + args.space):  # refused here, before any training, if held
        if args.supernet:
            return _supernet_search(space, cfg, args)
        return _random_search(space, net, data, cfg, args)


def _random_search(space, net, data, cfg, args) -> int:
    import json

    import yaml

    from .nets import load_net
    from .search import pareto_front, random_search
    from .spec import load_spec

    out = cfg.out
    rows = random_search(space, cfg, args.budget, args.seed)
    if not rows:
        return fail("no candidate of the space builds in this net")
    rows.sort(key=lambda r: (-r["val_acc"], r["deploy_ms"]))
    front = {r["hash"] for r in pareto_front(rows)}
    files = {"leaderboard.json": json.dumps({"space": space.name, "net": net.name, "data": data.name,
                                             "epochs": args.epochs, "budget": args.budget, "seed": args.seed,
                                             "rows": rows}, indent=2, default=str),
             "best.yaml": rows[0]["yaml"]}
    if space.net_template is not None:
        files["best_net.yaml"] = rows[0]["net"]
    lines = [f"| rank | hash | val acc % | deploy ms b{args.latency_batch} | train params | deploy params | "
             "train step ms | Pareto | branches |", "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        spec = load_spec(r["yaml"])
        branches = "; ".join(b.label() + (f" x{b.count}" if b.count > 1 else "") for b in spec.branches)
        if space.net_template is not None:
            n = load_net(yaml.safe_load(r["net"]))
            branches += " · net " + "-".join(f"{st.width}x{st.depth}" for st in n.stages) + f", stem {n.stem.width}"
        lines.append(f"| {i} | `{r['hash']}` | {100 * r['val_acc']:.2f} | {r['deploy_ms']:.2f} | "
                     f"{r['train_params']:,} | {r['deploy_params']:,} | {r['train_step_ms']:.1f} | "
                     f"{'*' if r['hash'] in front else ''} | k{spec.kernel} {spec.act}: {branches} |")
    table = "\n".join(lines)
    files["leaderboard.md"] = f"# search {space.name} on {net.name} / {data.name}\n\n{table}\n"
    png = io.BytesIO()
    _plot_pareto(rows, front, png, f"{space.name}: {len(rows)} candidates, {args.epochs} epochs", args.latency_batch)
    files["pareto.png"] = png.getvalue()
    # all together (Ctrl-C leaves the previous complete set or this one), and nothing of another kind of run
    publish(out, files, remove=("supernet.json",) + (() if space.net_template is not None else ("best_net.yaml",)))
    print(table)
    print(f"wrote {out}/leaderboard.json, leaderboard.md, pareto.png, best.yaml (the top candidate)"
          + (", best_net.yaml" if space.net_template is not None else ""))
    return 0


def _supernet_search(space, cfg, args) -> int:
    """Train the gated supernet in the net, rank its gates, derive top-k, check the derived net."""
    import json

    from .compare import evaluate, train_and_measure
    from .search import build_supernet, derive_net

    import dataclasses

    from .primitives.gate import BranchGate

    sn_spec = build_supernet(space).spec
    keep: dict = {}
    if args.gate_l1:
        def l1(model):  # sparsity pressure on the gates, so that unneeded branches fade out
            return args.gate_l1 * sum(m.weight.abs() for m in model.modules() if isinstance(m, BranchGate))

        cfg = dataclasses.replace(cfg, penalty=l1)
    r = train_and_measure(cfg, sn_spec, args.seed, label="supernet", keep=keep)
    spec, ranking, pruned = derive_net(keep["model"], sn_spec, args.top_k)
    device = torch.device(cfg.device)
    folded = fold_model(pruned.eval())
    acc_pruned, logits_pruned = evaluate(pruned, cfg.data.val_x, cfg.data.val_y, device)
    acc_folded, logits_folded = evaluate(folded, cfg.data.val_x, cfg.data.val_y, device)
    out = cfg.out
    result = {"space": space.name, "gate_l1": args.gate_l1, "supernet": dict(r), "gate_ranking": ranking,
              "top_k": args.top_k, "derived_yaml": spec.to_yaml(), "derived_val_acc_without_retraining": acc_pruned,
              "derived_folded_val_acc": acc_folded,
              "derived_max_logit_diff": (logits_pruned - logits_folded).abs().max().item()}
    publish(out, {"best.yaml": spec.to_yaml(), "supernet.json": json.dumps(result, indent=2, default=str)},
            remove=("leaderboard.json", "leaderboard.md", "pareto.png", "best_net.yaml"))
    print(f"supernet ({len(sn_spec.branches)} branches, gated): val acc {100 * r['val_acc']:.2f}%")
    print("gate ranking (mean |gate| over blocks): " + ", ".join(
        f"{n} ({sn_spec.branches[int(n.split('.')[1])].label()}) {v:.3f}" for n, v in ranking))
    print(f"derived (top {args.top_k}): " + "; ".join(b.label() for b in spec.branches))
    print(f"derived net, supernet weights, no retraining: val acc {100 * acc_pruned:.2f}%, folded "
          f"{100 * acc_folded:.2f}% (max logit diff {result['derived_max_logit_diff']:.1e})")
    print(f"wrote {out}/supernet.json and best.yaml (the derived spec)")
    return 0


def _plot_pareto(rows, front, path, title, latency_batch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [r["deploy_ms"] for r in rows]
    ys = [100 * r["val_acc"] for r in rows]
    ax.scatter(xs, ys, c=["tab:red" if r["hash"] in front else "tab:blue" for r in rows], alpha=0.8)
    fr = sorted((r for r in rows if r["hash"] in front), key=lambda r: r["deploy_ms"])
    ax.plot([r["deploy_ms"] for r in fr], [100 * r["val_acc"] for r in fr], "r--", lw=1, label="Pareto front")
    for r in fr:
        ax.annotate(r["hash"][:6], (r["deploy_ms"], 100 * r["val_acc"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel(f"deployed latency, batch {latency_batch} (ms)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def cmd_zoo(args: argparse.Namespace) -> int:
    from .zoo import zoo_markdown

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


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the rule and where the help is, not the whole usage."""

    def error(self, message: str):
        message = " ".join(message.split())
        if len(message) > 500:
            message = message[:500] + "..."
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .commands import expand as expand_cmd

    p = _Parser(
        prog="reparam-zoo",
        description="Structural re-parameterization: blocks declared in YAML, trained as branches, "
                    "folded exactly into one conv.")
    p.add_argument("--version", action="version", version=f"reparam_zoo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pl = sub.add_parser("list", help="list the shipped block specs")
    pl.add_argument("--branches", action="store_true", help="also list the registered branch types")
    pl.set_defaults(func=cmd_list)

    pc = sub.add_parser(
        "check", help="build a block, fold it and measure the fold error, parameters and MACs",
        description="Build SPEC for a geometry, fold it, and compare both forms on border-heavy inputs "
                    "with randomised BatchNorm statistics. Exit 0: within tolerance; 1: above tolerance; "
                    "2: bad spec or arguments.")
    pc.add_argument("spec", nargs="?", help="shipped spec name or path to a YAML file")
    pc.add_argument("--all", action="store_true",
                    help="check every shipped spec (over several geometries unless one is given)")
    pc.add_argument("--in-channels", type=positive_int, help="input channels (default 16)")
    pc.add_argument("--out-channels", type=positive_int, help="output channels (default: in-channels)")
    pc.add_argument("--stride", type=positive_int, help="stride (default 1)")
    pc.add_argument("--groups", type=positive_int, help="groups (default 1)")
    pc.add_argument("--dtype", choices=list(DTYPES), default="float64", help="dtype of the comparison")
    pc.add_argument("--size", type=positive_int, default=56, help="input size for the MAC count (default 56)")
    pc.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random statistics and inputs")
    pc.add_argument("--tolerance", type=positive_float,
                    help="relative error allowed (default per dtype: " +
                         ", ".join(f"{str(k).replace('torch.', '')} {v:.0e}" for k, v in TOLERANCE.items()) + ")")
    pc.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    pc.set_defaults(func=cmd_check)

    compare_cmd.add_parser(sub)

    def model_args(sp, net_required=True):
        sp.add_argument("--net", required=net_required, help="net spec: shipped name or YAML path"
                        + ("" if net_required else " (not needed for a `reparam-zoo expand` checkpoint)"))
        sp.add_argument("--block", help="block spec replacing the net's block")
        sp.add_argument("--num-classes", type=positive_int, help="classes (default: read from the checkpoint's head)")
        sp.add_argument("--in-channels", type=positive_int, default=3, help="input channels (default 3)")
        sp.add_argument("--from", dest="from_format", default="reparam_zoo",
                        help="checkpoint format: reparam_zoo (default) or repvgg (the official repository)")

    pv = sub.add_parser("convert", help="train-time checkpoint -> deployed checkpoint (folded, verified keys)",
                        description="Load a train-time checkpoint (any registered format) into NET, fold it and "
                                    "save the deployed weights with a header (mode, specs as YAML, their hash). "
                                    "Load it with build_model(..., deployed=True) and strict=True. A checkpoint "
                                    "written by `reparam-zoo expand` (and fine-tuned) is folded back into its "
                                    "original model instead: the output is a bare state dict that the original "
                                    "torchvision/timm/your model loads with strict=True (no --net needed). With "
                                    "--model, IN is that model's own train-time checkpoint: its re-parameterized "
                                    "blocks (official RepVGG, timm, MobileOne, ...) are adopted and folded into "
                                    "their upstream's deployed keys.")
    model_args(pv, net_required=False)
    pv.add_argument("--model", help="instead of --net: torchvision:NAME, timm:NAME or FILE.py:FACTORY whose own "
                                    "train-time checkpoint IN is; its re-parameterized blocks are adopted and "
                                    "folded into their upstream's deployed keys (docs/any_model.md)")
    pv.add_argument("--input-shape", type=expand_cmd._shape, default=(2, 3, 64, 64), metavar="N,C,H,W",
                    help="input of the check with --model (default 2,3,64,64)")
    pv.add_argument("checkpoint", metavar="IN.pth")
    pv.add_argument("output", metavar="OUT.pth")
    pv.set_defaults(func=convert_cmd.cmd_convert)

    pe = sub.add_parser("export", help="fold and export to ONNX, checked by onnxruntime",
                        description="Fold NET (with CKPT's weights: deployed or train-time), export to ONNX, "
                                    "check that every folded block is one Conv and that onnxruntime matches "
                                    "PyTorch. Needs: pip install 'reparam_zoo[onnx]'.")
    model_args(pe)
    pe.add_argument("checkpoint", nargs="?", metavar="CKPT", help="checkpoint (default: random weights)")
    pe.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the ONNX file")
    pe.set_defaults(func=convert_cmd.cmd_export)

    pa = sub.add_parser("space", help="sample a search space of block specs and print each candidate's cost",
                        description="Load a search space (shipped name under specs/spaces/ or a YAML path), draw "
                                    "valid candidates and print their train/deploy parameters and MACs, training "
                                    "activation memory and deployed latency on this device.")
    pa.add_argument("space", help="search space: shipped name or YAML path")
    pa.add_argument("--sample", type=positive_int, default=10, help="candidates to draw (default 10)")
    pa.add_argument("--seed", type=nonneg_int, default=0, help="sampling seed (default 0)")
    pa.add_argument("--size", type=positive_int, default=56, help="input size for the costs (default 56)")
    pa.add_argument("--enumerate", action="store_true", help="only count the valid distinct candidates")
    pa.set_defaults(func=cmd_space)

    ps2 = sub.add_parser("search", help="random search over a space of blocks: train, fold, leaderboard, Pareto plot",
                         description="Sample BUDGET distinct valid candidates of SPACE, train NET with each on DATA "
                                     "(the compare harness: fold, verify, measure), and write leaderboard.json/.md, "
                                     "pareto.png (accuracy vs deployed latency) and best.yaml into --out.")
    ps2.add_argument("space", help="search space: shipped name or YAML path")
    ps2.add_argument("--net", default="tiny_vgg", help="net spec (default tiny_vgg)")
    ps2.add_argument("--data", default="digits", help="digits (default), cifar10:DIR or imagefolder:DIR")
    ps2.add_argument("--budget", type=positive_int, default=8, help="candidates to train (default 8)")
    ps2.add_argument("--epochs", type=positive_int, default=3, help="epochs per candidate (default 3)")
    ps2.add_argument("--seed", type=nonneg_int, default=0, help="sampling and training seed (default 0)")
    ps2.add_argument("--limit", type=positive_int, help="use only the first N training images")
    ps2.add_argument("--latency-batch", type=positive_int, default=64, help="batch of the latency (default 64)")
    ps2.add_argument("--latency-runs", type=positive_int, default=10, help="timed forwards (default 10)")
    ps2.add_argument("--out", default="runs/search", help="output folder (default runs/search)")
    ps2.add_argument("--supernet", action="store_true",
                     help="train the gated supernet instead of sampling, then derive the top-k branches")
    ps2.add_argument("--top-k", type=positive_int, default=2, help="gated branches to keep with --supernet (default 2)")
    ps2.add_argument("--gate-l1", type=nonneg_float, default=0.0,
                     help="L1 penalty on the gates while training the supernet (default 0)")
    ps2.add_argument("--quiet", action="store_true", help="no progress bars")
    ps2.set_defaults(func=cmd_search)

    pz = sub.add_parser("zoo", help="measure every shipped spec on the reference layer (the docs/zoo.md table)")
    pz.add_argument("--write", metavar="FILE", help="write the markdown to FILE instead of printing it")
    pz.set_defaults(func=cmd_zoo)

    expand_cmd.add_parser(sub)

    ps = sub.add_parser("schema", help="print the JSON Schema of block specs (for editor completion)")
    ps.set_defaults(func=cmd_schema)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoints import CheckpointError
    from .data import DataError
    from .outputs import OutputError
    from .user_models import ModelError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, CheckpointError, ModelError, OutputError, DataError) as exc:
        return fail(exc)
    except KeyboardInterrupt:  # what was kept has been said where it was kept
        print("reparam-zoo: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
