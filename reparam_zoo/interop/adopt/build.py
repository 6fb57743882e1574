"""The generic half of adoption: a recognised upstream block (what an adapter found) becomes a
RepBlock of a spec written for it, its weights moved step by step, its numbers checked; the
recognition helpers the adapters share; and the adopted block's origin (:class:`AdoptedFrom`), which
folds it back into its upstream's deployed form for ``fold_model(layout="original")``."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine.block import RepBlock
from reparam_zoo.engine.fastfold import fold_weights
from reparam_zoo.engine.fold import deployed_conv
from reparam_zoo.engine.kernels import as_pair
from reparam_zoo.engine.verify import TOLERANCES, relative_error, within
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.lookup import spec_from_data


class AdoptRefused(ValueError):
    """An upstream module that cannot be adopted exactly (the message says why)."""


class AdoptedBlock(nn.Sequential):
    """An adopted RepBlock (``block``) followed by the upstream block's own SE/attention and
    activation modules, under their upstream names."""


class UpstreamDeployed(nn.Module):
    """The upstream block's deployed form: its conv under the upstream's name (``rbr_reparam``, ...),
    the BN it keeps (QARepVGG) and its SE/activation modules, applied in that order — the keys the
    upstream code loads in its deploy mode."""

    def __init__(self, conv_name: str, conv: nn.Conv2d, norm_name: str | None, norm: nn.Module | None,
                 post: tuple[tuple[str, nn.Module], ...]):
        super().__init__()
        self._order = [conv_name]
        setattr(self, conv_name, conv)
        if norm_name is not None:
            setattr(self, norm_name, norm)
            self._order.append(norm_name)
        for name, module in post:
            setattr(self, name, module)
            self._order.append(name)

    def forward(self, x: Tensor) -> Tensor:
        for name in self._order:
            x = getattr(self, name)(x)
        return x


@dataclass(frozen=True)
class AdoptedFrom:
    """What an adopted RepBlock replaced (its ``origin``, see :class:`reparam_zoo.engine.fold.Origin`):
    the upstream's deployed conv name, the BN it keeps (or None) and the modules after the sum, by name."""

    upstream: str
    deploy: str
    norm: str | None
    post: tuple[tuple[str, nn.Module], ...]

    def deployed(self, block: RepBlock, parent: nn.Module) -> dict[int, nn.Module]:
        """``block`` in its upstream's deployed form (:class:`UpstreamDeployed`: the conv named as
        upstream, the kept BN, SE, act), replacing the block and, where ``parent`` is the block's
        :class:`AdoptedBlock` wrapper of upstream SE/activation modules, that wrapper too."""
        with torch.no_grad():
            norm = None
            if self.norm is not None and block.norm_after is not None:  # QARepVGG keeps its BN when deployed
                weight, bias = fold_weights(block, norm_after=False)
                norm = copy.deepcopy(block.norm_after)
            else:
                weight, bias = fold_weights(block)  # the same numbers as layout="plain"
            conv = deployed_conv(block, weight, bias)
        post = tuple((name, copy.deepcopy(m)) for name, m in self.post)
        module = UpstreamDeployed(self.deploy, conv, self.norm if norm is not None else None, norm, post)
        module.train(block.training)
        if isinstance(parent, AdoptedBlock) and parent[0] is block:
            return {id(parent): module, id(block): module}
        return {id(block): module}


@dataclass
class Part:
    """One upstream branch: its branch spec (a mapping, as in YAML) and, per step of the planned
    chain, the upstream module (or mapping of tensors) whose state fills it (``None``: no state); for
    the step of a ``group`` branch, the list of its members' parts (:func:`group_part`)."""

    spec: dict[str, Any]
    states: list[nn.Module | Mapping | list[Part] | None]


@dataclass
class Recognised:
    """What an adapter found in one upstream block: the one conv it folds into, its branches,
    an optional BN after the sum, and the modules applied after that (SE/attention, activation)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"
    branches: list[Part] = field(default_factory=list)
    norm_after: nn.Module | None = None
    post: list[tuple[str, nn.Module]] = field(default_factory=list)
    #: False where the upstream block's training-mode statistics differ from a sum of chains
    #: (the eval-mode numbers, and so the fold, are still exact)
    train_exact: bool = True
    #: the upstream's deployed conv attribute (``rbr_reparam``, ``reparam_conv``, ...) and, where its
    #: deployed form keeps the BN after the sum (QARepVGG), that BN's attribute name
    deploy: str = ""
    deploy_norm: str | None = None

    @classmethod
    def like(cls, name: str, conv: nn.Conv2d, **kw) -> "Recognised":
        """Geometry from the block's main (full-kernel) conv."""
        conv = plain_conv(conv, "the main conv")
        padding = conv.padding
        if isinstance(padding, str):
            if padding != "same":
                padding = (0, 0)
            else:
                padding = tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
        return cls(name, conv.in_channels, conv.out_channels, as_pair(conv.kernel_size), as_pair(conv.stride),
                   as_pair(padding), as_pair(conv.dilation), conv.groups, conv.padding_mode, **kw)


