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


def test_a_compiled_mode_is_checked_with_another_image_and_another_seed(tmp_path):
    """bench.second_input: two calls after the measured ones, with what dynamo compiled during each."""
    result = run_tiny(tmp_path, "opt=compile", "opt.compile.mode=default", "bench.repeats=1")
    assert result.status == "ok", result.reason
    check = result.compile_check
    assert check is not None and [c.kind for c in check.calls] == ["another image", "another seed"]
    for call in check.calls:
        assert call.status == "ok", call.reason
        assert call.latency_s is not None and call.latency_s > 0
        # Same shapes, other values: a compiled UNet that holds compiles no new graph.
        assert call.recompilations == 0
        assert call.device_memory_growth_gib is None  # no GPU here: nothing to grow
    # The measured figures are those of the measured calls only.
    assert result.latency.stats is not None and result.latency.stats.n == 1


def test_a_compile_check_failure_is_data_not_a_crash(tmp_path):
    """A second-input call that fails is recorded as an error call; the run stays ok. The fault is injected
    (the check's seeded generator raises): no real failure of a compiled pipeline can be provoked on a CPU."""
    import svdbench.pipeline.call as call_module

    original = call_module.generators

    def failing(cfg, seed=None):
        if seed is not None:  # only the compile check passes a seed: make its call fail inside the pipeline
            raise RuntimeError("generator refused for the test")
        return original(cfg, seed)

    call_module.generators = failing
    try:
        result = run_tiny(tmp_path, "opt=compile", "opt.compile.mode=default", "bench.repeats=1")
    finally:
        call_module.generators = original
    assert result.status == "ok", result.reason
    calls = {c.kind: c for c in result.compile_check.calls}
    assert calls["another image"].status == "ok"
    assert calls["another seed"].status == "error" and "generator refused" in calls["another seed"].reason


def test_the_batch_experiment_sweeps_batch_sizes_and_draws_throughput_against_batch(tmp_path):
    from .conftest import run_cli

    proc = run_cli(
        tmp_path,
        "experiment=batch",
        "batch_size=1,2",
        "num_inference_steps=2",
        "bench.warmup=0",
        "bench.repeats=1",
        "bench.progress=false",
        "logger=none",
        "hydra.sweep.dir=sweep",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from svdbench.record.results import RunResult

    results = sorted(
        (RunResult.load(p) for p in (tmp_path / "sweep").glob("*/results.json")), key=lambda r: r.batch_size
    )
    assert [r.batch_size for r in results] == [1, 2]
    assert all(r.ok and r.throughput.videos_per_hour > 0 for r in results)
    assert (tmp_path / "sweep" / "batch.png").stat().st_size > 10_000
