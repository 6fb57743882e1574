"""Checkpoint import: the loading engine.

``load_checkpoint(model, state_dict_or_path, format=...)`` maps every key of a foreign
checkpoint onto a reparam_zoo model or fails with a report listing the keys it could not
map and the model keys it could not fill: never a silent partial load. The formats are
registered in :data:`FORMATS`: ``reparam_zoo`` (its own keys) here, each research repo's key
renames in its upstream's file of :mod:`reparam_zoo.interop.upstream` (beside the upstream's
adapters; the shared rename machinery is :mod:`reparam_zoo.interop.checkpoints.renames`), which
:mod:`reparam_zoo.interop` imports.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from reparam_zoo.registry import Registry

#: format name -> adapter(state_dict, model) -> state dict in the model's own keys
FORMATS: Registry[Callable[[dict, nn.Module], dict]] = Registry("checkpoint format")
PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that does not map onto the model; lists unmapped and missing keys.

    ``unmapped``: checkpoint keys; ``missing``: model keys; ``names``: each missing model key's name in
    the checkpoint's format (None where the format has none), shown first with the model's key beside it."""

    def __init__(self, message: str, unmapped: list[str] = (), missing: list[str] = (),
                 names: Mapping[str, str | None] | None = None):
        self.unmapped, self.missing = sorted(unmapped), sorted(missing)
        parts = [message]
        if self.unmapped:
            parts.append(f"{len(self.unmapped)} checkpoint key(s) not mapped: {', '.join(self.unmapped[:20])}"
                         + (" ..." if len(self.unmapped) > 20 else ""))
        if self.missing:
            shown = ", ".join(_missing_label(k, names) for k in self.missing[:20])
            what = "key(s) missing from the checkpoint" if names is not None else "model key(s) missing"
            parts.append(f"{len(self.missing)} {what}: {shown}" + (" ..." if len(self.missing) > 20 else ""))
        super().__init__("; ".join(parts))


def _missing_label(key: str, names: Mapping[str, str | None] | None) -> str:
    if names is None:
        return key
    name = names.get(key)
    if name is None:
        return f"model key {key} (no name for it in the checkpoint's format)"
    return key if name == key else f"{name} (model key {key})"


class Mapped(dict):
    """A format adapter's answer: the state dict in the model's keys, and where each key comes from in
    the checkpoint's own naming, for the reports: ``origin`` (model key -> the checkpoint key mapped
    onto it) and ``expect(model_key)`` (the key the format would hold for a model key the checkpoint
    lacks: the format's renames run backwards; None where it has no name for it)."""

    def __init__(self, state: Mapping, origin: Mapping[str, str] | None = None,
                 expect: Callable[[str], str | None] | None = None):
        super().__init__(state)
        self.origin = dict(origin or {})
        self.expect = expect or (lambda key: None)

    def checkpoint_key(self, key: str) -> str | None:
        """``key`` (a model key) as the checkpoint names it (or would name it), or None."""
        return self.origin.get(key) or self.expect(key)


def register_format(name: str):
    """A decorator registering ``adapter(state_dict, model) -> state_dict`` in :data:`FORMATS` under
    ``name`` (raises on duplicates): ``FORMATS.register(name)``."""
    return FORMATS.register(name)


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes; two keys that become
    one (``module.w`` and ``w``) are ambiguous and refused."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for original, value in state.items():
        key, changed = original, True
        while changed:
            changed = False
            for p in PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        if key in out:
            raise CheckpointError(f"keys {origin[key][:100]!r} and {original[:100]!r} both mean {key[:100]!r} once "
                                  "the DDP/compile prefixes are removed: ambiguous")
        out[key], origin[key] = value, original
    return out


