"""Checkpoints with a ``reparam_zoo`` header, and the conversions that write or read them.

Two header formats, both ``{"reparam_zoo": header, "state_dict": ...}``:

* ``mode: deploy``: a network spec folded into its deployed form (:func:`save_deployed`); it loads
  into ``build_model(..., deployed=True)`` with ``strict=True``;
* ``mode: expanded``: a user's model whose conv+BN layers became RepBlocks (:func:`save_expanded`);
  the header records how to rebuild it (:func:`rebuild_expanded`) and :func:`fold_expanded` folds it
  back into the ORIGINAL model's classes and keys (a bare state dict).

:func:`adopt_checkpoint` and :func:`fold_adopted` fold a model's own train-time checkpoint (its
upstream re-parameterized blocks adopted) into the upstream's deployed keys. Everything refused
here is a one-line :class:`CheckpointError`, ``ModelError`` or ``SpecError``; the command line
(``reparam-zoo convert / export / expand``) parses, calls these and prints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.nets import NetSpec, build_model, load_net
from reparam_zoo.engine.verify import relative_error, within
from reparam_zoo.interop.adopt import AdoptReport, adopt
from reparam_zoo.interop.checkpoints import CheckpointError, load_checkpoint, read_file, read_state
from reparam_zoo.interop.expand import ExpandReport, expand
from reparam_zoo.interop.user_models import build_user_model, load_weights
from reparam_zoo.outputs import save_torch
from reparam_zoo.spec.lookup import resolve_spec, spec_from_data
from reparam_zoo.spec.reader import parse_yaml
from reparam_zoo.spec.schema import BlockSpec

#: key of the header in a checkpoint dict
HEADER = "reparam_zoo"
#: ``mode`` of a deployed checkpoint (:func:`save_deployed`)
DEPLOY = "deploy"
#: ``mode`` of an expanded checkpoint (:func:`save_expanded`)
EXPANDED = "expanded"
#: the input of the equality checks unless told (N, C, H, W)
INPUT_SHAPE = (2, 3, 64, 64)
#: classifier weights whose first dimension is the number of classes
CLASS_KEYS = ("head.weight", "linear.weight", "fc.weight", "head.fc.weight")


def read_header(raw) -> dict | None:
    """The ``reparam_zoo`` header of a loaded checkpoint (:func:`read_file`), or None: a bare state
    dict, another format, a header that is not a mapping."""
    header = raw.get(HEADER) if isinstance(raw, dict) else None
    return header if isinstance(header, dict) else None


def header_mode(raw) -> str | None:
    """``deploy``, ``expanded`` (or whatever the header says), or None without a header."""
    header = read_header(raw)
    return header.get("mode") if header else None


def infer_classes(state: dict) -> int | None:
    """The number of classes of the classifier head a state dict holds, or None."""
    for key in CLASS_KEYS:
        if key in state and state[key].dim() >= 1:
            return int(state[key].shape[0])
    return None


def _save(path: str | Path, header: dict, module: nn.Module) -> None:
    save_torch({HEADER: header, "state_dict": module.state_dict()}, path)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0]


# ------------------------------------------------------------------ deployed network specs

def model_from_checkpoint(net: str | Path | NetSpec, checkpoint: str | None = None, *, raw=None,
                          block: str | None = None, num_classes: int | None = None, in_channels: int = 3,
                          from_format: str = "reparam_zoo",
                          deployed_ok: bool = True) -> tuple[NetSpec, nn.Module, bool]:
    """``(net, model, deployed)`` a checkpoint describes: a deployed reparam_zoo checkpoint loads into
    the plain network (strict); anything else into the training network via the ``from_format``
    adapter. ``raw``: the checkpoint already read; no checkpoint: random weights. The classes come
    from ``num_classes``, else the checkpoint's head, else 1000."""
    net = load_net(net)
    if raw is None and checkpoint:
        raw = read_file(checkpoint)
    state = read_state(raw, checkpoint) if checkpoint else {}
    num_classes = num_classes or infer_classes(state) or 1000
    if header_mode(raw) == DEPLOY:
        if not deployed_ok:
            raise CheckpointError(f"{checkpoint} is already a deployed checkpoint")
        model = build_model(net, num_classes, block=block, in_channels=in_channels, deployed=True)
        load_checkpoint(model, state, source=checkpoint)
        return net, model, True
    model = build_model(net, num_classes, block=block, in_channels=in_channels)
    if checkpoint:
        load_checkpoint(model, state, format=from_format, source=checkpoint)
    return net, model, False


def check_fold(model: nn.Module, folded: nn.Module, shape: tuple[int, ...]) -> None:
    """The folded network computes what the loaded one computes (eval, float32, a random input);
    NaN/inf weights or outputs and any relative difference above TOLERANCES['convert'] refuse the conversion."""
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"the weights have NaN/inf values in {len(bad)} tensor(s), e.g. {bad[0]}; "
                              "nothing written")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model(x), folded(x)
    if not bool(torch.isfinite(want).all() and torch.isfinite(got).all()):
        raise CheckpointError("the network gives NaN/inf outputs with these weights; nothing written")
    rel = relative_error(got, want)
    if not within("convert", rel):
        raise CheckpointError(f"the folded network differs from the loaded one by {rel:.1e} (relative); "
                              "nothing written")


def fold_checked(net: NetSpec, model: nn.Module, in_channels: int = 3) -> nn.Module:
    """``model`` (of ``net``) folded, after :func:`check_fold` on an input of the net's size."""
    folded = fold_model(model.eval())
    check_fold(model, folded, (2, in_channels, net.input_size, net.input_size))
    return folded


