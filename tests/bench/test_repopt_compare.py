"""`reparam-zoo compare repopt:NAME`: a block trained as a RepOptimizer beside the multi-branch and plain runs —
the hyper-search, the frozen scales, the compiled plain net trained by RepOptSGD, deployed and measured like
every other run; blocks outside the equivalence refused before any training."""

import json

import pytest
import torch

from reparam_zoo.bench.data import load_data
from reparam_zoo.bench.trainer import NO_HOOKS, MOMENTUM, WEIGHT_DECAY, RepOpt, TrainConfig, _fit, train_and_measure
from reparam_zoo.cli.app import main
from reparam_zoo.engine.nets import build_model, load_net
from reparam_zoo.engine.repopt import freeze_scales
from reparam_zoo.engine.steps import ChannelScale
from reparam_zoo.engine.verify import relative_error
from reparam_zoo.spec.lookup import csla_form, get_spec

QUICK = ["--net", "tiny_vgg", "--data", "digits", "--epochs", "2", "--seeds", "1", "--limit", "256",
         "--latency-runs", "2", "--latency-batch", "8", "--quiet"]


def test_repopt_rows_train_deploy_and_measure_beside_the_others(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compare", "repvgg", "repopt:repvgg", "repopt:acb", *QUICK, "--int8", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| repopt:repvgg |" in printed and "| repopt:acb |" in printed
    result = json.loads((out / "results.json").read_text())
    runs = {r["block"]: r for r in result["runs"]}
    assert list(runs) == ["plain", "repvgg", "repopt:repvgg", "repopt:acb"]
    for name in ("repopt:repvgg", "repopt:acb"):
        r = runs[name]
        assert r["search_epochs"] == 1 and r["search_seconds"] > 0
        # the compiled net is the plain net: its parameters, its deployed form, its INT8 pipeline
        assert r["train_params"] == runs["plain"]["train_params"] < runs["repvgg"]["train_params"]
        assert r["deploy_signature"] == runs["plain"]["deploy_signature"] and r["folded_blocks"] == 5
        assert r["same_predictions"] and r["max_logit_diff"] <= 1e-5 * max(1.0, r["max_logit"])
        assert "int8_val_acc" in r and r["finite_outputs"]
    (group,) = result["deploy_groups"]
    assert group["blocks"] == ["plain", "repvgg", "repopt:repvgg", "repopt:acb"]


def test_the_run_trains_the_plain_net_along_the_searched_csla_nets_sgd_trajectory():
    """What the trainer does for repopt:acb, re-done from the pieces: the CSLA net with learnable scales
    trained for the search epoch, its scales frozen into a fresh CSLA net of the same seed, that net trained by
    torch's SGD with the same schedule — the deployed plain net computes what it computes (float32)."""
    net = load_net("tiny_vgg")
    data = load_data("digits", net.input_size, 128)
    cfg = TrainConfig(net=net, data=data, epochs=2, progress=False, run_latency=False)
    keep = {}
    train_and_measure(cfg, RepOpt("acb", search_epochs=1), 0, keep=keep)
    plain = keep["model"].eval()

    def csla(learnable):
        torch.manual_seed(0)
        return build_model(net, data.num_classes, block=csla_form(get_spec("acb"), learnable), in_channels=1)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                               nesterov=True)

    searched = csla(True)
    _fit(cfg, searched, sgd(searched), 0, 1, "search", NO_HOOKS)
    scales = {n: m.weight for n, m in freeze_scales(searched).named_modules() if isinstance(m, ChannelScale)}
    unsearched = csla(False)
    multi = csla(False)
    with torch.no_grad():
        for n, m in multi.named_modules():
            if isinstance(m, ChannelScale):
                m.weight.copy_(scales[n])
    assert len(scales) == 3 * 5
    for model in (multi, unsearched):
        _fit(cfg, model, sgd(model), 0, cfg.epochs, "multi", NO_HOOKS)
    x = data.val_x[:64]
    with torch.no_grad():
        ref = multi.eval()(x)
        assert relative_error(plain(x), ref) <= 1e-4
        assert relative_error(unsearched.eval()(x), ref) > 1e-2  # the searched scales are what made the difference


@pytest.mark.parametrize("argv, words", [
    (["repopt:dbb"], ["repopt:dbb", "cannot train as a RepOptimizer", "inside the branch"]),
    (["repopt:nosuchblock"], ["repopt:nosuchblock", "does not fit", "nosuchblock"]),
])
def test_blocks_outside_the_equivalence_are_refused_before_training(tmp_path, capsys, argv, words):
    assert main(["compare", *argv, *QUICK, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out" / "results.partial.json").exists()


def test_repopt_is_for_net_specs_not_user_models(tmp_path, capsys):
    code = main(["compare", "repopt:acb", "--model", "torchvision:resnet18", *QUICK, "--out", str(tmp_path / "o")])
    assert code == 2 and "not for --model" in capsys.readouterr().err
