"""``RepBlock``: the one module that knows branches; trains as a sum, folds to one conv.

Its branches come planned and checked from :mod:`reparam_zoo.engine.plan`; the fold's numbers
from :mod:`reparam_zoo.engine.fastfold`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.fastfold import fold_weights
from reparam_zoo.engine.plan import BranchInfo, block_geometry, plan_branches
from reparam_zoo.engine.steps import (
    PLAIN,
    AvgPool,
    BlockGeometry,
    Chain,
    ComposedChain,
    chain_converter,
    chain_kernel,
    chain_module,
    norm_steps,
    step_kernel,
)
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.activations import ACTIVATIONS
from reparam_zoo.spec.lookup import resolve_spec
from reparam_zoo.spec.schema import BlockSpec, NormSpec

_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}




#: a block's input layout by its ``dims`` (0: a Linear layer)
INPUT_LAYOUTS = {0: "(N, C)", 1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def input_rank_error(g: BlockGeometry, name: str, shape, what: str = "a {rank}-D input") -> str | None:
    """The one-line error for an input ``shape`` of the wrong rank for a block of geometry ``g``, or None."""
    rank = g.axes + 2 if g.dims else 2
    if len(shape) == rank:
        return None
    kind = "Linear" if g.dims == 0 else f"{g.dims}-D"
    layout = INPUT_LAYOUTS[g.dims]
    return f"Expected {what.format(rank=rank)} {layout} for the {kind} block '{name}' but got {tuple(shape)}"


def deploy_layer(g: BlockGeometry, padding_mode: str = "zeros", *, device=None, dtype=None,
                 bias: bool = True) -> nn.Module:
    """The one layer a block of geometry ``g`` folds into, uninitialised: ``nn.Conv{d}d``,
    ``nn.ConvTranspose{d}d`` (``g.transposed``) or ``nn.Linear`` (``g.dims == 0``).
    ``device="meta"``: a layer without storage, whose caller assigns its parameters (the fold)."""
    if g.dims == 0:
        cls, args, kw = nn.Linear, (g.in_channels, g.out_channels), {}
    elif g.transposed:
        cls, args = PLAIN[(g.axes, True)], (g.in_channels, g.out_channels, g.kernel)
        kw = dict(stride=g.stride, padding=g.padding, output_padding=g.output_padding, dilation=g.dilation,
                  groups=g.groups)
    else:
        cls, args = PLAIN[(g.axes, False)], (g.in_channels, g.out_channels, g.kernel)
        kw = dict(stride=g.stride, padding=g.padding, dilation=g.dilation, groups=g.groups, padding_mode=padding_mode)
    if device == "meta":
        return cls(*args, **kw, bias=bias, device="meta", dtype=dtype)
    return nn.utils.skip_init(cls, *args, **kw, bias=bias, device=torch.device("cpu") if device is None else device,
                              dtype=dtype)


def deploy_module(g: BlockGeometry, padding_mode: str, act: nn.Module, *, device=None, dtype=None,
                  bias: bool = True) -> nn.Module:
    """The deployed form of a block: its layer (:func:`deploy_layer`) with bias (+ the activation),
    uninitialised. ``bias=False``: the layer alone, for a layout that puts the bias elsewhere (a norm
    after it). ``device="meta"``: a layer without storage, whose caller assigns its parameters (the fold)."""
    conv = deploy_layer(g, padding_mode, device=device, dtype=dtype, bias=bias)
    if isinstance(act, nn.Identity):
        return conv
    return nn.Sequential(OrderedDict(conv=conv, act=act))


def deployed_layer(module: nn.Module) -> nn.Module:
    """The conv (or Linear) of a deployed block: the module itself or its ``conv`` child."""
    return module.conv if isinstance(module, nn.Sequential) else module


def deploy_layout(g: BlockGeometry, weight: Tensor) -> Tensor:
    """A folded kernel in the engine's conv layout ``(C_out, C_in/g, *k)`` as the deployed layer holds
    it: ``ConvTranspose``'s ``(C_in, C_out/g, *k)``, or a Linear's ``(C_out, C_in)``."""
    if g.transposed:
        return K.transpose_layout(weight, g.groups)
    if g.dims == 0:
        return weight.reshape(weight.shape[0], weight.shape[1])
    return weight


def conv_layout(g: BlockGeometry, weight: Tensor) -> Tensor:
    """Inverse of :func:`deploy_layout`."""
    if g.transposed:
        return K.transpose_layout(weight, g.groups)
    if g.dims == 0:
        return weight.reshape(*weight.shape, 1)
    return weight


def deployed_block(spec: BlockSpec | str | Path | Mapping, in_channels: int, out_channels: int, *,
                   stride=1, groups: int = 1, dims: int = 2, transposed: bool = False,
                   output_padding=0) -> nn.Module:
    """The deployed module of ``spec`` built directly — no training branches ever exist. Its
    keys match ``RepBlock(...).fold()``, so a deployed checkpoint loads with ``strict=True``."""
    spec = resolve_spec(spec)
    g = block_geometry(spec, in_channels, out_channels, stride=stride, groups=groups, dims=dims,
                       transposed=transposed, output_padding=output_padding)
    module = deploy_module(g, spec.padding_mode, ACTIVATIONS.get(spec.act)())
    conv = deployed_layer(module)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return module


class RepBlock(nn.Module):
    """A block trained as parallel linear branches and folded into one conv.

    ``RepBlock(spec, in_channels, out_channels, stride=1, groups=1)`` builds the
    training form; ``spec`` is a :class:`BlockSpec`, a shipped spec name, a YAML path,
    YAML text or a mapping. Every cross-field rule is checked here, before any forward,
    and broken ones raise :class:`SpecError` naming the file, the branch and the rule.

    The pre-activation output is exactly ``conv(x)`` with the block's kernel, stride,
    dilation, groups, padding and padding mode (see ``docs/math.md``): the block pads its
    input once and every branch runs unpadded on the window it covers.

    ``dims`` (default 2) builds it from ``Conv1d``/``Conv2d``/``Conv3d`` and the matching
    BatchNorm; ``dims=0`` is a Linear layer (inputs ``(N, C)``, folds to ``nn.Linear``).
    ``transposed=True``: every branch is a transposed conv and the block folds into one
    ``ConvTranspose{d}d`` (``output_padding`` as torch's); each branch runs unpadded and the
    block crops its full output once.
    """

    def __init__(self, spec: BlockSpec | str | Path | Mapping, in_channels: int, out_channels: int,
                 *, stride: int | tuple[int, ...] = 1, groups: int = 1, mode: str = "offline", dims: int = 2,
                 transposed: bool = False, output_padding: int | tuple[int, ...] = 0):
        super().__init__()
        spec = resolve_spec(spec)
        if mode not in ("offline", "online"):
            raise SpecError(f"Expected mode 'offline' or 'online' but got {mode!r}", "mode", spec.source)
        self.mode = mode
        source = spec.source
        geometry = block_geometry(spec, in_channels, out_channels, stride=stride, groups=groups, dims=dims,
                                  transposed=transposed, output_padding=output_padding)
        stride = geometry.stride
        self.spec = spec
        self.geometry = geometry
        self.padding_mode = spec.padding_mode

        planned = plan_branches(spec, geometry, mode)
        infos: list[BranchInfo] = []
        modules: list[nn.Module] = []
        for branch in planned:  # nothing is allocated before this
            loc, bspec, btype = branch.loc, branch.spec, branch.type
            for copy_index in range(bspec.count):
                name = loc if bspec.count == 1 else f"{loc}#{copy_index}"
                module = (btype.module or chain_module)(bspec, branch.plan, self.geometry)
                if mode == "online" and type(module) is not Chain:
                    raise SpecError(f"online training composes every branch's kernel, but {bspec.type!r} builds "
                                    f"a {type(module).__name__}, not a chain of linear steps", loc, source)
                if transposed and type(module) is not Chain:
                    raise SpecError(f"a transposed block runs each branch's steps itself (unpadded, then cropped), "
                                    f"but {bspec.type!r} builds a {type(module).__name__}, not a chain of linear "
                                    "steps", loc, source)
                if bspec.train_as == "kernel" and mode == "offline":
                    if type(module) is not Chain:
                        raise SpecError(f"train_as: kernel needs a chain branch, {bspec.type!r} builds a "
                                        f"{type(module).__name__}", f"{loc}.train_as", source)
                    module = ComposedChain(*module, in_channels=in_channels)
                infos.append(BranchInfo(name, btype, bspec, branch.placement))
                modules.append(module)
        if not modules:
            raise SpecError(
                f"no branch applies to in_channels={in_channels}, out_channels={out_channels}, "
                f"stride={stride}, groups={groups} (every branch was dropped: optional or `when`)",
                "branches", source)
        self.branches = nn.ModuleList(modules)
        self.branch_info: tuple[BranchInfo, ...] = tuple(infos)
        g = self.geometry
        if g.transposed:
            # each branch runs unpadded and gives its full output; (left, right) per axis is what
            # F.pad adds to it (negative: crops) to place it in the block's output: offset - padding
            # on the left, offset - padding + output_padding on the right (docs/math.md)
            self._crops = tuple(tuple((o - p, o - p + q) for o, p, q in zip(i.placement.offset, g.padding,
                                                                             g.output_padding)) for i in infos)
            self._direct = (None,) * len(infos)
            self._spatial = tuple(next((j for j, s in enumerate(b.plan) if s.spatial), -1)
                                  for b in planned for _ in range(b.spec.count))
        else:
            # margins (start, end) per axis cut from the padded input for each branch: the parts
            # of the block's window the branch does not cover (the stride remainder is kept, so
            # a branch's norms see every pixel its first steps see, as in the papers' code)
            self._crops = tuple(tuple((o, w - e - o) for o, e, w in zip(i.placement.offset, i.placement.extent,
                                                                          g.window)) for i in infos)
            # zero padding commutes with an unpadded conv: a branch that starts with a plain conv
            # (or is the identity at the window's centre) can take the unpadded input and pad inside
            # that first conv, by the block's padding minus its offset — the same numbers, no copy
            self._direct = tuple(self._direct_padding(m, i) for m, i in zip(modules, infos))
        norm_after = spec.norm_after
        if mode == "online" and norm_after.type != "bn":  # OREPA: one BN after the sum
            norm_after = NormSpec(type="bn")
        after = [s.for_block(g) for s in norm_steps(norm_after, out_channels, "norm_after")]
        self.norm_after = after[0].build() if after else None
        self.act = ACTIVATIONS.get(spec.act)()
        # an empty, non-persistent buffer that follows .to()/.double()/.cuda(): a block without
        # parameters (identity + pooling, say) still knows the dtype and device to fold into
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    def _direct_padding(self, module: nn.Module, info: BranchInfo):
        """The padding per axis when the branch can run on the unpadded input (see ``__init__``), else None."""
        if self.padding_mode != "zeros" or self.mode != "offline" or type(module) is not Chain or not len(module):
            return None
        q = tuple(p - o for p, o in zip(self.geometry.padding, info.placement.offset))
        if any(v < 0 for v in q):
            return None
        first = module[0]
        if type(first) is PLAIN[(self.geometry.axes, False)] or hasattr(first, "kernel") or \
                (type(first) is nn.Identity and not any(q)):
            return q
        return None

    # ------------------------------------------------------------------------- training form
    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "deployed":
            return self.deployed(x)
        g = self.geometry
        if x.dim() != (g.axes + 2 if g.dims else 2):
            raise ValueError(input_rank_error(g, self.spec.name, x.shape))
        if g.dims == 0:  # a Linear layer: the 1-D engine on a length-1 signal
            return self._forward(x.unsqueeze(-1)).squeeze(-1)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        g = self.geometry
        n = g.axes
        if self.mode == "online":  # one conv with the branches' kernel, composed every forward
            weight, bias = self._online_kernel(x.dtype, x.device)
            if g.transposed:
                out = K.CONV_TRANSPOSE[n](x, K.transpose_layout(weight, g.groups), bias, g.stride, g.padding,
                                          g.output_padding, g.groups, g.dilation)
            elif self.padding_mode == "zeros":
                out = K.CONV[n](x, weight, bias, g.stride, g.padding, g.dilation, g.groups)
            else:
                x = F.pad(x, _pad_arg(g.padding), mode=_PAD_MODE[self.padding_mode])
                out = K.CONV[n](x, weight, bias, g.stride, 0, g.dilation, g.groups)
            if self.norm_after is not None:
                out = self.norm_after(out)
            return self.act(out)
        if g.transposed:
            return self._forward_transposed(x)
        if None not in self._direct:
            return self._forward_direct(x)
        x_in = x
        if any(g.padding):
            x = F.pad(x, _pad_arg(g.padding), mode=_PAD_MODE[self.padding_mode])
        self._check_size(x.shape[2:], g.window)
        out = None
        for module, crop, q in zip(self.branches, self._crops, self._direct):
            if q is None:
                y = module(x[(slice(None), slice(None), *(slice(a, e - b) for (a, b), e in zip(crop, x.shape[2:])))])
            else:
                y = _run_direct(module, x_in, q)
            out = y if out is None else out + y
        if self.norm_after is not None:
            out = self.norm_after(out)
        return self.act(out)

    def _check_size(self, padded, window) -> None:
        if any(s < w for s, w in zip(padded, window)):
            p = self.geometry.padding
            raise ValueError(
                f"Expected an input of at least {'x'.join(str(w - 2 * q) for w, q in zip(window, p))} for the "
                f"block '{self.spec.name}' but got {'x'.join(str(s - 2 * q) for s, q in zip(padded, p))}")

    def _forward_transposed(self, x: Tensor) -> Tensor:
        """Each branch: its steps up to its transposed conv (run unpadded, without its bias), the full output
        padded or cropped into the block's output, the bias, then its per-channel steps (docs/math.md)."""
        n = self.geometry.axes
        out = None
        for module, crop, k in zip(self.branches, self._crops, self._spatial):
            steps = list(module)
            y = x
            for m in steps[:max(k, 0)]:
                y = m(y)
            bias = None
            if k >= 0:
                m = steps[k]
                if type(m) is PLAIN[(n, True)]:
                    y = K.CONV_TRANSPOSE[n](y, m.weight, None, m.stride, 0, 0, m.groups, m.dilation)
                    bias = m.bias
                elif isinstance(m, AvgPool) and m.transposed:
                    y = m(y)
                else:
                    raise TypeError(f"Expected a ConvTranspose{n}d or a transposed AvgPool in a transposed "
                                    f"branch but got {type(m).__name__}")
            y = F.pad(y, _pad_arg(crop))
            if bias is not None:
                y = y + bias.reshape(1, -1, *([1] * n))
            for m in steps[k + 1:]:
                y = m(y)
            out = y if out is None else out + y
        if self.norm_after is not None:
            out = self.norm_after(out)
        return self.act(out)

    # ------------------------------------------------------------------------- folding
    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        """The dtype and device to fold into: the block's first floating parameter or buffer (they can be
        replaced, e.g. by ``load_state_dict(..., assign=True)``), else the anchor that follows ``.to()``."""
        for branch in self.branches:  # the same first parameter, without a walk over every module
            if branch._parameters:  # a custom branch module holding parameters itself: the full walk
                break
            for step in branch.children():
                if step._modules:
                    break
                for t in step._parameters.values():
                    if t is not None and t.is_floating_point():
                        return t.dtype, t.device
            else:
                continue
            break
        for name, t in (*self.named_parameters(), *self.named_buffers()):
            if t.is_floating_point() and name != "_anchor":
                return t.dtype, t.device
        return self._anchor.dtype, self._anchor.device

    def _forward_direct(self, x: Tensor) -> Tensor:
        """Zero padding, every branch direct: no padded copy of the input at all."""
        g = self.geometry
        self._check_size([s + 2 * p for s, p in zip(x.shape[2:], g.padding)], g.window)
        out = None
        for module, q in zip(self.branches, self._direct):
            y = _run_direct(module, x, q)
            out = y if out is None else out + y
        if self.norm_after is not None:
            out = self.norm_after(out)
        return self.act(out)

    def _branch_kernel(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """The sum of the branches as one conv of the block's geometry (no ``norm_after``)."""
        g = self.geometry
        parts = []
        for module, info in zip(self.branches, self.branch_info):
            bk = (info.type.converter or chain_converter)(module, g) if dtype == torch.float64 else chain_kernel(
                list(module), g.in_channels, device, dtype, dims=g.axes)
            w = K.regroup(bk.weight, bk.groups, g.groups)
            w = K.undilate(K.place(w, g.window, info.placement.offset), g.dilation)
            parts.append((w, bk.bias))
        return K.sum_kernels(parts)

    def _online_kernel(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """``_branch_kernel`` for the online forward: the same sum, accumulated with ``kernels.sum_placed``
        (no branch padded to the window, no depthwise identity or pooling expanded to a dense kernel)."""
        g = self.geometry
        if g.dilation != g.ones:
            return self._branch_kernel(dtype, device)
        parts = []
        for module, info in zip(self.branches, self.branch_info):
            bk = (info.type.converter or chain_converter)(module, g) if dtype == torch.float64 else chain_kernel(
                list(module), g.in_channels, device, dtype, dims=g.axes)  # as _branch_kernel composes each branch
            parts.append((bk.weight, bk.bias, bk.groups, info.placement.offset))
        return K.sum_placed(parts, g.window, g.in_channels, g.groups)

    def equivalent_kernel(self) -> tuple[Tensor, Tensor]:
        """``(weight, bias)`` of the one layer equal to the block (before the activation), in that
        layer's layout: ``(C_out, C_in/g, *k)`` for a conv, ``(C_in, C_out/g, *k)`` for a transposed
        conv, ``(C_out, C_in)`` for a Linear block.

        Eval-mode semantics (BatchNorm running statistics), computed in float64 and cast
        to the block's dtype at the end. Differentiable with respect to every parameter,
        so it can drive quantization-aware training or a penalty on the folded kernel.
        """
        g = self.geometry
        if self.mode == "deployed":
            conv = deployed_layer(self.deployed)
            return conv.weight, conv.bias
        dtype, device = self._dtype_device()
        weight, bias = self._branch_kernel(torch.float64, device)
        if self.norm_after is not None:
            sk = step_kernel(self.norm_after, g.out_channels, device)
            weight, bias = K.scale_channels(weight, bias, sk.scale, sk.shift)
        return deploy_layout(g, weight).to(dtype), bias.to(dtype)

    def _act_copy(self) -> nn.Module:
        """A copy of the activation: built afresh from the spec when it is the spec's own stateless one
        (a deepcopy costs more than the fold of a small block), else deep-copied."""
        act = self.act
        fresh = ACTIVATIONS.get(self.spec.act)()
        if type(fresh) is type(act) and vars(fresh).keys() == vars(act).keys() and repr(fresh) == repr(act) and \
                not any(v for k, v in vars(act).items() if k.startswith("_") and isinstance(v, dict)):
            # same class, same attributes, no parameters, buffers, submodules or hooks: nothing to copy
            fresh.training = act.training
            return fresh
        return copy.deepcopy(act)

    def fold(self) -> nn.Module:
        """A NEW deploy module: its one layer (``nn.Conv{d}d``, ``nn.ConvTranspose{d}d`` or ``nn.Linear``)
        plus the activation, if any. The block is untouched."""
        if self.mode == "deployed":
            return copy.deepcopy(self.deployed)
        return self._deployed_with(*fold_weights(self))  # = equivalent_kernel(), without its float64 copies

    def _deployed_with(self, weight: Tensor, bias: Tensor) -> nn.Module:
        """The deploy module holding ``weight`` and ``bias`` (the fold's fresh tensors, not copies)."""
        module = deploy_module(self.geometry, self.padding_mode, self._act_copy(), device="meta", dtype=weight.dtype)
        conv = deployed_layer(module)
        conv.weight, conv.bias = nn.Parameter(weight), nn.Parameter(bias)
        if module.training != self.training:
            module.train(self.training)
        return module

    # ------------------------------------------------------------------------- timm / MobileOne protocol
    def fuse(self) -> nn.Module:
        """timm's ``reparameterize_model`` protocol: the parent replaces this block by the
        returned module (the fold; this block is untouched)."""
        return self.fold()

    def reparameterize(self) -> None:
        """The in-place protocol of MobileOne's and timm's ``reparameterize_model`` (they call it
        on a deep copy): the block keeps only its folded conv and forwards through it."""
        if self.mode == "deployed":
            return
        self.deployed = self.fold()
        self.branches = nn.ModuleList()
        self.norm_after = None
        self.branch_info, self._crops, self._direct, self._spatial = (), (), (), ()
        self.mode = "deployed"

    def switch_to_deploy(self) -> None:
        """The research repos' in-place protocol (RepVGG, ACNet, DBB, YOLOv6 call it in a loop over
        ``model.modules()``): the same as :meth:`reparameterize`."""
        self.reparameterize()

    # ------------------------------------------------------------------------- description
    def extra_repr(self) -> str:
        g = self.geometry
        if g.dims == 0:
            return f"spec={self.spec.name!r}, {g.in_channels}->{g.out_channels}, dims=0 (Linear)"
        extra = f", transposed=True, output_padding={g.output_padding}" if g.transposed else ""
        dims = "" if g.dims == 2 else f", dims={g.dims}"
        return (f"spec={self.spec.name!r}, {g.in_channels}->{g.out_channels}, kernel={g.kernel}, "
                f"stride={g.stride}, dilation={g.dilation}, groups={g.groups}, padding={g.padding}, "
                f"padding_mode={self.padding_mode!r}{dims}{extra}")

    def describe(self) -> list[str]:
        """One line per branch: its location in the spec and what it is."""
        return [f"{info.name}: {info.spec.label()}" for info in self.branch_info]


def _pad_arg(padding) -> tuple[int, ...]:
    """Per-axis ``(before, after)`` pairs (or one int each: both sides) as ``F.pad`` takes them, last axis first."""
    out: list[int] = []
    for p in reversed(list(padding)):
        out += list(p) if isinstance(p, tuple) else [p, p]
    return tuple(out)


def _run_direct(chain: nn.Module, x: Tensor, q: tuple[int, ...]) -> Tensor:
    """A chain on the unpadded input: its first conv pads by ``q`` with zeros (see RepBlock)."""
    first = chain[0]
    if type(first) is nn.Identity:
        y = x
    else:
        weight = first.kernel() if hasattr(first, "kernel") else first.weight
        y = K.CONV[len(q)](x, weight, first.bias, first.stride, q, first.dilation, first.groups)
    for i, m in enumerate(chain):
        if i:
            y = m(y)
    return y


def build_block(spec: BlockSpec | str | Path | Mapping, in_channels: int, out_channels: int, *,
                stride: int | tuple[int, ...] = 1, groups: int = 1, mode: str = "offline", dims: int = 2,
                transposed: bool = False, output_padding: int | tuple[int, ...] = 0) -> RepBlock:
    """Build the training form of ``spec`` for this geometry (see :class:`RepBlock`).

    ``dims``: 1, 2 (default) or 3 spatial axes, 0 for a Linear layer. ``transposed=True``: the
    block folds into one ``ConvTranspose{dims}d`` (with ``output_padding``).
    ``mode="online"``: branch BatchNorms become per-channel scales, one BatchNorm follows the
    sum, and every forward composes the branches' kernel and runs ONE conv (OREPA's online
    re-parameterization). The fold is the same either way.
    """
    return RepBlock(spec, in_channels, out_channels, stride=stride, groups=groups, mode=mode, dims=dims,
                    transposed=transposed, output_padding=output_padding)
