"""Adopt upstream re-parameterized blocks: any ``nn.Module`` in, the same network out with every
recognised upstream block replaced by an equal :class:`~reparam_zoo.RepBlock` carrying its weights.

This package is the adopt engine: the registry of adapters (:data:`ADOPTERS`), the walk over a
model and the report. Recognition is by structure (class name, children, parameter shapes); no
upstream package is imported. Each upstream's adapters live in its file of
:mod:`reparam_zoo.interop.upstream` (beside its checkpoint key renames), registered with
:func:`register_adopter` (duplicates refused); :mod:`reparam_zoo.interop` imports them all. An
adapter only *describes* what it found (:class:`Recognised`: the block's geometry and its branches
as spec mappings plus the upstream modules that hold each step's state); building the block, moving
the weights and checking the numbers is generic (:mod:`reparam_zoo.interop.adopt.build`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from reparam_zoo.engine.block import RepBlock
from reparam_zoo.interop.adopt.build import AdoptRefused, Part, Recognised, build_adopted, check_adopted
from reparam_zoo.registry import Registry

log = logging.getLogger("reparam_zoo")


@dataclass(frozen=True)
class Adopter:
    """A registered adapter: the upstream class names it looks at and its recogniser."""

    name: str
    classes: tuple[str, ...]
    recognise: Callable[[nn.Module], Recognised]
    #: a plain conv + norm helper (DBB's ``ConvBN``, YOLOv6's ``ConvModule``), not a re-parameterized
    #: block: its class names are common, so a module it refuses is walked into like any other module
    #: and reported as left only where it has a re-parameterization or fusing method (:data:`HELPER_METHODS`)
    helper: bool = False


ADOPTERS: Registry[Adopter] = Registry("adopter")
#: methods by which research code marks a module as re-parameterizable (reported when left)
REPARAM_METHODS = ("switch_to_deploy", "reparameterize", "get_equivalent_kernel_bias", "fuse")
#: ... and a conv + norm helper as fusable (YOLOv6's ``ConvModule``, reported when a helper adapter left it)
HELPER_METHODS = (*REPARAM_METHODS, "forward_fuse")


def register_adopter(name: str, classes: tuple[str, ...] | str, *, helper: bool = False):
    """A decorator registering ``recognise(module) -> Recognised`` in :data:`ADOPTERS` under ``name``,
    for modules whose class name is in ``classes``.

    ``recognise`` raises :class:`AdoptRefused` (with the reason) for a module of that class it
    cannot adopt exactly. Several adapters may look at one class name (the official RepVGG and
    YOLOv6 both call theirs ``RepVGGBlock``); the first whose recogniser accepts the module wins.
    ``helper=True`` marks a plain conv + norm helper (:attr:`Adopter.helper`).
    """
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    return lambda fn: ADOPTERS.register(name, Adopter(name, classes, fn, helper)).recognise


def _candidates(module: nn.Module) -> list[Adopter]:
    cls = type(module).__name__
    return [a for _, a in ADOPTERS.items() if cls in a.classes]


@dataclass
class AdoptReport:
    """What :func:`adopt` did: ``adopted`` ``(path, upstream class, adapter, branches)``, ``left``
    ``(path, class, reason)`` for modules that look re-parameterizable but were not adopted."""

    adopted: list[tuple[str, str, str, str]] = field(default_factory=list)
    left: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"adopted {len(self.adopted)} block(s), left {len(self.left)}"]
        by_adapter: dict[str, int] = {}
        for _, _, adapter, _ in self.adopted:
            by_adapter[adapter] = by_adapter.get(adapter, 0) + 1
        lines += [f"  {n} x {a}" for a, n in by_adapter.items()]
        lines += [f"  left {path} ({cls}): {reason}" for path, cls, reason in self.left]
        return "\n".join(lines)


def adopt_module(module: nn.Module, *, check: bool = True) -> tuple[nn.Module, str]:
    """The adopted replacement of one upstream block and the adapter's name.

    Raises :class:`AdoptRefused` when no adapter recognises it or the numbers do not agree.
    """
    candidates = _candidates(module)
    if not candidates:
        raise AdoptRefused(f"no adapter for class {type(module).__name__}")
    reasons = []
    for adopter in candidates:
        try:
            found = adopter.recognise(module)
        except AdoptRefused as exc:
            reasons.append(f"{adopter.name}: {exc}")
            continue
        except (AttributeError, TypeError, KeyError) as exc:  # a same-named class of another layout
            reasons.append(f"{adopter.name}: not its layout ({exc})")
            continue
        try:
            adopted = build_adopted(found, module)
            if check:
                check_adopted(module, adopted, found)
        except AdoptRefused:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:  # e.g. an upstream SE that needs a larger input
            raise AdoptRefused(f"{adopter.name}: building or checking the block failed: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        return adopted, adopter.name
    raise AdoptRefused("; ".join(reasons))


def adopt(model: nn.Module, *, check: bool = True) -> tuple[nn.Module, AdoptReport]:
    """A NEW model in which every recognised upstream re-parameterized block is an equal
    :class:`RepBlock` (wrapped with the block's SE/attention and activation where it has them).

    ``model`` is untouched. Every adopted block is checked numerically against the upstream
    block (float64, eval and — where the upstream is exact in training mode — train mode) unless
    ``check=False``. Returns ``(new_model, AdoptReport)``; the report lists what was adopted and
    every module that looks re-parameterizable (it has ``switch_to_deploy``, ``reparameterize``,
    ...) but was left, with the reason.
    """
    report = AdoptReport()
    new = copy.deepcopy(model)
    if _candidates(new):
        adopted, reason = _try(new, "<root>", report, check)
        if adopted is not None:
            return adopted, report
        if reason is not None:
            return new, report
    _walk(new, "", report, check)
    log.info("%s", report)
    return new, report


def _try(module: nn.Module, path: str, report: AdoptReport, check: bool) -> tuple[nn.Module | None, str | None]:
    """``(adopted, None)``; or ``(None, reason)`` where a block was refused and reported as left; or
    ``(None, None)`` where only plain helper adapters refused it: walk into it like any other module."""
    cls = type(module).__name__
    try:
        adopted, name = adopt_module(module, check=check)
    except AdoptRefused as exc:
        if all(a.helper for a in _candidates(module)):
            if _reparameterizable(module, HELPER_METHODS):
                report.left.append((path, cls, str(exc)))
            return None, None
        report.left.append((path, cls, str(exc)))
        return None, str(exc)
    report.adopted.append((path, cls, name, _describe(adopted)))
    return adopted, None


def _walk(parent: nn.Module, prefix: str, report: AdoptReport, check: bool) -> None:
    for child_name, child in list(parent._modules.items()):
        if child is None or isinstance(child, RepBlock):
            continue
        path = f"{prefix}{child_name}"
        if _candidates(child):
            adopted, reason = _try(child, path, report, check)
            if adopted is not None:
                setattr(parent, child_name, adopted)
            if adopted is not None or reason is not None:
                continue
        elif _reparameterizable(child):
            report.left.append((path, type(child).__name__, f"no adapter for class {type(child).__name__}"))
        _walk(child, path + ".", report, check)


def _reparameterizable(module: nn.Module, methods: tuple[str, ...] = REPARAM_METHODS) -> bool:
    """It has one of ``methods`` and is not one of torch's own modules."""
    return any(callable(getattr(module, m, None)) for m in methods) and not _plain(module)


def _plain(module: nn.Module) -> bool:
    """torch's own modules (``fuse`` etc. on them are not re-parameterization)."""
    return type(module).__module__.startswith("torch.")


def _describe(module: nn.Module) -> str:
    block = module if isinstance(module, RepBlock) else next(m for m in module.modules() if isinstance(m, RepBlock))
    return " | ".join(info.spec.label() for info in block.branch_info)


__all__ = ["ADOPTERS", "HELPER_METHODS", "AdoptRefused", "AdoptReport", "Part", "Recognised", "adopt",
           "adopt_module", "register_adopter"]
