"""Which supernet gating scheme separates the branches? (the docs/search.md table)

Trains the space's supernet in a net with each scheme and penalty strength, for several seeds,
on real data; reports the supernet's validation accuracy, the distribution of the gate values
(mean over blocks, per optional branch), how many gates reached exactly zero, and the accuracy of
the derived network WITHOUT retraining (the trained supernet with the dropped gates at zero,
which computes exactly the derived sub-network), for ``threshold=0`` (every gate not exactly
zero kept) and for the top-k gates.

    python benchmarks/supernet_gates.py --data fashion-mnist --epochs 4 --seeds 2
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from _common import ROOT, parser  # noqa: F401  (puts the repo on sys.path)

import torch

from reparam_zoo.bench.data import load_data
from reparam_zoo.bench.measure import evaluate
from reparam_zoo.bench.trainer import TrainConfig, TrainHooks, train_and_measure
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.nets import load_net
from reparam_zoo.search.space import SearchSpace
from reparam_zoo.search import supernet as snm


def run(space, net, data, scheme, lam, seed, epochs, top_k, eliminate):
    sn = snm.supernet_spec(space, scheme)
    cfg = TrainConfig(net=net, data=data, epochs=epochs, progress=False, run_latency=False, mode=sn.mode)
    hooks = TrainHooks(penalty=snm.penalty(sn, lam), after_step=snm.proximal_step(sn, lam),
                       on_epoch=snm.eliminator(sn, top_k, epochs) if eliminate else None)
    keep: dict = {}
    t0 = time.perf_counter()
    r = train_and_measure(cfg, sn.spec, seed, label=f"{scheme}-{lam}", keep=keep, hooks=hooks)
    model = keep["model"]
    table = snm.gate_table(model, sn)
    row = {"scheme": scheme + ("+elimination" if eliminate else ""), "lam": lam, "seed": seed, "supernet_acc": r["val_acc"], "seconds": time.perf_counter() - t0,
           "gates": {n: statistics.fmean(v) for n, v in table.items()},
           "gate_values": [x for v in table.values() for x in v],
           "zero_gates": sum(x == 0 for v in table.values() for x in v), "n_gates": sum(len(v) for v in table.values()),
           "labels": {f"branches.{i}": sn.spec.branches[i].label() for i in sn.optional}}
    for key, kw in (("auto", {"threshold": 0.0}), (f"top{top_k}", {"top_k": top_k})):
        spec, ranking, pruned = snm.derive(model, sn, **kw)
        acc, logits = evaluate(pruned, data.val_x, data.val_y, torch.device("cpu"))
        facc, flogits = evaluate(fold_model(pruned), data.val_x, data.val_y, torch.device("cpu"))
        row[key] = {"branches": [b.label() for b in spec.branches], "acc": acc, "folded_acc": facc,
                    "max_logit_diff": (logits - flogits).abs().max().item()}
    return row


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--space", default="repvgg_acb")
    p.add_argument("--net", default="tiny_vgg")
    p.add_argument("--data", default="auto")
    p.add_argument("--train-limit", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--runs", default="gate-l1:0,gate-l1:0.01,scale-lasso:0.01,scale-lasso:0.03,"
                                      "group-lasso:0.01,group-lasso:0.03",
                   help="comma-separated scheme:lambda[:elim] (elim: progressive elimination down to --top-k)")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    space = SearchSpace.load(args.space)
    net = load_net(args.net)
    data = load_data(args.data, net.input_size, args.train_limit)
    rows = []
    for seed in range(args.seeds):
        for item in args.runs.split(","):
            scheme, lam, *flag = item.split(":")
            row = run(space, net, data, scheme, float(lam), seed, args.epochs, args.top_k, flag == ["elim"])
            rows.append(row)
            print(f"{row['scheme']:24s} lam {float(lam):<6g} seed {seed}: supernet {100 * row['supernet_acc']:.2f}% | gates "
                  + ", ".join(f"{row['labels'][n]} {v:.3f}" for n, v in row["gates"].items())
                  + f" | zero {row['zero_gates']}/{row['n_gates']} | auto {100 * row['auto']['acc']:.2f}% "
                  f"({'; '.join(row['auto']['branches'])}) | top{args.top_k} {100 * row[f'top{args.top_k}']['acc']:.2f}%"
                  f" | {row['seconds']:.0f} s", flush=True)
    out = Path(args.json or ROOT / "benchmarks" / "results" / f"supernet_gates-{data.name}.json")
    out.write_text(json.dumps({"args": vars(args), "data": data.name, "train_images": len(data.train_x),
                               "val_images": len(data.val_x), "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
