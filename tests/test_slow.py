"""Real but slow: torch.compile of the UNet and the full-size architecture. Run with `pytest -m slow`."""

from __future__ import annotations

import pytest

from .conftest import run_tiny

pytestmark = pytest.mark.slow


def test_compile_mode_compiles_the_unet_and_reports_its_cost(tmp_path):
    """The guide's torch.compile(unet, mode="reduce-overhead", fullgraph=True), for real on the CPU."""
    result = run_tiny(tmp_path, "opt=compile", "bench.warmup=1", "bench.repeats=2")
    assert result.status == "ok", result.reason
    assert result.applied["unet_compiled"] is True
    assert result.latency.compile_overhead_s > 0
    assert result.latency.cold_s > result.latency.stats.median
