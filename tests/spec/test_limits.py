"""Hostile specs: every one is a one-line SpecError, raised before anything large is built."""

import pytest
import torch

import reparam_zoo as rz

BOMB = ("a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e]\n"
        "name: x\nkernel: *f\nbranches: [{type: kxk}]\n")


@pytest.mark.parametrize("text, message", [
    (BOMB, "expands (aliases included) to more than"),
    ("name: a\nbranches: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than"),
    ("name: a\nkernel: 3\nkernel: 5\nbranches: [{type: kxk}]\n", "duplicate key 'kernel'"),
    ("name: a\nkernel: 1:00\nbranches: [{type: kxk}]\n", "kernel must be a positive int"),  # not 60
    ("name: a\nkernel: 100001\nbranches: [{type: kxk}]\n", "above the limit 1024"),
    ("name: a\ndilation: 1000000\nkernel: 3\nbranches: [{type: kxk}]\n", "above the limit 1024"),
    ("name: a\npadding: 1000000000\nbranches: [{type: kxk}]\n", "above the limit 4096"),
    ("name: a\nbranches: [{type: kxk, count: 1000000000}]\n", "Expected a value <= 64 but got 1000000000"),
    ("name: a\nbranches: [" + ", ".join(["{type: kxk}"] * 100) + "]\n", "at most 64"),
    ("name: a\nbranches: [{type: kxk, norm: {type: bn, eps: .inf}}]\n", "finite"),
    ("name: a\nbranches: [{type: kxk, norm: {type: scale, init: .nan}}]\n", "finite"),
])
def test_hostile_spec_text_is_one_line_error(text, message):
    with pytest.raises(rz.SpecError) as info:
        rz.load_spec(text)
    msg = str(info.value)
    assert message in msg and "\n" not in msg and len(msg) < 2000, msg


def test_hostile_build_arguments_and_files(tmp_path):
    with pytest.raises(rz.SpecError, match="mid_channels"):
        rz.build_block({"name": "a", "branches": [{"type": "kxk"}, {"type": "1x1_kxk", "mid_channels": 10**9}]}, 4, 4)
    with pytest.raises(rz.SpecError, match="above the limit"):
        rz.build_block("repvgg", 10**6, 4)
    with pytest.raises(rz.SpecError, match="stride"):
        rz.build_block("repvgg", 4, 4, stride=2.0)
    with pytest.raises(rz.SpecError, match="no such spec file"):
        rz.load_spec("x" * 300)  # a "name" too long for the file system
    utf16 = tmp_path / "s.yaml"
    utf16.write_bytes("name: a\nbranches: [{type: kxk}]\n".encode("utf-16"))
    with pytest.raises(rz.SpecError, match="not UTF-8"):
        rz.load_spec(utf16)
    with pytest.raises(rz.SpecError, match="not UTF-8"):
        rz.load_net(utf16)


def test_aliases_within_the_limits_still_work():
    spec = rz.load_spec("name: a\nkernel: &k 3\ndilation: 1\nbranches: [{type: conv, kernel: *k}, {type: kxk}]\n")
    assert spec.kernel == 3 and len(rz.build_block(spec, 2, 2).branches) == 2
    assert rz.build_model("mobileone_s0", 10) is not None  # the shipped net specs use anchors
    assert torch.is_tensor(rz.build_block("repvgg", 2, 2).fold().conv.weight)


def test_yaml_scalars_mean_what_they_look_like():
    from reparam_zoo.spec.reader import parse_yaml as _parse_yaml

    data = _parse_yaml("a: no\nb: off\nc: true\nd: 1:00\ne: 0o17\nf: 0x1F\ng: 1_000\nh: 1e-5\ni: 2001-12-14\n"
                       "j: 017\nk: 3", None)
    assert data == {"a": "no", "b": "off", "c": True, "d": "1:00", "e": 15, "f": 31, "g": "1_000", "h": 1e-5,
                    "i": "2001-12-14", "j": 17.0, "k": 3}
    assert isinstance(data["k"], int) and isinstance(data["j"], float)  # 017 is not YAML 1.1's octal 15
    for tag in ("!!binary aGk=", "!!set {x}", "!!timestamp 2001-12-14"):
        with pytest.raises(rz.SpecError, match="is not allowed"):
            _parse_yaml(f"a: {tag}", None)


