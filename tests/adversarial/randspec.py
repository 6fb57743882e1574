"""A random block-spec generator that mixes valid specs with hostile values.

``random_case(rng)`` returns ``(spec_mapping, in_channels, out_channels, stride, groups)``. Every
field is drawn from a pool of sensible values, and with probability ``hostile`` from a pool of
values a careless or hostile user might write (wrong types, zero, negative, huge, non-finite,
unknown names, wrong nesting). The contract under test: each case either raises ``SpecError``
(and nothing else), or builds a block whose fold is exact (``verify`` within tolerance).
"""

from __future__ import annotations

import math
import random

HOSTILE = [0, -1, -3, 2.5, 3.0, float("nan"), float("inf"), -float("inf"), True, None, "3", "", "x" * 300,
           [], [3], [3, 3, 3], {"a": 1}, 10**9, 10**30, 1025, 2**31, "same", "in", [[3]], {"choice": [1, 2]}]

ACTS = ["relu", "identity", "silu", "gelu", "hardswish", "prelu"]
PAD_MODES = ["zeros", "reflect", "replicate", "circular"]
NORMS = ["bn", "none", "scale", {"type": "bn", "eps": 0.01, "affine": False}, {"type": "scale", "init": 0.5},
         {"type": "bn", "momentum": None}]


def _pick(rng: random.Random, good: list, hostile: float):
    return rng.choice(HOSTILE) if rng.random() < hostile else rng.choice(good)


def random_branch(rng: random.Random, hostile: float) -> dict:
    kind = rng.choice(["kxk", "1xk", "kx1", "conv", "identity", "avgpool", "1x1_kxk", "seq"]
                      + (["kxx", "bogus"] if rng.random() < hostile else []))
    b: dict = {"type": kind}

    def maybe(key, good, p=0.5):
        if rng.random() < p:
            b[key] = _pick(rng, good, hostile)

    if kind in ("kxk", "1xk", "kx1", "conv", "identity"):
        maybe("norm", NORMS)
    if kind == "conv":
        b["kernel"] = _pick(rng, [1, 3, 5, [1, 3], [3, 1]], hostile)
        maybe("dilation", [1, 2])
        maybe("bias", [True, False])
    if kind == "avgpool":
        maybe("kernel", [1, 3, 5])
        maybe("pre_1x1", [True, False])
        maybe("mid_norm", NORMS)
    if kind == "1x1_kxk":
        maybe("mid_channels", ["in", "out", 2, 4, 8])
        maybe("mid_norm", NORMS)
        maybe("identity_init", [True, False], 0.3)
    if kind == "seq":
        steps = [{"type": "conv", "kernel": 1, "out_channels": _pick(rng, ["in", "out", 4], hostile)},
                 rng.choice([{"type": "bn"}, {"type": "scale", "init": _pick(rng, [0.5, 1.0, 2.0], hostile)}]),
                 {"type": "conv", "kernel": _pick(rng, [1, 3], hostile)}]
        if rng.random() < hostile:
            steps.append({"type": rng.choice(["convv", "avgpool", "bn"]), "kernel": _pick(rng, [1, 3], hostile)})
        b["steps"] = steps
    maybe("count", [1, 2], 0.3)
    maybe("optional", [True, False], 0.3)
    maybe("when", ["always", "depthwise", "not_depthwise"], 0.15)
    if rng.random() < hostile / 4:
        b[rng.choice(["kernal", "norms", "stride", "padding"])] = rng.choice(HOSTILE)
    return b


