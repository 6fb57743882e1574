"""``NormStep``: a per-channel affine step, eval-mode BatchNorm (``bn``, or ``frozen``: running statistics in
training too) or a learnable scale."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.geometry import Pair
from reparam_zoo.engine.steps.base import ChannelWise, Step, StepKernel, register_step, register_step_converter
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.schema import NormSpec


class ChannelScale(nn.Module):
    """A per-channel scale ``y = w[c] * x``: learnable (OREPA's linear scaling) or, ``learnable=False``, a
    constant held as a buffer (RepOptimizer's CSLA scales: in the state dict, settable, never trained)."""

    def __init__(self, channels: int, init: float = 1.0, *, learnable: bool = True, dtype=None, device=None):
        super().__init__()
        weight = torch.full((channels,), float(init), dtype=dtype, device=device)
        if learnable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.reshape(1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}"


class RunningStats:
    """Mixin of a BatchNorm that normalises with its running statistics in training mode too and never
    updates them (torchvision's ``FrozenBatchNorm2d`` semantics; its weight and bias still learn when
    affine). The same numbers in both modes, so a block of frozen norms is function-preserving in training."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class FrozenStatsBatchNorm1d(RunningStats, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with frozen statistics (:class:`RunningStats`)."""


class FrozenStatsBatchNorm2d(RunningStats, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with frozen statistics (:class:`RunningStats`)."""


class FrozenStatsBatchNorm3d(RunningStats, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with frozen statistics (:class:`RunningStats`)."""


#: the BatchNorm class of a norm step: [frozen][spatial axes]
BN_CLASSES = {False: {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
              True: {1: FrozenStatsBatchNorm1d, 2: FrozenStatsBatchNorm2d, 3: FrozenStatsBatchNorm3d}}


@register_step("norm")
@dataclass(frozen=True)
class NormStep(ChannelWise):
    """A per-channel affine step: eval-mode BatchNorm (``kind="bn"``) or a learnable scale (``"scale"``)."""

    channels: int
    kind: str = "bn"  # "bn" | "scale"
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    init: float = 1.0  # initial value of a scale
    loc: str = ""
    axes: int = 2  # spatial axes of its input: BatchNorm1d (1), BatchNorm2d (2) or BatchNorm3d (3)
    frozen: bool = False  # a BatchNorm with running statistics in training too (FrozenStatsBatchNorm*d)
    learnable: bool = True  # a scale: a parameter, or a constant buffer

    stride: Pair = (1, 1)

    def __post_init__(self):
        if self.kind not in ("bn", "scale"):
            raise ValueError(f"Expected kind 'bn' or 'scale' but got {self.kind!r}")
        if self.frozen and self.kind != "bn":
            raise ValueError(f"Expected a frozen norm of kind 'bn' but got {self.kind!r}")

    @property
    def needs_features(self) -> bool:  # type: ignore[override]
        return self.kind == "bn" and not self.frozen  # a frozen BN is a constant affine map

    @property
    def shift_free(self) -> bool:  # type: ignore[override]
        return self.kind == "scale"

    def for_block(self, block) -> Step:
        return self if self.axes == block.axes else replace(self, axes=block.axes)

    def online(self) -> Step:
        """OREPA's linear scaling: a BatchNorm inside a branch becomes a per-channel scale."""
        return replace(self, kind="scale", init=1.0, frozen=False) if self.kind == "bn" else self

    def build(self) -> nn.Module:
        if self.kind == "bn":
            bn = BN_CLASSES[self.frozen][self.axes]
            return bn(self.channels, eps=self.eps, momentum=self.momentum, affine=self.affine)
        return ChannelScale(self.channels, self.init, learnable=self.learnable)


def norm_steps(norm: NormSpec, channels: int, loc: str = "norm") -> list[Step]:
    """The steps of a spec's ``norm:`` (none for ``type: none``)."""
    if norm.type == "none":
        return []
    return [NormStep(channels, kind=norm.type, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     init=norm.init, loc=loc, frozen=norm.frozen, learnable=norm.learnable)]


@register_step_converter(_BatchNorm)
def bn_kernel(m: _BatchNorm, channels: int, device, dtype) -> StepKernel:
    if not m.track_running_stats or m.running_mean is None or m.running_var is None:
        raise SpecError(f"{m!r} has no running statistics (track_running_stats=False); "
                        "it normalises with batch statistics and cannot be folded")

    def f(t):
        return None if t is None else t.to(dtype)

    scale, shift = K.bn_scale_shift(f(m.running_mean), f(m.running_var), m.eps, f(m.weight), f(m.bias))
    return StepKernel(scale=scale, shift=shift)


@register_step_converter(ChannelScale)
def scale_kernel(m: ChannelScale, channels: int, device, dtype) -> StepKernel:
    return StepKernel(scale=m.weight.to(dtype))
