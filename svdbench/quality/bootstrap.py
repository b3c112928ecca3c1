"""The mean of paired per-sample differences and its 95 % interval: a seeded percentile bootstrap.

Resampling the samples (image x seed pairs) with replacement RESAMPLES times and taking the 2.5th and 97.5th
percentiles of the resampled means (Efron's percentile interval). Seeded, so the same samples always give the
same interval. With fewer than MIN_SAMPLES samples a bootstrap says nothing (every resample of one sample is
that sample): the interval is then the one value, and `n` says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
MIN_SAMPLES = 2
METHOD = (
    f"mean over paired samples (image x seed) with a {LEVEL:.0%} percentile bootstrap interval: {RESAMPLES} "
    f"resamples of the samples with replacement, numpy seed {SEED}"
)


@dataclass
class Estimate:
    """A mean over `n` samples and its interval [lo, hi] (lo = hi = mean when n < MIN_SAMPLES)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def text(self, digits: int = 3) -> str:
        """`43.2 (41.0 to 45.1, n=4)`."""
        if self.mean is None:
            return ""
        if self.lo is None or self.hi is None or self.n < MIN_SAMPLES:
            return f"{self.mean:.{digits}g} (n={self.n}: no interval)"
        return f"{self.mean:.{digits}g} ({self.lo:.{digits}g} to {self.hi:.{digits}g}, n={self.n})"


def bootstrap_mean(values: Sequence[float | None], resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """Mean of `values` (finite ones; None and NaN are left out) and its percentile bootstrap interval."""
    data = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = float(data.mean())
    if n < MIN_SAMPLES:
        return Estimate(mean, mean, mean, n)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    # The mean of n values always lies between their min and max; rounding in percentile must not move it out.
    return Estimate(mean, float(min(lo, mean)), float(max(hi, mean)), n)


def samples_needed(estimate: Estimate, threshold: float) -> int | None:
    """How many samples in all would make the interval clear `threshold` on one side, assuming the spread stays
    as it is and the half-width shrinks as 1/sqrt(n); None where the mean sits on the threshold."""
    if estimate.mean is None or estimate.half_width is None or estimate.n < MIN_SAMPLES:
        return None
    distance = abs(estimate.mean - threshold)
    if distance == 0:
        return None
    return max(estimate.n + 1, math.ceil(estimate.n * (estimate.half_width / distance) ** 2))
