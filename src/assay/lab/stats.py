"""Small statistics shared by the lab: confidence intervals over seeds and over bootstrap samples."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` independent replicates (seeds) with a two-sided Student-t confidence interval."""

    mean: float
    lo: float
    hi: float
    sd: float
    n: int
    level: float = 0.95

    def overlaps(self, other: "MeanCI") -> bool:
        return not (self.hi < other.lo or other.hi < self.lo)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "sd": self.sd, "n": self.n, "level": self.level}

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.lo:.4f}, {self.hi:.4f}]"


def mean_ci(values: Iterable[float], level: float = 0.95) -> MeanCI:
    """Student-t interval: with 3 seeds the half-width is 4.30·sd/√3, so it is honest about few replicates."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, math.nan, 0, level)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(mean, math.nan, math.nan, math.nan, 1, level)
    sd = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, sd, n, level)


def percentile_ci(samples: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap samples (non-finite samples ignored)."""
    x = np.asarray([s for s in samples if s is not None and math.isfinite(s)], dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(x, [tail, 100 - tail])
    return (float(lo), float(hi))
