"""Paired statistics and the conclusion `compare` writes (pure functions: no training)."""

from __future__ import annotations

import math

import pytest

from reparam_zoo.bench import report
from reparam_zoo.stats import paired_difference, spread


def test_paired_difference_matches_scipy_and_decides():
    from scipy import stats

    a, b = [91.0, 92.5, 90.8, 91.9], [90.1, 91.0, 90.2, 90.5]
    p = paired_difference(a, b)
    t = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert math.isclose(p.mean, 1.1, rel_tol=1e-12) and math.isclose(p.low, t.low) and math.isclose(p.high, t.high)
    assert p.verdict == "better" and p.n == 4
    assert paired_difference(b, a).verdict == "worse"
    assert paired_difference([1.0, 2.0, 3.0], [2.0, 1.0, 3.0]).verdict == "no detectable difference"
    one = paired_difference([1.0], [0.0])
    assert one.verdict == "too few seeds" and math.isnan(one.low)
    with pytest.raises(ValueError, match="Expected two equally long"):
        paired_difference([1.0], [1.0, 2.0])


def test_spread_is_median_and_quartiles():
    s = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["q1"] == 2.0 and s["q3"] == 4.0 and s["n"] == 5


def _run(block, seed, acc, failed=False):
    return {"block": block, "seed": seed, "val_acc": acc, "deploy_val_acc": acc, "same_predictions": True,
            "finite_outputs": True, "max_logit_diff": 1e-7, "failed": failed, "train_step_ms": 10.0,
            "train_step_ms_q1": 9.0, "train_step_ms_q3": 11.0, "saved_activations_mb": 1.0, "train_params": 10,
            "deploy_params": 8, "train_macs": 100, "deploy_macs": 80, "deploy_signature": "x"}


CONFIG = {"epochs": 3, "train_images": 6000, "data": "fashion-mnist", "seeds_done": 3, "seeds": 3,
          "val_images": 10000}


def test_conclusion_names_winners_losers_and_failures():
    runs = []
    for s in range(3):
        runs += [_run("plain", s, 0.80 + 0.01 * s), _run("acb", s, 0.806 + 0.01 * s + 0.0005 * s),
                 _run("dbb", s, 0.79 + 0.01 * s - 0.0004 * s), _run("repvgg", s, 0.80 + 0.01 * s + 0.002 * (s - 1)),
                 _run("diracnet", s, 0.08, failed=True)]
    rows = report.summarize(runs, "plain")
    text = report.conclusion(rows, "plain", CONFIG)
    assert text.startswith("At this budget (3 epoch(s) on 6,000 fashion-mnist training images, 3 seed(s)")
    assert "acb beats plain conv+BN by 0.65 points" in text and "dbb is below plain conv+BN by 1.04 points" in text
    assert "no other block differs detectably" in text
    assert "Failed trainings (validation accuracy no better than chance): diracnet (seed 0, 1, 2)" in text
    md = report.markdown(rows, {}, "plain", 64)
    assert "| acb | 3 |" in md and "better" in md and "failed (seed 0, 1, 2)" in md


def test_conclusion_says_when_nothing_can_be_ranked():
    one_seed = report.summarize([_run("plain", 0, 0.8), _run("acb", 0, 0.9)], "plain")
    assert "nothing can be ranked" in report.conclusion(one_seed, "plain", {**CONFIG, "seeds_done": 1})
    same = []
    for s in range(3):
        same += [_run("plain", s, 0.8 + 0.01 * s), _run("acb", s, 0.8 + 0.01 * ((s + 1) % 3))]
    text = report.conclusion(report.summarize(same, "plain"), "plain", CONFIG)
    assert "no block differs detectably from plain conv+BN" in text and "too small to rank" in text


def test_plot_leaves_failed_runs_out_of_the_axes(tmp_path):
    import matplotlib.image as mpimg

    runs = []
    for s in range(3):
        runs += [_run("plain", s, 0.80 + 0.01 * s), _run("acb", s, 0.81 + 0.01 * s),
                 _run("diracnet", s, 0.08, failed=True)]
    report.plot(report.summarize(runs, "plain"), tmp_path / "p.png", "plain", "t")
    assert mpimg.imread(tmp_path / "p.png").shape[2] in (3, 4)


def test_every_block_in_the_plot_has_its_name_beside_it_and_its_own_colour():
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    names = ["acb", "dbb", "repvgg", "mobileone", "orepa", "qarepvgg", "doconv", "expandnet", "acb_nd",
             "expandnet_ck", "repopt:acb", "repopt:repvgg"]
    runs = []
    for s in range(3):
        runs += [_run("plain", s, 0.80 + 0.01 * s)] + [_run(n, s, 0.80 + 0.01 * s + 0.001 * i * (s - 1))
                                                        for i, n in enumerate(names)]
    fig = report.figure(report.summarize(runs, "plain"), "plain", "t")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert all(n in texts for n in names) and any(t.startswith("plain") for t in texts)
    colours = {mcolors.to_hex(c.lines[0].get_color()) for c in ax.containers}
    assert len(colours) == len(names) + 1  # one per block, the control's black among them
    plt.close(fig)


def test_winning_by_exactly_one_image_every_seed_is_not_a_confident_verdict():
    # 10,000 images: accuracies move in steps of 0.01 points; identical one-image wins have a float-noise sd
    a, b = [84.06, 83.91, 84.22], [84.05, 83.90, 84.21]
    assert paired_difference(a, b).verdict == "better"  # without the resolution: a zero-width interval
    p = paired_difference(a, b, resolution=0.01)
    assert p.verdict == "no detectable difference" and p.low < 0 < p.high


def test_a_failed_control_is_no_baseline():
    runs = []
    for s in range(3):
        runs += [_run("plain", s, 0.10, failed=True), _run("acb", s, 0.85 + 0.01 * s)]
    rows = report.summarize(runs, "plain")
    assert "vs_control" not in next(r for r in rows if r["block"] == "acb")
    assert "the control (plain conv+BN) failed to train" in report.conclusion(rows, "plain", CONFIG)


def test_nan_max_ignores_nan_and_none():
    import math

    from reparam_zoo.stats import nan_max

    assert nan_max([1.0, float("nan"), None, 3.0]) == 3.0
    assert math.isnan(nan_max([float("nan"), None])) and math.isnan(nan_max([]))
