"""Step kinds are open: registered one file each, and a new kind folds exactly through the engine."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.steps import (
    STEP_CONVERTERS,
    STEP_KINDS,
    BlockGeometry,
    BranchGate,
    Chain,
    ChannelWise,
    ConvStep,
    GateStep,
    NormStep,
    StepKernel,
    analyze,
    chain_kernel,
    register_step,
    register_step_converter,
    step_kernel,
)
from reparam_zoo.engine.verify import relative_error
from reparam_zoo.registry import Registry


def test_every_builtin_step_kind_is_registered_with_its_module_converter():
    assert set(STEP_KINDS.names()) >= {"conv", "norm", "gate", "avgpool", "identity"}
    for name in ("conv", "norm", "gate", "avgpool", "identity"):
        cls = STEP_KINDS.get(name)
        step = {"conv": lambda: cls(4, 4, (3, 3)), "norm": lambda: cls(4), "gate": lambda: cls(4),
                "avgpool": lambda: cls(4, (3, 3)), "identity": lambda: cls(4)}[name]()
        module = step.build()
        sk = step_kernel(module, 4)  # every built-in kind's module has a converter
        assert (sk.weight is None) != (sk.scale is None)


def test_the_gate_is_a_step_of_its_own():
    block = rz.build_block("""
name: gated
branches:
  - type: kxk
    gate: learnable
  - type: conv
    kernel: 1
    gate: fixed
""", 4, 4)
    gates = [m for m in block.modules() if isinstance(m, BranchGate)]
    assert [g.weight.requires_grad for g in gates] == [True, False]
    with torch.no_grad():
        gates[0].weight.fill_(0.3)
        gates[1].weight.fill_(-2.0)
    assert rz.verify(block, (2, 4, 9, 9), dtype=torch.float64, randomize=True).ok
    step = GateStep(4, learnable=False)
    assert step.groups == 4 and not step.needs_features and step.online() is step


def test_norm_steps_know_their_online_form():
    bn = NormStep(4, "bn")
    assert bn.needs_features and bn.online() == NormStep(4, "scale", init=1.0)
    scale = NormStep(4, "scale", init=0.5)
    assert not scale.needs_features and scale.online() is scale
    with pytest.raises(ValueError, match="Expected kind 'bn' or 'scale' but got 'gate'"):
        NormStep(4, "gate")


def test_step_kinds_are_refused_twice_and_must_be_steps():
    with pytest.raises(ValueError, match="already registered"):
        register_step("conv")(ConvStep)
    with pytest.raises(TypeError, match="Expected a Step subclass"):
        register_step("not_a_step")(int)


class _Negate(nn.Module):
    def forward(self, x):
        return -x


@dataclass(frozen=True)
class _NegateStep(ChannelWise):
    channels: int
    loc: str = ""
    stride: tuple[int, int] = (1, 1)

    def build(self) -> nn.Module:
        return _Negate()


if _Negate not in STEP_CONVERTERS:  # a test-only module class: registered once, globally
    register_step_converter(_Negate)(
        lambda m, channels, device, dtype: StepKernel(scale=-torch.ones(channels, dtype=dtype, device=device)))


def test_a_new_step_kind_folds_exactly_without_engine_changes(monkeypatch):
    monkeypatch.setattr("reparam_zoo.engine.steps.base.STEP_KINDS", Registry("step kind"))  # keep the shipped one
    register_step("negate_test")(_NegateStep)
    g = BlockGeometry(4, 6, (3, 3), groups=2)
    plan = [ConvStep(4, 6, (3, 3), groups=2, loc="kernel"), NormStep(6, "bn"), _NegateStep(6),
            ConvStep(6, 6, (1, 1), groups=2)]
    placement = analyze(plan, g)  # the engine's checks read only what every step declares
    assert placement.offset == (0, 0) and placement.extent == (3, 3) and placement.groups == 2
    chain = Chain.from_plan(plan).double().eval()
    rz.randomize_norms(chain, seed=1)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    bk = chain_kernel(list(chain), 4)
    with torch.no_grad():
        want = chain(x)
        got = F.conv2d(x, bk.weight, bk.bias, stride=bk.stride, groups=bk.groups)
    assert relative_error(got, want) <= 1e-12


def test_registry_register_is_also_a_decorator_and_takes_classes():
    reg: Registry[object] = Registry("thing")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and a() == 1
    reg.register(int, "int's")
    assert int in reg and reg.get(int) == "int's"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", object())
    with pytest.raises(rz.SpecError, match=r"unknown thing 'b'; registered: a, int"):
        reg.get("b")
