"""Expand any model: plain ``Conv2d -> BatchNorm2d`` pairs become RepBlocks of a chosen spec.

``expand(model, "acb")`` finds every conv whose output only a BatchNorm consumes (with ``torch.fx``
where the model traces, else inside ``nn.Sequential``) and replaces the conv by a RepBlock built with
that conv's own geometry; the BN's slot keeps an :class:`AbsorbedNorm` (the BN lives on inside the
block). With ``init="preserve"`` the block's full-kernel branch carries the pretrained conv and BN
and every other branch starts at exactly zero, so the expanded model computes what the original
computed, in eval and in training mode. ``fold_model(expanded, layout="original")`` gives back the
original module classes and state-dict keys.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine.block import RepBlock
from reparam_zoo.engine.fastfold import fold_weights
from reparam_zoo.engine.fold import deployed_conv
from reparam_zoo.engine.kernels import as_pair
from reparam_zoo.engine.steps import ChannelScale
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.lookup import resolve_spec, spec_from_data
from reparam_zoo.spec.schema import BlockSpec

SpecLike = BlockSpec | str | Path


class AbsorbedNorm(nn.Module):
    """The slot of a BatchNorm that an expanded RepBlock absorbed (the BN is inside the block).

    It applies what the norm applied after normalising (timm's ``BatchNormAct2d``: ``drop`` then
    ``act``; a plain BatchNorm: nothing) and keeps a template of the norm (not state of this
    model) so that :func:`~reparam_zoo.fold_model` with ``layout="original"`` can put the norm's
    own class back, as a pass-through that adds the folded bias.
    """

    def __init__(self, norm: _BatchNorm):
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
            if norm.affine:
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0)
                norm.weight.fill_(math.sqrt(1.0 + norm.eps))
                norm.bias.copy_(b)
            else:
                norm.running_mean.copy_(-b)
                norm.running_var.fill_(1.0 - norm.eps)
        return norm

    def extra_repr(self) -> str:
        return f"absorbed {type(self._template[0]).__name__}({self._template[0].num_features})"


@dataclass(frozen=True)
class ExpandedFrom:
    """What an expanded RepBlock replaced (its ``origin``, see :class:`reparam_zoo.engine.fold.Origin`):
    the name of the absorbed norm beside it (same parent), or None for a lone biased conv (the block
    carries the conv and its bias)."""

    norm: str | None

    def deployed(self, block: RepBlock, parent: nn.Module) -> dict[int, nn.Module]:
        """The layers the block replaced: an ``nn.Conv2d`` without bias for the block and the original
        norm class (:meth:`AbsorbedNorm.restore`, adding the folded bias) for the norm slot in ``parent``;
        a lone biased conv is the block's own fold (a biased conv, no act)."""
        if self.norm is None:
            return {id(block): block.fold()}
        slot = getattr(parent, self.norm, None)
        if not isinstance(slot, AbsorbedNorm):
            raise ValueError(f"an expanded block's norm slot {self.norm!r} holds a {type(slot).__name__}, "
                             "not the AbsorbedNorm that expand() left there")
        with torch.no_grad():
            weight, bias = fold_weights(block)
            conv = deployed_conv(block, weight, None)
        norm = slot.restore(bias)
        conv.train(block.training)
        norm.train(block.training)
        return {id(block): conv, id(slot): norm}


