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
