"""What `reparam-zoo compare` writes: per-block summaries with paired differences to the control,
a plain-words conclusion, the tables and the plot. Pure functions of the runs."""

from __future__ import annotations

import math
import statistics

from reparam_zoo.stats import nan_max, paired_difference

CONTROL_LABEL = "plain conv+BN"


def summarize(runs: list[dict], control: str | None = None, groups: dict | None = None,
              latency_batch: int = 64) -> list[dict]:
    """One row per block (in run order): means and spreads over seeds, the paired difference of
    validation accuracy to ``control`` (same seeds), and the shared deploy measurement of its group."""
    blocks = list(dict.fromkeys(r["block"] for r in runs))
    by_block = {b: {r["seed"]: r for r in runs if r["block"] == b} for b in blocks}
    ctrl = by_block.get(control) if control else None
    if ctrl is not None:  # a failed control seed is no baseline: its pairs are left out
        ctrl = {seed: r for seed, r in ctrl.items() if not r.get("failed") and r.get("finite_outputs", True)}
    out = []
    for block in blocks:
        rs = list(by_block[block].values())
        accs = [r["val_acc"] for r in rs]
        row = {
            "block": block, "seeds": len(rs), "seed_list": sorted(by_block[block]),
            "val_acc": statistics.fmean(accs), "val_acc_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "deploy_val_acc": statistics.fmean(r["deploy_val_acc"] for r in rs),
            "all_same_predictions": all(r["same_predictions"] for r in rs),
            "all_finite": all(r.get("finite_outputs", True) for r in rs),
            "max_logit_diff": max(r["max_logit_diff"] for r in rs),
            "failed_seeds": [r["seed"] for r in rs if r.get("failed")],
            "train_step_ms": statistics.fmean(r["train_step_ms"] for r in rs),
            "train_step_ms_q1": statistics.fmean(r.get("train_step_ms_q1", r["train_step_ms"]) for r in rs),
            "train_step_ms_q3": statistics.fmean(r.get("train_step_ms_q3", r["train_step_ms"]) for r in rs),
            "saved_activations_mb": statistics.fmean(r["saved_activations_mb"] for r in rs),
            "train_params": rs[0]["train_params"], "deploy_params": rs[0]["deploy_params"],
            "train_macs": rs[0]["train_macs"], "deploy_macs": rs[0]["deploy_macs"],
            "deploy_signature": rs[0].get("deploy_signature"),
        }
        if ctrl is not None and block != control:
            seeds = sorted(s for s in set(by_block[block]) & set(ctrl)
                           if not by_block[block][s].get("failed") and by_block[block][s].get("finite_outputs", True))
            if seeds:
                n_val = by_block[block][seeds[0]].get("val_images") or 0
                p = paired_difference([100 * by_block[block][s]["val_acc"] for s in seeds],
                                      [100 * ctrl[s]["val_acc"] for s in seeds],
                                      resolution=100 / n_val if n_val else 0.0)
                row["vs_control"] = p.as_dict()
        measured = [r for r in rs if "int8_val_acc" in r]  # diverged runs are not quantized
        if measured:
            row.update(_int8_summary(measured, block, control, by_block, ctrl))
        if groups and row["deploy_signature"] in groups:
            g = groups[row["deploy_signature"]]
            row["deploy_group"] = g["group"]
            for key, value in g.items():
                if key.startswith("deploy_ms"):
                    row[key] = value
        out.append(row)
    return out


def _int8_summary(rs: list[dict], block: str, control: str | None, by_block: dict, ctrl: dict | None) -> dict:
    """INT8 accuracy and its drop from the deployed FP32 accuracy (means and sds over seeds, in points), the
    paired differences to the control's INT8 accuracy and to its drop, and the kernel statistics."""
    def pts(key, r):
        return 100 * r[key]

    drops = [pts("int8_drop", r) for r in rs]
    row = {"int8_seeds": len(rs), "int8_val_acc": statistics.fmean(r["int8_val_acc"] for r in rs),
           "int8_drop_points": statistics.fmean(drops),
           "int8_drop_sd": statistics.stdev(drops) if len(drops) > 1 else 0.0,
           "int8_agreement": statistics.fmean(r["int8_agreement"] for r in rs),
           "kernel_range_ratio_max": nan_max(r["kernel_range_ratio_max"] for r in rs),
           "kernel_kurtosis_max": nan_max(r["kernel_kurtosis_max"] for r in rs)}
    if ctrl is not None and block != control:
        seeds = sorted(s for s in set(by_block[block]) & set(ctrl) if "int8_val_acc" in ctrl[s]
                       and "int8_val_acc" in by_block[block][s] and not by_block[block][s].get("failed"))
        if seeds:
            n_val = by_block[block][seeds[0]].get("val_images") or 0
            res = 100 / n_val if n_val else 0.0
            mine, theirs = by_block[block], ctrl
            row["int8_vs_control"] = paired_difference([pts("int8_val_acc", mine[s]) for s in seeds],
                                                       [pts("int8_val_acc", theirs[s]) for s in seeds],
                                                       resolution=res).as_dict()
            row["int8_drop_vs_control"] = paired_difference([pts("int8_drop", mine[s]) for s in seeds],
                                                            [pts("int8_drop", theirs[s]) for s in seeds],
                                                            resolution=res).as_dict()
    return row


