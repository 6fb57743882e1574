"""Specs: loading, round-trips, schema, the registry and its messages."""

import json
from typing import Literal

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.registry import Registry
from reparam_zoo.engine.steps import ConvStep

FULL = """
name: everything
description: one of each
kernel: [3, 5]
dilation: 1
padding: [1, 2]
padding_mode: replicate
norm_after: {type: bn, eps: 0.001}
act: silu
branches:
  - type: kxk
    bias: true
    norm: none
  - type: 1xk
    norm: scale
  - type: kx1
    count: 2
  - type: conv
    kernel: [1, 3]
    groups: depthwise
    norm: {type: bn, eps: 0.01, momentum: 0.3, affine: false}
  - type: identity
    optional: true
  - type: avgpool
    pre_1x1: true
    mid_norm: scale
    kernel: [3, 3]
  - type: 1x1_kxk
    mid_channels: 6
  - type: seq
    steps:
      - {type: conv, kernel: 1, out_channels: in, multiplier: 2, bias: true}
      - {type: bn, eps: 0.002}
      - {type: scale, init: 0.5}
      - {type: avgpool, kernel: [1, 3]}
      - {type: conv, kernel: [3, 1], groups: block, param: plain}
"""


def test_shipped_specs_are_listed_and_load():
    names = rz.list_specs()
    assert {"repvgg", "acb", "dbb"} <= set(names)
    for name in names:
        spec = rz.get_spec(name)
        assert spec.name == name and spec.description
        assert spec.source.endswith(f"{name}.yaml")


def test_unknown_shipped_spec_suggests_the_closest():
    with pytest.raises(rz.SpecError, match="did you mean 'repvgg'"):
        rz.get_spec("repvg")


@pytest.mark.parametrize("text", [FULL] + [rz.get_spec(n).to_yaml() for n in ("repvgg", "acb", "dbb")])
def test_to_yaml_round_trips(text):
    spec = rz.load_spec(text)
    again = rz.load_spec(spec.to_yaml())
    assert again == spec
    assert again.to_yaml() == spec.to_yaml()


def test_the_full_spec_builds_and_folds():
    block = rz.build_block(FULL, 4, 4, groups=2)
    assert len(block.branches) == 9
    assert rz.verify(block, (2, 4, 9, 10), dtype=torch.float64, randomize=True).ok


def test_load_spec_accepts_path_text_mapping_and_spec(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(FULL)
    from_path = rz.load_spec(path)
    assert from_path.source == str(path)
    assert rz.load_spec(str(path)) == from_path == rz.load_spec(FULL)
    assert rz.load_spec(from_path.to_dict()) == from_path
    assert rz.load_spec(from_path) is from_path
    with pytest.raises(rz.SpecError, match="no such spec file"):
        rz.load_spec(tmp_path / "missing.yaml")


def test_norm_shorthand_and_mapping_are_the_same():
    a = rz.load_spec("name: a\nbranches: [{type: kxk, norm: bn}]")
    b = rz.load_spec("name: a\nbranches: [{type: kxk, norm: {type: bn}}]")
    assert a == b and a.branches[0].norm.eps == 1e-5


def test_bn_eps_from_the_spec_reaches_the_module():
    block = rz.build_block("name: e\nbranches: [{type: kxk, norm: {type: bn, eps: 0.003}}]", 2, 2)
    assert block.branches[0][1].eps == 0.003


def test_json_schema_lists_every_branch_type():
    schema = rz.json_schema()
    text = json.dumps(schema)
    for name in rz.BRANCHES.names():
        assert f'"{name}"' in text
    assert schema["properties"]["branches"]["type"] == "array"


def test_registry_refuses_duplicates_and_suggests_names():
    reg = Registry("thing")
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", 2)
    with pytest.raises(rz.SpecError, match="did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        rz.register_branch("kxk")(type("X", (rz.BranchSpec,), {"__annotations__": {"type": Literal["kxk"]},
                                                               "type": "kxk"}))


def test_register_branch_demands_the_type_literal():
    class NoType(rz.BranchSpec):
        pass

    with pytest.raises(TypeError, match="must declare"):
        rz.register_branch("no_type")(NoType)


def test_bad_channel_arguments_are_spec_errors():
    for args, kw, msg in [((0, 4), {}, "in_channels"), ((4, 4), {"groups": 3}, "divisible by groups"),
                          ((4, 4), {"stride": 0}, "stride"), ((4.0, 4), {}, "in_channels")]:
        with pytest.raises(rz.SpecError, match=msg):
            rz.build_block("repvgg", *args, **kw)


def test_groups_error_names_the_step_that_breaks_it():
    text = FULL.replace("groups: block, param", "groups: 1, param")
    with pytest.raises(rz.SpecError, match=r"branches\.7\.steps\.4: .*groups=2"):
        rz.build_block(text, 4, 4, groups=2)


def test_custom_step_plan_is_validated():
    class Wide(rz.BranchSpec):
        type: Literal["wide_test"] = "wide_test"

        def plan(self, block):
            return [ConvStep(block.in_channels, block.out_channels, (7, 7), groups=block.groups, loc="kernel")]

    from reparam_zoo.engine.steps import chain_converter, chain_module
    from reparam_zoo.spec.registry import BRANCHES, BranchType

    # validated without registering it globally: plan + analyze through RepBlock's rules
    from reparam_zoo.engine.steps import BlockGeometry, analyze
    with pytest.raises(rz.SpecError, match="does not fit"):
        analyze(Wide().plan(BlockGeometry(2, 2, (3, 3))), BlockGeometry(2, 2, (3, 3)))
    assert "wide_test" not in BRANCHES
    assert BranchType and chain_converter and chain_module
