"""The profile (profile.enabled=true): one extra call under torch.profiler, on the real tiny pipeline on a CPU.

Nothing is mocked. The GPU figures (kernel time, device busy and idle) cannot be produced on this machine and
are not tested here; the CPU path below exercises the same ranges, tree walk and tables.
"""

from __future__ import annotations

import gzip
import json
import math
import statistics

import pytest
import torch

from svdbench.measure.profile import BLOCK_KINDS, CATEGORIES, UNET, Profile, profile_call, save_profile_comparison
from svdbench.record.results import RunResult

from .conftest import run_tiny, typed_config


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("profiled")
    result = run_tiny(run_dir, "profile.enabled=true", "bench.repeats=2")
    assert result.ok, result.reason
    return run_dir, result


def _trace(run_dir, result: RunResult) -> dict:
    path = run_dir / result.files["trace"]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return json.load(handle)


def test_block_kinds_and_phases_add_up(profiled):
    _, result = profiled
    profile = result.profile
    assert isinstance(profile, Profile) and profile.time_basis == "cpu wall"
    assert profile.unet_calls == result.num_inference_steps  # guidance batches both halves into one call
    assert set(profile.blocks_s) == set(BLOCK_KINDS)
    assert all(seconds > 0 for seconds in profile.blocks_s.values()), profile.blocks_s  # rest >= 0: none counted twice
    assert math.isclose(sum(profile.blocks_s.values()), profile.unet_s, rel_tol=0.05)
    assert 0 < profile.unet_s <= profile.phases_s["denoising"]
    assert math.isclose(sum(profile.vae_decoder_parts_s.values()), profile.vae_decoder_s, rel_tol=0.05)
    assert min(profile.vae_decoder_parts_s.values()) > 0
    named = profile.phases_s["conditioning"] + profile.phases_s["denoising"] + profile.phases_s["decode"]
    assert math.isclose(named, profile.call_s, rel_tol=0.05), profile.phases_s
    assert len(profile.steps_s) == result.num_inference_steps
    assert math.isclose(sum(profile.steps_s), profile.phases_s["denoising"])


def test_kinds_agree_with_the_trace_and_never_nest(profiled):
    """An independent check from trace.json: the kinds' ranges never contain one another, and their durations
    add up to the profile's figures."""
    run_dir, result = profiled
    trace = _trace(run_dir, result)
    ranges = [e for e in trace["traceEvents"] if e.get("ph") == "X" and e["name"].startswith(f"{UNET}/")]
    assert {e["name"].rsplit("/", 1)[-1] for e in ranges} == set(BLOCK_KINDS) - {"rest"}
    ranges.sort(key=lambda e: e["ts"])
    for before, after in zip(ranges, ranges[1:]):
        assert after["ts"] >= before["ts"] + before["dur"] - 1, (before["name"], after["name"])  # 1 us rounding
    for kind in set(BLOCK_KINDS) - {"rest"}:
        total = sum(e["dur"] for e in ranges if e["name"].endswith(f"/{kind}")) * 1e-6
        assert math.isclose(total, result.profile.blocks_s[kind], rel_tol=0.01)
    unet = sum(e["dur"] for e in trace["traceEvents"] if e.get("name") == UNET) * 1e-6
    assert math.isclose(unet, result.profile.unet_s, rel_tol=0.01)


