"""Adaptive repeats (bench.target_rel_width): the measured loop stops once the median's 95 percent interval is
narrow enough, bench.repeats is the cap, and results say how many calls were measured and why.

The loop's rule (`svdbench.measure.timing.enough`) is tested on given call times. The runner tests run the
tiny model for real but with a fake clock: each call's duration is replaced by the test's scripted seconds
(CallProbe._timing scaled), since on a shared 2-core CPU no real call can be relied on to be steady or noisy."""

from __future__ import annotations

import dataclasses
import itertools
from types import SimpleNamespace

import pytest

from svdbench.measure import timing
from svdbench.measure.timing import enough, relative_width
from svdbench.runner import run
from tests.conftest import FAST, typed_config


def bench(repeats=10, min_seconds=0.0, target=None, max_calls=1000):
    return SimpleNamespace(repeats=repeats, min_seconds=min_seconds, target_rel_width=target, max_calls=max_calls)


def stop_after(calls: list[float], rule) -> tuple[int, str]:
    for n in range(1, len(calls) + 1):
        why = enough(calls[:n], rule)
        if why is not None:
            return n, why
    raise AssertionError("never stopped")


STEADY = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98] + [1.0] * 20
NOISY = [1.0, 2.0, 0.5, 3.0, 0.7, 2.5, 0.6, 1.9, 0.8, 2.2] + [1.0] * 20


def test_a_steady_call_stops_at_the_first_narrow_interval():
    n, why = stop_after(STEADY, bench(repeats=10, target=0.05))
    assert n == 6 and why.startswith("bench.target_rel_width") and "after 6 calls" in why
    assert relative_width(STEADY[:6]) == pytest.approx(0.04, abs=1e-9)  # (1.02 - 0.98) / 1.0


def test_a_noisy_call_goes_on_to_the_cap():
    n, why = stop_after(NOISY, bench(repeats=10, target=0.05))
    assert n == 10 and why.startswith("bench.repeats: the cap of 10 calls")


def test_without_a_target_repeats_and_min_seconds_decide_as_before():
    assert stop_after(STEADY, bench(repeats=3)) == (3, "bench.repeats: 3 calls")
    assert stop_after(STEADY, bench(repeats=3, min_seconds=4.5)) == (5, "bench.min_seconds")
    assert stop_after(STEADY, bench(repeats=50, max_calls=4))[0] == 4
    # no interval before 6 calls: even identical calls do not stop a targeted loop earlier
    assert stop_after([1.0] * 10, bench(repeats=10, target=0.5))[0] == timing.MIN_CALLS_FOR_INTERVAL


def scripted(monkeypatch, seconds: list[float]) -> None:
    """The fake clock: every call made after the first two (cold call, warm-up) takes the next scripted seconds."""
    original = timing.CallProbe._timing
    durations = itertools.chain([None, None], seconds, itertools.repeat(1.0))

    def faked(self):
        real = original(self)
        wanted = next(durations)
        if wanted is None:
            return real
        scale = wanted / real.total_s
        return dataclasses.replace(
            real,
            total_s=wanted,
            conditioning_s=real.conditioning_s * scale,
            denoising_s=real.denoising_s * scale,
            decode_s=real.decode_s * scale,
            steps_s=[s * scale for s in real.steps_s],
        )

    monkeypatch.setattr(timing.CallProbe, "_timing", faked)


TINY = ["device=cpu", "num_frames=2", "height=64", "width=64", *FAST, "bench.warmup=1", "metrics.enabled=false"]


@pytest.mark.slow  # two tiny-model runs of 12 calls: over 10 s on the 2-core VM
@pytest.mark.parametrize(
    ("calls", "measured", "reason"),
    [(STEADY, 6, "bench.target_rel_width"), (NOISY, 10, "bench.repeats: the cap of 10")],
)
def test_the_runner_records_how_many_calls_and_why(monkeypatch, calls, measured, reason):
    scripted(monkeypatch, calls)
    result = run(typed_config(*TINY, "bench.repeats=10", "bench.target_rel_width=0.05")).result
    assert result.status == "ok", result.reason
    assert len(result.latency.calls_s) == measured == result.latency.stats.n
    assert result.latency.stopped_because.startswith(reason)
