"""Strict values: YAML 1.2 says what a scalar is, and a spec never coerces it (``'yes'`` is no boolean, ``'3'``
and ``3.0`` are no ints), and every float of a spec is finite, wherever it sits (a norm, a ``seq`` step, a
``group``'s factors). Each refusal is one located line naming the key; ints where a float is expected work."""

import pydantic
import pytest

import reparam_zoo as rz
from reparam_zoo.cli.app import main
from reparam_zoo.search.space import SearchSpace
from reparam_zoo.spec.schema import NormSpec

SEQ = "name: a\nbranches:\n  - {{type: seq, steps: [{{type: conv, kernel: 3}}, {step}]}}\n"


def _branch(text: str) -> str:
    return f"name: a\nbranches:\n  - {{type: kxk}}\n  - {text}\n"


def _ids(cases: list[tuple]) -> list:
    """The cases as pytest params named by their location (``branches.1.count-2`` for a second one)."""
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        seen[case[1]] = seen.get(case[1], 0) + 1
        out.append(pytest.param(*case, id=case[1] + (f"-{seen[case[1]]}" if seen[case[1]] > 1 else "")))
    return out


def _refused(text: str):
    with pytest.raises(rz.SpecError) as info:
        rz.load_spec(text)
    err = info.value
    assert len(err.problems) == 1, err.problems
    assert "\n" not in str(err), str(err)
    return err


@pytest.mark.parametrize("text, location, got", _ids([
    (_branch("{type: kxk, optional: 'yes'}"), "branches.1.optional", "'yes'"),
    (_branch("{type: kxk, optional: yes}"), "branches.1.optional", "'yes'"),  # YAML 1.2: a string
    (_branch("{type: kxk, optional: 'true'}"), "branches.1.optional", "'true'"),
    (_branch("{type: kxk, optional: 1}"), "branches.1.optional", "1"),
    (_branch("{type: kxk, bias: 'false'}"), "branches.1.bias", "'false'"),
    (_branch("{type: kxk, norm: {type: bn, affine: 'no'}}"), "branches.1.norm.affine", "'no'"),
    (_branch("{type: avgpool, pre_1x1: 'yes'}"), "branches.1.pre_1x1", "'yes'"),
    (_branch("{type: 1x1_kxk, identity_init: 0}"), "branches.1.identity_init", "0"),
    (SEQ.format(step="{type: conv, kernel: 1, bias: 'true'}"), "branches.0.steps.1.bias", "'true'"),
    (SEQ.format(step="{type: bn, frozen: 'yes'}"), "branches.0.steps.1.frozen", "'yes'"),
]))
def test_a_boolean_must_be_true_or_false(text, location, got):
    err = _refused(text)
    assert err.location == location
    assert err.rule == f"Expected true or false but got {got}", err.rule


@pytest.mark.parametrize("text, location, got", _ids([
    (_branch("{type: kxk, count: '3'}"), "branches.1.count", "'3'"),
    (_branch("{type: kxk, count: 3.0}"), "branches.1.count", "3.0"),
    (_branch("{type: kxk, count: true}"), "branches.1.count", "True"),
    (_branch("{type: 1x1_kxk, mid_multiplier: '2'}"), "branches.1.mid_multiplier", "'2'"),
    (_branch("{type: group, branches: [{type: kxk, count: 2.0}]}"), "branches.1.branches.0.count", "2.0"),
    (SEQ.format(step="{type: conv, kernel: 1, multiplier: 2.0}"), "branches.0.steps.1.multiplier", "2.0"),
    (SEQ.format(step="{type: conv, kernel: 1, multiplier: '2'}"), "branches.0.steps.1.multiplier", "'2'"),
]))
def test_an_int_must_be_a_whole_number_not_a_string_or_a_float(text, location, got):
    err = _refused(text)
    assert err.location == location
    assert err.rule == f"Expected a whole number (an int) but got {got}", err.rule


@pytest.mark.parametrize("text, location", _ids([
    (_branch("{type: 1x1_kxk, mid_channels: '8'}"), "branches.1.mid_channels"),
    (_branch("{type: line, axis: '1'}"), "branches.1.axis"),
    (SEQ.format(step="{type: conv, kernel: 1, out_channels: 8.0}"), "branches.0.steps.1.out_channels"),
]))
def test_an_int_or_a_word_is_one_problem_at_the_key(text, location):
    err = _refused(text)
    assert err.location == location
    assert err.rule.startswith("Expected a whole number (an int) but got ") and "; or " in err.rule, err.rule


@pytest.mark.parametrize("text, location", _ids([
    (_branch("{type: kxk, norm: {type: scale, init: '1.5'}}"), "branches.1.norm.init"),
    (_branch("{type: kxk, norm: {type: bn, eps: '1e-5'}}"), "branches.1.norm.eps"),
    (_branch("{type: kxk, norm: {type: bn, momentum: '0.1'}}"), "branches.1.norm.momentum"),
    (_branch("{type: kxk, norm: {type: scale, init: true}}"), "branches.1.norm.init"),
    (_branch("{type: group, branches: [{type: kxk}], factors: ['2']}"), "branches.1.factors.0"),
    (SEQ.format(step="{type: scale, init: '2'}"), "branches.0.steps.1.init"),
]))
def test_a_float_must_be_a_number_not_a_string_or_a_boolean(text, location):
    err = _refused(text)
    assert err.location == location
    assert err.rule.startswith("Expected a number but got "), err.rule


