"""The activations a spec's ``act:`` may name: a registry of constructors (users may add their own)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from reparam_zoo.registry import Registry

#: activation name -> constructor (no arguments); ``act:`` of a spec names one
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
for _name, _ctor in {
    "identity": nn.Identity,
    "relu": lambda: nn.ReLU(inplace=False),
    "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "mish": nn.Mish,
    "prelu": nn.PReLU,
}.items():
    ACTIVATIONS.register(_name, _ctor)
