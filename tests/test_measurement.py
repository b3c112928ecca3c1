"""Ground truths for the numbers in results.json: timers, steps, phases, memory, FLOPs, MFU."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from torch import nn

from svdbench.files.cache import JsonCache
from svdbench.measure.flops import (
    _meta_copy,
    call_flops,
    count_flops,
    device_peak_tflops,
    gpu_peak_tflops,
    unet_step_flops,
    utilization,
    vae_decode_flops,
)
from svdbench.measure.memory import GIB, MemoryTracker
from svdbench.measure.timing import CallProbe, Clock, Stats
from svdbench.media.image import test_card
from svdbench.pipeline.call import CallShape
from svdbench.pipeline.models import _read, architecture_dir, build_random_pipeline, meta_module

from .conftest import run_tiny

CPU = torch.device("cpu")


def test_clock_measures_work_of_known_duration():
    clock = Clock(CPU)
    start = clock.mark()
    time.sleep(0.2)
    elapsed = clock.seconds(start, clock.mark())
    assert 0.2 <= elapsed < 0.4


def _tiny_call(pipe, probe, steps):
    return lambda: pipe(
        test_card(128, 128),
        height=128,
        width=128,
        num_frames=4,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=probe.on_step_end,
        output_type="np",
    ).frames[0]


def test_phase_and_step_timers_see_injected_work_of_known_duration():
    """Sleep 30 ms in every scheduler step and 200 ms in the VAE decode: the timers must find them."""
    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    pipe.set_progress_bar_config(disable=True)
    step, decode = pipe.scheduler.step, pipe.vae.decode
    pipe.scheduler.step = lambda *a, **k: (time.sleep(0.03), step(*a, **k))[1]
    pipe.vae.decode = lambda *a, **k: (time.sleep(0.2), decode(*a, **k))[1]
    probe = CallProbe(pipe, Clock(CPU))
    _, timing = probe.measure(_tiny_call(pipe, probe, steps=5))
    assert len(timing.steps_s) == 5
    assert min(timing.steps_s) >= 0.03
    assert timing.denoising_s >= 5 * 0.03
    assert timing.decode_s >= 0.2
    assert abs(sum(timing.steps_s) - timing.denoising_s) < 1e-9
    accounted = timing.conditioning_s + timing.denoising_s + timing.decode_s
    assert accounted <= timing.total_s and accounted / timing.total_s > 0.95


def test_every_call_times_all_of_its_steps_and_starts_afresh():
    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    pipe.set_progress_bar_config(disable=True)
    probe = CallProbe(pipe, Clock(CPU))
    for steps in (3, 5, 2):
        _, timing = probe.measure(_tiny_call(pipe, probe, steps))
        assert len(timing.steps_s) == steps
        assert all(s > 0 for s in timing.steps_s)


def test_run_reports_steps_phases_and_throughput_consistently(tmp_path):
    result = run_tiny(tmp_path, "num_inference_steps=4", "bench.warmup=2", "bench.repeats=3")
    assert result.status == "ok", result.reason
    assert len(result.latency.warmup_s) == 2 and result.latency.cold_s > 0
    assert [len(c) for c in result.steps.per_call_s] == [4, 4, 4]
    assert result.phases.coverage > 0.95
    assert result.latency.stats.n == 3
    assert result.throughput.frames_per_s == pytest.approx(8 / result.latency.stats.median)
    assert result.steps.it_per_s == pytest.approx(1 / result.steps.s_per_step)
    assert result.timing_method == "perf_counter"
    assert result.memory.host_method and result.memory.device_max_allocated_gib is None  # CPU: no device memory


def test_measured_calls_continue_until_count_and_duration_are_both_met(tmp_path):
    result = run_tiny(tmp_path, "bench.repeats=1", "bench.min_seconds=2.0")
    calls = result.latency.calls_s
    assert sum(calls) >= 2.0 and sum(calls[:-1]) < 2.0  # stopped at the first call that met both
    if calls[0] < 2.0:
        assert len(calls) >= 2


def test_stats():
    stats = Stats.of([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (stats.median, stats.mean, stats.min, stats.max) == (3.0, 3.0, 1.0, 5.0)
    assert stats.p90 == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))
    assert stats.rel_spread == pytest.approx(4.0 / 3.0)


@pytest.mark.parametrize("force_sampling", [False, True], ids=["kernel-hwm", "sampling"])
def test_host_memory_tracker_sees_a_known_allocation(force_sampling):
    tracker = MemoryTracker(CPU, force_sampling=force_sampling)
    size = 512 * 2**20
    with tracker.track():
        block = np.ones(size, dtype=np.uint8)  # ones, not zeros: every page is really touched
        time.sleep(0.05)
        del block
    grown = tracker.last.host_peak_gib - tracker.last.host_before_gib
    assert grown == pytest.approx(size / GIB, rel=0.10)


def test_flop_counter_on_a_known_matmul():
    with torch.device("meta"):
        a, b = torch.empty(64, 128), torch.empty(128, 32)
    assert count_flops(torch.mm, a, b) == 2 * 64 * 128 * 32


def _hand_count(module: nn.Module, run) -> int:
    """FLOPs from layer shapes: 2 x outputs x inputs-per-output for convs and linears, 4 x B x L x S x D for
    attention (QK^T and AV). An independent count to check the flop counter against."""
    total = 0

    def layer(mod, inputs, output):
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += 2 * output.numel() * mod.in_features
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            kernel = int(np.prod(mod.kernel_size))
            total += 2 * output.numel() * (mod.in_channels // mod.groups) * kernel

    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted_sdpa(q, k, v, *args, **kwargs):
        nonlocal total
        total += 4 * q.shape[:-1].numel() * k.shape[-2] * q.shape[-1]
        return sdpa(q, k, v, *args, **kwargs)

    handles = [m.register_forward_hook(layer) for m in module.modules()]
    torch.nn.functional.scaled_dot_product_attention = counted_sdpa
    try:
        run()
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
        for handle in handles:
            handle.remove()
    return total


def test_flop_counter_agrees_with_a_hand_count_on_the_tiny_unet():
    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    unet = pipe.unet
    sample, states = torch.randn(2, 4, 8, 16, 16), torch.randn(2, 1, 32)
    time_ids, timestep = torch.randn(2, 3), torch.tensor(10.0)
    with torch.no_grad():
        hand = _hand_count(unet, lambda: unet(sample, timestep, encoder_hidden_states=states, added_time_ids=time_ids))
    counted = unet_step_flops(unet, batch=2, num_frames=4, latent_h=16, latent_w=16)
    assert hand > 0
    assert counted == pytest.approx(hand, rel=0.01)


def test_svd_xt_unet_call_is_about_160_tflop():
    """The published reference: one SVD-XT UNet call at 576x1024, 25 frames, batch 2, about 160 TFLOP."""
    directory = architecture_dir("svd_xt")
    unet = meta_module(lambda: UNetSpatioTemporalConditionModel.from_config(_read(directory, "unet/config.json")))
    per_step = unet_step_flops(unet, batch=2, num_frames=25, latent_h=72, latent_w=128)
    assert per_step / 1e12 == pytest.approx(160, rel=0.02)
    # Without classifier-free guidance the batch halves, and so does the work.
    assert unet_step_flops(unet, batch=1, num_frames=25, latent_h=72, latent_w=128) == pytest.approx(per_step / 2)


def test_vae_decode_flops_do_not_depend_much_on_chunking_and_cover_every_frame(tiny_pipeline):
    whole = vae_decode_flops(tiny_pipeline.vae, num_frames=8, chunk=8, latent_h=16, latent_w=16)
    chunked = vae_decode_flops(tiny_pipeline.vae, num_frames=8, chunk=3, latent_h=16, latent_w=16)  # 3 + 3 + 2
    assert chunked == pytest.approx(whole, rel=0.05)


def test_call_flops_add_up(tiny_pipeline):
    flops = call_flops(
        tiny_pipeline, shape=CallShape(1, 8), height=128, width=128, steps=25, guidance=True, decode_chunk=8
    )
    assert flops.denoising_tflop == pytest.approx(25 * flops.unet_per_step_tflop)
    parts = flops.denoising_tflop + flops.vae_decode_tflop + flops.conditioning_tflop
    assert flops.total_tflop == pytest.approx(parts)


def test_meta_copies_hold_no_memory(tiny_pipeline):
    for module in (tiny_pipeline.unet, tiny_pipeline.vae, tiny_pipeline.image_encoder):
        copy = _meta_copy(module)
        assert {t.device.type for t in [*copy.parameters(), *copy.buffers()]} == {"meta"}


def test_gpu_peak_table_and_mfu():
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert gpu_peak_tflops("NVIDIA H100 PCIe", "fp16") == 756.5
    assert gpu_peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5
    assert gpu_peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 tensor cores
    assert gpu_peak_tflops("Some Future GPU", "fp16") is None
    from svdbench.measure.flops import CallFlops

    flops = CallFlops(
        unet_per_step_tflop=160, denoising_tflop=4000, vae_decode_tflop=170, conditioning_tflop=30, total_tflop=4200
    )
    report = utilization(flops, denoising_s=10.0, call_s=12.0, peak=989.4, source="test")
    assert report.denoising_tflops_per_s == pytest.approx(400)
    assert report.mfu_denoising == pytest.approx(400 / 989.4)
    assert report.mfu_call == pytest.approx(350 / 989.4)


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SVDBENCH_CACHE_DIR", str(tmp_path))
    from svdbench.measure import flops

    monkeypatch.setattr(flops, "PEAK_CACHE", JsonCache("cpu_peaks.json"))
    peak, source = device_peak_tflops(CPU, torch.float32)
    assert peak > 0 and "measured fp32 GEMM peak" in source
    stored = json.loads((tmp_path / "cpu_peaks.json").read_text())
    assert list(stored.values()) == [peak]
    # A new process reads the file and measures nothing: the stored value comes back, whatever it is.
    key = next(iter(stored))
    (tmp_path / "cpu_peaks.json").write_text(json.dumps({key: 1000.0}))
    flops.PEAK_CACHE.forget()
    assert device_peak_tflops(CPU, torch.float32) == (1000.0, source)


def test_cpu_peak_cached_under_load_is_measured_again_when_a_run_beats_it(tmp_path, monkeypatch):
    # A peak measured while the machine was busy reads low, and every later run's MFU would exceed 1.
    monkeypatch.setenv("SVDBENCH_CACHE_DIR", str(tmp_path))
    from svdbench.measure import flops

    monkeypatch.setattr(flops, "PEAK_CACHE", JsonCache("cpu_peaks.json"))
    true_peak, _ = device_peak_tflops(CPU, torch.float32)
    key = next(iter(json.loads((tmp_path / "cpu_peaks.json").read_text())))
    flops.PEAK_CACHE.put(key, 1e-9)  # as if measured under heavy load
    assert device_peak_tflops(CPU, torch.float32, achieved=1e-10)[0] == 1e-9  # not beaten: kept
    peak, source = device_peak_tflops(CPU, torch.float32, achieved=1e-6)
    assert peak > 1e-6 and peak > true_peak / 20 and "re-measured" in source
    assert json.loads((tmp_path / "cpu_peaks.json").read_text())[key] == peak


def test_run_reports_flops_and_mfu(tmp_path):
    result = run_tiny(tmp_path)
    counts, achieved = result.flops.call, result.flops.utilization
    assert counts.unet_per_step_tflop > 0 and counts.total_tflop > counts.denoising_tflop and counts.videos == 1
    assert achieved.denoising_tflops_per_s == pytest.approx(counts.denoising_tflop / result.phases.denoising_s)
    assert 0 < achieved.mfu_denoising < 1.5  # a measured CPU peak can be beaten a little by a lucky call


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_uses_events_and_reports_device_memory(tmp_path):
    result = run_tiny(tmp_path, "device=cuda")
    assert result.status == "ok", result.reason
    assert result.timing_method == "cuda-events"
    assert result.memory.device_max_allocated_gib > 0
    assert result.memory.device_max_reserved_gib >= result.memory.device_max_allocated_gib
    achieved = result.flops.utilization
    assert achieved.peak_tflops_per_s is None or achieved.mfu_denoising > 0
