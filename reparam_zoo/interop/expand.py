"""Expand any model: ``Conv{1,2,3}d -> BatchNorm{1,2,3}d`` (and ``Linear -> BatchNorm1d``) pairs become
RepBlocks of the layer's own geometry and dims, the BN's slot an :class:`AbsorbedNorm` (the BN lives on in
the block); ``init="preserve"`` computes what the original computed, in eval and training mode, and
``fold_model(expanded, layout="original")`` gives back the original classes and keys (docs/any_model.md)."""

from __future__ import annotations

import copy
import fnmatch
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from reparam_zoo.engine.block import RepBlock, conv_layout
from reparam_zoo.engine.fastfold import fold_weights
from reparam_zoo.engine.geometry import BlockGeometry
from reparam_zoo.engine.steps import CONVS, ChannelScale, RunningStats
from reparam_zoo.engine.verify import relative_error
from reparam_zoo.errors import SpecError
from reparam_zoo.interop.pairs import (
    DIMS,
    FIXED_STATE,
    LAYERS,
    NORM_OF,
    UNCALLED,
    base_class,
    find_conv_bn_pairs,
    is_fixed_norm,
    layer_kind,
    norm_check,
    split_path,
)
from reparam_zoo.spec.lookup import resolve_spec, spec_from_data, with_frozen_norms
from reparam_zoo.spec.schema import BlockSpec

