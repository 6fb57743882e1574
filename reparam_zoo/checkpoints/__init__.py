"""Checkpoint import: key-format adapters from the research repos, one file each.

``load_checkpoint(model, state_dict_or_path, format=...)`` maps every key of a foreign
checkpoint onto a reparam_zoo model or fails with a report listing the keys it could not
map and the model keys it could not fill: never a silent partial load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..registry import Registry

#: format name -> adapter(state_dict, model) -> state dict in the model's own keys
FORMATS: Registry[Callable[[dict, nn.Module], dict]] = Registry("checkpoint format")
PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that does not map onto the model; lists unmapped and missing keys."""

    def __init__(self, message: str, unmapped: list[str] = (), missing: list[str] = ()):
        self.unmapped, self.missing = sorted(unmapped), sorted(missing)
        parts = [message]
        if self.unmapped:
            parts.append(f"{len(self.unmapped)} checkpoint key(s) not mapped: {', '.join(self.unmapped[:20])}"
                         + (" ..." if len(self.unmapped) > 20 else ""))
        if self.missing:
            parts.append(f"{len(self.missing)} model key(s) missing: {', '.join(self.missing[:20])}"
                         + (" ..." if len(self.missing) > 20 else ""))
        super().__init__("; ".join(parts))


def register_format(name: str):
    """Register ``adapter(state_dict, model) -> state_dict`` under ``name`` (raises on duplicates)."""

    def wrap(fn):
        FORMATS.register(name, fn)
        return fn

    return wrap


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def read_state(state_dict_or_path) -> dict[str, torch.Tensor]:
    """A state dict from a mapping or a file: ``.safetensors`` (safetensors) or a torch file
    (``torch.load(weights_only=True)`` only)."""
    if isinstance(state_dict_or_path, Mapping):
        state = dict(state_dict_or_path)
    else:
        path = Path(state_dict_or_path)
        if not path.is_file():
            raise CheckpointError(f"no such checkpoint file: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # common checkpoint layouts
        if isinstance(state.get(wrapper), Mapping):
            state = dict(state[wrapper])
    return strip_prefixes(state)


def load_checkpoint(model: nn.Module, state_dict_or_path, format: str = "reparam_zoo") -> nn.Module:
    """Load a checkpoint into ``model`` (in place, strictly); returns ``model``."""
    state = read_state(state_dict_or_path)
    adapted = FORMATS.get(format)(state, model)
    own = model.state_dict()
    missing = [k for k in own if k not in adapted]
    unexpected = [k for k in adapted if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"the {format} checkpoint does not fit this model{_guess(state, model, format)}",
                              unexpected, missing)
    for k, v in adapted.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{k}: the checkpoint has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}")
    model.load_state_dict(adapted, strict=True)
    return model


def _guess(state: dict, model: nn.Module, tried: str) -> str:
    """' (it looks like a <format> checkpoint)' when another adapter maps it completely."""
    own = set(model.state_dict())
    for name, adapter in FORMATS.items():
        if name == tried:
            continue
        try:
            if set(adapter(state, model)) == own:
                return f" (it looks like a {name!r} checkpoint: use format={name!r} / --from {name})"
        except (CheckpointError, KeyError, ValueError):
            continue
    return ""


@register_format("reparam_zoo")
def _own(state: dict, model: nn.Module) -> dict:
    return state


from . import acnet, dbb, mobileone, repvgg, timm  # noqa: E402,F401  (register the formats)

__all__ = ["FORMATS", "CheckpointError", "load_checkpoint", "read_state", "register_format", "strip_prefixes"]
