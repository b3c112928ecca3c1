"""Two ways of doing the same work, timed as alternating pairs: the ratio benchmarks' one loop."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import NamedTuple

from svdbench.measure.timing import median_interval


class PairRatio(NamedTuple):
    """The median pair ratio, its distribution-free 95 % interval (None below 6 pairs), each side's seconds."""

    ratio: float
    low: float | None
    high: float | None
    bare_s: list[float]
    other_s: list[float]

    def shown_above(self, bound: float) -> bool:
        """Whether the ratio is above `bound` beyond this machine's noise: the whole interval lies above it.

        Two identical calls on the shared 2-core VM give median pair ratios from 0.96 to 1.04 over runs of 20
        to 60 pairs, so a point bound of a few percent cannot tell an overhead from noise; the interval's low
        end can (it stays under 1.0 for identical calls)."""
        return self.low is not None and self.low > bound


def median_pair_ratio(benchmark, bare: Callable[[], float], other: Callable[[], float], rounds: int = 20) -> PairRatio:
    """The median over `rounds` pairs of other's seconds / bare's seconds, its interval and both lists of seconds.

    Each callable does the work once and returns the seconds it measured; warm both up before. Which side goes
    first alternates, so that an order effect (caches, the allocator's state after the other call) is not booked
    as overhead. The median of per-pair ratios, not the ratio of two medians: this machine drifts between speed
    regimes (calls of 0.83 s and of 1.05 s in one run), which moves a ratio of medians by several percent but not
    a pair's ratio."""
    bare_s: list[float] = []
    other_s: list[float] = []
    order = iter(range(rounds))

    def pair() -> None:
        if next(order) % 2 == 0:
            bare_s.append(bare())
            other_s.append(other())
        else:
            other_s.append(other())
            bare_s.append(bare())

    benchmark.pedantic(pair, rounds=rounds, iterations=1)
    ratios = sorted(o / b for o, b in zip(other_s, bare_s))
    low, high = median_interval(ratios)
    return PairRatio(statistics.median(ratios), low, high, bare_s, other_s)
