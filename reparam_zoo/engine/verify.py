"""Check a fold numerically: training form vs folded form, eval mode, border-heavy inputs."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam_zoo.engine.block import RepBlock, input_rank_error
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.steps import ChannelScale

#: every numerical check of the library and the relative error it allows (docs/math.md, "Tolerances").
#: One table, so that a limit is changed in one place and each limit says what it compares.
TOLERANCES = {
    # a block's fold against its training form, on border-heavy inputs (verify), per dtype
    "fold/float64": 1e-12, "fold/float32": 1e-6, "fold/float16": 1e-2, "fold/bfloat16": 5e-2,
    # an adopted block against the upstream block, float64 (the fold itself is ~1e-15)
    "adopt": 1e-10,
    # an expanded (or folded) whole network against the original, float32, one random input
    "expand": 1e-5,
    # a converted checkpoint's folded network against the loaded one: float32, any trained weights
    "convert": 1e-4,
    # ONNX Runtime against PyTorch on the folded model, float32
    "export": 1e-5,
}
#: the fold tolerance per dtype (``verify``'s default)
TOLERANCE = {dt: TOLERANCES[f"fold/{str(dt).replace('torch.', '')}"]
             for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16)}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``max |got - want| / max |want|`` in float64 (the absolute error where ``want`` is all zero).

    Every check of the library uses this one measure. It is ``inf`` — which fails any
    ``rel <= tolerance`` — when either tensor has a NaN or inf, when the shapes differ, and when
    there is nothing to compare (empty tensors): a check never passes on no evidence.
    """
    if got.shape != want.shape or not want.numel():
        return float("inf")
    got, want = got.detach().double(), want.detach().double()
    if not bool(torch.isfinite(got).all() and torch.isfinite(want).all()):
        return float("inf")
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    return err / scale if scale > 0 else err


def within(check: str, rel: float) -> bool:
    """``rel`` is within the limit of ``check`` (a key of :data:`TOLERANCES`); NaN is not."""
    return rel <= TOLERANCES[check]


def randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm (and norm with fixed statistics: a FrozenBatchNorm2d) random running statistics
    and affine parameters, and every scale random values (in place; returns ``module``).

    Default statistics (mean 0, var 1, gamma 1, beta 0) hide eps, bias and padding bugs.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float64) * (high - low) + low)

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                if m.running_mean is not None:
                    rand(m.running_mean, -1.0, 1.0)
                    rand(m.running_var, 0.25, 2.0)
                if m.weight is not None:
                    rand(m.weight, 0.5, 1.5)
                    rand(m.bias, -0.5, 0.5)
            elif isinstance(m, ChannelScale):
                rand(m.weight, 0.5, 1.5)
            elif all(isinstance(getattr(m, n, None), torch.Tensor) for n in ("running_mean", "running_var", "weight",
                                                                              "bias")):  # a FrozenBatchNorm2d
                rand(m.running_mean, -1.0, 1.0)
                rand(m.running_var, 0.25, 2.0)
                rand(m.weight, 0.5, 1.5)
                rand(m.bias, -0.5, 0.5)
    return module


