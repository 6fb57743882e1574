"""``reparam-zoo search``: a search over the candidates of a search space, with Optuna underneath (samplers, pruning, a shared storage, resume) or a gated supernet;
the top candidates are re-trained with seeds against the plain control (compare's statistics)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path

import torch

from reparam_zoo.errors import SpecError
from reparam_zoo.outputs import OutputError, RunLock, check_out_dir, publish
from reparam_zoo.cli.argtypes import DefaultsHelp, nonneg_float, nonneg_int, positive_int
from reparam_zoo.cli import fail

CONTROL = "plain"
DEFAULT_LAM = {"group-lasso": 0.03, "gate-l1": 0.01, "scale-lasso": 0.1}  # measured in docs/search.md


def add_parser(sub) -> None:
    from reparam_zoo.search.study import COSTS, PRUNERS, SAMPLERS
    from reparam_zoo.search.supernet import SCHEMES

    ps = sub.add_parser(
        "search", help="architecture search over a space of blocks (Optuna), or a gated supernet",
        description="Search SPACE: each trial trains NET with one candidate block on DATA (the compare harness: "
                    "fold, verify, measure) and is scored on a held-out split of the training images. Optuna runs "
                    "the search: samplers random, tpe, grid (finite spaces) and nsga2 (with --cost, a second "
                    "objective), pruning on per-epoch accuracy, and a storage (default: OUT/study.db, SQLite) that "
                    "several `reparam-zoo search` processes with the same --out/--storage and --study share; the "
                    "same command resumes an interrupted search. A candidate is never trained twice. The top "
                    "candidates are then re-trained with --reeval-seeds seeds against the plain conv+BN control "
                    "and compared on the test set (compare's paired statistics, in OUT/reevaluate/). Writes "
                    "leaderboard.json/.md, pareto.png, best.yaml (and best_net.yaml for net spaces). With "
                    "--supernet: one supernet with every optional branch, a gating scheme, the derived block.",
        formatter_class=DefaultsHelp)
    ps.add_argument("space", help="search space: shipped name or YAML path")
    ps.add_argument("--net", default="tiny_vgg", help="net spec (shipped name or YAML path)")
    ps.add_argument("--data", default="auto", help="auto (Fashion-MNIST when installed, else the embedded digits), "
                                                   "fashion-mnist[:DIR], mnist:DIR, digits, cifar10:DIR, imagefolder:DIR")
    ps.add_argument("--train-limit", "--limit", dest="limit", type=positive_int, default=6000,
                    help="train on the first N training images")
    ps.add_argument("--holdout", type=positive_int, default=2000,
                    help="training images after those held out to score the trials (at most a fifth of what "
                         "there is); the test set is kept for the re-evaluation")
    ps.add_argument("--epochs", type=positive_int, default=3, help="epochs per candidate")
    ps.add_argument("--budget", type=positive_int, default=8,
                    help="distinct candidates the study trains (all processes together; pruned ones count)")
    ps.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler")
    ps.add_argument("--pruner", choices=PRUNERS, default="median",
                    help="stop poor trials early on per-epoch accuracy (single objective only)")
    ps.add_argument("--cost", choices=COSTS, help="a second objective to minimise next to accuracy "
                                                  "(nsga2 needs one; e.g. train_macs, or deploy_ms when kernel "
                                                  "sizes or widths are searched)")
    ps.add_argument("--storage", help="Optuna storage: a database URL or an SQLite file path (default OUT/study.db)")
    ps.add_argument("--study", help="study name in the storage (default: the space's name)")
    ps.add_argument("--seed", type=nonneg_int, default=0, help="sampler and training seed")
    ps.add_argument("--reevaluate", type=nonneg_int, default=3,
                    help="re-train the top N candidates with --reeval-seeds seeds against the plain control (0: skip)")
    ps.add_argument("--reeval-seeds", type=positive_int, default=3, help="seeds of the re-evaluation")
    ps.add_argument("--latency-batch", type=positive_int, default=64, help="batch of the deploy latency")
    ps.add_argument("--latency-runs", type=positive_int, default=10, help="timed forwards per latency")
    ps.add_argument("--out", default="runs/search", help="output folder")
    ps.add_argument("--supernet", action="store_true",
                    help="train one gated supernet instead of sampling, then derive the top-k branches")
    ps.add_argument("--scheme", choices=sorted(SCHEMES), default="group-lasso",
                    help="supernet gating scheme (docs/search.md compares them)")
    ps.add_argument("--lam", "--gate-l1", dest="lam", type=nonneg_float,
                    help="supernet: strength of the gate penalty (default: " + ", ".join(
                        f"{k} {v}" for k, v in DEFAULT_LAM.items()) + ")")
    ps.add_argument("--top-k", type=positive_int, default=2, help="supernet: optional branches to keep")
    ps.add_argument("--no-elimination", dest="eliminate", action="store_false",
                    help="supernet: keep every branch until the end (no progressive elimination)")
    ps.add_argument("--quiet", action="store_true", help="no progress bars")
    ps.set_defaults(func=cmd_search)


def search_data(arg: str, size: int, limit: int, holdout: int):
    """(the search's data: training images + a held-out split of the training set as validation,
    the re-evaluation's data: the same training images + the real test set)."""
    from reparam_zoo.bench.data import Dataset, load_data

    full = load_data(arg, size, limit + holdout)
    n = len(full.train_x)
    h = max(1, min(holdout, n // 5))
    k = min(limit, n - h)
    if k < 1:
        raise SpecError(f"{full.name}: {n} training image(s) cannot give both a training set and a held-out split")
    tx, ty = full.train_x[:k], full.train_y[:k]
    hx, hy = full.train_x[n - h:], full.train_y[n - h:]
    return (Dataset(full.name, tx, ty, hx, hy, full.num_classes),
            Dataset(full.name, tx, ty, full.val_x, full.val_y, full.num_classes))


def cmd_search(args: argparse.Namespace) -> int:
    from reparam_zoo.bench.compare import CompareConfig
    from reparam_zoo.engine.nets import load_net
    from reparam_zoo.search.space import SearchSpace

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return fail("search trains one candidate per process: start several `reparam-zoo search` processes on "
                    "one --storage instead of torchrun")
    space = SearchSpace.load(args.space)
    net = load_net(args.net)
    out = Path(args.out)
    check_out_dir(out)
    data, test_data = search_data(args.data, net.input_size, args.limit, args.holdout)
    cfg = CompareConfig(net=net, data=data, blocks=[], epochs=args.epochs, seeds=1, out=out,
                        latency_batch=args.latency_batch, latency_runs=args.latency_runs, progress=not args.quiet)
    if not args.quiet:
        print(f"search {space.name}: {data.name}, {len(data.train_x):,} training images, {len(data.val_x):,} held out "
              f"to score the trials ({len(test_data.val_x):,} test images for the re-evaluation)", file=sys.stderr)
    if args.supernet:
        return _supernet_search(space, cfg, test_data, args)
    return _study_search(space, cfg, test_data, args)


def _log(msg: str) -> None:
    print(f"reparam-zoo search: {msg}", file=sys.stderr, flush=True)


def _publish(out: Path, files: dict, remove=(), wait: float = 120.0) -> None:
    """Put a result set in place while holding the folder (processes sharing a study publish in turn)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            lock = RunLock(out, "reparam-zoo search (writing results)").acquire()
            break
        except OutputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        publish(out, files, remove=remove)
    finally:
        lock.release()


def _study_search(space, cfg, test_data, args) -> int:
    from reparam_zoo.search.study import SearchConfig, finished_rows, run_study, storage_url, study_summary

    out = cfg.out
    sc = SearchConfig(space=space, compare=cfg, budget=args.budget, sampler=args.sampler, pruner=args.pruner,
                      cost=args.cost, seed=args.seed, storage=storage_url(args.storage, out),
                      study=args.study or space.name)
    t0 = time.perf_counter()
    try:
        study, counts = run_study(sc, log=_log)
    except KeyboardInterrupt:
        _log(f"interrupted: the study {sc.study!r} in {sc.storage} keeps every finished trial; the same command "
             "resumes it")
        raise
    rows = finished_rows(study)
    if not rows:
        return fail("no candidate of the space was trained to the end (all invalid, pruned or failed)")
    summary = study_summary(study)
    _log(f"this process: {counts['trained']} trained, {counts['pruned']} pruned, {counts['reused']} duplicates "
         f"reused, {counts['skipped_running']} left to the process training them, {counts['invalid']} invalid; "
         f"the study: {summary['complete']} candidates trained by {len(summary['processes'])} process(es) "
         f"({time.perf_counter() - t0:.0f} s here)")
    reeval = _reevaluate(space, cfg, test_data, rows[: args.reevaluate], args) if args.reevaluate else None
    files = _leaderboard_files(space, cfg, rows, args, sc, summary, reeval)
    _publish(out, files, remove=("supernet.json",) + (() if space.net_template is not None else ("best_net.yaml",)))
    print(files["leaderboard.md"])
    print(f"wrote {out}/leaderboard.json, leaderboard.md, pareto.png, best.yaml"
          + (", best_net.yaml" if space.net_template is not None else "") + f"; study {sc.study!r} in {sc.storage}")
    return 0


def _reevaluate(space, cfg, test_data, rows, args) -> list[dict] | None:
    """Re-train the given candidates (and the plain control) with seeds and compare on the test set;
    one compare per distinct net. None if another process is doing it right now."""
    import yaml

    from reparam_zoo.bench.compare import run_compare
    from reparam_zoo.engine.nets import load_net
    from reparam_zoo.spec.schema import load_spec

    by_net: dict[str, list[dict]] = {}
    for r in rows:
        by_net.setdefault(r["net"], []).append(r)
    summaries = []
    for i, (net_yaml, group) in enumerate(by_net.items()):
        net = load_net(yaml.safe_load(net_yaml)) if space.net_template is not None and net_yaml else cfg.net
        where = cfg.out / "reevaluate" / (f"net{i}" if len(by_net) > 1 else "")
        specs = [load_spec(r["yaml"]).model_copy(update={"name": f"{space.name}-{r['hash']}"}) for r in group]
        done = where / "results.json"
        names = [CONTROL] + [s.name for s in specs]
        if done.is_file():
            prev = json.loads(done.read_text())
            if [r["block"] for r in prev.get("summary", [])] == names and prev["config"]["seeds_done"] >= args.reeval_seeds:
                summaries += prev["summary"]
                continue
        rc = dataclasses.replace(cfg, net=net, data=test_data, blocks=[CONTROL, *specs], seeds=args.reeval_seeds,
                                 control=CONTROL, out=where, run_latency=False)
        _log(f"re-evaluating {len(specs)} candidate(s) with {args.reeval_seeds} seeds against '{CONTROL}' on "
             f"{len(test_data.val_x):,} test images -> {where}")
        try:
            summaries += run_compare(rc)
        except OutputError as exc:
            _log(f"re-evaluation skipped here: {exc}")
            return None
    return summaries


def _leaderboard_files(space, cfg, rows, args, sc, summary, reeval) -> dict:
    import yaml

    from reparam_zoo.engine.nets import load_net
    from reparam_zoo.search.space import pareto_front
    from reparam_zoo.spec.schema import load_spec

    cost = args.cost or ("deploy_ms" if all("deploy_ms" in r for r in rows) else "train_macs")
    front = {r["hash"] for r in pareto_front(rows, cost=cost)}
    by_name = {s["block"]: s for s in reeval or []}
    lines = [f"| rank | hash | held-out acc % | {cost} | train params | deploy params | train step ms | Pareto | "
             f"re-evaluated: test acc % (Δ vs plain, 95% CI) | branches |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        spec = load_spec(r["yaml"])
        branches = "; ".join(b.label() + (f" x{b.count}" if b.count > 1 else "") for b in spec.branches)
        if space.net_template is not None:
            n = load_net(yaml.safe_load(r["net"]))
            branches += " · net " + "-".join(f"{st.width}x{st.depth}" for st in n.stages) + f", stem {n.stem.width}"
        s = by_name.get(f"{space.name}-{r['hash']}")
        re_text = ""
        if s is not None:
            re_text = f"{100 * s['val_acc']:.2f}" + _vs(s)
        lines.append(f"| {i} | `{r['hash']}` | {100 * r['val_acc']:.2f} | {r[cost]:.4g} | {r['train_params']:,} | "
                     f"{r['deploy_params']:,} | {r['train_step_ms']:.1f} | {'*' if r['hash'] in front else ''} | "
                     f"{re_text} | k{spec.kernel} {spec.act}: {branches} |")
    ctrl = by_name.get(CONTROL)
    head = (f"# search {space.name} on {cfg.net.name} / {cfg.data.name}\n\n"
            f"{summary['complete']} candidates trained ({summary['pruned']} pruned, {summary['duplicates']} duplicate "
            f"draws not retrained) by {len(summary['processes'])} process(es); sampler {args.sampler}, "
            f"{args.epochs} epochs, {len(cfg.data.train_x):,} training images, scored on {len(cfg.data.val_x):,} "
            f"held-out training images (1 image = {100 / len(cfg.data.val_x):.2f} points).\n")
    if ctrl is not None:
        head += (f"\nRe-evaluation on the test set with {ctrl['seeds']} seeds: plain conv+BN {100 * ctrl['val_acc']:.2f}%;"
                 " the Δ column pairs each candidate with it seed by seed (compare's statistics).\n")
    files = {"leaderboard.json": json.dumps({"space": space.name, "net": cfg.net.name, "data": cfg.data.name,
                                             "epochs": args.epochs, "budget": args.budget, "sampler": args.sampler,
                                             "pruner": args.pruner, "cost": args.cost, "seed": args.seed,
                                             "study": sc.study, "storage": sc.storage, "summary": summary,
                                             "rows": rows, "reevaluation": reeval}, indent=2, default=str),
             "best.yaml": rows[0]["yaml"],
             "leaderboard.md": head + "\n" + "\n".join(lines) + "\n"}
    if space.net_template is not None:
        files["best_net.yaml"] = rows[0]["net"]
    png = io.BytesIO()
    _plot_pareto(rows, front, png, f"{space.name}: {len(rows)} candidates, {args.epochs} epochs ({args.sampler})", cost,
                 args.latency_batch)
    files["pareto.png"] = png.getvalue()
    return files


def _vs(s: dict) -> str:
    v = s.get("vs_control")
    if not v:
        return ""
    if v.get("low") is None:
        return f" ({v['mean']:+.2f}; {v['verdict']})"
    return f" ({v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]; {v['verdict']})"


def _plot_pareto(rows, front, path, title, cost, latency_batch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [r[cost] for r in rows]
    ys = [100 * r["val_acc"] for r in rows]
    ax.scatter(xs, ys, c=["tab:red" if r["hash"] in front else "tab:blue" for r in rows], alpha=0.8)
    fr = sorted((r for r in rows if r["hash"] in front), key=lambda r: r[cost])
    ax.plot([r[cost] for r in fr], [100 * r["val_acc"] for r in fr], "r--", lw=1, label="Pareto front")
    for r in fr:
        ax.annotate(r["hash"][:6], (r[cost], 100 * r["val_acc"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel({"deploy_ms": f"deployed latency, batch {latency_batch} (ms)", "train_macs": "training MACs per image",
                   "deploy_macs": "deployed MACs per image", "deploy_params": "deployed parameters",
                   "train_step_ms": "training step (ms)"}.get(cost, cost))
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _supernet_search(space, cfg, test_data, args) -> int:
    """Train the supernet with the chosen gating scheme, derive top-k, check the derived net."""
    from reparam_zoo.bench.compare import evaluate, train_and_measure
    from reparam_zoo.engine.fold import fold_model
    from reparam_zoo.search import supernet as snm

    sn = snm.supernet_spec(space, args.scheme)
    if args.lam is None:
        args.lam = DEFAULT_LAM[args.scheme]
    if args.top_k > len(sn.optional):
        raise SpecError(f"--top-k {args.top_k} but the space has {len(sn.optional)} optional branches")
    cfg = dataclasses.replace(cfg, mode=sn.mode, penalty=snm.penalty(sn, args.lam),
                              after_step=snm.proximal_step(sn, args.lam),
                              on_epoch=snm.eliminator(sn, args.top_k, args.epochs, _log) if args.eliminate else None)
    keep: dict = {}
    r = train_and_measure(cfg, sn.spec, args.seed, label="supernet", keep=keep)
    model = keep["model"]
    table = snm.gate_table(model, sn)
    spec, ranking, pruned = snm.derive(model, sn, top_k=args.top_k)
    device = torch.device(cfg.device)
    folded = fold_model(pruned.eval())
    acc_pruned, logits_pruned = evaluate(pruned, cfg.data.val_x, cfg.data.val_y, device)
    acc_folded, logits_folded = evaluate(folded, cfg.data.val_x, cfg.data.val_y, device)
    labels = {f"branches.{i}": sn.spec.branches[i].label() for i in sn.optional}
    result = {"space": space.name, "scheme": args.scheme, "lam": args.lam, "eliminate": args.eliminate,
              "top_k": args.top_k, "supernet": r, "gates": {n: v for n, v in table.items()},
              "gate_labels": labels, "gate_ranking": ranking, "derived_yaml": spec.to_yaml(),
              "supernet_val_acc": r["val_acc"], "derived_val_acc_without_retraining": acc_pruned,
              "derived_folded_val_acc": acc_folded,
              "derived_max_logit_diff": (logits_pruned - logits_folded).abs().max().item()}
    reeval = None
    if args.reevaluate:
        row = {"yaml": spec.to_yaml(), "hash": "derived", "net": None}
        reeval = _reevaluate(space, cfg, test_data, [row], args)
        result["reevaluation"] = reeval
    _publish(cfg.out, {"best.yaml": spec.to_yaml(), "supernet.json": json.dumps(result, indent=2, default=str)},
             remove=("leaderboard.json", "leaderboard.md", "pareto.png", "best_net.yaml"))
    print(f"supernet ({len(sn.spec.branches)} branches, {len(sn.optional)} gated, {args.scheme}, lam {args.lam}): "
          f"held-out acc {100 * r['val_acc']:.2f}%")
    print("gates (mean over blocks): " + ", ".join(f"{labels[n]} {v:.3f}" for n, v in ranking))
    print(f"derived (top {args.top_k}): " + "; ".join(b.label() for b in spec.branches))
    print(f"derived net, supernet weights, no retraining: held-out acc {100 * acc_pruned:.2f}%, folded "
          f"{100 * acc_folded:.2f}% (max logit diff {result['derived_max_logit_diff']:.1e})")
    if reeval:
        d = next(s for s in reeval if s["block"] != CONTROL)
        c = next(s for s in reeval if s["block"] == CONTROL)
        print(f"re-trained with {d['seeds']} seeds on the test set: derived {100 * d['val_acc']:.2f}%, plain "
              f"{100 * c['val_acc']:.2f}%; difference in points{_vs(d)}")
    print(f"wrote {cfg.out}/supernet.json and best.yaml (the derived spec)")
    return 0
