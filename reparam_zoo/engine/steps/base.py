"""What every step is and how a step module becomes linear algebra.

A step is a frozen dataclass that plans one linear operation of a branch (``in_channels`` ->
``out``, its ``groups``, whether it is ``spatial``, its ``stride`` and ``taps()``) and ``build()``s
its training module. Step kinds register in :data:`STEP_KINDS` (one file each in this package);
a module class registers its converter in :data:`STEP_CONVERTERS`, which turns a trained module
into a :class:`StepKernel`: a per-channel affine map or a conv, in the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reparam_zoo.engine.geometry import Pair
from reparam_zoo.errors import SpecError
from reparam_zoo.registry import Registry


class Step:
    """Base of every step kind (subclasses are frozen dataclasses with these fields).

    ``needs_features``: the step normalises with statistics of the features (a BatchNorm), so a
    branch holding it cannot be trained as its composed kernel. ``shift_free``: the step adds no
    constant (identity, a scale, a gate) — only such steps may come before a transposed conv.
    ``online()``: the step as OREPA's online training uses it (a BatchNorm becomes a per-channel scale;
    others are unchanged).
    """

    in_channels: int
    groups: int
    stride: Pair
    loc: str
    spatial: bool = False
    needs_features: bool = False
    shift_free: bool = False

    @property
    def out(self) -> int:
        raise NotImplementedError

    def validate(self) -> None:
        """Raise SpecError for a step the engine cannot serve (checked before anything is built)."""

    def taps(self) -> tuple[list[int], list[int]]:
        return ([0], [0])

    def build(self) -> nn.Module:
        raise NotImplementedError

    def online(self) -> "Step":
        return self

    def for_block(self, block) -> "Step":
        """The step as a block of this geometry builds it (its number of axes, transposed or not);
        a step whose module does not depend on them returns itself."""
        return self


class ChannelWise(Step):
    """Steps that map ``channels`` to ``channels``, each channel on its own (fully grouped)."""

    channels: int

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out(self) -> int:
        return self.channels

    @property
    def groups(self) -> int:
        return self.channels


#: step kind name -> its dataclass (``register_step("name")`` decorates the class)
STEP_KINDS: Registry[type[Step]] = Registry("step kind")


def register_step(name: str):
    """Register a :class:`Step` subclass as a step kind."""

    def wrap(cls: type[Step]) -> type[Step]:
        if not (isinstance(cls, type) and issubclass(cls, Step)):
            raise TypeError(f"Expected a Step subclass but got {cls!r}")
        return STEP_KINDS.register(name, cls)

    return wrap


@dataclass
class StepKernel:
    """A step as linear algebra: either a per-channel affine map or a conv."""

    weight: Tensor | None = None  # conv (C_out, C_in/g, *k), in the compute dtype (conv layout, also
    bias: Tensor | None = None    # for a transposed conv's kernel)
    groups: int = 1
    stride: tuple[int, ...] | None = None  # None: 1 on every axis
    dilation: tuple[int, ...] | None = None
    scale: Tensor | None = None  # affine
    shift: Tensor | None = None


#: module class -> converter(module, in_channels, device, dtype) -> StepKernel, its tensors in
#: ``dtype`` (the compute dtype: float64 for folding). The most specific class in the module's
#: MRO wins. Parameter-free steps build their fixed kernel on ``device``.
STEP_CONVERTERS: Registry[Callable[..., StepKernel]] = Registry("step converter")


def register_step_converter(cls: type):
    """Register ``fn(module, in_channels, device, dtype) -> StepKernel`` for modules of ``cls``."""
    if not isinstance(cls, type):
        raise TypeError(f"Expected a module class but got {cls!r}")
    return STEP_CONVERTERS.register(cls)


def step_kernel(module: nn.Module, channels: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float64) -> StepKernel:
    """The registered converter of the most specific class of ``module`` applied to it."""
    for cls in type(module).__mro__:
        if cls in STEP_CONVERTERS:
            return STEP_CONVERTERS.get(cls)(module, channels, device, dtype)
    known = ", ".join(sorted(c.__name__ for c in STEP_CONVERTERS))
    raise SpecError(f"no kernel converter for {type(module).__name__}; known step modules: {known}")