def int8_markdown(rows: list[dict], control: str | None, calibration: int) -> str:
    """The INT8 table of ``compare --int8``."""
    def interval(v, words=None):
        if v is None:
            return "—"
        if math.isnan(v["low"]):
            return f"{v['mean']:+.2f}"
        return f"{v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}] {(words or {}).get(v['verdict'], v['verdict'])}"

    drop_words = {"better": "larger drop", "worse": "smaller drop"}  # a positive difference of drops is a loss

    ok = [r for r in rows if "int8_val_acc" in r and not r["failed_seeds"] and r["all_finite"]]
    words = ""
    if ok:
        worst = max(ok, key=lambda r: r["int8_drop_points"])
        differ = [f"{r['block']} ({r['int8_drop_vs_control']['mean']:+.2f} points)" for r in ok
                  if r.get("int8_drop_vs_control", {}).get("verdict") in ("better", "worse")]
        words = (f"Under INT8 the largest mean drop is {worst['int8_drop_points']:+.2f} points ({worst['block']}); "
                 + (f"drops that differ detectably from {control}'s: {', '.join(differ)}."
                    if differ else f"no block's drop differs detectably from {control or 'the control'}'s.") + " ")
    lines = [words + f"INT8: each deployed net quantized by ONNX Runtime (QDQ, int8 weights per output channel, int8 "
             f"activations per tensor, min/max calibration on the first {calibration} training images), run on "
             "the validation images. Drop = deployed FP32 accuracy − INT8 accuracy (points); Δ columns: paired "
             f"over seeds with {control or 'the control'} quantized the same way (95% interval). Kernel columns: "
             "over the folded convs, the largest ratio of max to median output-channel range (max|W_c|) and the "
             "largest per-channel kurtosis (3 = Gaussian).", "",
             f"| block | FP32 acc % | INT8 acc % | drop (points, mean ± sd) | Δ INT8 acc vs {control or 'control'} | "
             f"Δ drop vs {control or 'control'} | INT8 = FP32 top-1 | channel range max/median | kurtosis max |",
             "|" + "---|" * 9]
    for r in rows:
        if "int8_val_acc" not in r:
            continue
        ctl = r["block"] == control
        drop = f"{r['int8_drop_points']:+.2f} ± {r['int8_drop_sd']:.2f}"
        if r["failed_seeds"]:
            drop += f" (failed to train: seed {', '.join(map(str, r['failed_seeds']))})"
        lines.append(
            f"| {r['block']} | {100 * r['deploy_val_acc']:.2f} | {100 * r['int8_val_acc']:.2f} | {drop} | "
            f"{'control' if ctl else interval(r.get('int8_vs_control'))} | "
            f"{'control' if ctl else interval(r.get('int8_drop_vs_control'), drop_words)} | "
            f"{100 * r['int8_agreement']:.2f}% | "
            f"{r['kernel_range_ratio_max']:.1f} | {r['kernel_kurtosis_max']:.1f} |")
    return "\n".join(lines)


