"""Two ways of doing the same work, timed as alternating pairs: the ratio benchmarks' one loop."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def median_pair_ratio(
    benchmark, bare: Callable[[], float], other: Callable[[], float], rounds: int = 20
) -> tuple[float, list[float], list[float]]:
    """The median over `rounds` pairs of other's seconds / bare's seconds, and both lists of seconds.

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
    return statistics.median(o / b for o, b in zip(other_s, bare_s)), bare_s, other_s