def random_case(rng: random.Random, hostile: float = 0.08):
    cin = rng.choice([2, 4, 6, 8])
    groups = rng.choice([g for g in (1, 2, cin) if cin % g == 0])
    cout = rng.choice([cin, 2 * cin]) if groups != cin else cin
    stride = rng.choice([1, 1, 2])
    k = _pick(rng, [1, 3, 3, 5, [3, 5], [1, 3]], hostile)
    spec: dict = {"name": _pick(rng, ["r", "random block"], hostile / 4), "kernel": k}
    if rng.random() < 0.3:
        spec["dilation"] = _pick(rng, [1, 2], hostile)
    if rng.random() < 0.3:
        spec["padding"] = _pick(rng, ["same", 0, 1, 2, [1, 0]], hostile)
    if rng.random() < 0.4:
        spec["padding_mode"] = _pick(rng, PAD_MODES, hostile)
    if rng.random() < 0.3:
        spec["norm_after"] = _pick(rng, ["none", "bn", "scale"], hostile)
    if rng.random() < 0.5:
        spec["act"] = _pick(rng, ACTS, hostile)
    spec["branches"] = [{"type": "kxk"}] + [random_branch(rng, hostile) for _ in range(rng.randint(0, 4))]
    if rng.random() < hostile / 2:
        spec["branches"] = rng.choice(HOSTILE)
    return spec, cin, cout, stride, groups


def has_nonfinite(obj) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(has_nonfinite(v) for v in obj.values())
    if isinstance(obj, list):
        return any(has_nonfinite(v) for v in obj)
    return False


# ------------------------------------------------------------------ every layer: d = 0..3, transposed
LAYER_HOSTILE = {"dims": [4, -1, True, "2", None, 2.0], "transposed": ["yes", None, 2],
                 "output_padding": [-1, 2, 5, [1, 1, 1, 1], 1.5]}


def _axes(value, n: int):
    """A 2-entry per-axis list of ``random_case`` as ``n`` entries, the same way on every key (a block kernel
    [3, 5] and a branch kernel [1, 3] become [3, 3, 5] and [1, 1, 3] in 3-D, so a branch still fits)."""
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        return value
    return {1: [value[1]], 2: value, 3: [value[0], *value]}[n]


def _for_axes(obj, n: int, rng: random.Random, hostile: float):
    """Every per-axis list of ``obj`` with ``n`` entries (left at 2 with probability ``hostile``)."""
    if isinstance(obj, dict):
        return {k: (v if k in ("kernel", "dilation", "padding") and rng.random() < hostile else
                    _axes(v, n) if k in ("kernel", "dilation", "padding") else _for_axes(v, n, rng, hostile))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_for_axes(v, n, rng, hostile) for v in obj]
    return obj


def transposable_branch(rng: random.Random, hostile: float, n: int) -> dict:
    """A branch a transposed block can fold (one conv or pooling step, nothing that adds a constant before
    it), or now and then one that it refuses."""
    kind = rng.choice(["conv", "conv", "identity", "line", "avgpool", "scaled", "other"])
    norm = rng.choice(NORMS)
    if kind == "conv":
        b = {"type": "conv", "kernel": rng.choice([1, 3]), "norm": norm, "bias": rng.random() < 0.3}
        if rng.random() < 0.3:
            b["dilation"] = rng.choice([1, 2])
    elif kind == "identity":
        b = {"type": "identity", "optional": rng.random() < 0.8, "norm": norm}
    elif kind == "line":
        b = {"type": "line", "axis": rng.choice([*range(n), "all"]), "norm": norm, "bias": rng.random() < 0.3}
    elif kind == "avgpool":
        b = {"type": "avgpool", "optional": True, "norm": norm}
    elif kind == "scaled":  # a scale (no shift) before the conv is fine; a BatchNorm there is refused
        b = {"type": "seq", "steps": [rng.choice([{"type": "scale", "init": 0.5}, {"type": "bn"}]),
                                      {"type": "conv", "kernel": rng.choice([1, 3]), "bias": True}], "norm": norm}
    else:
        b = random_branch(rng, hostile)
    if rng.random() < 0.15:
        b["gate"] = rng.choice(["learnable", "fixed"])
    return b


