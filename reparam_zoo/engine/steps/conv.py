"""``ConvStep``: an unpadded conv, with a registered weight parameterisation (``param:``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.geometry import Axes, grid_taps
from reparam_zoo.engine.steps.base import Step, StepKernel, register_step, register_step_converter
from reparam_zoo.errors import SpecError
from reparam_zoo.registry import Registry

#: the plain conv module of each ``(axes, transposed)``
PLAIN = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
         (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d, (3, True): nn.ConvTranspose3d}

#: conv parameterisations: name -> ``{(axes, transposed): module class}`` (``plain`` is torch's own
#: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``). A class may define ``check_step(step)`` raising
#: SpecError for steps it cannot serve; a parameterisation without a class for a block's axes (or
#: for transposed blocks) is refused when the block is built.
#: every torch conv class the engine builds, and every transposed one (isinstance checks downstream)
CONVS = tuple(PLAIN[(n, False)] for n in (1, 2, 3))
CONV_TRANSPOSES = tuple(PLAIN[(n, True)] for n in (1, 2, 3))

CONV_PARAMS: Registry[dict] = Registry("conv parameterization")
CONV_PARAMS.register("plain", PLAIN)


def register_conv_param(name: str, classes: dict[int, type] | None = None):
    """Register a conv parameterisation (``param:`` in specs): ``{axes: class}`` with one
    ``nn.Conv1d/2d/3d`` subclass per number of spatial axes it serves. As a decorator on one
    ``nn.Conv2d`` subclass: that class for 2-D blocks only."""

    def check(table: dict) -> dict:
        for axes, cls in table.items():
            if not (isinstance(cls, type) and issubclass(cls, PLAIN.get((axes, False), ()))):
                raise TypeError(f"Expected an nn.Conv{axes}d subclass for {axes} axes but got {cls!r}")
        return {(axes, False): cls for axes, cls in table.items()}

    if classes is not None:
        CONV_PARAMS.register(name, check(classes))
        return classes

    def wrap(cls):
        CONV_PARAMS.register(name, check({2: cls}))
        return cls

    return wrap


@register_step("conv")
@dataclass(frozen=True)
class ConvStep(Step):
    """An unpadded conv ``in_channels -> out_channels``, with ``len(kernel)`` spatial axes.

    ``param`` names how its weight is parameterised (a registered conv class, see
    :data:`CONV_PARAMS`): ``plain`` (``nn.Conv{d}d``), ``identity`` (``W + I``, W
    zero-initialised: DBB's identity-based 1x1), ``basis`` (``W + E``, DO-Conv's
    depthwise over-parameterisation), ``normalized`` (``W / ||W||`` per filter, DiracNet).
    ``transposed``: the step of a transposed block, an unpadded ``ConvTranspose{d}d``.
    """

    in_channels: int
    out_channels: int
    kernel: Axes
    dilation: Axes | None = None
    groups: int = 1
    bias: bool = False
    param: str = "plain"
    stride: Axes | None = None
    loc: str = ""  # where in the branch spec this step comes from
    transposed: bool = False

    spatial = True

    def __post_init__(self):
        for name in ("stride", "dilation"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, (1,) * len(self.kernel))

    def for_block(self, block) -> Step:
        return replace(self, transposed=True) if block.transposed and not self.transposed else self

    def conv_class(self) -> type:
        table = CONV_PARAMS.get(self.param)
        cls = table.get((len(self.kernel), self.transposed))
        if cls is None:
            what = "a transposed block" if self.transposed else f"{len(self.kernel)} spatial axes"
            raise SpecError(f"param: {self.param} has no form for {what}", self.loc)
        return cls

    def validate(self) -> None:
        for name in ("in_channels", "out_channels"):
            c = getattr(self, name)
            if c % self.groups:
                raise SpecError(f"{name}={c} is not divisible by groups={self.groups}", self.loc)
        check = getattr(self.conv_class(), "check_step", None)
        if check is not None:
            check(self)

    @property
    def out(self) -> int:
        return self.out_channels

    def taps(self) -> tuple[list[int], ...]:
        return grid_taps(self.kernel, self.dilation)

    def build(self) -> nn.Module:
        return self.conv_class()(self.in_channels, self.out_channels, self.kernel, stride=self.stride, padding=0,
                                 dilation=self.dilation, groups=self.groups, bias=self.bias)


def _unpadded(m: nn.Module) -> bool:
    return m.padding == "valid" if isinstance(m.padding, str) else all(p == 0 for p in m.padding)


@register_step_converter(nn.Conv1d)
@register_step_converter(nn.Conv2d)
@register_step_converter(nn.Conv3d)
def conv_kernel(m: nn.Module, channels: int, device, dtype) -> StepKernel:
    if not _unpadded(m):
        raise SpecError(f"{m!r} pads its input; steps inside a branch must be unpadded "
                        "(the block pads once, at its input)")
    return StepKernel(weight=m.weight.to(dtype), bias=None if m.bias is None else m.bias.to(dtype), groups=m.groups,
                      stride=tuple(m.stride), dilation=tuple(m.dilation))


@register_step_converter(nn.ConvTranspose1d)
@register_step_converter(nn.ConvTranspose2d)
@register_step_converter(nn.ConvTranspose3d)
def conv_transpose_kernel(m: nn.Module, channels: int, device, dtype) -> StepKernel:
    """A transposed conv's kernel in the conv layout ``(C_out, C_in/g, *k)`` (kernels.transpose_layout)."""
    if not _unpadded(m) or any(m.output_padding):
        raise SpecError(f"{m!r} pads its output; steps inside a transposed block's branch must be unpadded "
                        "(the block crops once, at its output)")
    return StepKernel(weight=K.transpose_layout(m.weight.to(dtype), m.groups),
                      bias=None if m.bias is None else m.bias.to(dtype), groups=m.groups,
                      stride=tuple(m.stride), dilation=tuple(m.dilation))


def conv_step_kernel(m: nn.Module, weight: Tensor) -> StepKernel:
    """A conv step whose effective weight (in the compute dtype) the caller computed (parameterised convs)."""
    base = conv_kernel(m, m.out_channels, None, weight.dtype)
    base.weight = weight
    return base