@dataclass
class ExpandReport:
    """What :func:`expand` did: ``expanded`` ``(conv path, spec name, geometry)``, ``left``
    ``(conv path, reason)``; ``traced``: whether pairs were found on the torch.fx graph."""

    expanded: list[tuple[str, str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)
    traced: bool = True

    def __str__(self) -> str:
        how = "torch.fx graph" if self.traced else "nn.Sequential order (the model did not trace with torch.fx)"
        lines = [f"expanded {len(self.expanded)} conv+BN layer(s), left {len(self.left)} conv(s); pairs from the {how}"]
        reasons: dict[str, int] = {}
        for _, why in self.left:
            reasons[why] = reasons.get(why, 0) + 1
        lines += [f"  left {n}: {why}" for why, n in sorted(reasons.items(), key=lambda r: -r[1])]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- finding pairs


class _Tracer(torch.fx.Tracer):
    """Keeps every conv and norm a leaf (timm's BatchNormAct2d would otherwise be traced through)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, _BatchNorm)) or super().is_leaf_module(m, qualname)


def _split(path: str) -> tuple[str, str]:
    return (path.rsplit(".", 1)[0], path.rsplit(".", 1)[1]) if "." in path else ("", path)


def find_conv_bn_pairs(model: nn.Module) -> tuple[dict[str, str], dict[str, str], bool]:
    """``({conv path: norm path}, {conv path: why not}, traced)``: convs whose output only a
    BatchNorm consumes, that BN applied once, right on it, both children of one module."""
    modules = dict(model.named_modules())
    pairs: dict[str, str] = {}
    why: dict[str, str] = {}
    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any failure to trace: fall back to the module structure
        graph = None
    if graph is not None:
        calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        for node in graph.nodes:
            if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
                continue
            users = list(node.users)
            bn = users[0] if len(users) == 1 else None
            if bn is None or bn.op != "call_module" or not isinstance(modules.get(bn.target), _BatchNorm):
                why[node.target] = "its output is not consumed by a BatchNorm alone"
            elif calls[node.target] != 1 or calls[bn.target] != 1:
                why[node.target] = "the conv or its BatchNorm is applied more than once"
            elif bn.args[0] is not node or len(bn.args) != 1 or bn.kwargs:
                why[node.target] = "its BatchNorm is called with other arguments"
            elif _split(node.target)[0] != _split(bn.target)[0]:
                why[node.target] = "the conv and its BatchNorm are children of different modules"
            else:
                pairs[node.target] = bn.target
        return _unshared(model, pairs, why), why, True
    for path, m in modules.items():
        if type(m) is nn.Sequential:  # a subclass may override forward: its order is not the dataflow
            children = list(m.named_children())
            for (cname, conv), (bname, bn) in zip(children, children[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm):
                    prefix = f"{path}." if path else ""
                    pairs[prefix + cname] = prefix + bname
    for path, m in modules.items():
        if isinstance(m, nn.Conv2d) and path not in pairs:
            why[path] = "not followed by a BatchNorm in an nn.Sequential (the model did not trace with torch.fx)"
    return _unshared(model, pairs, why), why, False


def _unshared(model: nn.Module, pairs: dict[str, str], why: dict[str, str]) -> dict[str, str]:
    """Drop pairs whose conv or BN object is registered at more than one place (shared weights)."""
    seen: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    modules = dict(model.named_modules(remove_duplicate=False))
    kept = {}
    for conv, bn in pairs.items():
        if seen[id(modules[conv])] > 1 or seen[id(modules[bn])] > 1:
            why[conv] = "the conv or its BatchNorm is shared (registered at several places)"
        else:
            kept[conv] = bn
    return kept


# ----------------------------------------------------------------------------- building


def _spec_for(block, path: str) -> BlockSpec | None:
    if isinstance(block, Mapping) and "branches" not in block:
        for pattern, spec in block.items():
            if fnmatch.fnmatchcase(path, pattern):
                return resolve_spec(spec)
        return None
    return resolve_spec(block)


def _geometry_spec(spec: BlockSpec, conv: nn.Conv2d) -> BlockSpec:
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "same" and any(d * (k - 1) % 2 for k, d in zip(conv.kernel_size, conv.dilation)):
            raise ValueError("padding='same' with an even (dilated) kernel pads asymmetrically, which a "
                             "block (it pads equally on both sides) does not reproduce")
        padding = (0, 0) if padding == "valid" else tuple(
            d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    data = spec.to_dict()
    data.update(kernel=list(conv.kernel_size), dilation=list(conv.dilation), padding=list(as_pair(padding)),
                padding_mode=conv.padding_mode, act="identity")
    return spec_from_data(data, spec.source)


def _carrier(block: RepBlock, conv: nn.Conv2d, lone: bool = False) -> int | None:
    """The branch that can carry the pretrained layer, at the window's origin: a plain conv of the
    block's full kernel (no bias) then a BatchNorm — or, for a lone biased conv, a plain biased conv
    of the full kernel with no norm (``kxk`` with ``bias: true, norm: none``)."""
    for i, (chain, info) in enumerate(zip(block.branches, block.branch_info)):
        if type(chain[0]) is not nn.Conv2d or chain[0].weight.shape != conv.weight.shape \
                or info.placement.offset != (0, 0):
            continue
        if lone and len(chain) == 1 and chain[0].bias is not None:
            return i
        if (not lone and len(chain) == 2 and isinstance(chain[1], nn.BatchNorm2d) and chain[0].bias is None
                and chain[1].affine and chain[1].track_running_stats):
            return i
    return None


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
            elif type(m) is nn.Conv2d:
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
            else:
                continue
            for later in steps[j + 1:]:  # must keep zero at zero: no biases, BNs at their initial state
                if isinstance(later, nn.Conv2d) and later.bias is not None:
                    later.bias.zero_()
                if isinstance(later, _BatchNorm) and later.affine:
                    later.bias.zero_()
            return True
    return False


def _is_zero(chain: nn.Module, in_channels: int, window: tuple[int, int], dtype, device) -> bool:
    probe = copy.deepcopy(chain)
    x = torch.randn(2, in_channels, window[0] + 2, window[1] + 2, dtype=dtype, device=device)
    with torch.no_grad():
        for train in (False, True):
            probe.train(train)
            if probe(x).abs().max().item() != 0.0:
                return False
    return True


def _norm_ok(norm: _BatchNorm) -> str | None:
    if not norm.track_running_stats or norm.running_var is None:
        return "its BatchNorm has no running statistics (cannot fold)"
    if not norm.affine:
        return "its BatchNorm has no affine parameters (affine=False), which the blocks' BNs have"
    extra = {n for n, _ in norm.named_children()}
    if extra and (type(norm) in (nn.BatchNorm2d, nn.SyncBatchNorm) or not extra <= {"drop", "act"}):
        return f"its norm {type(norm).__name__} has children {sorted(extra)} of unknown order"
    return None


def _expand_one(conv: nn.Conv2d, norm: _BatchNorm | None, spec: BlockSpec, init: str) -> RepBlock:
    """The RepBlock replacing ``conv`` (+ ``norm``; None: a lone biased conv); raises
    SpecError/ValueError with the reason."""
    lone = norm is None
    block = RepBlock(_geometry_spec(spec, conv), conv.in_channels, conv.out_channels, stride=conv.stride,
                     groups=conv.groups)
    block.to(device=conv.weight.device, dtype=conv.weight.dtype)
    i = _carrier(block, conv, lone)
    if lone and i is None:
        raise ValueError(f"the conv has a bias and no BatchNorm of its own; spec {spec.name!r} has no biased "
                         "kxk conv branch without a norm (bias: true, norm: none) to carry it")
    if i is not None and not lone:  # the carrier BN keeps the layer's eps and momentum whatever the init
        block.branches[i][1].eps = norm.eps  # (not in state dicts: a rebuilt model must get them here)
        block.branches[i][1].momentum = norm.momentum
    if init == "preserve":
        if block.norm_after is not None:
            raise ValueError(f"init='preserve': spec {spec.name!r} has a norm after the sum, which "
                             "renormalises the pretrained layer in training mode")
        if i is None:
            raise ValueError(f"init='preserve': spec {spec.name!r} has no kxk conv + BN branch of the "
                             "conv's kernel to carry its weights")
        chain = block.branches[i]
        with torch.no_grad():
            chain[0].weight.copy_(conv.weight)
            if lone:
                chain[0].bias.copy_(conv.bias)
        if not lone:
            chain[1].load_state_dict(norm.state_dict(), strict=True)
        for j, other in enumerate(block.branches):
            if j == i:
                continue
            name = block.branch_info[j].name
            if not _zero_branch(other) or not _is_zero(other, conv.in_channels, block.geometry.window,
                                                       conv.weight.dtype, conv.weight.device):
                raise ValueError(f"init='preserve': {name} ({block.branch_info[j].spec.label()}) cannot "
                                 "start at exactly zero")
    if lone and block.norm_after is not None:
        raise ValueError(f"spec {spec.name!r} has a norm after the sum, which a lone conv's layout has no "
                         "place for when folded back")
    if isinstance(norm, nn.SyncBatchNorm):  # the layer synchronised its statistics: so do the block's BNs
        block = nn.SyncBatchNorm.convert_sync_batchnorm(block)
    block.train(conv.training)
    return block


def expand(model: nn.Module, block, *, include=None, exclude=None, min_kernel: int = 3,
           init: str = "preserve") -> tuple[nn.Module, ExpandReport]:
    """A NEW model in which every plain ``Conv2d -> BatchNorm2d`` pair is a RepBlock of ``block``.

    ``block``: a spec (name, path, :class:`BlockSpec`) or a mapping ``{module-path pattern: spec}``
    (fnmatch patterns on the conv's path, first match wins; convs matching none are left).
    ``include`` / ``exclude``: fnmatch patterns (a string or a list) on the conv's path.
    ``min_kernel``: convs whose kernel is smaller on both axes are left (1x1 convs by default).
    ``init="preserve"``: the expanded model computes exactly what ``model`` computes, in eval and
    training mode (the block's kxk branch carries the conv and BN; every other branch starts at
    exactly zero, still trainable); ``init="fresh"``: the blocks as built, for training from scratch.
    ``model`` is untouched. Returns ``(new_model, ExpandReport)``.
    """
    if init not in ("preserve", "fresh"):
        raise ValueError(f"Expected init 'preserve' or 'fresh' but got {init!r}")
    include = [include] if isinstance(include, str) else include
    exclude = [exclude] if isinstance(exclude, str) else (exclude or [])
    if not (isinstance(block, Mapping) and "branches" not in block):
        resolve_spec(block)  # a bad spec fails here, once, not once per layer
    new = copy.deepcopy(model)
    pairs, why, traced = find_conv_bn_pairs(new)
    report = ExpandReport(traced=traced)
    modules = dict(new.named_modules())
    shared: dict[int, int] = {}
    for _, m in new.named_modules(remove_duplicate=False):
        shared[id(m)] = shared.get(id(m), 0) + 1
    for path, conv in list(modules.items()):
        if not isinstance(conv, nn.Conv2d):
            continue
        reason = None
        spec = None
        if include is not None and not any(fnmatch.fnmatchcase(path, p) for p in include):
            reason = "not matched by include"
        elif any(fnmatch.fnmatchcase(path, p) for p in exclude):
            reason = "matched by exclude"
        elif max(conv.kernel_size) < min_kernel:
            reason = f"kernel {conv.kernel_size[0]}x{conv.kernel_size[1]} is below min_kernel={min_kernel}"
        elif type(conv) is not nn.Conv2d:
            reason = f"a {type(conv).__name__}, not a plain nn.Conv2d"
        elif shared.get(id(conv), 0) > 1:
            reason = "the conv is shared (registered at several places)"
        elif conv.bias is not None:  # a lone conv with its bias (any BN after it stays where it is)
            spec = _spec_for(block, path)
            if spec is None:
                reason = "no pattern of the block mapping matches"
        elif path not in pairs:
            reason = why.get(path, "no BatchNorm follows it")
        else:
            spec = _spec_for(block, path)
            if spec is None:
                reason = "no pattern of the block mapping matches"
        norm = None if conv.bias is not None else modules.get(pairs.get(path, ""))
        if reason is None and norm is not None:
            reason = _norm_ok(norm)
        if reason is None:
            try:
                rep = _expand_one(conv, norm, spec, init)
            except (SpecError, ValueError, RuntimeError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason is not None:
            report.left.append((path, reason))
            continue
        parent_path, conv_name = _split(path)
        parent = modules[parent_path] if parent_path else new
        setattr(parent, conv_name, rep)
        if norm is None:
            rep.origin = ExpandedFrom(norm=None)
        else:
            _, norm_name = _split(pairs[path])
            rep.origin = ExpandedFrom(norm=norm_name)
            setattr(parent, norm_name, AbsorbedNorm(norm))
        g = rep.geometry
        report.expanded.append((path, spec.name, f"{g.in_channels}->{g.out_channels} k{g.kernel[0]}x{g.kernel[1]} "
                                                  f"s{g.stride[0]} g{g.groups}"))
    return new, report
