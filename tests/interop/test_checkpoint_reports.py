"""Checkpoint refusals in the checkpoint's own naming; float batch counts loaded as torch loads them."""

import math

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.interop.checkpoints import CheckpointError, load_checkpoint
from tests.engine.test_reference import randomize
from tests.reference.official_repvgg import OfficialRepVGG


def _official():
    torch.manual_seed(0)
    return randomize(OfficialRepVGG(3, 16, [(32, 2), (64, 2)], 10)).eval()


def _refusal(model, state, fmt="reparam_zoo") -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, state, format=fmt)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("key, model_key", [
    ("stage2.1.rbr_1x1.bn.running_var", "stages.3.branches.1.1.running_var"),
    ("stage1.1.rbr_identity.running_mean", "stages.1.branches.2.1.running_mean"),
    ("stage0.rbr_dense.conv.weight", "stem.branches.0.0.weight"),
    ("linear.bias", "head.bias"),
])
def test_a_missing_key_is_named_as_the_checkpoint_names_it(key, model_key):
    state = _official().state_dict()
    del state[key]
    msg = _refusal(rz.build_model("tiny_vgg", 10), state, "repvgg")
    assert f"1 key(s) missing from the checkpoint: {key} (model key {model_key})" in msg, msg


def test_a_missing_key_of_per_block_renames_and_of_a_deployed_checkpoint():
    from tests.reference.upstream_blocks import MobileOne

    state = MobileOne(width_multipliers=(0.75, 1.0, 1.0, 2.0), k=4, num_classes=10).state_dict()
    del state["stage2.3.rbr_conv.3.bn.weight"]
    msg = _refusal(rz.build_model("mobileone_s0", 10), state, "mobileone")
    assert "missing from the checkpoint: stage2.3.rbr_conv.3.bn.weight (model key stages.7.branches.3.1.weight)" \
        in msg, msg
    folded = rz.fold_model(rz.build_model("tiny_vgg", 10))
    convs = [m for m in folded.modules() if isinstance(m, torch.nn.Conv2d)]
    deployed = {f"{n}.rbr_reparam.{p}": getattr(c, p) for n, c in
                zip(["stage0", "stage1.0", "stage1.1", "stage2.0", "stage2.1"], convs) for p in ("weight", "bias")}
    deployed["linear.weight"], deployed["linear.bias"] = folded.head.weight, folded.head.bias
    del deployed["stage2.0.rbr_reparam.bias"]
    msg = _refusal(rz.fold_model(rz.build_model("tiny_vgg", 10)), deployed, "repvgg")
    assert "stage2.0.rbr_reparam.bias (model key stages.2.conv.bias)" in msg, msg


def test_own_format_names_the_key_once():
    state = rz.build_model("tiny_vgg", 10).state_dict()
    del state["stages.0.branches.0.0.weight"]
    msg = _refusal(rz.build_model("tiny_vgg", 10), state)
    assert msg.endswith("1 key(s) missing from the checkpoint: stages.0.branches.0.0.weight"), msg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_a_float_batch_count_loads_as_torch_loads_it(dtype):
    state = rz.randomize_norms(rz.build_model("tiny_vgg", 10)).state_dict()
    counts = [k for k in state if k.endswith("num_batches_tracked")]
    for i, k in enumerate(counts):
        state[k] = torch.tensor(float(i + 7), dtype=dtype)
    want = rz.build_model("tiny_vgg", 10)
    want.load_state_dict(state, strict=True)  # torch accepts it: copied into the int64 buffer
    ours = load_checkpoint(rz.build_model("tiny_vgg", 10), state)
    got = ours.state_dict()
    for k, v in want.state_dict().items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    assert got[counts[1]].dtype == torch.int64 and int(got[counts[1]]) == 8


@pytest.mark.parametrize("value", [2.5, math.nan, math.inf, -math.inf, 2.0 ** 64])
def test_a_float_batch_count_that_is_no_whole_number_is_refused(value):
    state = rz.build_model("tiny_vgg", 10).state_dict()
    key = next(k for k in state if k.endswith("num_batches_tracked"))
    state[key] = torch.tensor(value, dtype=torch.float64)
    msg = _refusal(rz.build_model("tiny_vgg", 10), state)
    assert msg.startswith(f"{key}: a batch count must be a whole finite number"), msg


def test_a_float_batch_count_is_named_in_the_checkpoints_keys():
    state = _official().state_dict()
    state["stage1.0.rbr_dense.bn.num_batches_tracked"] = torch.tensor(0.5)
    msg = _refusal(rz.build_model("tiny_vgg", 10), state, "repvgg")
    assert msg.startswith("stage1.0.rbr_dense.bn.num_batches_tracked (model key "
                          "stages.0.branches.0.1.num_batches_tracked): a batch count"), msg


def test_every_other_dtype_rule_is_kept():
    state = rz.build_model("tiny_vgg", 10).state_dict()
    count = next(k for k in state if k.endswith("num_batches_tracked"))
    for key, value in [("head.bias", torch.zeros(10, dtype=torch.int64)),
                       (count, torch.tensor(3 + 0j)),
                       ("head.weight", torch.zeros(state["head.weight"].shape, dtype=torch.complex64))]:
        bad = dict(state)
        bad[key] = value
        assert _refusal(rz.build_model("tiny_vgg", 10), bad).startswith(f"{key}: the checkpoint holds {value.dtype}")
