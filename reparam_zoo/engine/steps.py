"""Linear steps: the primitives every branch is a chain of.

A branch type only *plans* a list of steps (:class:`ConvStep`, :class:`NormStep`,
:class:`AvgStep`, :class:`IdentityStep`). Everything else is generic and lives here:

* :func:`finalize` gives the block's stride to the last spatial step;
* :func:`analyze` checks, before any forward, that the chain is one conv of the
  block's geometry (fit, centring, dilation grid, groups) and returns where the
  branch sits in the block's window;
* :class:`Chain` is the training module (unpadded steps in sequence);
* :func:`chain_kernel` converts a trained chain to one dense kernel with the
  kernel algebra, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine import kernels as K
from reparam_zoo.errors import NotApplicable, SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.engine.modules import AvgPool, ChannelScale
from reparam_zoo.registry import Registry

Pair = tuple[int, int]

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


# ----------------------------------------------------------------------------- plans


def _grid_taps(kernel: Pair, dilation: Pair) -> tuple[list[int], list[int]]:
    """Tap positions per axis of a kernel with a dilation (relative to its first tap)."""
    return ([dilation[0] * j for j in range(kernel[0])], [dilation[1] * j for j in range(kernel[1])])


@dataclass(frozen=True)
class ConvStep:
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
        return _grid_taps(self.kernel, self.dilation)

    def build(self) -> nn.Module:
        cls = CONV_PARAMS.get(self.param)
        return cls(self.in_channels, self.out_channels, self.kernel, stride=self.stride, padding=0,
                   dilation=self.dilation, groups=self.groups, bias=self.bias)


class _ChannelWise:
    """Steps that map ``channels`` to ``channels``, each channel on its own (fully grouped)."""

    channels: int

    def validate(self) -> None:
        pass

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out(self) -> int:
        return self.channels

    @property
    def groups(self) -> int:
        return self.channels

    def taps(self) -> tuple[list[int], list[int]]:
        return ([0], [0])


@dataclass(frozen=True)
class NormStep(_ChannelWise):
    """A per-channel affine step: eval-mode BatchNorm or a learnable scale."""

    channels: int
    kind: str = "bn"  # "bn" | "scale" | "gate" (a scalar gate: "gate" learnable, "gate_fixed" not)
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    init: float = 1.0  # initial value of a scale
    loc: str = ""

    spatial = False
    stride: Pair = (1, 1)

    def build(self) -> nn.Module:
        if self.kind == "bn":
            return nn.BatchNorm2d(self.channels, eps=self.eps, momentum=self.momentum, affine=self.affine)
        if self.kind in ("gate", "gate_fixed"):
            from reparam_zoo.engine.primitives.gate import BranchGate

            return BranchGate(self.init, learnable=self.kind == "gate")
        return ChannelScale(self.channels, self.init)


@dataclass(frozen=True)
class AvgStep(_ChannelWise):
    """Unpadded depthwise average pooling (``count_include_pad`` is moot without padding)."""

    channels: int
    kernel: Pair
    dilation: Pair = (1, 1)
    stride: Pair = (1, 1)
    loc: str = ""

    spatial = True

    def taps(self) -> tuple[list[int], list[int]]:
        return _grid_taps(self.kernel, self.dilation)

    def build(self) -> nn.Module:
        return AvgPool(self.kernel, self.stride, self.dilation)


@dataclass(frozen=True)
class IdentityStep(_ChannelWise):
    """The identity map on ``channels`` channels."""

    channels: int
    loc: str = ""

    spatial = False
    stride: Pair = (1, 1)

    def build(self) -> nn.Module:
        return nn.Identity()


Step = Union[ConvStep, NormStep, AvgStep, IdentityStep]


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class BlockGeometry:
    """What a block is, for the branches inside it: the one conv it folds into."""

    in_channels: int
    out_channels: int
    kernel: Pair
    stride: Pair = (1, 1)
    dilation: Pair = (1, 1)
    groups: int = 1
    padding: Pair = (0, 0)

    @property
    def window(self) -> Pair:
        """Extent of the block's (dilated) kernel on the input."""
        return (self.dilation[0] * (self.kernel[0] - 1) + 1, self.dilation[1] * (self.kernel[1] - 1) + 1)


