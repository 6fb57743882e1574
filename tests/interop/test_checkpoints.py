"""Checkpoint import: the official RepVGG format round-trips; bad checkpoints are reported."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.interop.checkpoints import CheckpointError, load_checkpoint
from tests.conftest import assert_close
from tests.engine.test_reference import randomize
from tests.reference.acb import RefACB
from tests.reference.dbb import RefDBB
from tests.reference.mobileone import RefMobileOne
from tests.reference.official_repvgg import OfficialRepVGG
from tests.reference.repvgg import RefRepVGG


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
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: linear\.bias \(model key head\.bias\)"):
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
    with pytest.raises(CheckpointError, match="did you mean 'repvgg'"):  # only CheckpointError leaves it
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
    from reparam_zoo.cli.app import main

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


# block formats: the reference blocks (written like the official code) under the official names
FORMATS = {
    # format: (spec, reference, renames of the reference's keys to the official ones, geometry)
    "acnet": ("acb", RefACB, {"square.conv.": "square_conv.", "square.bn.": "square_bn.", "hor.conv.": "hor_conv.",
                              "hor.bn.": "hor_bn.", "ver.conv.": "ver_conv.", "ver.bn.": "ver_bn."}, (4, 8, 2, 1)),
    "dbb": ("dbb", RefDBB, {"origin.": "dbb_origin.", "one.": "dbb_1x1.", "avg.": "dbb_avg.",
                            "kxk.idconv1.eye": "dbb_1x1_kxk.idconv1.id_tensor", "kxk.": "dbb_1x1_kxk."}, (4, 4, 1, 2)),
    "mobileone": ("mobileone", RefMobileOne, {"convs.": "rbr_conv.", "scale.": "rbr_scale.", "skip.": "rbr_skip."},
                  (4, 4, 1, 4)),
    "timm_repvgg": ("repvgg", RefRepVGG, {"dense.": "conv_kxk.", "one.": "conv_1x1.", "identity.": "identity."},
                    (4, 4, 1, 1)),
    "timm_mobileone": ("mobileone", RefMobileOne, {"convs.": "conv_kxk.", "scale.": "conv_scale.",
                                                   "skip.": "identity."}, (4, 4, 1, 4)),
}


def _rename(state, table):
    out = {}
    for key, value in state.items():
        for src, dst in table.items():
            if key.startswith(src):
                key = dst + key[len(src):]
                break
        out[f"stages.0.{key}"] = value  # as inside a network
    return out


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_block_format_round_trips(fmt):
    spec, ref_cls, table, (cin, cout, stride, groups) = FORMATS[fmt]
    torch.manual_seed(1)
    ref = randomize(ref_cls(cin, cout, stride, groups)).double().eval()
    block = rz.build_block(spec, cin, cout, stride=stride, groups=groups).double().eval()
    holder = torch.nn.Sequential(block)
    load_checkpoint(holder, _rename(ref.state_dict(), table), format=fmt)
    x = torch.randn(2, cin, 9, 10, dtype=torch.float64)
    assert_close(ref(x), block(x))
    assert_close(ref(x), block.fold()(x))


def test_dbb_identity_tensor_is_checked():
    _, ref_cls, table, (cin, cout, stride, groups) = FORMATS["dbb"]
    state = _rename(randomize(ref_cls(cin, cout, stride, groups)).state_dict(), table)
    state["stages.0.dbb_1x1_kxk.idconv1.id_tensor"] = state["stages.0.dbb_1x1_kxk.idconv1.id_tensor"] * 2
    with pytest.raises(CheckpointError, match="fixed identity"):
        load_checkpoint(torch.nn.Sequential(rz.build_block("dbb", cin, cout, groups=groups)), state, format="dbb")


def test_acnet_deployed_checkpoint_loads_into_the_folded_block():
    block = rz.randomize_norms(rz.build_block("acb", 4, 4)).double().eval()
    folded = block.fold()
    deployed = {"0.fused_conv.weight": folded.conv.weight, "0.fused_conv.bias": folded.conv.bias}
    target = torch.nn.Sequential(rz.build_block("acb", 4, 4).double().fold())
    load_checkpoint(target, deployed, format="acnet")
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    assert torch.equal(target(x), folded(x))


# ----------------------------------------------------------------------------- order of keys


def _long_stage():
    """An official-format net with 12 blocks in one stage (stage1.10 and stage1.11 sort before stage1.2)."""
    torch.manual_seed(3)
    ref = randomize(OfficialRepVGG(3, 8, [(8, 12)], 10)).double().eval()
    net = {"name": "long", "input_size": 16, "stem": {"width": 8, "stride": 1},
           "stages": [{"width": 8, "depth": 12, "stride": 2}]}
    return ref, rz.build_model(net, 10).double().eval()


@pytest.mark.parametrize("order", ["sorted", "shuffled", "reversed"])
def test_sorted_or_shuffled_keys_load_into_the_right_blocks(order, tmp_path):
    ref, ours = _long_stage()
    items = list(ref.state_dict().items())
    if order == "sorted":
        items.sort()
    elif order == "reversed":
        items.reverse()
    else:
        import random

        random.Random(0).shuffle(items)
    load_checkpoint(ours, dict(items), format="repvgg")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert_close(ref(x), ours(x))


def test_safetensors_file_with_sorted_keys_loads(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    ref, ours = _long_stage()
    path = tmp_path / "official.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))  # writes sorted keys
    load_checkpoint(ours, path, format="repvgg")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert_close(ref(x), ours(x))


def test_blocks_whose_order_cannot_be_known_from_their_names_are_refused():
    ref, ours = _long_stage()
    state = {(k.replace("stage0.", "stem.") if k.startswith("stage0.") else k): v for k, v in ref.state_dict().items()}
    with pytest.raises(CheckpointError, match="cannot be known from the names"):
        load_checkpoint(ours, state, format="repvgg")


# ----------------------------------------------------------------------------- timm checkpoints into the net specs


@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_a2", "repvgg_b1g4", "repvgg_b2g4"])
def test_timm_repvgg_checkpoint_loads_into_the_shipped_net_spec(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = rz.randomize_norms(timm.create_model(name, num_classes=10), seed=3).eval()
    items = sorted(theirs.state_dict().items())  # sorted, as safetensors writes them
    ours = load_checkpoint(rz.build_model(name, 10).eval(), dict(items), format="timm_repvgg")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = theirs(x)
        assert_close(want, ours(x), rel=1e-5)
        assert_close(want, rz.fold_model(ours)(x), rel=1e-5)


MOBILEONE = {"mobileone_s0": ((0.75, 1.0, 1.0, 2.0), 4), "mobileone_s1": ((1.5, 1.5, 2.0, 2.5), 1),
             "mobileone_s2": ((1.5, 2.0, 2.5, 4.0), 1), "mobileone_s3": ((2.0, 2.5, 3.0, 4.0), 1)}


@pytest.mark.parametrize("name", list(MOBILEONE))
def test_timm_mobileone_checkpoint_loads_into_the_shipped_net_spec(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = rz.randomize_norms(timm.create_model(name, num_classes=10), seed=3).eval()
    ours = load_checkpoint(rz.build_model(name, 10).eval(), dict(sorted(theirs.state_dict().items())),
                           format="timm_mobileone")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(theirs(x), ours(x), rel=1e-5)


@pytest.mark.parametrize("name", ["mobileone_s0", "mobileone_s1"])
def test_apple_mobileone_checkpoint_loads_into_the_shipped_net_spec(name, tmp_path):
    from tests.reference.upstream_blocks import MobileOne

    widths, k = MOBILEONE[name]
    torch.manual_seed(0)
    theirs = rz.randomize_norms(MobileOne(width_multipliers=widths, k=k, num_classes=10), seed=4).double().eval()
    path = tmp_path / "apple.pth"
    torch.save(dict(reversed(list(theirs.state_dict().items()))), path)
    ours = load_checkpoint(rz.build_model(name, 10).double().eval(), path, format="mobileone")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert_close(theirs(x), ours(x))
        assert_close(theirs(x), rz.fold_model(ours)(x))
    adopted, report = rz.adopt(theirs)  # and the network itself adopts, block by block
    assert len(report.adopted) == sum(isinstance(m, rz.RepBlock) for m in ours.modules()) and not report.left


def test_a_checkpoint_with_more_branches_than_the_model_is_refused():
    from tests.reference.upstream_blocks import MobileOne

    theirs = MobileOne(width_multipliers=MOBILEONE["mobileone_s0"][0], k=4, num_classes=10)
    with pytest.raises(CheckpointError, match="rbr_conv.3"):
        load_checkpoint(_k1_s0(), theirs.state_dict(), format="mobileone")


def _k1_s0():
    """mobileone_s0's layout with k = 1 (a model whose blocks have fewer branches than the checkpoint's)."""
    net = rz.load_net("mobileone_s0").model_dump()
    net["block"]["branches"][0]["count"] = 1
    for st in net["stages"]:
        st["pointwise"]["branches"][0]["count"] = 1
    return rz.build_model(net, 10)
