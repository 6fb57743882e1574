"""``reparam-zoo search``: a search over the candidates of a search space, with Optuna underneath (samplers,
pruning, a shared storage, resume) or a gated supernet; the top candidates are re-trained with seeds against
the plain control (compare's statistics). The command parses, calls :mod:`reparam_zoo.search.run`, prints."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from reparam_zoo.cli import fail
from reparam_zoo.cli.argtypes import DefaultsHelp, nonneg_float, nonneg_int, positive_int
from reparam_zoo.outputs import check_out_dir


def add_parser(sub) -> None:
    from reparam_zoo.search.liveness import GRACE, HEARTBEAT
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
    ps.add_argument("--heartbeat", type=positive_int, default=HEARTBEAT, metavar="SECONDS",
                    help="a training trial records a heartbeat in the storage this often")
    ps.add_argument("--grace", type=positive_int, default=GRACE, metavar="SECONDS",
                    help="a running trial without a heartbeat for this long belongs to a dead worker (any host): it "
                         "is marked failed and its candidate queued again")
    ps.add_argument("--seed", type=nonneg_int, default=0, help="sampler and training seed")
    ps.add_argument("--reevaluate", type=nonneg_int, default=3,
                    help="re-train the top N candidates with --reeval-seeds seeds against the plain control (0: skip)")
    ps.add_argument("--reeval-seeds", type=positive_int, default=3, help="seeds of the re-evaluation")
    ps.add_argument("--latency-batch", type=positive_int, default=64, help="batch of the deploy latency")
    ps.add_argument("--latency-runs", type=positive_int, default=10, help="timed forwards per latency")
    ps.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where every training runs (the trials, the supernet, the re-evaluation); for several GPUs "
                         "start one worker per GPU on one --storage (docs/search.md)")
    ps.add_argument("--out", default="runs/search", help="output folder")
    ps.add_argument("--supernet", action="store_true",
                    help="train one gated supernet instead of sampling, then derive the top-k branches")
    ps.add_argument("--scheme", choices=sorted(SCHEMES), default="group-lasso",
                    help="supernet gating scheme (docs/search.md compares them)")
    ps.add_argument("--lam", "--gate-l1", dest="lam", type=nonneg_float,
                    help="supernet: strength of the gate penalty (default: " + ", ".join(
                        f"{name} {SCHEMES.get(name).default_lam}" for name in SCHEMES) + ")")
    ps.add_argument("--top-k", type=positive_int, default=2, help="supernet: optional branches to keep")
    ps.add_argument("--no-elimination", dest="eliminate", action="store_false",
                    help="supernet: keep every branch until the end (no progressive elimination)")
    ps.add_argument("--quiet", action="store_true", help="no progress bars")
    ps.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from reparam_zoo.bench.compare import CompareConfig
    from reparam_zoo.engine.nets import load_net
    from reparam_zoo.search.run import search_data
    from reparam_zoo.search.space import SearchSpace

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return fail("search is not run under torchrun: each worker trains its own candidates and the workers share "
                    "the study through --storage; for one worker per GPU start `CUDA_VISIBLE_DEVICES=i reparam-zoo "
                    "search ... --device cuda --storage URL` once per GPU i (docs/search.md)")
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda but no CUDA device is available")
    space = SearchSpace.load(args.space)
    net = load_net(args.net)
    out = Path(args.out)
    check_out_dir(out)
    data, test_data = search_data(args.data, net.input_size, args.limit, args.holdout)
    cfg = CompareConfig(net=net, data=data, blocks=[], epochs=args.epochs, seeds=1, out=out, device=args.device,
                        latency_batch=args.latency_batch, latency_runs=args.latency_runs, progress=not args.quiet)
    if not args.quiet:
        print(f"search {space.name}: {data.name}, {len(data.train_x):,} training images, {len(data.val_x):,} held out "
              f"to score the trials ({len(test_data.val_x):,} test images for the re-evaluation)", file=sys.stderr)
    if args.supernet:
        return _supernet_search(space, cfg, test_data, args)
    return _study_search(space, cfg, test_data, args)


def _log(msg: str) -> None:
    print(f"reparam-zoo search: {msg}", file=sys.stderr, flush=True)


def _study_search(space, cfg, test_data, args: argparse.Namespace) -> int:
    from reparam_zoo.search.run import study_search
    from reparam_zoo.search.study import SearchConfig, storage_url

    sc = SearchConfig(space=space, compare=cfg, budget=args.budget, sampler=args.sampler, pruner=args.pruner,
                      cost=args.cost, seed=args.seed, storage=storage_url(args.storage, cfg.out),
                      study=args.study or space.name, heartbeat=args.heartbeat, grace=args.grace)
    outcome = study_search(sc, test_data, args.reevaluate, args.reeval_seeds, _log)
    print(outcome.files["leaderboard.md"])
    print(f"wrote {cfg.out}/leaderboard.json, leaderboard.md, pareto.png, best.yaml"
          + (", best_net.yaml" if space.net_template is not None else "") + f"; study {sc.study!r} in {sc.storage}")
    return 0


def _supernet_search(space, cfg, test_data, args: argparse.Namespace) -> int:
    from reparam_zoo.bench.compare import CONTROL
    from reparam_zoo.search.leaderboard import vs_control_text
    from reparam_zoo.search.run import SupernetSettings, supernet_search

    settings = SupernetSettings(scheme=args.scheme, lam=args.lam, top_k=args.top_k, eliminate=args.eliminate,
                                seed=args.seed, reevaluate=bool(args.reevaluate), reeval_seeds=args.reeval_seeds)
    outcome = supernet_search(space, cfg, test_data, settings, _log)
    sn, result = outcome.supernet, outcome.result
    r, labels = result["supernet"], result["gate_labels"]
    print(f"supernet ({len(sn.spec.branches)} branches, {len(sn.optional)} gated, {args.scheme}, lam {result['lam']}): "
          f"held-out acc {100 * r['val_acc']:.2f}%")
    print("gates (mean over blocks): " + ", ".join(f"{labels[n]} {v:.3f}" for n, v in result["gate_ranking"]))
    print(f"derived (top {args.top_k}): " + "; ".join(b.label() for b in outcome.derived.branches))
    print(f"derived net, supernet weights, no retraining: held-out acc "
          f"{100 * result['derived_val_acc_without_retraining']:.2f}%, folded "
          f"{100 * result['derived_folded_val_acc']:.2f}% (max logit diff {result['derived_max_logit_diff']:.1e})")
    reeval = result.get("reevaluation")
    if reeval:
        d = next(s for s in reeval if s["block"] != CONTROL)
        c = next(s for s in reeval if s["block"] == CONTROL)
        print(f"re-trained with {d['seeds']} seeds on the test set: derived {100 * d['val_acc']:.2f}%, plain "
              f"{100 * c['val_acc']:.2f}%; difference in points{vs_control_text(d)}")
    print(f"wrote {cfg.out}/supernet.json and best.yaml (the derived spec)")
    return 0