def read_file(path) -> object:
    """What a checkpoint file holds, read safely: ``.safetensors`` with safetensors, anything else
    with ``torch.load(weights_only=True)`` (tensors and plain containers only; no code runs).
    Every failure is a one-line :class:`CheckpointError` naming the file."""
    path = Path(path)
    name = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
    try:
        if not path.exists():
            raise CheckpointError(f"{name}: no such checkpoint file")
        if path.is_dir():
            raise CheckpointError(f"{name}: is a directory, not a checkpoint file")
        if not path.is_file():  # a device, a FIFO: reading it might never end
            raise CheckpointError(f"{name}: not a regular file")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{name}: the file is empty")
    except OSError as exc:  # a name too long, a permission problem
        raise CheckpointError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad headers
            raise CheckpointError(f"{name}: not a readable safetensors file ({_first_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: not our one line
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "Unsupported class" in str(exc):
            raise CheckpointError(
                f"{name}: refused: it holds Python objects other than tensors and plain containers, which "
                "would run code when loaded (torch.load(weights_only=True)); save model.state_dict() "
                "instead") from None
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - torch.load on arbitrary bytes raises many types
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint: truncated, or not a torch.save "
                              f"file ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def read_state(state_dict_or_path, source: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict (names -> tensors) from a mapping or a file (see :func:`read_file`); common
    wrappers (``state_dict``, ``model``) and DDP/compile prefixes removed. Anything else is refused
    with a one-line :class:`CheckpointError` (naming ``source``, the file it came from, if given)."""
    if isinstance(state_dict_or_path, (str, Path)):
        source = str(state_dict_or_path)[:200]
        state = read_file(state_dict_or_path)
    else:
        state = state_dict_or_path
    source = source or "the checkpoint"
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: holds a {type(state).__name__}, not a state dict (a mapping of "
                              "names to tensors)")
    for wrapper in ("state_dict", "model"):  # common checkpoint layouts
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    bad = [(k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)
           or v.layout != torch.strided or v.is_meta or v.is_nested]  # sparse, meta, nested: no weights
    if bad:
        k, v = bad[0]
        what = (f"a {v.layout} tensor" if isinstance(v, torch.Tensor) and v.layout != torch.strided else
                "a meta or nested tensor" if isinstance(v, torch.Tensor) else f"a {type(v).__name__}")
        raise CheckpointError(f"{source}: not a state dict: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} "
                              f"without a dense tensor under a string name, e.g. {str(k)[:60]!r} holds {what}")
    return strip_prefixes(state)


def load_checkpoint(model: nn.Module, state_dict_or_path, format: str = "reparam_zoo", *,
                    source: str | None = None) -> nn.Module:
    """Load a checkpoint into ``model`` (in place, strictly); returns ``model``.

    Only :class:`CheckpointError` leaves it: unreadable files, payloads that are not state dicts,
    unknown formats, keys that do not map and shapes that differ are all one-line errors."""
    if format not in FORMATS:
        raise CheckpointError(FORMATS.unknown_message(format))
    if isinstance(state_dict_or_path, (str, Path)):
        source = str(state_dict_or_path)[:200]
    state = read_state(state_dict_or_path, source)
    try:
        adapted = FORMATS.get(format)(state, model)
    except CheckpointError:
        raise
    except (KeyError, ValueError, IndexError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{source + ': ' if source else ''}the {format} adapter cannot map this checkpoint "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in adapted]
    unexpected = [k for k in adapted if k not in own]
    where = f"{source}: " if source else ""
    known = adapted.checkpoint_key if isinstance(adapted, Mapped) else None
    if missing or unexpected:
        names = {k: known(k) for k in missing} if known else None
        raise CheckpointError(f"{where}the {format} checkpoint does not fit the model"
                              f"{_guess(state, model, format)}",
                              [(known and known(k)) or k for k in unexpected], missing, names)
    for k, v in adapted.items():
        label = _label(k, known)
        if own[k].shape != v.shape:
            raise CheckpointError(f"{where}{label}: the checkpoint has shape {tuple(v.shape)}, "
                                  f"the model {tuple(own[k].shape)}")
        if _is_float_count(k, v, own[k]):
            _check_count(v, f"{where}{label}")
            continue  # torch's load_state_dict copies it into the int64 buffer, as here
        if v.is_floating_point() != own[k].is_floating_point() or v.is_complex():
            raise CheckpointError(f"{where}{label}: the checkpoint holds {v.dtype}, the model {own[k].dtype}")
    try:
        model.load_state_dict(adapted, strict=True)
    except RuntimeError as exc:  # a tensor torch cannot copy into the parameter
        raise CheckpointError(f"{where}loading failed: {_first_line(exc)}") from None
    return model


def _label(key: str, known: Callable[[str], str | None] | None) -> str:
    """A model key as the reports name it: the checkpoint's key first, the model's beside it."""
    name = known(key) if known else None
    return key if name is None or name == key else f"{name} (model key {key})"


def _is_float_count(key: str, value: torch.Tensor, own: torch.Tensor) -> bool:
    """A BatchNorm's ``num_batches_tracked`` saved as a float tensor (torch's loader accepts it)."""
    return key.rsplit(".", 1)[-1] == "num_batches_tracked" and own.dtype == torch.int64 \
        and value.is_floating_point()


def _check_count(value: torch.Tensor, label: str) -> None:
    """A float ``num_batches_tracked`` must be a whole, finite number that int64 holds."""
    v = value.detach().double()
    if not bool(torch.isfinite(v).all()) or not bool((v == v.round()).all()) or bool((v.abs() >= 2.0 ** 63).any()):
        shown = v.flatten()[0].item() if v.numel() == 1 else f"a {tuple(v.shape)} tensor"
        raise CheckpointError(f"{label}: a batch count must be a whole finite number (the model stores it as "
                              f"int64), the checkpoint holds {shown} ({value.dtype})")


def _guess(state: dict, model: nn.Module, tried: str) -> str:
    """' (it looks like a <format> checkpoint)' when another adapter maps it completely."""
    own = set(model.state_dict())
    for name, adapter in FORMATS.items():
        if name == tried:
            continue
        try:
            if set(adapter(state, model)) == own:
                return f" (it looks like a {name!r} checkpoint: use format={name!r} / --from {name})"
        except (CheckpointError, KeyError, ValueError, IndexError, TypeError, RuntimeError):
            continue
    return ""


@FORMATS.register("reparam_zoo")
def _own(state: dict, model: nn.Module) -> dict:
    return Mapped(state, expect=lambda key: key)  # the checkpoint's keys are the model's


__all__ = ["FORMATS", "CheckpointError", "Mapped", "load_checkpoint", "read_file", "read_state", "register_format",
           "strip_prefixes"]