def _points(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if abs(x) >= 0.005 else "0"


def conclusion(rows: list[dict], control: str | None, config: dict) -> str:
    """The results in plain words: who beats the control, who loses, and what this run cannot say."""
    budget = (f"{config['epochs']} epoch(s) on {config['train_images']:,} {config['data']} training images, "
              f"{config['seeds_done']} seed(s), {config['val_images']:,} validation images")
    resolution = f"one validation image is {100 / max(config['val_images'], 1):.2g} points"
    lines = []
    failed = [f"{r['block']} (seed {', '.join(map(str, r['failed_seeds']))})" for r in rows if r["failed_seeds"]]
    failed_blocks = {r["block"] for r in rows if r["failed_seeds"]}
    control_row = next((r for r in rows if r["block"] == control), None)
    if control_row is not None and control_row["failed_seeds"] and not any("vs_control" in r for r in rows):
        lines.append(f"At this budget ({budget}) the control ({CONTROL_LABEL}) failed to train, so no block is "
                     "compared with it.")
    elif control is None or control_row is None:
        lines.append(f"At this budget ({budget}) the run has no control, so no block is compared with a plain "
                     f"conv+BN; accuracies are listed as measured.")
    elif config["seeds_done"] < 2:
        lines.append(f"At this budget ({budget}) nothing can be ranked: with one seed per block the seed noise is "
                     f"unknown, and differences of a point or more between seeds are common. Run with --seeds 3 or "
                     f"more (pairs of seeds give each block an interval against {CONTROL_LABEL}).")
    else:
        compared = [r for r in rows if "vs_control" in r and r["block"] not in failed_blocks]
        better = sorted((r for r in compared if r["vs_control"]["verdict"] == "better"),
                        key=lambda r: -r["vs_control"]["mean"])
        worse = sorted((r for r in compared if r["vs_control"]["verdict"] == "worse"),
                       key=lambda r: r["vs_control"]["mean"])

        def say(r, word):
            v = r["vs_control"]
            return (f"{r['block']} {word} {CONTROL_LABEL} by {_points(abs(v['mean']))} points "
                    f"(95% interval {v['low']:+.2f} to {v['high']:+.2f})")

        parts = [say(r, "beats") for r in better] + [say(r, "is below") for r in worse]
        rest = len(compared) - len(better) - len(worse)
        if parts:
            tail = ("; no other block differs detectably" if rest else "")
            lines.append(f"At this budget ({budget}), " + "; ".join(parts) + tail + ".")
            if len(compared) >= 5:
                lines.append(f"With {len(compared)} blocks each compared at 95%, about {len(compared) / 20:.1f} "
                             "such verdicts are expected by chance alone: treat a single narrow one as a lead to "
                             "re-run with more seeds, not as a result.")
        else:
            widths = [(r["vs_control"]["high"] - r["vs_control"]["low"]) / 2 for r in compared]
            lines.append(f"At this budget ({budget}), no block differs detectably from {CONTROL_LABEL}: every 95% "
                         f"interval of the paired differences includes 0 (half-widths {min(widths):.2f} to "
                         f"{max(widths):.2f} points). This run is too small to rank the blocks; more seeds or "
                         f"more training narrow the intervals." if widths else
                         f"At this budget ({budget}), no block could be compared with {CONTROL_LABEL}.")
    lines.append(f"Intervals: Student t over the seeds, each block paired with {CONTROL_LABEL} trained on the same "
                 f"seed (same initialisation seed, data order and schedule); {resolution}.")
    if failed:
        lines.append(f"Failed trainings (validation accuracy no better than chance): {'; '.join(failed)}; "
                     "they are left out of the conclusion and the plot.")
    diverged = [r["block"] for r in rows if not r["all_finite"]]
    if diverged:
        lines.append(f"Non-finite outputs (diverged): {', '.join(diverged)}.")
    if config.get("stopped_early"):
        lines.append(f"The time budget ended the run after {config['seeds_done']} of {config['seeds']} seeds.")
    return " ".join(lines)


def markdown(rows: list[dict], groups: dict, control: str | None, latency_batch: int) -> str:
    """The per-block table and the deploy-cost table."""
    head = (f"| block | seeds | val acc % (mean ± sd) | Δ vs {control or 'control'} (points) [95% interval] | verdict | "
            "deployed = trained (max logit diff) | train step ms, median [IQR] | saved act. MB | train params | "
            "deploy params | deploy net |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        v = r.get("vs_control")
        if r["block"] == control:
            delta, verdict = "control", "—"
        elif v is None:
            delta, verdict = "—", "—"
        elif math.isnan(v["low"]):
            delta, verdict = f"{v['mean']:+.2f}", v["verdict"]
        else:
            delta, verdict = f"{v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]", v["verdict"]
        if r["failed_seeds"]:
            verdict = f"failed (seed {', '.join(map(str, r['failed_seeds']))})"
        same = "yes" if r["all_same_predictions"] else "NO"
        lines.append(
            f"| {r['block']} | {r['seeds']} | {100 * r['val_acc']:.2f} ± {100 * r['val_acc_sd']:.2f} | {delta} | "
            f"{verdict} | {same} ({r['max_logit_diff']:.1e}) | {r['train_step_ms']:.1f} "
            f"[{r['train_step_ms_q1']:.1f}, {r['train_step_ms_q3']:.1f}] | {r['saved_activations_mb']:.1f} | "
            f"{r['train_params']:,} | {r['deploy_params']:,} | {r.get('deploy_group', '—')} |")
    if groups:
        lines += ["", "Deployed networks: blocks that fold to the same convs share one measurement (median [IQR] "
                      "of 5 repeats, each the median of the timed forwards).", "",
                  f"| deploy net | blocks | params | MACs | latency ms b1 | latency ms b{latency_batch} |",
                  "|---|---|---|---|---|---|"]
        macs = {r["deploy_signature"]: r["deploy_macs"] for r in rows}
        for sig, g in groups.items():
            b1, bl = "deploy_ms_b1", f"deploy_ms_b{latency_batch}"
            lines.append(f"| {g['group']} | {', '.join(g['blocks'])} | {g['deploy_params']:,} | "
                         f"{macs.get(sig, float('nan')) / 1e6:.2f}M | {g[b1]:.2f} [{g[b1 + '_q1']:.2f}, "
                         f"{g[b1 + '_q3']:.2f}] | {g[bl]:.2f} [{g[bl + '_q1']:.2f}, {g[bl + '_q3']:.2f}] |")
    return "\n".join(lines)


def plot(rows: list[dict], path, control: str | None, title: str) -> None:
    """:func:`figure`, written as PNG to ``path`` (a file name or a binary file)."""
    import matplotlib.pyplot as plt

    fig = figure(rows, control, title)
    fig.savefig(path, format="png")
    plt.close(fig)


def _name_points(ax, points: list[tuple[float, float, str, tuple]]) -> None:
    """Each point's name beside it, moved to the first of a few nearby places where it overlaps no name
    placed before (crowded blocks of similar cost and accuracy stay readable)."""
    ax.autoscale_view()
    placed: list[tuple[float, float, float, float]] = []  # boxes in display pixels
    char, height = 5.0, 10.0  # an 8-point label's rough size in pixels at 120 dpi
    for x, y, name, colour in sorted(points, key=lambda p: (not p[2].endswith("(control)"), -p[1], p[0])):
        px, py = ax.transData.transform((x, y))
        width = char * len(name)
        for dx, dy in ((6, 4), (6, -12), (-6 - width, 4), (-6 - width, -12), (6, 16), (6, -24), (-6 - width, 16),
                       (-6 - width, -24), (6, 28), (6, -36)):
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(name, (x, y), xytext=(box[0] - px, box[1] - py), textcoords="offset pixels", fontsize=8,
                    color=colour)


def figure(rows: list[dict], control: str | None, title: str):
    """Accuracy difference to the control (with its interval) against training step time, each block in its
    own colour and marker with its name beside its point; failed trainings are named in a note instead of
    stretching the axis. The matplotlib figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    ok = [r for r in rows if not r["failed_seeds"] and r["all_finite"]]
    markers = "osD^vP*Xhp<>"
    colours = plt.get_cmap("tab20").colors
    ctrl = next((r for r in ok if r["block"] == control), None)
    if ctrl is None:  # no usable control: plot accuracies, not differences
        ok = [{k: v for k, v in r.items() if k != "vs_control"} for r in ok]
    if ctrl is not None:
        ax.axhline(0.0, color="0.3", ls="--", lw=1, zorder=1)
    others = [r for r in ok if r["block"] != control]
    names: list[tuple[float, float, str, tuple]] = []
    for r in ok:
        x = r["train_step_ms"]
        xerr = [[x - r["train_step_ms_q1"]], [r["train_step_ms_q3"] - x]]
        if r["block"] == control:
            ax.errorbar(x, 0.0, xerr=xerr, fmt="k*", ms=10, zorder=3, label=f"{r['block']} (control)")
            names.append((x, 0.0, f"{r['block']} (control)", (0.2, 0.2, 0.2)))
            continue
        j = others.index(r)
        style = {"fmt": markers[j % len(markers)], "color": colours[(2 * j) % 20 + (j // 10) % 2], "capsize": 3}
        v = r.get("vs_control")
        if v is None:
            y, yerr, label = 100 * r["val_acc"], None, r["block"]
        else:
            y = v["mean"]
            yerr = None if math.isnan(v["low"]) else [[v["mean"] - v["low"]], [v["high"] - v["mean"]]]
            label = f"{r['block']}: {v['mean']:+.2f} ({v['verdict']})"
        ax.errorbar(x, y, yerr=yerr, xerr=xerr, zorder=2, label=label, **style)
        names.append((x, y, r["block"], style["color"]))
    _name_points(ax, names)
    ax.set_xlabel("training step time, ms (median, bars: interquartile range)")
    ax.set_ylabel(f"validation accuracy − {CONTROL_LABEL} (points, bars: 95% interval)" if ctrl is not None
                  else "validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    failed = [r["block"] for r in rows if r["failed_seeds"] or not r["all_finite"]]
    if failed:
        fig.text(0.01, 0.01, "not shown (failed: no better than chance, or diverged): " + ", ".join(failed),
                 fontsize=7, color="tab:red")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