# ----------------------------------------------------------------------------- recognition helpers

#: activation classes whose default construction is what the spec name builds
_ACTS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish",
         nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Mish: "mish", nn.Identity: "identity"}


def plain_conv(conv: Any, what: str) -> nn.Conv2d:
    if type(conv) is not nn.Conv2d:
        raise AdoptRefused(f"{what} is a {type(conv).__name__}, not a plain nn.Conv2d")
    return conv


def norm_spec(bn: Any, what: str) -> dict[str, Any]:
    """The spec's ``norm:`` for an upstream BatchNorm (eps, momentum, affine kept)."""
    if not isinstance(bn, _BatchNorm):
        raise AdoptRefused(f"{what} is a {type(bn).__name__}, not a BatchNorm")
    if not bn.track_running_stats or bn.running_var is None:
        raise AdoptRefused(f"{what} has no running statistics and cannot fold")
    extra = [n for n, m in bn.named_children() if not isinstance(m, nn.Identity)]
    if extra:  # timm's BatchNormAct2d applies drop/act inside the norm
        raise AdoptRefused(f"{what} applies {', '.join(extra)} after normalising (not linear)")
    return {"type": "bn", "eps": float(bn.eps), "momentum": bn.momentum, "affine": bool(bn.affine)}


def conv_part(block: Recognised, conv: Any, bn: Any, what: str) -> Part:
    """A conv (+ BN) branch: ``kxk`` when it has the block's kernel, else ``conv`` of its own kernel."""
    conv = plain_conv(conv, f"{what} conv")
    if conv.padding_mode != block.padding_mode and conv.padding != (0, 0):
        raise AdoptRefused(f"{what} pads with {conv.padding_mode!r}, the block with {block.padding_mode!r}")
    if as_pair(conv.stride) != block.stride or conv.groups != block.groups or conv.in_channels != block.in_channels:
        raise AdoptRefused(f"{what} conv has stride {conv.stride}, groups {conv.groups}, {conv.in_channels} "
                           f"inputs; the block {block.stride}, {block.groups}, {block.in_channels}")
    kernel, dilation = as_pair(conv.kernel_size), as_pair(conv.dilation)
    if kernel == block.kernel and dilation == block.dilation:
        spec: dict[str, Any] = {"type": "kxk"}
    else:
        spec = {"type": "conv", "kernel": list(kernel), "dilation": list(dilation)}
    if conv.bias is not None:
        spec["bias"] = True
    spec["norm"] = "none" if bn is None else norm_spec(bn, f"{what} BN")
    return Part(spec, [conv] if bn is None else [conv, bn])


def identity_part(bn: Any, what: str) -> Part:
    """The identity branch: a BN on the input (``bn=None``: the bare identity)."""
    if bn is None:
        return Part({"type": "identity", "norm": "none"}, [None])
    return Part({"type": "identity", "norm": norm_spec(bn, what)}, [None, bn])


def group_part(parts: list[Part], factors: list[float], scale: Tensor | None) -> Part:
    """A ``group`` branch: the members ``parts``, each times its constant factor, summed, then times the
    per-channel ``scale`` (a layer scale's values, one per channel in any shape; ``None``: no factor)."""
    spec: dict[str, Any] = {"type": "group", "norm": "none" if scale is None else "scale",
                            "branches": [p.spec for p in parts]}
    if any(f != 1 for f in factors):
        spec["factors"] = [float(f) for f in factors]
    return Part(spec, [list(parts)] + ([] if scale is None else [{"weight": scale.detach().reshape(-1)}]))


def is_identity(module: Any) -> bool:
    return module is None or isinstance(module, nn.Identity)


def seq_conv_bn(module: nn.Module, what: str) -> tuple[nn.Module, nn.Module]:
    """The research repos' ``conv_bn``: an ``nn.Sequential`` with children ``conv`` and ``bn``."""
    children = dict(module.named_children()) if module is not None else {}
    if set(children) != {"conv", "bn"}:
        raise AdoptRefused(f"{what} has children {sorted(children)}, expected conv and bn")
    return children["conv"], children["bn"]


# ----------------------------------------------------------------------------- building


def _act_and_post(post: list[tuple[str, nn.Module]]) -> tuple[str, list[tuple[str, nn.Module]]]:
    kept = [(n, m) for n, m in post if not isinstance(m, nn.Identity)]
    if not kept:
        return "identity", []
    if len(kept) == 1:
        m = kept[0][1]
        if type(m) in _ACTS:
            return _ACTS[type(m)], []
        if type(m) is nn.GELU and m.approximate == "none":
            return "gelu", []
    return "identity", kept