@dataclass(frozen=True)
class Placement:
    """Where a branch's composite kernel sits in the block's window."""

    offset: Pair
    extent: Pair
    groups: int  # groups of the composite kernel (gcd of the steps' groups)


def finalize(plan: Sequence[Step], stride: Pair) -> list[Step]:
    """Give the block stride to the last spatial step; every other step has stride 1.

    A chain with no spatial step (identity, pure norm) cannot stride.
    """
    plan = list(plan)
    if stride == (1, 1):
        return plan
    for i in range(len(plan) - 1, -1, -1):
        if plan[i].spatial:
            plan[i] = replace(plan[i], stride=stride)
            return plan
    raise NotApplicable(f"this branch has no conv or pooling step, so it cannot apply with stride {stride}")


def _worst_loc(plan: Sequence[Step]) -> str:
    spatial = [s for s in plan if s.spatial]
    if not spatial:
        return plan[0].loc if plan else ""
    big = max(spatial, key=lambda s: max(t for axis in s.taps() for t in axis))
    return big.loc


def analyze(plan: Sequence[Step], block: BlockGeometry) -> Placement:
    """Check that ``plan`` folds into the block's conv and say where it sits.

    Raises :class:`SpecError` (locations relative to the branch) when the chain's
    channels do not connect, when its window does not fit the block's, cannot be
    centred, has taps off the block's dilation grid, or when its channel grouping is
    not expressible with the block's ``groups``.
    """
    if not plan:
        raise SpecError("a branch needs at least one step")
    channels, last_change = block.in_channels, plan[0].loc
    limit = LIMITS["channels"]  # checked before any weight is allocated
    for step in plan:
        if max(step.in_channels, step.out) > limit:
            raise SpecError(f"plans {max(step.in_channels, step.out):,} channels, above the limit {limit:,}", step.loc)
        if step.in_channels != channels:
            raise SpecError(f"expects {step.in_channels} input channels but the previous step gives {channels}",
                            step.loc)
        step.validate()
        if step.out != channels:
            channels, last_change = step.out, step.loc
    if channels != block.out_channels:
        raise SpecError(f"ends with {channels} channels but the block has out_channels={block.out_channels}",
                        last_change)
    taps_h, taps_w, sh, sw, groups = {0}, {0}, 1, 1, 0
    for step in plan:
        th, tw = step.taps()
        taps_h = {a + sh * t for a in taps_h for t in th}
        taps_w = {a + sw * t for a in taps_w for t in tw}
        sh, sw = sh * step.stride[0], sw * step.stride[1]
        groups = math.gcd(groups, step.groups)
    loc = _worst_loc(plan)
    extent = (max(taps_h) + 1, max(taps_w) + 1)
    window = block.window
    if (sh, sw) != block.stride:  # finalize() guarantees this; a custom plan may not
        raise SpecError(f"strides to {(sh, sw)} but the block's stride is {block.stride}", loc)
    if extent[0] > window[0] or extent[1] > window[1]:
        raise SpecError(
            f"the branch covers a {extent[0]}x{extent[1]} window, which does not fit in the block's "
            f"{window[0]}x{window[1]} window (kernel {block.kernel[0]}x{block.kernel[1]}, "
            f"dilation {block.dilation})", loc)
    if (window[0] - extent[0]) % 2 or (window[1] - extent[1]) % 2:
        raise SpecError(
            f"the branch's {extent[0]}x{extent[1]} window cannot be centred in the block's "
            f"{window[0]}x{window[1]} window (the size difference must be even)", loc)
    offset = ((window[0] - extent[0]) // 2, (window[1] - extent[1]) // 2)
    dh, dw = block.dilation
    if any((offset[0] + t) % dh for t in taps_h) or any((offset[1] + t) % dw for t in taps_w):
        raise SpecError(
            f"the branch's taps do not lie on the block's dilation grid (dilation {block.dilation}); "
            "give the branch a dilation that is a multiple of the block's", loc)
    if groups % block.groups:
        culprit = next((s.loc for s in plan if s.groups % block.groups), loc)
        raise SpecError(
            f"the branch connects channels in {groups} group(s), which a conv with the block's "
            f"groups={block.groups} cannot express (its groups must be a multiple of {block.groups})", culprit)
    return Placement(offset=offset, extent=extent, groups=groups)


# ----------------------------------------------------------------------------- training module


class Chain(nn.Sequential):
    """The training module of a branch: its steps in sequence, none of them padded.

    It receives the block input already padded and cropped to the branch's window
    (``RepBlock`` does that), so it needs no geometry of its own.
    """

    @classmethod
    def from_plan(cls, plan: Sequence[Step]) -> "Chain":
        return cls(*[step.build() for step in plan])


class ComposedChain(Chain):
    """A chain trained as its composed kernel: every forward composes the steps' kernels
    (differentiably, with the kernel algebra) and runs ONE conv. Same parameters, same
    function as :class:`Chain`; no BatchNorm allowed (it needs the features).
    """

    def __init__(self, *modules: nn.Module, in_channels: int):
        super().__init__(*modules)
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        k = chain_kernel(list(self), self.in_channels, x.device, x.dtype)
        return F.conv2d(x, k.weight, k.bias, stride=k.stride, groups=k.groups)


# ----------------------------------------------------------------------------- conversion


@dataclass
class StepKernel:
    """A step as linear algebra: either a per-channel affine map or a conv."""

    weight: Tensor | None = None  # conv (C_out, C_in/g, kh, kw), float64
    bias: Tensor | None = None
    groups: int = 1
    stride: Pair = (1, 1)
    dilation: Pair = (1, 1)
    scale: Tensor | None = None  # affine
    shift: Tensor | None = None


def _bn_kernel(m: _BatchNorm, channels: int, device, dtype=torch.float64) -> StepKernel:
    if not m.track_running_stats or m.running_mean is None or m.running_var is None:
        raise SpecError(f"{m!r} has no running statistics (track_running_stats=False); "
                        "it normalises with batch statistics and cannot be folded")
    def f(t):
        return None if t is None else t.to(dtype)

    scale, shift = K.bn_scale_shift(f(m.running_mean), f(m.running_var), m.eps, f(m.weight), f(m.bias))
    return StepKernel(scale=scale, shift=shift)


def _conv_kernel(m: nn.Conv2d, channels: int, device, dtype=torch.float64) -> StepKernel:
    unpadded = m.padding == "valid" if isinstance(m.padding, str) else K.as_pair(m.padding) == (0, 0)
    if not unpadded:
        raise SpecError(f"{m!r} pads its input; steps inside a branch must be unpadded "
                        "(the block pads once, at its input)")
    return StepKernel(weight=m.weight.to(dtype), bias=None if m.bias is None else m.bias.to(dtype), groups=m.groups,
                      stride=K.as_pair(m.stride), dilation=K.as_pair(m.dilation))


def conv_step_kernel(m: nn.Conv2d, weight: Tensor) -> StepKernel:
    """A conv step whose effective weight (in the compute dtype) the caller computed (parameterised convs)."""
    base = _conv_kernel(m, m.out_channels, None, weight.dtype)
    base.weight = weight
    return base


def _scale_kernel(m: ChannelScale, channels: int, device, dtype=torch.float64) -> StepKernel:
    return StepKernel(scale=m.weight.to(dtype))


def _avg_kernel(m: nn.Module, channels: int, device, dtype=torch.float64) -> StepKernel:
    if isinstance(m, nn.AvgPool2d):
        if K.as_pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override is not None:
            raise SpecError(f"{m!r}: only unpadded average pooling without ceil_mode or "
                            "divisor_override is a convolution")
        ks, stride, dilation = m.kernel_size, m.stride or m.kernel_size, 1
    else:
        ks, stride, dilation = m.kernel_size, m.stride, m.dilation
    w = K.avgpool_kernel(channels, ks, dtype=dtype, device=device)
    return StepKernel(weight=w, groups=channels, stride=K.as_pair(stride), dilation=K.as_pair(dilation))


def _identity_kernel(m: nn.Identity, channels: int, device, dtype=torch.float64) -> StepKernel:
    return StepKernel(weight=K.identity_kernel(channels, channels, 1, dtype=dtype, device=device),
                      groups=channels)


#: module class -> converter(module, in_channels, device, dtype) -> StepKernel, its tensors in
#: ``dtype`` (the compute dtype: float64 for folding). The most specific class in the module's
#: MRO wins. Parameter-free steps build their fixed kernel on ``device``.
STEP_CONVERTERS: dict[type, Callable[..., StepKernel]] = {}


def register_step_converter(cls: type):
    """Register ``fn(module, in_channels, device, dtype) -> StepKernel`` for modules of ``cls``."""

    def wrap(fn):
        if cls in STEP_CONVERTERS:
            raise ValueError(f"a step converter for {cls.__name__} is already registered")
        STEP_CONVERTERS[cls] = fn
        return fn

    return wrap


for _cls, _fn in [(_BatchNorm, _bn_kernel), (nn.Conv2d, _conv_kernel), (ChannelScale, _scale_kernel),
                  (AvgPool, _avg_kernel), (nn.AvgPool2d, _avg_kernel), (nn.Identity, _identity_kernel)]:
    register_step_converter(_cls)(_fn)


def step_kernel(module: nn.Module, channels: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float64) -> StepKernel:
    for cls in type(module).__mro__:
        fn = STEP_CONVERTERS.get(cls)
        if fn is not None:
            return fn(module, channels, device, dtype)
    known = ", ".join(sorted(c.__name__ for c in STEP_CONVERTERS))
    raise SpecError(f"no kernel converter for {type(module).__name__}; known step modules: {known}")


@dataclass
class BranchKernel:
    """A branch as one dense (undilated) kernel: ``(C_out, C_in/groups, eh, ew)``, float64."""

    weight: Tensor
    bias: Tensor | None
    groups: int
    stride: Pair


def chain_kernel(modules: Sequence[nn.Module], in_channels: int,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float64) -> BranchKernel:
    """Compose a chain of step modules into one kernel (differentiable), computed in ``dtype``
    (float64 for folding; online training may use the parameters' own dtype).

    ``device`` is where parameter-free steps build their fixed kernels (default: the
    device of the chain's first parameter or buffer, else the CPU).
    """
    if device is None:
        device = next((t.device for m in modules for t in [*m.parameters(), *m.buffers()]), None)
    w = b = None
    groups, stride, channels = 1, (1, 1), in_channels
    for m in modules:
        sk = step_kernel(m, channels, device, dtype)
        if sk.weight is None:  # per-channel affine
            if w is None:
                w = sk.scale.reshape(-1, 1, 1, 1)
                b, groups = sk.shift, channels
            else:
                w, b = K.scale_channels(w, b, sk.scale, sk.shift)
            continue
        if w is None:
            w, b, groups, stride = K.dilate(sk.weight, sk.dilation), sk.bias, sk.groups, sk.stride
        else:
            w, b, groups = K.compose((w, b), (sk.weight, sk.bias), groups=(groups, sk.groups),
                                     stride=stride, dilation=(1, sk.dilation))
            stride = (stride[0] * sk.stride[0], stride[1] * sk.stride[1])
        channels = w.shape[0]
    if w is None:
        raise SpecError("an empty chain has no kernel")
    return BranchKernel(weight=w, bias=b, groups=groups, stride=stride)