@dataclass
class VerifyResult:
    """How far the folded form is from the training form (eval mode).

    All errors are ``max |y - block(x)| / max |block(x)|`` per output, against the
    training form evaluated in float64 (the exact value the fold must reproduce):

    * ``max_rel`` (and ``max_abs``): the folded form run in the dtype under test;
    * ``fold_rel``: the folded form with its weights in the dtype under test, evaluated
      in float64 — the error of the fold itself, without the dtype's arithmetic;
    * ``train_rel``: the training form run in the dtype under test — the arithmetic
      noise that dtype has anyway;
    * ``round_rel``: the exact fold (computed in float64) with its weights only *stored* in the
      dtype — the floor set by the dtype's precision, which no fold can beat.

    ``ok``: ``fold_rel <= max(tolerance, 2 * round_rel)`` (within the tolerance, or — where the
    output cancels so far that merely storing the exact kernel in the dtype exceeds it — within
    twice what storing costs; an explicit ``tolerance`` is strict, without the floor) and ``max_rel <= max(tolerance, 10 * train_rel)``
    (end to end, the folded form's rounding noise is within an order of magnitude of the
    training form's: a fold whose weights were huge and cancelling would fail). In float64 the
    three coincide with ``max_rel``.
    """

    max_abs: float
    max_rel: float
    dtype: torch.dtype
    tolerance: float
    fold_rel: float = 0.0
    train_rel: float = 0.0
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # input shapes compared
    skipped: list[tuple[int, ...]] = field(default_factory=list)  # too small for both forms
    nonfinite: list[str] = field(default_factory=list)  # which forms gave NaN/inf outputs (a failure)
    round_rel: float = 0.0  # the exact (float64) fold only stored in the dtype: the floor no fold can beat
    floor_allowed: bool = True  # False when the caller gave an explicit tolerance: then it is strict

    @property
    def ok(self) -> bool:
        """Within tolerance, on at least one input, with every output finite (NaN or inf anywhere fails)."""
        errors = (self.fold_rel, self.max_rel, self.train_rel)
        return (bool(self.shapes) and not self.nonfinite and all(math.isfinite(e) for e in errors)
                and self.fold_rel <= (max(self.tolerance, 2 * self.round_rel) if self.floor_allowed else self.tolerance)
                and self.max_rel <= max(self.tolerance, 10 * self.train_rel))

    def __str__(self) -> str:
        if not self.shapes:
            return (f"compared nothing: every input size was too small for the block "
                    f"(skipped {', '.join('x'.join(map(str, s[2:])) for s in self.skipped)}) FAIL")
        if self.nonfinite:
            return f"non-finite outputs ({', '.join(self.nonfinite)}): max rel {self.max_rel:.2e} FAIL"
        verdict = "OK" if self.ok else "FAIL"
        dt = str(self.dtype).replace("torch.", "")
        if self.dtype == torch.float64:
            return f"max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e} (tol {self.tolerance:.0e}, {dt}) {verdict}"
        floor = f", storing floor {self.round_rel:.2e}" if self.round_rel > self.tolerance / 2 else ""
        return (f"fold rel {self.fold_rel:.2e} (tol {self.tolerance:.0e}{floor}); in {dt}: max abs {self.max_abs:.2e}, "
                f"max rel {self.max_rel:.2e}, training form {self.train_rel:.2e} {verdict}")


#: the smallest input size per spatial axis :func:`check_size` asks for, by the block's spatial axes
#: (sizes differ between axes, so that swapped axes show; 3-D inputs stay small)
AT_LEAST = {1: (11,), 2: (9, 11), 3: (5, 6, 7)}


