"""Checkpoint import: the official RepVGG format round-trips; bad checkpoints are reported."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.checkpoints import CheckpointError, load_checkpoint

from .conftest import assert_close
from .reference.official_repvgg import OfficialRepVGG
from .test_reference import randomize


def _official():
    torch.manual_seed(0)
    return randomize(OfficialRepVGG(3, 16, [(32, 2), (64, 2)], 10)).double().eval()


def _ours():
    return rz.build_model("tiny_vgg", 10, in_channels=3).double().eval()


def test_official_repvgg_train_checkpoint_round_trips(tmp_path):
    ref = _official()
    path = tmp_path / "repvgg.pth"
    torch.save(ref.state_dict(), path)
    model = load_checkpoint(_ours(), path, format="repvgg")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert_close(ref(x), model(x))
    assert_close(ref(x), rz.fold_model(model)(x))


def test_ddp_and_compile_prefixes_are_stripped():
    state = {f"module._orig_mod.{k}": v for k, v in _official().state_dict().items()}
    load_checkpoint(_ours(), {"state_dict": state}, format="repvgg")


def test_extra_and_missing_keys_are_both_listed():
    state = _official().state_dict()
    state["stage1.0.rbr_extra.weight"] = torch.zeros(1)
    del state["linear.bias"]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_ours(), state, format="repvgg")
    msg = str(info.value)
    assert "stage1.0.rbr_extra.weight" in msg
    state.pop("stage1.0.rbr_extra.weight")
    with pytest.raises(CheckpointError, match="model key.*missing: head.bias"):
        load_checkpoint(_ours(), state, format="repvgg")


def test_deployed_checkpoint_loads_into_the_folded_model_only():
    ref = _official()
    folded_source = rz.fold_model(load_checkpoint(_ours(), ref.state_dict(), format="repvgg"))
    # the official deployed naming: stageN.i.rbr_reparam.{weight,bias}, linear.*
    names = ["stage0", "stage1.0", "stage1.1", "stage2.0", "stage2.1"]
    convs = [m for m in folded_source.modules() if isinstance(m, torch.nn.Conv2d)]
    deployed = {}
    for name, conv in zip(names, convs):
        deployed[f"{name}.rbr_reparam.weight"] = conv.weight
        deployed[f"{name}.rbr_reparam.bias"] = conv.bias
    deployed.update({f"linear.{k}": v for k, v in ref.linear.state_dict().items()})
    target = rz.fold_model(_ours())
    load_checkpoint(target, deployed, format="repvgg")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert_close(ref(x), target(x))
    with pytest.raises(CheckpointError, match="deployed weights"):
        load_checkpoint(_ours(), deployed, format="repvgg")


def test_unknown_format_and_missing_file():
    with pytest.raises(rz.SpecError, match="did you mean 'repvgg'"):
        load_checkpoint(_ours(), {}, format="repvg")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(_ours(), "/nonexistent.pth")


def test_wrong_format_suggests_the_right_one():
    with pytest.raises(CheckpointError, match="looks like a 'repvgg' checkpoint"):
        load_checkpoint(_ours(), _official().state_dict())


def test_deployed_model_is_built_directly_and_loads_a_fold_strictly():
    trained = rz.randomize_norms(_ours())
    folded = rz.fold_model(trained)
    deployed = rz.build_model("tiny_vgg", 10, in_channels=3, deployed=True).double()
    assert not any(isinstance(m, rz.RepBlock) for m in deployed.modules())
    deployed.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(deployed(x), folded(x))


def test_convert_then_export_from_an_official_checkpoint(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from reparam_zoo.cli import main

    ref = _official().float()
    src, dst, onnx_path = tmp_path / "official.pth", tmp_path / "deployed.pth", tmp_path / "net.onnx"
    torch.save(ref.state_dict(), src)
    assert main(["convert", "--net", "tiny_vgg", "--from", "repvgg", str(src), str(dst)]) == 0
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt["reparam_zoo"]["mode"] == "deploy" and "name: repvgg" in ckpt["reparam_zoo"]["block"]
    assert len(ckpt["reparam_zoo"]["spec_sha256"]) == 64
    model = rz.build_model("tiny_vgg", 10, deployed=True)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    x = torch.randn(2, 3, 16, 16)
    assert_close(ref(x), model(x), rel=1e-5)
    assert main(["export", "--net", "tiny_vgg", str(dst), "--onnx", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "Conv x5" in out and "BatchNormalization" not in out
    assert main(["convert", "--net", "tiny_vgg", str(dst), str(tmp_path / "again.pth")]) == 2
