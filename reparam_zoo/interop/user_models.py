"""The user's own models by name, for the CLI: ``torchvision:NAME``, ``timm:NAME`` or
``path/to/file.py:factory`` (a function returning an ``nn.Module``). Nothing is downloaded:
torchvision and timm models are built with random weights, and ``--weights FILE`` loads the user's."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from reparam_zoo.errors import SpecError
from reparam_zoo.interop.checkpoints import load_checkpoint


class ModelError(ValueError):
    """A ``--model`` argument that cannot be built (the message is one line)."""


def build_user_model(arg: str, num_classes: int | None = None) -> nn.Module:
    """Build ``torchvision:NAME``, ``timm:NAME`` or ``FILE.py:FACTORY`` (random weights)."""
    kind, sep, name = arg.partition(":")
    if not sep or not name:
        raise ModelError(f"Expected --model torchvision:NAME, timm:NAME or FILE.py:FACTORY but got {arg!r}")
    kw = {} if num_classes is None else {"num_classes": num_classes}
    if kind == "torchvision":
        try:
            import torchvision
        except ImportError as exc:
            raise ModelError(f"torchvision is not importable ({exc}); pip install torchvision matching your torch") from None
        if name not in torchvision.models.list_models():
            raise ModelError(f"torchvision has no model {name!r}")
        return torchvision.models.get_model(name, weights=None, **kw)
    if kind == "timm":
        try:
            import timm
        except ImportError as exc:
            raise ModelError(f"timm is not importable ({exc}); pip install timm") from None
        if not timm.is_model(name):
            raise ModelError(f"timm has no model {name!r}")
        return timm.create_model(name, pretrained=False, **kw)
    path = Path(kind)
    if path.suffix != ".py" or not path.is_file():
        raise ModelError(f"{arg}: expected torchvision:NAME, timm:NAME or an existing FILE.py:FACTORY")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: report, do not crash
        raise ModelError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelError(f"{path}: no callable {name!r}")
    try:
        model = factory(**kw)
    except Exception as exc:  # noqa: BLE001 - the user's code: report, do not crash
        hint = " (give the factory a num_classes argument, or leave --num-classes out)" if kw else ""
        raise ModelError(f"{path}:{name}({', '.join(f'{k}={v}' for k, v in kw.items())}) failed: "
                         f"{type(exc).__name__}: {exc}{hint}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{path}:{name} returned a {type(model).__name__}, not an nn.Module")
    return model


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Load the user's checkpoint into their own model, strictly (``module.`` prefixes dropped;
    a one-line :class:`CheckpointError` for anything that does not fit)."""
    return load_checkpoint(model, path)


@dataclass
class UserModel:
    """A user's model as the subject of ``compare``: built fresh for every run, the control as it
    is (``block`` None or ``"plain"``), every other block expanded into it (``rz.expand``: from the
    user's ``weights`` with ``init="preserve"``, else ``init="fresh"``)."""

    arg: str
    input_size: int
    weights: str | None = None

    @property
    def name(self) -> str:
        return self.arg

    def build(self, block, num_classes: int) -> nn.Module:
        from reparam_zoo.interop.expand import expand

        model = build_user_model(self.arg, None if self.weights else num_classes)
        if self.weights:
            load_weights(model, self.weights)
        if block is None or block == PLAIN:
            return model
        new, report = expand(model, block, init="preserve" if self.weights else "fresh")
        if not report.expanded:
            reasons = sorted({why for _, why in report.left})
            raise SpecError(f"block {block if isinstance(block, str) else block.name!r} expands no layer of "
                            f"{self.arg} ({'; '.join(reasons[:3])})")
        return new


#: the label of the unexpanded model in ``compare --model``
PLAIN = "plain"