def random_layer_case(rng: random.Random, hostile: float = 0.08):
    """``random_case`` for any layer: ``(spec, in_channels, out_channels, options)`` where ``options`` are
    ``build_block``'s keywords: ``stride``, ``groups``, ``dims`` (0 = Linear, 1, 2, 3), ``transposed`` and
    ``output_padding``. Per-axis lists follow the block's axes (now and then not: a SpecError naming the
    key), ``1xk``/``kx1`` become ``line`` branches outside 2-D (now and then not), Linear blocks mostly get
    kernel-1 branches, transposed blocks mostly branches they can fold."""
    spec, cin, cout, stride, groups = random_case(rng, hostile)
    dims = rng.choice([0, 1, 1, 2, 3, 3])
    n = max(dims, 1)
    transposed = dims > 0 and rng.random() < 0.4
    spec = _for_axes(spec, n, rng, hostile)
    branches = spec.get("branches")
    if isinstance(branches, list):
        for i, b in enumerate(branches):
            if not isinstance(b, dict):
                continue
            if dims != 2 and b.get("type") in ("1xk", "kx1") and rng.random() > hostile:  # kxk: kernel 1 in Linear
                branches[i] = b = {"type": "line" if dims else "kxk", "norm": b.get("norm", "bn")}
                if dims:
                    b["axis"] = rng.choice([*range(n), "all"])
            if dims == 0 and b.get("type") in ("conv", "avgpool") and rng.random() > 2 * hostile:
                b["type"], b["kernel"] = "conv", 1
                b.pop("pre_1x1", None), b.pop("mid_norm", None)
            if dims == 0 and b.get("type") == "seq" and rng.random() > 2 * hostile:
                for step in b["steps"]:
                    if isinstance(step, dict) and "kernel" in step:
                        step["kernel"] = 1
        if transposed and rng.random() < 0.8:
            spec["branches"] = [{"type": "kxk"}] + [transposable_branch(rng, hostile, n)
                                                    for _ in range(rng.randint(1, 4))]
        elif dims and rng.random() < 0.3:
            branches.append({"type": "line", "axis": rng.choice([*range(n), "all"]), "norm": rng.choice(NORMS)})
    if transposed and rng.random() > hostile:
        spec.pop("padding_mode", None)  # ConvTranspose pads with zeros only
    if dims == 0 and rng.random() > hostile:
        stride, groups, cout = 1, 1, rng.choice([cin, 2 * cin])
    elif rng.random() < 0.2:  # a stride per axis
        stride = tuple(rng.choice([1, 2]) for _ in range(n))
    output_padding = 0
    if transposed and rng.random() < 0.6:
        strides = stride if isinstance(stride, tuple) else (stride,) * n
        output_padding = tuple(rng.randint(0, s - 1) for s in strides)
    options = {"stride": stride, "groups": groups, "dims": dims, "transposed": transposed,
               "output_padding": output_padding}
    if rng.random() < hostile:
        key = rng.choice(list(LAYER_HOSTILE))
        options[key] = rng.choice(LAYER_HOSTILE[key])
    return spec, cin, cout, options


def layer_shapes(geometry, batch: int = 2) -> list[tuple[int, ...]]:
    """Input shapes for a block of any layer: a size per axis every form accepts (at least its window minus
    its padding, what reflect padding needs), plus tiny, odd and even ones. A transposed block gets only
    sizes whose output is not empty (on an empty output torch's ConvTranspose raises in float64 and not in
    float32, so neither form is right there). A Linear block has no border: a batch of 16 and of 5 (on a
    handful of outputs float32's max rel <= 10 x training form's is noise, not a test of the fold)."""
    cin = geometry.in_channels
    if geometry.dims == 0:
        return [(16, cin), (5, cin)]
    n = geometry.axes
    big = tuple(max(5 + a, w - 2 * p + 2, p + 2, 2 * p + 1)
                for a, w, p in zip(range(n), geometry.window, geometry.padding))
    sizes = [big, (1,) * n, tuple(2 + a for a in range(n)), tuple(8 - a for a in range(n))]
    if geometry.transposed:
        sizes = [s for s in sizes if all((m - 1) * st - 2 * p + w + q >= 1 for m, st, p, w, q in zip(
            s, geometry.stride, geometry.padding, geometry.window, geometry.output_padding))]
    return [(batch, cin, *s) for s in dict.fromkeys(sizes)]
