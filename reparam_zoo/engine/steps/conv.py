"""``ConvStep``: an unpadded conv, with a registered weight parameterisation (``param:``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.geometry import Pair, grid_taps
from reparam_zoo.engine.steps.base import Step, StepKernel, register_step, register_step_converter
from reparam_zoo.errors import SpecError
from reparam_zoo.registry import Registry

#: conv parameterisations: name -> an ``nn.Conv2d`` subclass (``plain`` is ``nn.Conv2d``).
#: A class may define ``check_step(step)`` raising SpecError for steps it cannot serve.
CONV_PARAMS: Registry[type[nn.Conv2d]] = Registry("conv parameterization")
CONV_PARAMS.register("plain", nn.Conv2d)


def register_conv_param(name: str):
    """Register an ``nn.Conv2d`` subclass as a conv parameterisation (``param:`` in specs)."""

    def wrap(cls):
        if not (isinstance(cls, type) and issubclass(cls, nn.Conv2d)):
            raise TypeError(f"Expected an nn.Conv2d subclass but got {cls!r}")
        return CONV_PARAMS.register(name, cls)

    return wrap


@register_step("conv")
@dataclass(frozen=True)
class ConvStep(Step):
    """An unpadded conv ``in_channels -> out_channels``.

    ``param`` names how its weight is parameterised (a registered conv class, see
    :data:`CONV_PARAMS`): ``plain`` (``nn.Conv2d``), ``identity`` (``W + I``, W
    zero-initialised: DBB's identity-based 1x1), ``basis`` (``W + E``, DO-Conv's
    depthwise over-parameterisation), ``normalized`` (``W / ||W||`` per filter, DiracNet).
    """

    in_channels: int
    out_channels: int
    kernel: Pair
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = False
    param: str = "plain"
    stride: Pair = (1, 1)
    loc: str = ""  # where in the branch spec this step comes from

    spatial = True

    def validate(self) -> None:
        for name in ("in_channels", "out_channels"):
            c = getattr(self, name)
            if c % self.groups:
                raise SpecError(f"{name}={c} is not divisible by groups={self.groups}", self.loc)
        cls = CONV_PARAMS.get(self.param)
        check = getattr(cls, "check_step", None)
        if check is not None:
            check(self)

    @property
    def out(self) -> int:
        return self.out_channels

    def taps(self) -> tuple[list[int], list[int]]:
        return grid_taps(self.kernel, self.dilation)

    def build(self) -> nn.Module:
        cls = CONV_PARAMS.get(self.param)
        return cls(self.in_channels, self.out_channels, self.kernel, stride=self.stride, padding=0,
                   dilation=self.dilation, groups=self.groups, bias=self.bias)


@register_step_converter(nn.Conv2d)
def conv_kernel(m: nn.Conv2d, channels: int, device, dtype) -> StepKernel:
    unpadded = m.padding == "valid" if isinstance(m.padding, str) else K.as_pair(m.padding) == (0, 0)
    if not unpadded:
        raise SpecError(f"{m!r} pads its input; steps inside a branch must be unpadded "
                        "(the block pads once, at its input)")
    return StepKernel(weight=m.weight.to(dtype), bias=None if m.bias is None else m.bias.to(dtype), groups=m.groups,
                      stride=K.as_pair(m.stride), dilation=K.as_pair(m.dilation))


def conv_step_kernel(m: nn.Conv2d, weight: Tensor) -> StepKernel:
    """A conv step whose effective weight (in the compute dtype) the caller computed (parameterised convs)."""
    base = conv_kernel(m, m.out_channels, None, weight.dtype)
    base.weight = weight
    return base