def check_size(geometry, at_least: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """An input size per spatial axis, ``(h, w)`` for a 2-D block, that every form of a block with this
    geometry accepts: at least the block's window (minus its padding), what reflect padding needs, and
    ``at_least`` (default :data:`AT_LEAST`); so that a check always compares something. ``()`` for a
    Linear block (``dims=0``: inputs ``(N, C)``, no spatial axis)."""
    if geometry.dims == 0:
        return ()
    n = geometry.axes
    at_least = AT_LEAST[n] if at_least is None else tuple(at_least)
    if len(at_least) != n:
        raise ValueError(f"Expected {n} entries in at_least (one per spatial axis) but got {at_least}")
    extra = (2,) * (n - 1) + (4,)  # the last axis a little longer than the window, the others less
    return tuple(max(a, w - 2 * p + e, p + 2)
                 for a, w, p, e in zip(at_least, geometry.window, geometry.padding, extra))


def border_shapes(input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The given shape ``(N, C, *size)`` plus odd, even and tiny sizes on every spatial axis (borders
    dominate small inputs): for ``(N, C, H, W)`` the sizes ``(H, W)``, ``(H+1, W+2)``, ``(1, 1)``,
    ``(2, 3)``, ``(7, 8)``, ``(8, 7)``, and the same pattern on 1 or 3 axes. A Linear block's ``(N, C)``
    has no spatial axis: the batch is its only size, so ``(1, C)`` and ``(64, C)`` (a conv's output has
    many pixels per channel; a Linear layer's, one per sample — few samples leave a channel that the
    activation zeroes unchecked)."""
    n, c, *size = input_shape
    if not size:
        return list(dict.fromkeys([(n, c), (1, c), (64, c)]))
    axes = range(len(size))
    sizes = [tuple(size), tuple(s + i + 1 for i, s in zip(axes, size)), tuple(1 for _ in axes),
             tuple(2 + i for i in axes), tuple(7 + i for i in axes), tuple(8 - i for i in axes)]
    out: list[tuple[int, ...]] = []
    for spatial in sizes:
        shape = (n, c, *spatial)
        if shape not in out:
            out.append(shape)
    return out


def _check_rank(module: nn.Module, shapes) -> None:
    """A block is checked on inputs of its own rank (both forms would refuse any other, and a check that
    compared nothing would blame the sizes)."""
    if isinstance(module, RepBlock):
        for shape in shapes:
            error = input_rank_error(module.geometry, module.spec.name, shape, what="{rank}-D input shapes")
            if error:
                raise ValueError(error)


def _run(m: nn.Module, x: torch.Tensor):
    try:
        with torch.no_grad():
            return m(x)
    except (RuntimeError, ValueError):
        return None


def verify(module: nn.Module, input_shape: tuple[int, ...], *, dtype: torch.dtype | None = None,
           seed: int = 0, randomize: bool = False, tolerance: float | None = None,
           shapes: list[tuple[int, ...]] | None = None) -> VerifyResult:
    """Compare ``fold_model(module)`` with ``module`` in eval mode.

    Checks the module as it is (a trained block is checked with its trained statistics).
    Works on copies (``module`` is not changed): casts to ``dtype`` if given, with
    ``randomize=True`` gives every norm random statistics first (to check a *spec*: default
    statistics — mean 0, variance 1 — hide eps, bias and padding bugs), folds, and runs the folded form in
    that dtype and the training form in float64 on random inputs of ``input_shape`` and
    of the extra sizes of :func:`border_shapes`. Sizes that neither form accepts (too
    small for the kernel) are skipped; a size only one form accepts is an infinite error.

    ``input_shape`` is ``(N, C, *size)`` with the block's spatial axes: ``(N, C, L)`` for a 1-D block,
    ``(N, C, H, W)``, ``(N, C, D, H, W)``, and ``(N, C)`` for a Linear block (``dims=0``); a block given
    another rank is a ``ValueError``. :func:`check_size` gives sizes every form of a block accepts.
    """
    _check_rank(module, [input_shape, *(shapes or ())])
    ref = copy.deepcopy(module)
    if dtype is not None:
        ref = ref.to(dtype)
    if randomize:
        randomize_norms(ref, seed)
    ref.eval()
    folded = fold_model(ref).eval()
    param = next((t for t in (*ref.parameters(), *ref.buffers()) if t.is_floating_point()), None)
    dt = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else torch.device("cpu")
    exact = ref if dt == torch.float64 else copy.deepcopy(ref).double()
    folded64 = folded if dt == torch.float64 else copy.deepcopy(folded).double()
    # the floor: the float64 fold, rounded to the dtype, evaluated in float64
    floor = None if dt == torch.float64 else fold_model(exact).eval().to(dt).double()
    gen = torch.Generator().manual_seed(seed + 1)
    result = VerifyResult(0.0, 0.0, dt, TOLERANCE.get(dt, 1e-6) if tolerance is None else tolerance,
                          floor_allowed=tolerance is None)
    for shape in shapes or border_shapes(tuple(input_shape)):
        x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
        want, got = _run(exact, x), _run(folded, x.to(dt))
        if want is None and got is None:
            result.skipped.append(tuple(shape))
            continue
        result.shapes.append(tuple(shape))
        if want is None or got is None or want.shape != got.shape:
            result.max_abs = result.max_rel = result.fold_rel = float("inf")
            continue
        if not want.numel():
            continue
        if not bool(torch.isfinite(want).all()):
            _flag(result, "the training form in float64")
            continue
        rel = _rel(got, want, result, f"the folded form in {str(dt).replace('torch.', '')}")
        if math.isfinite(rel):
            result.max_abs = max(result.max_abs, (got.double() - want).abs().max().item())
        result.max_rel = max(result.max_rel, rel)
        if exact is ref:
            result.fold_rel = result.max_rel
            continue
        for attr, m, inp, what in (("fold_rel", folded64, x, "the folded weights in float64"),
                                   ("train_rel", ref, x.to(dt), "the training form in its dtype"),
                                   ("round_rel", floor, x, "the float64 fold stored in the dtype")):
            y = _run(m, inp)
            err = float("inf") if y is None else _rel(y, want, result, what)
            setattr(result, attr, max(getattr(result, attr), err))
    return result


def _flag(result: VerifyResult, what: str) -> None:
    if what not in result.nonfinite:
        result.nonfinite.append(what)
    result.max_abs = result.max_rel = result.fold_rel = float("inf")


def _rel(got: torch.Tensor, want: torch.Tensor, result: VerifyResult, what: str) -> float:
    """:func:`relative_error`, with the form named in ``result.nonfinite`` when ``got`` has a NaN or inf."""
    if not bool(torch.isfinite(got).all()):
        _flag(result, what)
        return float("inf")
    return relative_error(got, want)
