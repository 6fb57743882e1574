"""TPE vs random at equal budget, and the supernet-derived block against the random candidates
(the docs/search.md tables). Reads finished `reparam-zoo search` output folders, then:

1. per study: best held-out accuracy after n trials, mean over trials, distinct candidates;
2. per supernet run: supernet accuracy, gate distribution, derived accuracy without retraining;
3. retrains every distinct derived block under the trials' exact conditions (same data, split,
   epochs, seed 0) and ranks its held-out accuracy among the random candidates;
4. re-trains the best candidate of every study and the derived blocks with seeds against the
   plain control on the test set (compare's paired statistics).

    python benchmarks/search_study.py RUNS_DIR [--seeds 3] [--out RUNS_DIR/summary]

RUNS_DIR holds random-<seed>/, tpe-<seed>/ (search output folders) and sn-<scheme>-<seed>/ (supernet
runs), made by benchmarks/search_study.sh with the same --data/--train-limit/--holdout/--epochs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repo on sys.path)

from reparam_zoo.bench.compare import CompareConfig, run_compare
from reparam_zoo.bench.trainer import TrainConfig, train_and_measure
from reparam_zoo.engine.nets import load_net
from reparam_zoo.search.run import search_data
from reparam_zoo.search.space import spec_hash
from reparam_zoo.spec.lookup import load_spec


def study_rows(folder: Path) -> list[dict]:
    rows = json.loads((folder / "leaderboard.json").read_text())["rows"]
    return sorted(rows, key=lambda r: r["trial"])


def best_after(rows: list[dict], n: int) -> float:
    return max(r["val_acc"] for r in rows[:n])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--data", default="auto")
    p.add_argument("--train-limit", type=int, default=6000)
    p.add_argument("--holdout", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--net", default="tiny_vgg")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    out = args.out or args.runs / "summary"
    net = load_net(args.net)
    data, test = search_data(args.data, net.input_size, args.train_limit, args.holdout)
    report: dict = {"data": data.name, "train_images": len(data.train_x), "held_out": len(data.val_x),
                    "test_images": len(test.val_x), "epochs": args.epochs, "studies": {}, "supernets": []}

    # 1. studies
    for folder in sorted(args.runs.glob("*-*")):
        if not (folder / "leaderboard.json").is_file() or folder.name.startswith("sn-"):
            continue
        rows = study_rows(folder)
        sampler, seed = folder.name.rsplit("-", 1)
        report["studies"][folder.name] = {
            "sampler": sampler, "seed": int(seed), "trained": len(rows),
            "best": max(r["val_acc"] for r in rows), "mean": statistics.fmean(r["val_acc"] for r in rows),
            "best_after": {n: best_after(rows, n) for n in (4, 8, 12, 16) if n <= len(rows)},
            "best_hash": max(rows, key=lambda r: r["val_acc"])["hash"],
            "best_yaml": max(rows, key=lambda r: r["val_acc"])["yaml"],
            "accs": [r["val_acc"] for r in rows]}

    # 2. supernets
    derived: dict[str, str] = {}
    for folder in sorted(args.runs.glob("sn-*")):
        if not (folder / "supernet.json").is_file():
            continue
        r = json.loads((folder / "supernet.json").read_text())
        spec = load_spec(r["derived_yaml"])
        h = spec_hash(spec)
        derived.setdefault(h, r["derived_yaml"])
        values = [v for vs in r["gates"].values() for v in vs]
        report["supernets"].append({
            "run": folder.name, "scheme": r["scheme"], "lam": r["lam"], "eliminate": r["eliminate"],
            "supernet_acc": r["supernet_val_acc"], "derived_acc_no_retraining": r["derived_val_acc_without_retraining"],
            "derived_folded_acc": r["derived_folded_val_acc"], "derived_hash": h,
            "derived": [b.label() for b in spec.branches], "gate_ranking": r["gate_ranking"],
            "gate_labels": r["gate_labels"], "gates_zero": sum(v == 0 for v in values), "gates": len(values),
            "alive_gate_values": sorted(v for v in values if v > 0)})

    # 3. derived blocks retrained under the trials' conditions, ranked among the random candidates
    cfg = TrainConfig(net=net, data=data, epochs=args.epochs, progress=False, run_latency=False)
    random_accs = {k: s["accs"] for k, s in report["studies"].items() if s["sampler"] == "random"}
    report["derived_retrained"] = {}
    for h, text in derived.items():
        acc = train_and_measure(cfg, load_spec(text), 0, label=h)["val_acc"]
        ranks = {k: 1 + sum(a > acc for a in accs) for k, accs in random_accs.items()}
        report["derived_retrained"][h] = {"held_out_acc": acc, "rank_among_random": ranks,
                                          "of": {k: len(a) for k, a in random_accs.items()}}
        print(f"derived {h}: retrained {100 * acc:.2f}% held out; rank among random candidates {ranks}", flush=True)

    # 4. re-evaluation with seeds on the test set against plain
    blocks, names = ["plain"], {}
    for k, s in sorted(report["studies"].items()):
        if s["best_hash"] not in names:
            names[s["best_hash"]] = f"best-of-{k}"
            blocks.append(load_spec(s["best_yaml"]).model_copy(update={"name": f"{k}-best-{s['best_hash']}"}))
    for h, text in derived.items():
        if h not in names:
            names[h] = f"derived-{h}"
            blocks.append(load_spec(text).model_copy(update={"name": f"derived-{h}"}))
    rc = CompareConfig(net=net, data=test, blocks=blocks, epochs=args.epochs, seeds=args.seeds, out=out / "reevaluate",
                       control="plain", run_latency=False, progress=False)
    report["reevaluation"] = run_compare(rc)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_study.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "reevaluation"}, indent=1, default=str)[:6000])
    print(f"wrote {out / 'search_study.json'} and {out / 'reevaluate'}/results.md")


if __name__ == "__main__":
    main()
