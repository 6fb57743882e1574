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
    ("name: a\nbranches: [{type: kxk, count: 1000000000}]\n", "less than or equal to 64"),
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