def build_adopted(found: Recognised, upstream: nn.Module) -> nn.Module:
    """The RepBlock (wrapped with its post modules where there are any) carrying ``upstream``'s weights."""
    act, post = _act_and_post(found.post)
    data = {"name": found.name, "kernel": list(found.kernel), "dilation": list(found.dilation),
            "padding": list(found.padding), "padding_mode": found.padding_mode, "act": act,
            "branches": [p.spec for p in found.branches]}
    if found.norm_after is not None:
        data["norm_after"] = norm_spec(found.norm_after, "the BN after the sum")
    try:
        spec = spec_from_data(data, f"<adopted {found.name}>")
        block = RepBlock(spec, found.in_channels, found.out_channels, stride=found.stride, groups=found.groups)
    except SpecError as exc:
        raise AdoptRefused(f"its branches do not make a foldable block: {exc}") from None
    ref = next((t for t in (*upstream.parameters(), *upstream.buffers()) if t.is_floating_point()), None)
    if ref is not None:
        block.to(device=ref.device, dtype=ref.dtype)
    if len(block.branches) != len(found.branches):
        raise AdoptRefused(f"planned {len(block.branches)} branches for {len(found.branches)} upstream ones")
    for i, (chain, part) in enumerate(zip(block.branches, found.branches)):
        _load_chain(chain, part, f"branches.{i}")
    if found.norm_after is not None:
        _load(block.norm_after, found.norm_after, "norm_after")
    block.origin = AdoptedFrom(type(upstream).__name__, found.deploy, found.deploy_norm, tuple(found.post))
    module: nn.Module = block
    if post:
        module = AdoptedBlock(OrderedDict([("block", block), *post]))
    module.train(upstream.training)
    return module


def _load_chain(chain: nn.Module, part: Part, where: str) -> None:
    """A branch's chain from its part, step by step; a group's step from its members' parts, chain by chain."""
    if len(chain) != len(part.states):
        raise AdoptRefused(f"{where} plans {len(chain)} steps, the adapter gave {len(part.states)} states")
    for j, (step, src) in enumerate(zip(chain, part.states)):
        if not isinstance(src, list):
            _load(step, src, f"{where}.{j}")
            continue
        members = getattr(step, "branches", None)
        if not isinstance(members, nn.ModuleList) or len(members) != len(src):
            raise AdoptRefused(f"{where}.{j}: the step holds {len(members or ())} member chains, the adapter gave "
                               f"{len(src)} parts")
        for k, (member, member_part) in enumerate(zip(members, src)):
            _load_chain(member, member_part, f"{where}.{j}.branches.{k}")


def _load(step: nn.Module, src: nn.Module | Mapping | None, where: str) -> None:
    want = step.state_dict()
    if src is None:
        if want:
            raise AdoptRefused(f"{where}: the step has state ({', '.join(want)}) but the upstream has none")
        return
    state = dict(src) if isinstance(src, Mapping) else src.state_dict()
    if set(state) != set(want):
        raise AdoptRefused(f"{where}: upstream state {sorted(state)} does not match the step's {sorted(want)}")
    for k, v in state.items():
        if v.shape != want[k].shape:
            raise AdoptRefused(f"{where}.{k}: upstream shape {tuple(v.shape)}, step {tuple(want[k].shape)}")
    step.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- checking

def check_adopted(upstream: nn.Module, adopted: nn.Module, found: Recognised) -> None:
    """Run both on one float64 input (eval mode, and train mode where exact); refuse on a difference."""
    a, b = copy.deepcopy(upstream).double(), copy.deepcopy(adopted).double()
    gen = torch.Generator().manual_seed(0)
    (ph, pw), (sh, sw) = found.padding, found.stride
    wh = found.dilation[0] * (found.kernel[0] - 1) + 1 - 2 * ph
    ww = found.dilation[1] * (found.kernel[1] - 1) + 1 - 2 * pw
    x = torch.randn(2, found.in_channels, max(wh, 1) + 3 * sh, max(ww, 1) + 3 * sw, generator=gen,
                    dtype=torch.float64, device=next((t.device for t in b.parameters()), None))
    for train in ((False, True) if found.train_exact else (False,)):
        a.train(train)
        b.train(train)
        with torch.no_grad():
            ya, yb = a(x), b(x)
        if ya.shape != yb.shape:
            raise AdoptRefused(f"the adopted block gives shape {tuple(yb.shape)}, the upstream {tuple(ya.shape)}")
        rel = relative_error(yb, ya)
        if not within("adopt", rel):
            mode = "train" if train else "eval"
            raise AdoptRefused(f"the adopted block differs from the upstream block in {mode} mode "
                               f"(relative error {rel:.2e} > {TOLERANCES['adopt']:.0e})")