def save_deployed(path: str | Path, folded: nn.Module, net: NetSpec, *, block: str | None = None,
                  in_channels: int = 3) -> dict:
    """Write ``folded`` (a deployed network of ``net``, ``block`` replacing its block) with a
    ``mode: deploy`` header: the net and block specs as YAML, their sha256, classes, input channels.
    Returns the header."""
    block_yaml = resolve_spec(block or net.block).to_yaml() if (block or net.block) else ""
    net_yaml = yaml.safe_dump(net.model_dump(mode="json"), sort_keys=False)
    header = {"mode": DEPLOY, "net": net_yaml, "block": block_yaml,
              "spec_sha256": hashlib.sha256((net_yaml + block_yaml).encode()).hexdigest(),
              "num_classes": int(folded.head.out_features), "in_channels": in_channels}
    _save(path, header, folded)
    return header


# ------------------------------------------------------------------ a user's model, expanded and back

@dataclass(frozen=True)
class Agreement:
    """How far a model's outputs are from a reference's (eval, one seed-0 normal input)."""

    rel: float
    input_shape: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """Within TOLERANCES['expand'] (an expansion, its fold back, a fold of adopted blocks)."""
        return within("expand", self.rel)


def agreement(got: nn.Module, want: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> Agreement:
    """:class:`Agreement` of ``got`` with ``want`` on ``input_shape``; a model that does not run on
    it raises its own RuntimeError."""
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rel = relative_error(got(x), want(x))
    return Agreement(rel, tuple(x.shape))


def save_expanded(path: str | Path, expanded: nn.Module, report: ExpandReport, *, model: str, spec: BlockSpec,
                  num_classes: int | None = None, include: list[str] | None = None,
                  exclude: list[str] | None = None, min_kernel: int = 3,
                  input_shape: tuple[int, ...] = INPUT_SHAPE) -> dict:
    """Write ``expanded`` (``model``, a user model name, expanded by ``spec`` with these options) with
    a ``mode: expanded`` header from which :func:`rebuild_expanded` builds it again. Returns the header."""
    header = {"mode": EXPANDED, "model": model, "block": spec.to_yaml(), "num_classes": num_classes,
              "include": include, "exclude": exclude, "min_kernel": min_kernel,
              "input_shape": list(input_shape), "expanded": [p for p, _, _ in report.expanded]}
    _save(path, header, expanded)
    return header


def rebuild_expanded(header: dict, model: str | None = None) -> tuple[nn.Module, nn.Module, ExpandReport]:
    """``(original, expanded, report)`` an expanded checkpoint's header describes (random weights);
    ``model`` instead of the header's user model name."""
    if not isinstance(header.get("model"), str) and not model or not isinstance(header.get("block"), str):
        raise CheckpointError("the checkpoint's reparam_zoo header lacks the model or the block it was expanded with")
    original = build_user_model(model or header["model"], header.get("num_classes"))
    spec = spec_from_data(parse_yaml(header["block"], "<checkpoint header>"), "<checkpoint header>")
    expanded, report = expand(original, spec, include=header.get("include"), exclude=header.get("exclude"),
                              min_kernel=header.get("min_kernel", 3), init="fresh")
    return original, expanded, report


def fold_expanded(raw: dict, source: str, model: str | None = None) -> tuple[nn.Module, Agreement]:
    """An expanded checkpoint (``raw``, read from ``source``) folded back into the original model:
    ``(original model with the folded weights, its agreement with the expanded one)``."""
    header = read_header(raw) or {}
    original, expanded, report = rebuild_expanded(header, model)
    if "expanded" in header and [p for p, _, _ in report.expanded] != header["expanded"]:
        raise CheckpointError("rebuilding the expanded model gave other layers than the checkpoint's "
                              "(another version of the model or of reparam_zoo?)")
    state = read_state(raw, source)
    missing = [k for k in expanded.state_dict() if k not in state]
    unexpected = [k for k in state if k not in expanded.state_dict()]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit the rebuilt expanded model", unexpected, missing)
    expanded.load_state_dict(state, strict=True)
    expanded.eval()
    try:
        original.load_state_dict(fold_model(expanded, layout="original").state_dict(), strict=True)
        folded = original.eval()
        return folded, agreement(folded, expanded, header.get("input_shape", INPUT_SHAPE))
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"folding {source} back failed: {_first_line(exc)}") from None


# ------------------------------------------------------------------ a model's own re-parameterized blocks

def adopt_checkpoint(model: str, checkpoint: str,
                     num_classes: int | None = None) -> tuple[nn.Module, nn.Module, AdoptReport]:
    """``(model, adopted, report)``: the user model ``model`` with its own train-time ``checkpoint``
    (strict, eval) and a copy in which its re-parameterized blocks are adopted (:func:`adopt`)."""
    built = build_user_model(model, num_classes)
    load_weights(built, checkpoint)
    built.eval()
    adopted, report = adopt(built)
    return built, adopted, report


def fold_adopted(model: nn.Module, adopted: nn.Module,
                 input_shape: tuple[int, ...] = INPUT_SHAPE) -> tuple[nn.Module, Agreement]:
    """``adopted`` folded into its upstream's deployed form (``layout="original"``: ``rbr_reparam``,
    ``reparam_conv``, ...) and its agreement with ``model``."""
    try:
        folded = fold_model(adopted, layout="original")
        return folded, agreement(folded, model, input_shape)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"folding failed: {_first_line(exc)}") from None
