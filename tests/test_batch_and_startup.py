"""Batches (batch_size) and the time from nothing to the first video (results.startup), on real tiny runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svdbench.pipeline.models import build_random_pipeline
from svdbench.runner import oom_reason
from tests.conftest import FAST, read_json, run_cli, run_tiny, typed_config

# Largest difference, in uint8 grey levels, allowed between video k of a batch and the unbatched run with seed
# + k. Batched convolutions and matmuls sum in another order than single ones (other kernel blocking), so
# fp32 results differ in the last bits; after the denoising steps and the uint8 rounding that is at most a
# level or two. Measured on the tiny model (batch of 3, fp32, CPU): at most 1 level in every video.
BATCH_TOLERANCE_LEVELS = 2


def frames_of(run_dir) -> np.ndarray:
    return np.load(run_dir / "frames.npz")["frames"]


@pytest.mark.slow  # several real runs or CLI calls; CI runs it with -m slow
def test_every_video_of_a_batch_is_the_unbatched_video_of_its_seed(tmp_path):
    # Random weights are seeded with the run's seed unless model.weights_seed fixes them: one model for all.
    batched = run_tiny(tmp_path / "batch", "batch_size=3", "seed=7", "model.weights_seed=7", "metrics.enabled=false")
    assert batched.status == "ok", batched.reason
    assert batched.seeds == [7, 8, 9] and batched.batch_size == 3
    videos = frames_of(tmp_path / "batch")
    assert videos.shape == (3, 8, 128, 128, 3)
    worst = []
    for k, seed in enumerate(batched.seeds):
        single = run_tiny(tmp_path / f"seed{seed}", f"seed={seed}", "model.weights_seed=7", "metrics.enabled=false")
        alone = frames_of(tmp_path / f"seed{seed}")
        assert alone.shape == (8, 128, 128, 3)  # a batch of one keeps the layout of earlier files
        difference = np.abs(videos[k].astype(int) - alone.astype(int))
        worst.append(int(difference.max()))
        assert difference.max() <= BATCH_TOLERANCE_LEVELS, (k, seed, difference.max(), single.frames_hash)
    print("largest difference per video, grey levels:", worst)
    # The videos are different generations, not one video three times.
    assert not np.array_equal(videos[0], videos[1]) and not np.array_equal(videos[1], videos[2])


def test_why_a_batch_repeats_the_image_instead_of_num_videos_per_prompt():
    """What was found in diffusers 0.42.1: with one image and num_videos_per_prompt=B, the pipeline draws the
    image's noise augmentation (randn_tensor of the image's shape, batch 1) from generator[0] only. So video
    k > 0 shares video 0's augmentation noise and its generator skipped that draw: it is not the unbatched
    video of its seed. Passing the image B times gives every video its own draw, in the unbatched order, so a
    run does that. If the second assertion starts failing, diffusers has changed this."""
    from svdbench.media.image import conditioning_image

    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=3)
    pipe.set_progress_bar_config(disable=True)
    image = conditioning_image(None, 64, 64)
    settings = dict(height=64, width=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4, output_type="np")

    def seeded(*seeds):
        return [torch.Generator("cpu").manual_seed(s) for s in seeds]

    alone = pipe(image, generator=seeded(8)[0], **settings).frames[0]
    repeated = pipe([image, image], generator=seeded(7, 8), **settings).frames
    per_prompt = pipe(image, num_videos_per_prompt=2, generator=seeded(7, 8), **settings).frames
    assert np.abs(repeated[1] - alone).max() < 1e-4
    assert np.abs(per_prompt[1] - alone).max() > 1e-2


@pytest.fixture(scope="module")
def unbatched(tmp_path_factory):
    """One real run of the tiny model, a batch of one (shared by the tests that only read it)."""
    return run_tiny(tmp_path_factory.mktemp("unbatched"))


@pytest.fixture(scope="module")
def batch_of_three(tmp_path_factory):
    """One real run of the tiny model, three videos per call, two measured calls; its directory beside it."""
    run_dir = tmp_path_factory.mktemp("batch")
    return run_tiny(run_dir, "batch_size=3", "bench.repeats=2"), run_dir


def test_a_batch_reports_per_call_and_per_video_figures(batch_of_three):
    result, run_dir = batch_of_three
    assert result.status == "ok", result.reason
    throughput = result.throughput
    assert throughput is not None and throughput.s_per_call == pytest.approx(result.median_s)
    assert throughput.s_per_video == pytest.approx(result.median_s / 3)
    assert throughput.videos_per_hour == pytest.approx(3600 * 3 / result.median_s)
    assert throughput.frames_per_s == pytest.approx(3 * 8 / result.median_s)
    assert result.memory is not None and len(result.memory.calls_gib) == 2
    assert any("video 0 of the batch of 3" in note for note in result.notes)
    data = read_json(run_dir / "results.json")
    assert data["seeds"] == [42, 43, 44] and data["throughput"]["videos_per_hour"] > 0


def test_a_batch_of_three_does_three_times_the_flops_of_one_video(unbatched, batch_of_three):
    """The run's FLOPs are those of the whole call: TFLOP/s x denoising seconds is three videos' denoising
    FLOPs, and MFU is that rate over the peak (a count of one video made both low by the batch size)."""
    batched, _ = batch_of_three
    assert unbatched.flops is not None and batched.flops is not None and batched.phases is not None
    one_video = unbatched.flops.call.denoising_tflop
    achieved = batched.flops.utilization
    assert achieved.denoising_tflops_per_s is not None and achieved.peak_tflops_per_s is not None
    assert achieved.denoising_tflops_per_s * batched.phases.denoising_s == pytest.approx(3 * one_video, rel=0.03)
    assert achieved.mfu_denoising == pytest.approx(achieved.denoising_tflops_per_s / achieved.peak_tflops_per_s)
    assert batched.flops.call.videos == 3 and batched.flops.per_video_tflop == pytest.approx(
        unbatched.flops.call.total_tflop, rel=0.03
    )


def test_the_planner_counts_the_flops_the_run_reports(unbatched, batch_of_three):
    """svdbench.plan's FLOPs of the same configuration (counted on the weightless pipeline) are the run's."""
    from svdbench.plan.planner import planned_flops

    batched, _ = batch_of_three
    planned = planned_flops(typed_config(*FAST, "batch_size=3", "bench.repeats=2"), "fp32")
    assert batched.flops is not None and unbatched.flops is not None
    assert planned == batched.flops.call
    assert planned.denoising_tflop == pytest.approx(3 * unbatched.flops.call.denoising_tflop, rel=0.03)


def test_an_unbatched_run_reports_the_same_figures_as_before_batches(unbatched):
    result = unbatched
    assert result.status == "ok" and result.batch_size == 1 and result.seeds == [42]
    assert result.throughput is not None and result.throughput.s_per_video == pytest.approx(result.median_s)
    # No prices by default: the cost section says so instead of making one up.
    assert result.cost is not None and result.cost.usd_per_video is None
    assert result.cost.method == "no prices given (usd_per_hour, usd_per_kwh are null by default)"


def test_prices_give_dollars_per_video(tmp_path):
    result = run_tiny(tmp_path, "cost.usd_per_hour=3.6")
    assert result.status == "ok" and result.cost is not None and result.throughput is not None
    assert result.cost.usd_per_video == pytest.approx(result.throughput.s_per_video * 3.6 / 3600)
    assert result.cost.usd_per_1000_videos == pytest.approx(1000 * result.cost.usd_per_video)


def test_time_to_first_video_from_a_checkpoint_on_disk(tmp_path):
    build_random_pipeline("tiny", torch.float32, "cpu", seed=42).save_pretrained(tmp_path / "ckpt")
    result = run_tiny(tmp_path / "run", "model.weights=pretrained", f"model.path={tmp_path / 'ckpt'}")
    assert result.status == "ok", result.reason
    startup = result.startup
    assert str(tmp_path / "ckpt") in startup.source
    parts = [startup.build_s, startup.placement_s, startup.optimize_s, startup.cold_call_s]
    assert all(part is not None and part >= 0 for part in parts), parts
    assert startup.build_s > 0 and startup.cold_call_s == result.latency.cold_s
    assert startup.time_to_first_video_s == pytest.approx(sum(parts))  # type: ignore[arg-type]
    saved = read_json(tmp_path / "run" / "results.json")["startup"]
    assert saved["time_to_first_video_s"] == pytest.approx(startup.time_to_first_video_s)


def test_random_weights_say_nothing_was_read_from_disk(unbatched):
    result = unbatched
    assert "random weights" in result.startup.source and result.startup.time_to_first_video_s is not None


def test_an_out_of_memory_batch_names_its_batch_size():
    """The reason an `oom` result gets (real function, a real exception object; no allocation fails here)."""
    cfg = typed_config("batch_size=4")
    from svdbench.record.results import RunResult

    reason = oom_reason(MemoryError("can't allocate memory"), cfg, RunResult())
    assert "batch_size=4" in reason and "a smaller batch_size" in reason


@pytest.mark.parametrize(
    "override, expected",
    [
        ("batch_size=0", "batch_size=0 is invalid: it must be from 1 up to 256"),
        ("cost.usd_per_hour=-2", "cost.usd_per_hour=-2 is invalid: it must be 0 or more"),
        ("cost.usd_per_kwh=nan", "cost.usd_per_kwh=nan is invalid: it must be a finite number"),
        ("energy.source=rapl9", "energy.source='rapl9' is not valid: choose one of auto, zeus, nvml, none"),
        ("seed=9223372036854775807", None),
    ],
)
def test_bad_batch_energy_and_price_settings_are_refused_before_anything_is_built(tmp_path, override, expected):
    extra = ["batch_size=2"] if override.startswith("seed=") else []
    proc = run_cli(tmp_path, *FAST, "logger=none", override, *extra, "hydra.run.dir=run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (expected or "video k of a batch uses seed + k") in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()
