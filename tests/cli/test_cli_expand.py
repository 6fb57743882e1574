"""`reparam-zoo expand` and `reparam-zoo convert` of its checkpoints: a torchvision model out and back."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.cli.app import main
from reparam_zoo.interop.deployed import rebuild_expanded

from tests.conftest import assert_close


def test_expand_then_convert_back_into_the_original_torchvision_model(tmp_path, capsys):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    original = rz.randomize_norms(tv.models.resnet18(weights=None, num_classes=7)).eval()
    weights, expanded_path, out = tmp_path / "r18.pth", tmp_path / "exp.pth", tmp_path / "back.pth"
    torch.save(original.state_dict(), weights)
    assert main(["expand", str(expanded_path), "--model", "torchvision:resnet18", "--num-classes", "7",
                 "--weights", str(weights), "--block", "dbb", "--exclude", "layer4.*"]) == 0
    text = capsys.readouterr().out
    assert "expanded 13 conv+BN layer(s)" in text and "relative difference 0.00e+00" in text

    # "fine-tune": every branch moves away from its start
    raw = torch.load(expanded_path, weights_only=True)
    _, expanded, _ = rebuild_expanded(raw["reparam_zoo"])
    expanded.load_state_dict(raw["state_dict"], strict=True)
    rz.randomize_norms(expanded, seed=7)
    raw["state_dict"] = expanded.state_dict()
    torch.save(raw, expanded_path)

    assert main(["convert", str(expanded_path), str(out)]) == 0
    assert "load_state_dict(..., strict=True)" in capsys.readouterr().out
    fresh = tv.models.resnet18(weights=None, num_classes=7).eval()
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert_close(expanded.eval()(x), fresh(x), rel=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--model", "torchvision:no_such_net", "--block", "acb"], "no model 'no_such_net'"),
    (["--model", "resnet18", "--block", "acb"], "Expected --model torchvision:NAME"),
    (["--model", "missing.py:make", "--block", "acb"], "existing FILE.py:FACTORY"),
    (["--model", "torchvision:resnet18", "--block", "acbb"], "did you mean 'acb'"),
    (["--model", "torchvision:resnet18", "--block", "acb", "--include", "nothing"], "no layer was expanded"),
])
def test_expand_errors_are_one_line(argv, message, tmp_path, capsys):
    pytest.importorskip("torchvision")
    assert main(["expand", str(tmp_path / "o.pth"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.pth").exists()


def test_users_own_model_file_with_its_own_eps_round_trips(tmp_path, capsys):
    src = tmp_path / "mine.py"
    src.write_text("import torch.nn as nn\n"
                   "def make(num_classes=4):\n"
                   "    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, eps=1e-3),\n"
                   "                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
                   "def rigid():\n"
                   "    return make()\n")
    out, back = tmp_path / "e.pth", tmp_path / "b.pth"
    assert main(["expand", str(out), "--model", f"{src}:make", "--block", "repvgg", "--input-shape", "2,1,9,9"]) == 0
    assert "expanded 1 conv+BN layer(s)" in capsys.readouterr().out
    import importlib.util

    spec = importlib.util.spec_from_file_location("mine", src)
    mine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mine)
    # the user fine-tunes the model rz.expand gave them (eps 1e-3 in its BN, which no state dict records)
    raw = torch.load(out, weights_only=True)
    expanded, _ = rz.expand(mine.make(), "repvgg")
    expanded.load_state_dict(raw["state_dict"], strict=True)
    rz.randomize_norms(expanded, seed=5)
    torch.save({**raw, "state_dict": expanded.state_dict()}, out)
    assert main(["convert", str(out), str(back)]) == 0
    capsys.readouterr()
    fresh = mine.make().eval()
    fresh.load_state_dict(torch.load(back, weights_only=True), strict=True)
    x = torch.randn(2, 1, 9, 9)
    with torch.no_grad():
        assert_close(expanded.eval()(x), fresh(x), rel=1e-5)
    # one-line errors: a factory without num_classes, a missing file
    assert main(["expand", str(out), "--model", f"{src}:rigid", "--block", "acb", "--num-classes", "3"]) == 2
    assert main(["convert", str(tmp_path / "missing.safetensors"), str(back)]) == 2
    assert main(["expand", str(out), "--model", f"{src}:make", "--block", "acb"]) == 2  # 1-channel model, 3-channel check
    errs = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(errs) == 3 and "num_classes" in errs[0] and "missing.safetensors" in errs[1]
    assert "--input-shape" in errs[2]


def test_compare_inside_a_users_model_with_the_plain_model_as_control(tmp_path, capsys):
    import json

    src = tmp_path / "mine.py"
    src.write_text("import torch.nn as nn\n"
                   "def make(num_classes=10):\n"
                   "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),\n"
                   "                         nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),\n"
                   "                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n")
    out = tmp_path / "cmp"
    assert main(["compare", "acb", "repvgg", "--model", f"{src}:make", "--size", "12", "--epochs", "1",
                 "--data", "digits", "--seeds", "1", "--limit", "96", "--latency-runs", "2", "--quiet", "--out", str(out)]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["block"] for r in runs] == ["plain", "acb", "repvgg"]
    assert [r["folded_blocks"] for r in runs] == [0, 2, 2]
    assert all(r["same_predictions"] for r in runs)
    assert runs[1]["train_params"] > runs[0]["train_params"]
    assert main(["compare", "replknet", "--model", f"{src}:make", "--size", "12", "--epochs", "1", "--quiet",
                 "--data", "digits",
                 "--out", str(tmp_path / "x")]) == 2
    assert "expands no layer" in capsys.readouterr().err


def test_convert_a_timm_models_own_checkpoint_into_its_deployed_form(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from timm.utils.model import reparameterize_model

    torch.manual_seed(0)
    model = rz.randomize_norms(timm.create_model("mobileone_s0", num_classes=5)).eval()
    src, out = tmp_path / "s0.pth", tmp_path / "s0_deployed.pth"
    torch.save(model.state_dict(), src)
    assert main(["convert", "--model", "timm:mobileone_s0", "--num-classes", "5", str(src), str(out)]) == 0
    assert "adopted 43 block(s), left 0" in capsys.readouterr().out
    deployed = reparameterize_model(timm.create_model("mobileone_s0", num_classes=5)).eval()
    deployed.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(model(x), deployed(x), rel=1e-5)
    assert main(["convert", "--model", "torchvision:resnet18", str(src), str(out)]) == 2  # weights do not fit
    assert "does not fit the model" in capsys.readouterr().err