_CONVS, _LAYERS = CONVS, LAYERS
#: the reserved keys of a ``block`` mapping: layer kinds, matched by class (any other key is an fnmatch
#: pattern on the module path; write ``[c]onv`` for a module whose path is literally ``conv``)
KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv1d": (nn.Conv1d,), "conv2d": (nn.Conv2d,), "conv3d": (nn.Conv3d,), "conv": _CONVS, "linear": (nn.Linear,)}
class AbsorbedNorm(nn.Module):
    """The slot of a BatchNorm that an expanded RepBlock absorbed (the BN is inside the block): it applies
    what the norm applied after normalising (timm's ``BatchNormAct2d``: ``drop`` then ``act``; a plain
    BatchNorm: nothing) and keeps a template of the norm (not state of this model) so that
    ``fold_model(..., layout="original")`` puts the norm's class back, a pass-through adding the folded bias.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.post = nn.Sequential(*[copy.deepcopy(m) for _, m in norm.named_children()])
        self._template = (copy.deepcopy(norm),)  # a tuple: not a submodule, no keys in this model

    def forward(self, x: Tensor) -> Tensor:
        return self.post(x)

    def restore(self, bias: Tensor) -> nn.Module:
        """A copy of the original norm that, in eval mode, adds ``bias`` per channel (and otherwise
        leaves its input unchanged up to rounding)."""
        norm = copy.deepcopy(self._template[0]).to(device=bias.device, dtype=bias.dtype)  # the model may have moved
        with torch.no_grad():
            b = bias.detach().to(torch.float64)
            if getattr(norm, "affine", True):  # a norm with fixed statistics (FrozenBatchNorm2d) has weight and bias
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0)
                norm.weight.fill_(math.sqrt(1.0 + norm.eps))
                norm.bias.copy_(b)
            else:
                norm.running_mean.copy_(-b)
                norm.running_var.fill_(1.0 - norm.eps)
        return norm

    def extra_repr(self) -> str:
        return f"absorbed {type(self._template[0]).__name__}({self._template[0].running_mean.numel()})"


@dataclass(frozen=True)
class ExpandedFrom:
    """What an expanded RepBlock replaced (its ``origin``, see :class:`reparam_zoo.engine.fold.Origin`): the
    name of the absorbed norm beside it (same parent; None: a lone biased layer, the block carries its
    bias) and ``layer``, the replaced conv or Linear on the meta device (its class and settings, no numbers)."""

    norm: str | None
    layer: nn.Module

    def deployed(self, block: RepBlock, parent: nn.Module) -> dict[int, nn.Module]:
        """The layers the block replaced, one path for every kind and dims: a copy of ``layer`` holding the
        folded weight (``fold_weights`` gives it in the deployed layout, the layer's own) and a zero bias if
        it has one, and the original norm class (:meth:`AbsorbedNorm.restore`, adding the folded bias) in
        the norm slot of ``parent``; a lone biased layer holds the folded bias itself."""
        slot = None if self.norm is None else getattr(parent, self.norm, None)
        if self.norm is not None and not isinstance(slot, AbsorbedNorm):
            raise ValueError(f"an expanded block's norm slot {self.norm!r} holds a {type(slot).__name__}, "
                             "not the AbsorbedNorm that expand() left there")
        with torch.no_grad():
            weight, bias = fold_weights(block)
        layer = copy.deepcopy(self.layer)  # meta tensors: its parameters are assigned, never copied into
        if layer.weight.shape != weight.shape:
            raise ValueError(f"Expected a folded weight of shape {tuple(layer.weight.shape)} for the replaced "
                             f"{type(layer).__name__} but got {tuple(weight.shape)}")
        layer.weight = nn.Parameter(weight)
        if layer.bias is not None:
            layer.bias = nn.Parameter(bias if slot is None else torch.zeros_like(bias))
        out = {id(block): layer.train(block.training)}
        if slot is not None:
            out[id(slot)] = slot.restore(bias).train(block.training)
        return out


@dataclass
class ExpandReport:
    """What :func:`expand` did: ``expanded`` ``(layer path, spec name, geometry)``, ``left`` ``(layer path,
    reason)``; ``untraced``: ``{subtree path: why}`` for the subtrees that did not trace with torch.fx
    (``""``: the model as a whole; their children were tried instead), ``subtrees``: the paths of those
    traced (``[""]``: the model as a whole); ``notes``: on the ``block`` mapping
    (a kind key that is also a path of the model); ``noun``: "conv", or "conv/Linear" with Linear layers."""

    expanded: list[tuple[str, str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)
    untraced: dict[str, str] = field(default_factory=dict)
    subtrees: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    noun: str = "conv"

    @property
    def traced(self) -> bool:
        """Whether the model traced with torch.fx as a whole."""
        return "" not in self.untraced

    def __str__(self) -> str:
        how = "torch.fx graph" if self.traced else "torch.fx graphs of its largest subtrees that trace"
        lines = [(f"expanded {len(self.expanded)} {self.noun}+BN layer(s), left {len(self.left)} {self.noun}(s); "
                  f"pairs from the {how}")]
        if not self.traced:
            shown = ", ".join(self.subtrees[:6]) + (f", ... ({len(self.subtrees)} in all)" if len(self.subtrees) > 6
                                                    else "")
            lines.append(f"  traced: {shown or 'no subtree'}")
        lines += [f"  did not trace: {path or '<the model>'}: {why}" for path, why in list(self.untraced.items())[:8]]
        lines += [f"  ... and {len(self.untraced) - 8} more subtrees"] if len(self.untraced) > 8 else []
        lines += [f"  left {n}: {why}" for why, n in Counter(why for _, why in self.left).most_common()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- finding pairs


# ----------------------------------------------------------------------------- which spec, which layer


def _is_mapping(block) -> bool:  # a mapping of kinds and patterns to specs, not a spec's own mapping
    return isinstance(block, Mapping) and "branches" not in block


def _entry(block, path: str, layer: nn.Module):
    """The (unresolved) spec ``block`` gives the layer at ``path``, or None (see :func:`expand`)."""
    if not _is_mapping(block):
        return block if isinstance(layer, _CONVS) else None
    for key, spec in block.items():
        if isinstance(layer, KINDS[key]) if key in KINDS else fnmatch.fnmatchcase(path, key):
            return spec
    return None


def _not_plain(layer: nn.Module) -> str | None:
    """Why ``layer`` cannot be replaced and given back: a subclass with its own forward, or more than a
    plain ``weight`` (and ``bias``): a parametrization, weight norm, buffers or children."""
    base, names = base_class(layer), {n for n, _ in layer.named_parameters(recurse=False)}
    if type(layer) is not base and type(layer).forward is not base.forward:
        return f"a {type(layer).__name__} with its own forward, not a plain nn.{base.__name__}"
    if parametrize.is_parametrized(layer) or names - {"bias"} != {"weight"} or next(layer.buffers(), None) \
            is not None or next(layer.children(), None) is not None:
        return f"its {type(layer).__name__} holds more than a plain weight and bias (weight norm, buffers, ...)"
    return None


# ----------------------------------------------------------------------------- building


def _geometry_spec(spec: BlockSpec, layer: nn.Module) -> BlockSpec:
    """``spec`` with the layer's own geometry and no activation (a Linear block has no kernel to set)."""
    data = {**spec.to_dict(), "act": "identity"}
    if isinstance(layer, _CONVS):
        padding = layer.padding
        if isinstance(padding, str):
            if padding == "same" and any(d * (k - 1) % 2 for k, d in zip(layer.kernel_size, layer.dilation)):
                raise ValueError("padding='same' with an even (dilated) kernel pads asymmetrically, which a "
                                 "block (it pads equally on both sides) does not reproduce")
            padding = tuple(0 if padding == "valid" else d * (k - 1) // 2
                            for k, d in zip(layer.kernel_size, layer.dilation))
        data.update(kernel=list(layer.kernel_size), dilation=list(layer.dilation), padding=list(padding),
                    padding_mode=layer.padding_mode)
    return spec_from_data(data, spec.source)


def _carrier(block: RepBlock, weight: Tensor, lone: bool = False) -> tuple[int, int | None] | None:
    """``(branch, middle)`` able to carry the layer (``weight``, conv layout) at the window's origin: a plain
    full-kernel conv then a BatchNorm (lone: a biased conv, no norm), ``middle`` None; else plain convs then
    a BatchNorm, one full-kernel among pointwise ones (ExpandNet's ``seq``), ``middle`` its index."""
    g, factored = block.geometry, None
    conv_cls, norm_cls = _CONVS[g.axes - 1], NORM_OF[_CONVS[g.axes - 1]]
    for i, (chain, info) in enumerate(zip(block.branches, block.branch_info)):
        if not len(chain) or any(info.placement.offset) or type(chain[0]) is not conv_cls:
            continue
        if lone:
            if len(chain) == 1 and chain[0].bias is not None and chain[0].weight.shape == weight.shape:
                return i, None
            continue
        *convs, norm = list(chain)
        if not (isinstance(norm, norm_cls) and norm.affine and norm.track_running_stats) or not convs or \
                any(type(c) is not conv_cls or c.bias is not None for c in convs):
            continue
        if len(convs) == 1 and convs[0].weight.shape == weight.shape:
            return i, None
        full = [j for j, c in enumerate(convs) if tuple(c.kernel_size) == g.kernel and tuple(c.dilation) == g.dilation]
        if factored is None and full and g.groups == 1 and all(
                c.groups == 1 and (j in full or tuple(c.kernel_size) == g.ones) for j, c in enumerate(convs)):
            factored = i, min(full, key=lambda j: abs(j - (len(convs) - 1) / 2))
    return factored


def _factor(convs: list[nn.Module], middle: int, weight: Tensor) -> None:
    """Give ``convs[middle]`` the weight that makes the chain compose to ``weight``: ``pinv(Q) W pinv(P)`` per
    tap in float64, ``P``/``Q`` the pointwise convs before/after it (their random initial weights kept);
    exact when ``P`` has full column rank and ``Q`` full row rank (checked)."""
    w = weight.detach().to(torch.float64)
    p, q = (torch.eye(n, dtype=torch.float64, device=w.device) for n in (w.shape[1], convs[middle].out_channels))
    for c in convs[:middle]:
        p = c.weight.detach().to(torch.float64).flatten(1) @ p
    for c in convs[middle + 1:]:
        q = c.weight.detach().to(torch.float64).flatten(1) @ q
    mid = torch.einsum("ao,oi...,ib->ab...", torch.linalg.pinv(q), w, torch.linalg.pinv(p))
    back = torch.einsum("ao,oi...,ib->ab...", q, mid, p)
    if (back - w).abs().max() > 1e-9 * max(w.abs().max().item(), 1e-30):
        raise ValueError("init='preserve': the branch's pointwise convs narrow the channels, so no weight of its "
                         "full-kernel conv composes to the pretrained layer's")
    with torch.no_grad():
        convs[middle].weight.copy_(mid)


def _zero_branch(chain: nn.Module) -> bool:
    """Make a branch output exactly zero whatever its input, keeping it trainable: zero the affine
    of its last norm (or its last plain conv); the steps after it must map zero to zero."""
    steps = list(chain)
    with torch.no_grad():
        for j in range(len(steps) - 1, -1, -1):
            m = steps[j]
            if isinstance(m, _BatchNorm) and m.affine:
                m.weight.zero_()
                m.bias.zero_()
            elif isinstance(m, ChannelScale):
                m.weight.zero_()
            elif type(m) in _CONVS:
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
            else:
                continue
            for later in steps[j + 1:]:  # must keep zero at zero: no biases, BNs at their initial state
                if isinstance(later, (*_CONVS, _BatchNorm)) and later.bias is not None:
                    later.bias.zero_()
            return True
    return False


def _is_zero(chain: nn.Module, in_channels: int, g: BlockGeometry, dtype, device) -> bool:
    probe = copy.deepcopy(chain)
    x = torch.randn(2, in_channels, *(w + 2 for w in g.window), dtype=dtype, device=device)
    with torch.no_grad():
        for train in (False, True):
            probe.train(train)
            if probe(x).abs().max().item() != 0.0:
                return False
    return True


def _expand_one(layer: nn.Module, norm: nn.Module | None, spec: BlockSpec, init: str,
                frozen: bool = False) -> RepBlock:
    """The RepBlock replacing ``layer`` (+ ``norm``; None: a lone biased layer); raises SpecError/ValueError
    with the reason. A biased layer's norm absorbs its bias (running mean shifted by it: the same function
    in eval mode, and in training mode, where the batch mean cancels the bias)."""
    lone = norm is None
    spec = _geometry_spec(with_frozen_norms(spec) if frozen else spec, layer)
    block = RepBlock(spec, layer.in_features, layer.out_features, dims=0) if isinstance(layer, nn.Linear) else \
        RepBlock(spec, layer.in_channels, layer.out_channels, stride=layer.stride, groups=layer.groups,
                 dims=DIMS[base_class(layer)])
    block.to(device=layer.weight.device, dtype=layer.weight.dtype)
    if frozen and any(isinstance(m, _BatchNorm) and not isinstance(m, RunningStats) for m in block.modules()):
        raise ValueError(f"the {layer_kind(layer)}'s norm has frozen statistics but spec {spec.name!r} builds a "
                         "BatchNorm that frozen: true does not reach (a branch type's own module)")
    weight = conv_layout(block.geometry, layer.weight)
    found = _carrier(block, weight, lone)
    if lone and found is None:
        raise ValueError(f"the {layer_kind(layer)} has a bias and no BatchNorm of its own; spec {spec.name!r} has no "
                         "biased kxk conv branch without a norm (bias: true, norm: none) to carry it")
    i, middle = found if found is not None else (None, None)
    if i is not None and not lone:  # the carrier BN keeps the layer's eps and momentum whatever the init
        block.branches[i][-1].eps = norm.eps  # (not in state dicts: a rebuilt model must get them here)
        block.branches[i][-1].momentum = getattr(norm, "momentum", block.branches[i][-1].momentum)
    if init == "preserve":
        if block.norm_after is not None:
            raise ValueError(f"init='preserve': spec {spec.name!r} has a norm after the sum, which "
                             "renormalises the pretrained layer in training mode")
        if i is None:
            raise ValueError(f"init='preserve': spec {spec.name!r} has no kxk conv + BN branch of the "
                             f"{layer_kind(layer)}'s kernel to carry its weights")
        chain = block.branches[i]
        if middle is not None:
            _factor(list(chain)[:-1], middle, weight)
        else:
            with torch.no_grad():
                chain[0].weight.copy_(weight)
                if lone:
                    chain[0].bias.copy_(layer.bias)
        if not lone:
            with torch.no_grad():
                if is_fixed_norm(norm):  # a FrozenBatchNorm2d: statistics and affine, into a frozen BatchNorm
                    for name in sorted(FIXED_STATE):
                        getattr(chain[-1], name).copy_(getattr(norm, name))
                else:
                    chain[-1].load_state_dict(norm.state_dict(), strict=True)
                if layer.bias is not None:  # a biased layer: its BN absorbs the bias
                    chain[-1].running_mean.sub_(layer.bias.detach())
        for j, other in enumerate(block.branches):
            if j == i:
                continue
            name = block.branch_info[j].name
            if not _zero_branch(other) or not _is_zero(other, block.geometry.in_channels, block.geometry,
                                                       layer.weight.dtype, layer.weight.device):
                raise ValueError(f"init='preserve': {name} ({block.branch_info[j].spec.label()}) cannot "
                                 "start at exactly zero")
    if lone and block.norm_after is not None:
        raise ValueError(f"spec {spec.name!r} has a norm after the sum, which a lone {layer_kind(layer)}'s layout has "
                         "no place for when folded back")
    if isinstance(norm, nn.SyncBatchNorm):  # the layer synchronised its statistics: so do the block's BNs
        block = nn.SyncBatchNorm.convert_sync_batchnorm(block)
    if not layer.weight.requires_grad:  # a frozen stage (a detector's first layers) stays frozen
        block.requires_grad_(False)
    block.train(layer.training)
    return block


def _describe(g: BlockGeometry) -> str:
    """The report's geometry: ``64->64 k3x7x7 s1x2x2 g1`` (``s2``: 2 on every axis), ``512->10 linear``."""
    if g.dims == 0:
        return f"{g.in_channels}->{g.out_channels} linear"
    stride = str(g.stride[0]) if len(set(g.stride)) == 1 else "x".join(map(str, g.stride))
    return f"{g.in_channels}->{g.out_channels} k{'x'.join(map(str, g.kernel))} s{stride} g{g.groups}"


def expand(model: nn.Module, block, *, include=None, exclude=None, min_kernel: int = 3,
           init: str = "preserve", example_input=None) -> tuple[nn.Module, ExpandReport]:
    """A NEW model in which every plain ``Conv{1,2,3}d -> BatchNorm{1,2,3}d`` pair (and, where ``block``
    names them, ``Linear -> BatchNorm1d``) is a RepBlock of ``block`` with the layer's dims (0 for Linear).

    ``block``: a spec (name, path, :class:`BlockSpec`) for every conv (1-D, 2-D, 3-D), or a mapping whose
    FIRST matching entry gives a layer's spec: a kind key (:data:`KINDS`: ``conv1d``, ``conv2d``,
    ``conv3d``, ``conv``, ``linear``) matches by class, any other key is an fnmatch pattern on the path.
    Kind words are never paths (``"[c]onv"`` matches the path ``conv``; the report notes the clash).
    Convs no entry matches are left, with the reason; Linear layers count only where an entry matches.
    ``include`` / ``exclude``: fnmatch patterns (a string or a list) on the layer's path.
    ``min_kernel``: convs whose kernel is smaller on every axis are left (1x1 by default; not Linear).
    ``init="preserve"``: the expanded model computes what ``model`` computes, in eval and training mode
    (one branch carries the layer and BN, the others start at exactly zero); ``init="fresh"``: the blocks
    as built. A biased layer's BatchNorm absorbs its bias; a biased layer with no BatchNorm is a lone layer.
    ``example_input`` (a tensor, or a tuple of the forward's arguments): with ``init="preserve"``, the expanded
    model is run on it beside ``model`` in eval and training mode and must compute the same (float64:
    1e-10, else 1e-5 relative), else a ValueError — the check for a model that does not trace as a whole,
    whose untraceable parents could use a unit's layers without calling the unit.
    """
    if init not in ("preserve", "fresh"):
        raise ValueError(f"Expected init 'preserve' or 'fresh' but got {init!r}")
    include = [include] if isinstance(include, str) else include
    exclude = [exclude] if isinstance(exclude, str) else (exclude or [])
    if not _is_mapping(block):
        resolve_spec(block)  # a bad spec fails here, once, not once per layer
    new = copy.deepcopy(model)
    pairs, why, untraced, subtrees = find_conv_bn_pairs(new)
    report = ExpandReport(untraced=untraced, subtrees=subtrees)
    modules = dict(new.named_modules())
    if _is_mapping(block):
        report.notes += [f"{key!r} is the layer kind (every {key} layer), not the module path {key!r} of this "
                         f"model; write '[{key[0]}]{key[1:]}' for that path" for key in block
                         if key in KINDS and key in modules]
    shared = Counter(id(m) for _, m in new.named_modules(remove_duplicate=False))
    for path, layer in list(modules.items()):
        if not isinstance(layer, _LAYERS):
            continue
        entry = _entry(block, path, layer)
        linear = isinstance(layer, nn.Linear)
        if linear and entry is None:
            continue  # a model's Linear layers are looked at only where the block mapping names them
        report.noun = "conv/Linear" if linear else report.noun
        reason = spec = None
        # a lone layer has its bias (a BN after it that is not its pair stays where it is); a pair's BN absorbs it
        lone = layer.bias is not None and path not in pairs
        if include is not None and not any(fnmatch.fnmatchcase(path, p) for p in include):
            reason = "not matched by include"
        elif any(fnmatch.fnmatchcase(path, p) for p in exclude):
            reason = "matched by exclude"
        elif not linear and max(layer.kernel_size) < min_kernel:
            reason = f"kernel {'x'.join(map(str, layer.kernel_size))} is below min_kernel={min_kernel}"
        elif _not_plain(layer):
            reason = _not_plain(layer)
        elif shared.get(id(layer), 0) > 1:
            reason = f"the {layer_kind(layer)} is shared (registered at several places)"
        elif lone and why.get(path) == UNCALLED:
            reason = UNCALLED
        elif lone or path in pairs:
            spec = resolve_spec(entry) if entry is not None else None
            if spec is None:
                reason = "no pattern of the block mapping matches"
        else:
            reason = why.get(path, "no BatchNorm follows it")
        norm = None if lone else modules.get(pairs.get(path, ""))
        frozen = False
        if reason is None and norm is not None:
            reason, frozen = norm_check(layer, norm)
        if reason is None:
            try:
                rep = _expand_one(layer, norm, spec, init, frozen)
            except (SpecError, ValueError, RuntimeError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if norm is not None and layer.bias is not None:  # no BN carrier: a biased carrier, BN left alone
                    try:
                        rep, norm, reason = _expand_one(layer, None, spec, init), None, None
                    except (SpecError, ValueError, RuntimeError):
                        pass
        if reason is not None:
            report.left.append((path, reason))
            continue
        parent_path, layer_name = split_path(path)
        parent = modules[parent_path] if parent_path else new
        setattr(parent, layer_name, rep)
        norm_name = None if norm is None else split_path(pairs[path])[1]
        rep.origin = ExpandedFrom(norm=norm_name, layer=copy.deepcopy(layer).to(device="meta"))
        if norm is not None:
            setattr(parent, norm_name, AbsorbedNorm(norm))
        report.expanded.append((path, spec.name, _describe(rep.geometry)))
    if example_input is not None and init == "preserve" and report.expanded:
        _check_example(model, new, example_input)
    elif not report.traced and report.expanded:
        report.notes.append("the model does not trace as a whole: its pairs are exact where its untraceable "
                            "modules call the traced units as modules; pass example_input= to check")
    return new, report


def _flat(out) -> Tensor:
    """Every tensor of a model's output (nested tuples, lists, dicts), flattened into one float64 vector."""
    if isinstance(out, Tensor):
        return out.detach().flatten().to(torch.float64)
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else []
    parts = [_flat(v) for v in values]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _check_example(model: nn.Module, new: nn.Module, example) -> None:
    """Raise where ``new`` does not compute what ``model`` computes on ``example`` (copies of both, eval and
    training mode, each from the same random state: dropout draws alike)."""
    args = example if isinstance(example, tuple) else (example,)
    floating = [a for a in args if isinstance(a, Tensor) and a.is_floating_point()]
    tol = 1e-10 if floating and floating[0].dtype == torch.float64 else 1e-5
    for train in (False, True):
        outs = []
        for m in (model, new):
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                outs.append(_flat(copy.deepcopy(m).train(train)(*args)))
        want, got = outs
        err = relative_error(got, want)  # inf for NaN, other shapes or no output at all: refused too
        if not err <= tol:
            raise ValueError(f"example_input: the expanded model computes other numbers than the original in "
                             f"{'training' if train else 'eval'} mode (relative error {err:.1e} > {tol:.0e}): a "
                             "module that does not trace may use a unit's layers directly; exclude= that unit")