def test_categories_top_ops_and_flops(profiled):
    _, result = profiled
    profile = result.profile
    assert set(profile.categories_s) == set(CATEGORIES)
    assert profile.categories_s["convolution"] > 0 and profile.categories_s["matmul"] > 0
    assert math.isclose(sum(profile.categories_s.values()) + profile.outside_ops_s, profile.call_s, rel_tol=1e-6)
    assert 0 <= profile.outside_ops_s < 0.2 * profile.call_s
    assert len(profile.top_ops) == 15
    for op in profile.top_ops:
        assert op.name.startswith("aten::") and hasattr(torch.ops.aten, op.name.removeprefix("aten::")), op.name
        assert op.category in CATEGORIES and op.calls > 0 and 0 < op.share < 1
    assert [op.seconds for op in profile.top_ops] == sorted((op.seconds for op in profile.top_ops), reverse=True)
    assert {op.category for op in profile.top_ops} >= {"convolution", "matmul"}
    for kind in ("matmul", "convolution", "attention"):
        assert profile.flops[kind] > 0 and profile.tflops_per_s[kind] > 0, kind
        assert profile.flops_coverage[kind] == pytest.approx(1.0, abs=0.05), kind  # every such op has its FLOPs
    # Counted from the trace's ops and shapes, independently of the FLOP counter on meta tensors: the same total.
    assert sum(profile.flops.values()) == pytest.approx(result.flops.call.total_tflop * 1e12, rel=0.02)


def test_trace_and_picture_are_written_and_results_round_trip(profiled):
    run_dir, result = profiled
    assert result.files["trace"] == "trace.json.gz" and result.files["profile_plot"] == "profile.png"
    trace = _trace(run_dir, result)
    assert len(trace["traceEvents"]) > 1000
    assert any(e.get("name") == "svdbench/call" for e in trace["traceEvents"])
    assert (run_dir / "trace.json.gz").stat().st_size == result.profile.trace_bytes
    assert result.profile.trace_bytes < result.profile.trace_json_bytes
    assert (run_dir / "profile.png").read_bytes()[:4] == b"\x89PNG"
    loaded = RunResult.load(run_dir)
    assert isinstance(loaded.profile, Profile)
    assert loaded.profile == result.profile


def test_the_profiled_call_stays_out_of_the_measured_figures(profiled, tmp_path):
    _, result = profiled
    plain = run_tiny(tmp_path, "bench.repeats=2")
    assert plain.profile is None and "trace" not in plain.files
    assert len(result.latency.calls_s) == len(plain.latency.calls_s) == 2
    assert result.profile.call_s not in result.latency.calls_s
    assert len(result.steps.per_call_s) == 2  # the profiled call's steps are not among the measured ones
    # The median is that of the measured calls alone (a structural check: timings on a shared machine vary).
    assert result.median_s == pytest.approx(statistics.median(result.latency.calls_s))


def test_a_call_that_cannot_be_traced_is_a_note(tiny_pipeline):
    """Inside another profiler (an outer torch.profiler around svdbench) a second one would take its events."""
    notes: list[str] = []
    cfg = typed_config("profile.enabled=true").profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        profile, trace = profile_call(
            tiny_pipeline, lambda: pytest.fail("must not run"), torch.device("cpu"), cfg, notes
        )
    assert profile is None and trace is None
    assert len(notes) == 1 and "already running" in notes[0]


def test_comparison_picture(profiled, tmp_path):
    _, result = profiled
    path = save_profile_comparison([("opt=none", result.profile), ("again", result.profile)], tmp_path / "p.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert save_profile_comparison([], tmp_path / "none.png") is None


def test_a_comparison_of_profiled_jobs_draws_their_bars_side_by_side(profiled, tmp_path):
    """compare() on a directory of jobs run with profile.enabled=true writes profiles.png beside its table."""
    import shutil

    from svdbench.compare.command import compare

    run_dir, _ = profiled
    for job in ("0", "1"):
        (tmp_path / "sweep" / job).mkdir(parents=True)
        for name in ("results.json", "frames.npz"):
            shutil.copy(run_dir / name, tmp_path / "sweep" / job / name)
    comparison = compare(tmp_path / "sweep")
    assert comparison.files["profiles"].read_bytes()[:4] == b"\x89PNG"
    plain = tmp_path / "plain"
    (plain / "0").mkdir(parents=True)
    result = RunResult.load(run_dir)
    result.profile = None
    result.save(plain / "0")
    assert "profiles" not in compare(plain).files  # no profile, no picture
