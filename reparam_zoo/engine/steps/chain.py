"""A branch's training module (:class:`Chain`) and its conversion to one dense kernel.

:func:`chain_kernel` composes the steps' kernels with the kernel algebra (float64 when folding);
:func:`chain_module` and :func:`chain_converter` are what a branch type gets when it registers
no module or converter of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.geometry import BlockGeometry
from reparam_zoo.engine.steps.base import Step, step_kernel
from reparam_zoo.errors import SpecError


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
        k = chain_kernel(list(self), self.in_channels, x.device, x.dtype, dims=x.dim() - 2)
        return K.CONV[x.dim() - 2](x, k.weight, k.bias, stride=k.stride, groups=k.groups)


@dataclass
class BranchKernel:
    """A branch as one dense (undilated) kernel: ``(C_out, C_in/groups, *extent)``, float64."""

    weight: Tensor
    bias: Tensor | None
    groups: int
    stride: tuple[int, ...]
    #: where ``chain_kernel(..., undilated=True)`` kept the taps on a dilation grid: the weight is then the
    #: kernel's taps and this is their spacing (the dense kernel is ``kernels.dilate(weight, dilation)``)
    dilation: tuple[int, ...] | None = None


def chain_kernel(modules: Sequence[nn.Module], in_channels: int,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float64, *,
                 dims: int = 2, undilated: bool = False) -> BranchKernel:
    """Compose a chain of step modules into one kernel (differentiable), computed in ``dtype``
    (float64 for folding; online training may use the parameters' own dtype).

    Steps whose taps lie on one dilation grid (a dilated kxk after or before pointwise steps, two kernels
    of the same dilation) are composed on their taps, never on the dilated window; ``undilated=True``
    returns the taps and their spacing (:attr:`BranchKernel.dilation`) instead of the dense kernel.

    ``device`` is where parameter-free steps build their fixed kernels (default: the
    device of the chain's first parameter or buffer, else the CPU). ``dims``: the spatial axes of
    a chain without a conv or pooling step (identity, norms), whose kernel is ``1`` on each.
    """
    if device is None:
        device = next((t.device for m in modules for t in [*m.parameters(), *m.buffers()]), None)
    w = b = dil = None  # dil: the spacing of w's taps (w holds the taps only)
    groups, stride, channels = 1, None, in_channels
    for m in modules:
        sk = step_kernel(m, channels, device, dtype)
        if sk.weight is None:  # per-channel affine
            if w is None:
                w = sk.scale.reshape(-1, 1, *([1] * dims))
                b, groups = sk.shift, channels
            else:
                w, b = K.scale_channels(w, b, sk.scale, sk.shift)
            continue
        n = sk.weight.dim() - 2
        ones = (1,) * n
        sk_stride = sk.stride or ones
        sk_dilation = sk.dilation or ones
        if w is None:
            w, b, groups, stride, dil = sk.weight, sk.bias, sk.groups, sk_stride, sk_dilation
        else:
            if w.dim() != sk.weight.dim():
                w = w.reshape(*w.shape[:2], *([1] * n))  # a leading per-channel step: a kernel of extent 1
            spacing = tuple(a * c for a, c in zip(sk_dilation, stride or ones))  # its taps, in input pixels
            point_w, point_sk = (all(k == 1 for k in t.shape[2:]) for t in (w, sk.weight))
            if point_w or point_sk or (dil or ones) == spacing:  # one grid: compose the taps
                dil = (dil or ones) if point_sk else spacing
                w, b, groups = K.compose((w, b), (sk.weight, sk.bias), groups=(groups, sk.groups))
            else:  # two grids: the dense kernels
                w, b, groups = K.compose((K.dilate(w, dil or ones), b), (sk.weight, sk.bias),
                                         groups=(groups, sk.groups), stride=stride or ones, dilation=(1, sk_dilation))
                dil = ones
            stride = tuple(a * c for a, c in zip(stride or ones, sk_stride))
        channels = w.shape[0]
    if w is None:
        raise SpecError("an empty chain has no kernel")
    dil = dil or (1,) * (w.dim() - 2)
    if not undilated:
        w, dil = K.dilate(w, dil), None
    return BranchKernel(weight=w, bias=b, groups=groups, stride=stride or (1,) * (w.dim() - 2), dilation=dil)


def chain_module(spec, plan: list[Step], block: BlockGeometry) -> nn.Module:
    """Default training module of a branch type: the planned steps in sequence."""
    return Chain.from_plan(plan)


def chain_converter(module: nn.Module, block: BlockGeometry) -> BranchKernel:
    """Default converter of a branch type: compose the chain's steps with the kernel algebra."""
    return chain_kernel(list(module), block.in_channels, dims=block.axes)
