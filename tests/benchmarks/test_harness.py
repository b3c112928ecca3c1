"""Benchmarks of the harness itself: `pytest -m benchmark tests/benchmarks`.

These record ratios measured side by side in one process (interleaved, so that a noisy neighbour
slows both sides alike), not absolute times; pytest-benchmark keeps the raw numbers.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from svdbench.measure.memory import MemoryTracker
from svdbench.measure.timing import CallProbe, Clock
from svdbench.media.image import test_card
from svdbench.pipeline.models import build_random_pipeline
from svdbench.record.rundir import write_record
from svdbench.runner import run

from ..conftest import typed_config
from .pairs import median_pair_ratio

pytestmark = pytest.mark.benchmark
OVERHEAD_TARGET = 1.03  # svdbench's measured latency within 3 percent of a bare pipe(...) call


def test_harness_overhead_against_a_bare_pipeline_call(benchmark):
    """The same tiny pipeline called bare and through svdbench's probe and memory tracker, alternately."""
    kwargs = dict(height=128, width=128, num_frames=8, num_inference_steps=10, output_type="np")
    image = test_card(128, 128)
    bare_pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    probed_pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    for pipe in (bare_pipe, probed_pipe):
        pipe.set_progress_bar_config(disable=True)
    probe, tracker = CallProbe(probed_pipe, Clock(torch.device("cpu"))), MemoryTracker(torch.device("cpu"))

    def bare() -> float:
        start = time.perf_counter()
        bare_pipe(image, generator=torch.Generator().manual_seed(0), **kwargs)
        return time.perf_counter() - start

    def harnessed() -> float:
        call = lambda: probed_pipe(  # noqa: E731
            image, generator=torch.Generator().manual_seed(0), callback_on_step_end=probe.on_step_end, **kwargs
        )
        with tracker.track():
            _, timing = probe.measure(call)
        return timing.total_s

    bare(), harnessed()  # warm both
    pairs = median_pair_ratio(benchmark, bare, harnessed, rounds=30)
    bare_median = statistics.median(pairs.bare_s)
    benchmark.extra_info.update(
        bare_median_s=bare_median,
        svdbench_median_s=statistics.median(pairs.other_s),
        ratio=pairs.ratio,
        ratio_ci95=[pairs.low, pairs.high],
    )
    print(
        f"\nsvdbench / bare = {pairs.ratio:.4f}, 95 % interval {pairs.low:.4f} to {pairs.high:.4f} (median of "
        f"{len(pairs.bare_s)} pair ratios; bare {bare_median:.4f} s)"
    )
    # Fails when the overhead is shown to exceed the target: the whole interval above it (PairRatio.shown_above).
    assert not pairs.shown_above(OVERHEAD_TARGET), (
        f"svdbench's measured latency is {pairs.ratio:.3f} x a bare call (95 % interval {pairs.low:.3f} to "
        f"{pairs.high:.3f}): more than {OVERHEAD_TARGET} x"
    )


def test_tiny_default_end_to_end(benchmark, tmp_path):
    """The embedded default (tiny model, 25 steps, 1 warm-up, 3 measured calls): measured and recorded."""
    cfg = typed_config("bench.progress=false", "logger=none")
    rounds = iter(range(100))

    def run_and_record():
        return write_record(cfg, tmp_path / f"run{next(rounds)}", run(cfg), [])

    result = benchmark.pedantic(run_and_record, rounds=2, iterations=1)
    assert result.status == "ok"
    benchmark.extra_info.update(median_call_s=result.latency.stats.median, cold_s=result.latency.cold_s)