@pytest.mark.parametrize("step", ["{type: scale, init: .nan}", "{type: scale, init: .inf}",
                                  "{type: scale, init: -.INF}", "{type: bn, eps: .NaN}", "{type: bn, momentum: .nan}"])
def test_a_seq_step_float_must_be_finite(step):
    err = _refused(SEQ.format(step=step))
    key = step.split(",")[1].split(":")[0].strip()
    assert err.location == f"branches.0.steps.1.{key}"
    assert err.rule.startswith("Input should be a finite number but got "), err.rule


@pytest.mark.parametrize("text, location", _ids([
    (_branch("{type: kxk, norm: {type: scale, init: .inf}}"), "branches.1.norm.init"),
    (_branch("{type: kxk, norm: {type: bn, momentum: .inf}}"), "branches.1.norm.momentum"),
    ("name: a\nnorm_after: {type: scale, init: .nan}\nbranches: [{type: kxk}]\n", "norm_after.init"),
    (_branch("{type: group, branches: [{type: kxk}], factors: [.nan]}"), "branches.1.factors.0"),
]))
def test_every_float_of_a_spec_must_be_finite(text, location):
    err = _refused(text)
    assert err.location == location
    assert err.rule.startswith("Input should be a finite number but got "), err.rule


def test_what_yaml_1_2_reads_as_a_bool_an_int_or_a_number_still_works():
    spec = rz.load_spec(_branch("{type: kxk, count: 3, optional: true, bias: false, "
                                "norm: {type: scale, init: 1, learnable: true}}") + "norm_after: {type: bn, eps: 1}\n")
    branch = spec.branches[1]
    assert branch.count == 3 and branch.optional is True and branch.norm.init == 1.0
    assert isinstance(branch.norm.init, float) and isinstance(spec.norm_after.eps, float)
    seq = rz.load_spec(SEQ.format(step="{type: scale, init: 2}"))
    assert seq.branches[0].steps[1].init == 2.0
    group = rz.load_spec(_branch("{type: group, branches: [{type: kxk}, {type: identity}], factors: [1, -1]}"))
    assert group.branches[1].factors == [1.0, -1.0]
    assert rz.load_spec(spec.to_yaml()) == spec  # a written spec reads back


def test_python_construction_is_strict_too():
    with pytest.raises(pydantic.ValidationError):
        NormSpec(type="bn", affine="yes")
    with pytest.raises(pydantic.ValidationError):
        NormSpec(type="scale", init="2")
    assert NormSpec(type="scale", init=2).init == 2.0


def test_net_specs_refuse_coerced_values_in_their_blocks_and_their_own_ints():
    base = {"name": "n", "input_size": 32, "stem": {"width": 8}, "stages": [{"width": 8, "depth": 1}]}
    with pytest.raises(rz.SpecError, match=r"stem\.block\.branches\.0\.count: Expected a whole number"):
        rz.build_model({**base, "block": {"name": "b", "branches": [{"type": "kxk", "count": "2"}]}}, 10)
    inline = {"name": "b", "branches": [{"type": "kxk", "optional": "no"}]}
    with pytest.raises(rz.SpecError, match=r"stages\.0\.block\.branches\.0\.optional: Expected true or false"):
        rz.build_model({**base, "stages": [{"width": 8, "depth": 1, "block": inline}]}, 10)
    for stage in ({"width": "8", "depth": 1}, {"width": 8, "depth": 1.0}):
        with pytest.raises(rz.SpecError, match=r"stages\.0\.(width|depth): Expected a whole number"):
            rz.load_net({**base, "stages": [stage]})


def test_a_search_space_drops_candidates_with_coerced_values():
    space = SearchSpace("s", {"branches": [{"type": "kxk", "count": {"choice": ["2", 2.0, 1]},
                                            "optional": {"choice": [True, "yes"]}}]})
    found = space.enumerate()
    assert [(s.branches[0].count, s.branches[0].optional) for s in found] == [(1, True)]


def test_cli_check_names_the_key_in_one_line(tmp_path, capsys):
    path = tmp_path / "b.yaml"
    path.write_text(_branch("{type: kxk, count: '3'}"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}: branches.1.count: Expected a whole number (an int) but got '3'" in err, err


def test_seq_steps_inside_a_group_and_a_nets_head_are_strict_too():
    member = {"type": "seq", "steps": [{"type": "conv", "kernel": 1, "multiplier": "1"}]}
    with pytest.raises(rz.SpecError, match=r"branches\.0\.branches\.0\.steps\.0\.multiplier: Expected a whole number"):
        rz.load_spec({"name": "x", "branches": [{"type": "group", "branches": [member]}]})
    base = {"name": "n", "input_size": 32, "block": "repvgg", "stem": {"width": 8},
            "stages": [{"width": 8, "depth": 1}]}
    for dropout, words in (("0.1", "Expected a number"), (float("nan"), "finite")):
        with pytest.raises(rz.SpecError, match=rf"head\.dropout: .*{words}"):
            rz.load_net({**base, "head": {"dropout": dropout}})
    assert rz.load_net({**base, "head": {"dropout": 0}}).head.dropout == 0.0
