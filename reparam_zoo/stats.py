"""Small statistics on tensors-free numbers: paired differences with a Student-t interval, spreads."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Paired:
    """The paired difference ``a_i - b_i`` over n pairs (seeds): mean, sample sd, a two-sided
    ``level`` confidence interval (Student t with n - 1 degrees of freedom) and a verdict."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    level: float
    verdict: str  # "better" | "worse" | "no detectable difference" | "too few seeds"

    def as_dict(self) -> dict:
        return asdict(self)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_difference(a: list[float], b: list[float], level: float = 0.95, resolution: float = 0.0) -> Paired:
    """``a`` and ``b`` measured on the same seeds (pairs in order). With one pair there is no
    interval: the verdict says so instead of guessing.

    ``resolution``: the step the values come in (an accuracy over n images moves by 100/n points).
    Each value is then known to ±resolution/2 (uniform), so a difference has at least
    resolution/√6 of spread; the sample sd is floored there — otherwise a block that wins by exactly
    one image on every seed would get a zero-width interval and a confident verdict."""
    if len(a) != len(b) or not a:
        raise ValueError(f"Expected two equally long, non-empty lists of paired values but got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    n, mean = len(d), statistics.fmean(d)
    if n < 2:
        return Paired(n, mean, float("nan"), float("nan"), float("nan"), level, "too few seeds")
    sd = max(statistics.stdev(d), resolution / math.sqrt(6))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "better" if low > 0 else "worse" if high < 0 else "no detectable difference"
    return Paired(n, mean, sd, low, high, level, verdict)


def spread(values: list[float]) -> dict:
    """Median and interquartile range (robust: timing samples have outliers)."""
    if not values:
        return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "n": 0}
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0], "n": 1}
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3, "n": len(values)}


def nan_max(values) -> float:
    """The largest of ``values``, NaN and None (how JSON stores NaN) ignored; NaN when none is left."""
    return max((v for v in values if v is not None and not math.isnan(v)), default=math.nan)