def test_messages_locate_and_do_not_pretend():
    with pytest.raises(rz.SpecError) as err:
        rz.load_spec("name: b\nkernel: 4\nbranches: [{type: kxk}]")
    assert err.value.location == "padding" and str(err.value).startswith("padding: padding 'same' needs an odd")
    with pytest.raises(rz.SpecError) as err:
        rz.build_block("repvgg", 0, 16)
    assert "<spec>" not in str(err.value)
    with pytest.raises(rz.SpecError) as err:
        rz.load_spec("my:block.yaml")  # a missing file, not YAML text
    assert str(err.value) == "my:block.yaml: no such spec file"
    with pytest.raises(rz.SpecError, match="neither a spec file nor YAML text of a mapping"):
        rz.load_spec("a:b")
    with pytest.raises(rz.SpecError, match="not a regular file"):
        rz.load_spec("/dev/zero")


def test_block_weight_budget_is_checked_before_anything_is_allocated():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(rz.SpecError, match=r"would hold about 8\.16e\+10 weights \(304\.0 GiB"):
        rz.build_block("repvgg", 65536, 65536)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing big was touched


def test_parameter_free_blocks_follow_double_and_fold_in_it():
    block = rz.build_block("name: p\nbranches: [{type: identity, norm: none}, {type: avgpool, norm: none}]",
                           4, 4).double()
    assert not list(block.parameters())
    assert rz.fold_model(block)[0].weight.dtype == torch.float64
    res = rz.verify(block, (1, 4, 8, 8))
    assert res.dtype == torch.float64 and res.ok


def test_float32_fold_under_cancellation_is_as_exact_as_float32_storage_allows():
    """Storing the exact kernel in float32 alone exceeds 1e-6 of max|y| here (the branches cancel):
    the fold passes because it is within twice that floor, and only then (docs/math.md §10)."""
    spec = {"name": "h", "kernel": [1, 3], "padding_mode": "replicate",
            "branches": [{"type": "kxk"}, {"type": "1x1_kxk", "count": 2, "mid_norm": "none"}, {"type": "kxk"},
                         {"type": "identity", "optional": True}, {"type": "identity", "optional": True}]}
    torch.manual_seed(0)
    block = rz.build_block(spec, 4, 4, stride=2, groups=2)
    res = rz.verify(block, (2, 4, 9, 8), dtype=torch.float32, randomize=True, seed=0)
    assert res.round_rel > 1e-6 and res.fold_rel <= 2 * res.round_rel and res.ok
    assert res.train_rel > res.fold_rel  # the training form in float32 is further off
    # a fold off by more than twice the floor still fails
    from dataclasses import replace

    assert not replace(res, fold_rel=2.5 * res.round_rel).ok


def test_fold_dtype_follows_parameters_replaced_by_assign():
    block = rz.build_block("repvgg", 4, 4)
    state = {k: (v.double() if v.is_floating_point() else v) for k, v in block.state_dict().items()}
    block.load_state_dict(state, assign=True)  # parameters become float64, the anchor buffer does not
    assert rz.fold_model(block)[0].weight.dtype == torch.float64


def test_checkpoints_with_ambiguous_or_non_dense_entries_are_refused():
    from reparam_zoo.interop.checkpoints import CheckpointError, load_checkpoint

    lin = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="both mean 'weight'"):
        load_checkpoint(lin, {"module.weight": torch.zeros(2, 2), "weight": torch.zeros(2, 2), "bias": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="sparse"):
        load_checkpoint(lin, {"weight": torch.zeros(2, 2).to_sparse(), "bias": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="meta"):
        load_checkpoint(lin, {"weight": torch.empty(2, 2, device="meta"), "bias": torch.zeros(2)})


def test_tagged_yaml_values_that_cannot_be_read_are_spec_errors():
    for text in ("name: b\nkernel: !!float abc\nbranches: [{type: kxk}]", "name: b\nact: !!bool maybe\nbranches: []"):
        with pytest.raises(rz.SpecError, match="a tagged value cannot be read"):
            rz.load_spec(text)
