"""Checks see failure: NaN/inf anywhere, or nothing compared, is a FAIL — never "0.00e+00 OK"."""

import json

import torch

import reparam_zoo as rz
from reparam_zoo.cli.app import main


def test_nan_weight_fails_verify():
    block = rz.build_block("repvgg", 4, 4)
    with torch.no_grad():
        block.branches[0][0].weight[0, 0, 0, 0] = float("nan")
    res = rz.verify(block, (2, 4, 8, 8), randomize=True)
    assert not res.ok and res.nonfinite and "non-finite" in str(res)


def test_negative_running_var_and_inf_gamma_fail_verify():
    block = rz.build_block("repvgg", 4, 4).eval()
    with torch.no_grad():
        block.branches[0][1].running_var[0] = -1.0
    assert not rz.verify(block, (2, 4, 8, 8), randomize=False).ok
    block = rz.build_block("repvgg", 4, 4).eval()
    with torch.no_grad():
        block.branches[1][1].weight[1] = float("inf")
    assert not rz.verify(block, (2, 4, 8, 8), randomize=False).ok


def test_float16_overflow_fails_verify():
    block = rz.build_block("repvgg", 4, 4).eval()
    with torch.no_grad():  # BN scale 1/sqrt(1e-5) on weights of 300: the fp16 fold and outputs overflow
        block.branches[0][0].weight.fill_(300.0)
        block.branches[0][1].running_var.fill_(1e-12)
    res = rz.verify(block, (2, 4, 8, 8), dtype=torch.float16, randomize=False)
    assert not res.ok and "the folded form in float16" in res.nonfinite, res


def test_a_verify_that_compared_nothing_fails():
    spec = {"name": "k13", "kernel": 13, "padding": 0, "branches": [{"type": "kxk"}]}
    block = rz.build_block(spec, 2, 2)
    res = rz.verify(block, (2, 2, 9, 11), shapes=[(2, 2, 9, 11), (1, 2, 3, 3)], randomize=True)
    assert not res.shapes and not res.ok and "compared nothing" in str(res)


def test_check_picks_inputs_the_block_accepts(tmp_path, capsys):
    for text in ("name: k13\nkernel: 13\npadding: 0\nbranches: [{type: kxk}]\n",
                 "name: k31r\nkernel: 31\npadding_mode: reflect\nbranches: [{type: kxk}, {type: conv, kernel: 5}]\n"):
        path = tmp_path / "s.yaml"
        path.write_text(text)
        assert main(["check", str(path), "--in-channels", "2", "--json", str(tmp_path / "r.json")]) == 0
        out = capsys.readouterr().out
        assert "OK" in out and "compared nothing" not in out
        assert json.loads((tmp_path / "r.json").read_text())[0]["compared"] >= 1


def test_compare_with_a_diverging_run_reports_it_and_exits_1(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "repvgg", "--net", "tiny_vgg", "--data", "digits", "--epochs", "2", "--seeds", "1",
                 "--limit", "128",
                 "--lr", "1e30", "--latency-runs", "1", "--quiet", "--out", str(out)])
    assert code == 1 and "non-finite" in capsys.readouterr().err
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["finite_outputs"] is False and run["same_predictions"] is False


import pytest  # noqa: E402


@pytest.mark.parametrize("argv", [
    ["check", "repvgg", "--in-channels", "0"], ["check", "repvgg", "--stride", "0"],
    ["check", "repvgg", "--groups", "-1"], ["check", "repvgg", "--tolerance", "nan"],
    ["compare", "--limit", "-1400"], ["compare", "--batch-size", "0"], ["compare", "--latency-runs", "0"],
    ["compare", "--epochs", "0"], ["compare", "--lr", "inf"], ["compare", "--size", "0"],
    ["space", "repvgg_acb", "--sample", "0"], ["search", "repvgg_acb", "--budget", "x"],
    ["search", "repvgg_acb", "--gate-l1", "-1"], ["expand", "o.pth", "--model", "m.py:f", "--block", "acb",
                                                 "--min-kernel", "0"],
])
def test_bad_cli_values_are_refused_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reparam-zoo") and "Expected" in err[-1]


def test_verify_checks_the_module_as_it_is_unless_asked_to_randomize():
    """After training, verify must check the trained block: a broken statistic is seen by default and
    hidden only when randomize=True replaces the statistics (the spec check)."""
    block = rz.build_block("repvgg", 4, 4)
    block.branches[0][1].running_mean[0] = float("nan")
    assert not rz.verify(block, (2, 4, 8, 8)).ok
    assert rz.verify(block, (2, 4, 8, 8), randomize=True).ok
    assert torch.isnan(block.branches[0][1].running_mean[0])  # the module itself is untouched
