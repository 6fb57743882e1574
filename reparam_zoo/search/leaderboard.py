"""What a search study writes: ``leaderboard.json`` and ``leaderboard.md`` (every trained candidate,
best first, its Pareto membership and its re-evaluation against the plain control), ``best.yaml``
(and ``best_net.yaml`` for net spaces) and ``pareto.png``. Pure functions of the finished rows."""

from __future__ import annotations

import io
import json
from typing import IO

import yaml

from reparam_zoo.bench.compare import CONTROL
from reparam_zoo.engine.nets import load_net
from reparam_zoo.search.space import pareto_front
from reparam_zoo.search.study import SearchConfig
from reparam_zoo.spec.lookup import load_spec

#: the x-axis of the Pareto plot for each cost
COST_LABELS = {"train_macs": "training MACs per image", "deploy_macs": "deployed MACs per image",
               "deploy_params": "deployed parameters", "train_step_ms": "training step (ms)"}


def vs_control_text(s: dict) -> str:
    """`` (+0.42 [-0.10, +0.95]; verdict)``: a summary row's paired difference to the control, in points
    (without an interval when there are too few seeds); empty when it has none."""
    v = s.get("vs_control")
    if not v:
        return ""
    if v.get("low") is None:
        return f" ({v['mean']:+.2f}; {v['verdict']})"
    return f" ({v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]; {v['verdict']})"


def leaderboard_files(sc: SearchConfig, rows: list[dict], summary: dict,
                      reeval: list[dict] | None) -> dict[str, str | bytes]:
    """The result files of a study (name -> content): ``rows`` are its trained candidates, best first
    (:func:`~reparam_zoo.search.study.finished_rows`), ``summary`` its counts
    (:func:`~reparam_zoo.search.study.study_summary`), ``reeval`` compare's summary rows of the
    re-evaluation on the test set (or None)."""
    space, cfg = sc.space, sc.compare
    cost = sc.cost or ("deploy_ms" if all("deploy_ms" in r for r in rows) else "train_macs")
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
            re_text = f"{100 * s['val_acc']:.2f}" + vs_control_text(s)
        lines.append(f"| {i} | `{r['hash']}` | {100 * r['val_acc']:.2f} | {r[cost]:.4g} | {r['train_params']:,} | "
                     f"{r['deploy_params']:,} | {r['train_step_ms']:.1f} | {'*' if r['hash'] in front else ''} | "
                     f"{re_text} | k{spec.kernel} {spec.act}: {branches} |")
    ctrl = by_name.get(CONTROL)
    head = (f"# search {space.name} on {cfg.net.name} / {cfg.data.name}\n\n"
            f"{summary['complete']} candidates trained ({summary['pruned']} pruned, {summary['duplicates']} duplicate "
            f"draws not retrained) by {len(summary['processes'])} process(es); sampler {sc.sampler}, "
            f"{cfg.epochs} epochs, {len(cfg.data.train_x):,} training images, scored on {len(cfg.data.val_x):,} "
            f"held-out training images (1 image = {100 / len(cfg.data.val_x):.2f} points).\n")
    if ctrl is not None:
        head += (f"\nRe-evaluation on the test set with {ctrl['seeds']} seeds: plain conv+BN {100 * ctrl['val_acc']:.2f}%;"
                 " the Δ column pairs each candidate with it seed by seed (compare's statistics).\n")
    files: dict[str, str | bytes] = {
        "leaderboard.json": json.dumps({"space": space.name, "net": cfg.net.name, "data": cfg.data.name,
                                        "epochs": cfg.epochs, "budget": sc.budget, "sampler": sc.sampler,
                                        "pruner": sc.pruner, "cost": sc.cost, "seed": sc.seed,
                                        "study": sc.study, "storage": sc.storage, "summary": summary,
                                        "rows": rows, "reevaluation": reeval}, indent=2, default=str),
        "best.yaml": rows[0]["yaml"],
        "leaderboard.md": head + "\n" + "\n".join(lines) + "\n"}
    if space.net_template is not None:
        files["best_net.yaml"] = rows[0]["net"]
    png = io.BytesIO()
    plot_pareto(rows, front, png, f"{space.name}: {len(rows)} candidates, {cfg.epochs} epochs ({sc.sampler})", cost,
                cfg.latency_batch)
    files["pareto.png"] = png.getvalue()
    return files


def plot_pareto(rows: list[dict], front: set[str], path: str | IO[bytes], title: str, cost: str,
                latency_batch: int) -> None:
    """Held-out accuracy against ``cost``, one point per candidate, the Pareto front (the hashes in
    ``front``) in red and joined; a PNG written to ``path``."""
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
    ax.set_xlabel({"deploy_ms": f"deployed latency, batch {latency_batch} (ms)", **COST_LABELS}.get(cost, cost))
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


__all__ = ["COST_LABELS", "leaderboard_files", "plot_pareto", "vs_control_text"]
