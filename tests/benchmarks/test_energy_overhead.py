"""Cost of the energy meter around a measured call: `pytest -m benchmark tests/benchmarks/test_energy_overhead.py`.

The same pipeline call, bare and inside `EnergyMeter.call()`, alternately; the call is timed inside the meter's
block, as the runner times it, so the ratio is what the meter adds to the timed region. The time the meter
spends outside the timed region (reads and thread start/join at either end) is reported too.

Two measurements, each of the meter as it really runs on the machine at hand:
- on every machine, `energy.source=auto` as a run uses it (on a VM without RAPL or an NVIDIA GPU it has
  nothing to read and starts no thread; on a host with RAPL it samples every second);
- on a CUDA machine (marker `gpu`, skipped elsewhere), the NVML energy counter sampled every 20 ms by a thread
  while the GPU works. A CPU cannot stand in for it: there the call itself needs every core, which the
  sampling thread competes for (about 2.4 percent on this 2-core VM with a fake counter), while on a GPU the
  host thread mostly waits for the device.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from svdbench.measure.energy import EnergyMeter
from svdbench.media.image import test_card

from .pairs import median_pair_ratio

pytestmark = pytest.mark.benchmark
OVERHEAD_TARGET = 1.01  # issue 14: energy reading costs under 1 percent of the timed work


def test_energy_meter_overhead_as_a_run_uses_it_here(benchmark, tiny_pipeline):
    # A call of about 0.5 s and 30 pairs, to narrow the noise (see the end of _measure).
    _measure(benchmark, tiny_pipeline, EnergyMeter(torch.device("cpu"), "auto"), sampled=False, size=128, rounds=30)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device with an NVML energy counter")
def test_energy_meter_overhead_sampling_the_gpu_counter(benchmark, tiny_pipeline):
    meter = EnergyMeter(torch.device("cuda", 0), "nvml")
    _measure(benchmark, tiny_pipeline.to("cuda"), meter, sampled=True)


def _measure(benchmark, pipe, meter, sampled: bool, size: int = 64, rounds: int = 20):
    if sampled:
        assert "gpu" in meter.sources  # the thread will sample the GPU counter every 20 ms
    pipe.set_progress_bar_config(disable=True)
    # 64x64: about 0.15 s on an idle 2-core machine, about 8 samples at 20 ms; 128x128: about 0.5 s.
    frames = 4 if size <= 64 else 8
    kwargs = dict(height=size, width=size, num_frames=frames, num_inference_steps=4, output_type="np")
    image = test_card(size, size)
    outside_s: list[float] = []

    def bare() -> float:
        start = time.perf_counter()
        pipe(image, generator=torch.Generator().manual_seed(0), **kwargs)
        return time.perf_counter() - start

    def metered() -> float:
        outer = time.perf_counter()
        with meter.call():
            inner = bare()  # timed inside the meter's block, as the runner times a call
        outside_s.append(time.perf_counter() - outer - inner)
        return inner

    bare(), metered()  # warm both
    outside_s.clear()
    pairs = median_pair_ratio(benchmark, bare, metered, rounds)
    ratio, bare_s, metered_s = pairs.ratio, pairs.bare_s, pairs.other_s
    samples = [len(call.times) for call in meter.calls[1:]] or [0]
    benchmark.extra_info.update(
        bare_median_s=statistics.median(bare_s),
        metered_median_s=statistics.median(metered_s),
        ratio=ratio,
        outside_median_ms=statistics.median(outside_s) * 1000,
        samples_per_call=statistics.median(samples),
    )
    print(
        f"\nmetered / bare = {ratio:.4f}, 95 % interval {pairs.low:.4f} to {pairs.high:.4f} (median of "
        f"{len(bare_s)} pair ratios; bare {statistics.median(bare_s):.4f} s, "
        f"{statistics.median(samples):.0f} samples per call); outside the timed region "
        f"{statistics.median(outside_s) * 1000:.3f} ms per call"
    )
    if sampled:
        assert min(samples) > 5  # the sampling thread ran during the calls
    # Whatever the meter reads, it reads outside the timed region: under 1 percent of a call.
    assert statistics.median(outside_s) < (OVERHEAD_TARGET - 1) * statistics.median(bare_s)
    if max(samples) > 2:  # a thread sampled counters during the calls: its cost is inside the timed region
        assert ratio < OVERHEAD_TARGET
    else:
        # Nothing of the meter ran during the calls (no counter to sample on this machine), so the ratio can only
        # show this machine's noise (0.96 to 1.04 for two identical calls, tests/benchmarks/pairs.py), which a
        # 1 percent bound cannot tell apart: fail only when the whole interval of the ratio lies above it.
        assert not pairs.shown_above(OVERHEAD_TARGET), (
            f"metered / bare {ratio:.3f}, 95 % interval {pairs.low:.3f} to {pairs.high:.3f}: over {OVERHEAD_TARGET}"
        )
