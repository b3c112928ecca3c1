"""The measurement loop: build, optimize, cold call, warm-ups, measured calls, quality metrics.

Read top to bottom in `_measure`; everything else here is small helpers and turning failures into
results (status `unsupported`, `oom`, `nan`, `error`) instead of crashes. Nothing here writes a file:
`run` returns a `Measurement` (the results and the frames), and `svdbench.record.rundir` writes it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from svdbench.measure import compile_cache
from svdbench.measure.energy import EnergyMeter, cost
from svdbench.measure.flops import RunFlops, config_flops, device_peak_tflops, rate, utilization
from svdbench.measure.machine import MachineState, MachineWatch
from svdbench.measure.memory import GIB, MemoryPeak, MemoryTracker, release_freed_memory
from svdbench.measure.profile import profile_call
from svdbench.measure.timing import CallProbe, CallTiming, Clock, enough, summarize_calls
from svdbench.media.image import InputImageError, conditioning_image
from svdbench.media.video import BadFrames, to_uint8
from svdbench.metrics import compute_suite, paired_chunk_psnr
from svdbench.pipeline import parallel
from svdbench.pipeline.call import CallShape, call_inputs, decode_chunk, decodes_in_chunks
from svdbench.pipeline.models import TORCH_DTYPES, WeightsNotFound, build_pipeline, dtype_name
from svdbench.pipeline.optimizations import (
    Unsupported,
    apply_optimizations,
    call_context,
    check_supported,
    inspect_pipeline,
)
from svdbench.plan import try_predict
from svdbench.quality.samples import generate as generate_samples
from svdbench.record.identity import config_hash, frames_hash
from svdbench.record.ranks import merge as merge_ranks
from svdbench.record.results import CompileCheck, ExtraCall, RunResult, now_iso
from svdbench.settings.config import RunConfig

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Unsupported(
            f"device={name} was asked for, but this machine has no usable CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). Use device=cpu or device=auto."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise Unsupported(f"device={name} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def select_dtype(run_dtype: str, model_dtype: str, device: torch.device) -> torch.dtype:
    if run_dtype == "auto":
        run_dtype = model_dtype if device.type == "cuda" and model_dtype != "auto" else "fp32"
    return TORCH_DTYPES[run_dtype]


@dataclass
class Measurement:
    """What one run produced, before anything is written: the results, the frames of every video of the last
    measured call (uint8, batch x T x H x W x 3), for an unexpected error its traceback, and with
    profile.enabled the profiled call's Chrome trace (bytes)."""

    result: RunResult
    videos: np.ndarray | None = None
    traceback: str | None = None
    trace: bytes | None = None
    machine: MachineState | None = None  # the machine during the run (environment.state of the record)
    watch: MachineWatch | None = field(default=None, repr=False)
    samples: Path | None = None  # the quality samples' frames, spooled until the record writer copies them

    @property
    def video(self) -> np.ndarray | None:
        """Video 0 (T x H x W x 3): the one a batch of one generates, and the one pictures show."""
        return self.videos[0] if self.videos is not None else None


def run(cfg: RunConfig) -> Measurement:
    """Measure one configuration; never raises for a failure that belongs in the results. Under torchrun
    (parallel=cfg|data) this rank measures its share, and rank 0's measurement holds every rank's."""
    if cfg.parallel == "none":
        return _run_alone(cfg)
    world = parallel.join(cfg.device)
    mine = _run_alone(parallel.rank_config(cfg, world))
    gathered = parallel.gather(world, (mine.result, mine.videos, world.host, parallel.cuda_visible_devices()))
    if gathered is not None:
        mine.result, mine.videos = merge_ranks(cfg, gathered)
        mine.result.config_hash = config_hash(cfg)
        if mine.videos is not None:
            mine.result.frames_hash = frames_hash(mine.videos[0] if cfg.batch_size == 1 else mine.videos)
    return mine


def _run_alone(cfg: RunConfig) -> Measurement:
    result = RunResult.of(cfg)
    if cfg.model.weights == "random":
        result.notes.append(
            "Random weights: latency and memory are those of the real architecture, but the frames are "
            "noise, so flicker and fidelity metrics say nothing about the model's quality."
        )
    if cfg.model.weights == "random" and cfg.batch_size > 1:
        result.notes.append(
            f"Video k of this batch is the video of an unbatched run with seed={cfg.seed}+k and "
            f"model.weights_seed={cfg.weights_seed}: random weights are seeded with the run's seed unless "
            "model.weights_seed fixes them."
        )
    measurement = Measurement(result)
    try:
        measurement.videos = _measure(cfg, result, measurement)
    except Unsupported as exc:
        result.fail("unsupported", str(exc))
    except BadFrames as exc:
        result.fail("nan", str(exc))
    except (WeightsNotFound, InputImageError) as exc:
        result.fail("error", str(exc))
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one by the entry point
        result.fail("interrupted", "Interrupted (Ctrl-C or SIGTERM) before the run finished; run it again.")
    except Exception as exc:  # anything else is still a result; the traceback goes to the log
        if is_out_of_memory(exc):
            result.fail("oom", oom_reason(exc, cfg, result))
        else:
            log.debug("Run failed:\n%s", traceback.format_exc())
            measurement.traceback = traceback.format_exc()
            result.fail("error", f"{type(exc).__name__}: {exc} (traceback in error.txt)")
    if measurement.watch is not None:  # whatever happened: the machine's state at the end, and its warnings
        measurement.machine = measurement.watch.finish()
        result.notes += [f"Machine: {warning}" for warning in measurement.machine.warnings]
    result.finished_at = now_iso()
    return measurement


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, Python/numpy MemoryError, or the CPU allocator's "can't allocate memory"."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def oom_reason(exc: BaseException, cfg: RunConfig, result: RunResult) -> str:
    first_line = (str(exc).splitlines() or [""])[0][:300]
    peak = ""
    if result.memory is not None:
        device = result.memory.device_max_reserved_gib
        peak = f" Peak reached: host {result.memory.host_peak_gib:.2f} GiB" + (
            f", device {device:.2f} GiB reserved." if device is not None else "."
        )
    return (
        f"Out of memory ({type(exc).__name__}: {first_line}) with model={cfg.model.name}, opt={cfg.opt.name}, "
        f"batch_size={cfg.batch_size}, {cfg.height}x{cfg.width}, {cfg.num_frames} frames, "
        f"decode_chunk_size={cfg.opt.decode_chunk_size or 'all'}, "
        f"dtype={result.dtype or cfg.dtype}, device={result.device or cfg.device}."
        f"{peak} Try "
        + ("a smaller batch_size, " if cfg.batch_size > 1 else "")
        + "opt=lowmem, a smaller opt.decode_chunk_size, opt.forward_chunking=true, fewer frames or a smaller size."
    )


class Bench:
    """The measurement of one run, step by step: `_measure` calls the steps in order, and each fills its part of
    `result` as it goes (a failure half-way keeps what was measured)."""

    def __init__(self, cfg: RunConfig, result: RunResult, measurement: Measurement):
        self.cfg, self.result, self.measurement = cfg, result, measurement
        self.device = select_device(cfg.device)
        self.dtype = select_dtype(cfg.dtype, cfg.model.dtype, self.device)
        result.device, result.dtype = str(self.device), dtype_name(self.dtype)
        # first: the load average before this run adds to it
        self.watch = measurement.watch = MachineWatch(self.device)
        self.clock = Clock(self.device)
        self.memory = MemoryTracker(self.device)
        self.pipe: Any = None
        self.probe: CallProbe | None = None
        self.image: Image.Image | None = None

    def check(self) -> None:
        """Refuse what cannot run here (Unsupported) before anything is built; note what runs but misleads."""
        check_supported(self.cfg.opt, self.device, self.dtype)
        if self.device.type == "cpu" and self.dtype == torch.float16:
            self.result.notes.append(
                "fp16 on a CPU works but many kernels emulate it, so it is much slower than fp32 or bf16 there; "
                "its timings say little about fp16 on a GPU."
            )
            log.warning("%s", self.result.notes[-1])  # on the console before the first call, not only in the record
        self.image = conditioning_image(self.cfg.input.path, self.cfg.width, self.cfg.height)

    def build(self) -> None:
        """Build the pipeline, place it and apply the mode's optimizations, each timed (results.startup)."""
        cfg, startup, device = self.cfg, self.result.startup, self.device
        log.info("Building %s (%s weights, %s) on %s", cfg.model.name, cfg.model.weights, self.result.dtype, device)
        startup.source = describe_source(cfg)
        setup: dict[str, float] = {}
        with self.clock.section(setup, "build_s"):
            pipe = build_pipeline(cfg.model, self.device, self.dtype, cfg.weights_seed)
        self.pipe = apply_optimizations(pipe, cfg.opt, self.device, timed=lambda key: self.clock.section(setup, key))
        parallel.split_guidance(self.pipe, cfg)  # parallel=cfg: this rank runs half of the UNet's guidance batch
        startup.build_s, startup.placement_s, startup.optimize_s = (
            setup["build_s"],
            setup.get("placement_s"),
            setup.get("optimize_s"),
        )
        self.result.applied = inspect_pipeline(self.pipe)
        self.result.timing_method = self.clock.method
        self.probe = CallProbe(self.pipe, self.clock)

    def call(self, picture: Image.Image | None = None, seed: int | None = None) -> np.ndarray:
        """One pipeline call: every video of the batch (batch x T x H x W x 3, floats in [0, 1])."""
        assert self.probe is not None
        with call_context(self.cfg.opt, self.device):
            return self.pipe(
                **call_inputs(self.cfg, picture if picture is not None else self.image, seed),
                callback_on_step_end=self.probe.on_step_end,
                output_type="np",
            ).frames

    def tracked(self, desc: str, one_call: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, CallTiming]:
        """One timed call with its memory tracked; if it fails, its peak goes into the result."""
        assert self.probe is not None
        self.pipe.set_progress_bar_config(desc=desc, leave=False, disable=not self.cfg.bench.progress)
        try:
            with self.memory.track():
                return self.probe.measure(one_call or self.call)
        except BaseException:
            if self.memory.last is not None:
                self.result.memory = self.memory.last
                self.result.notes.append(f"Memory: the peak reached during the failed {desc} call.")
            raise

    def cold_call(self) -> CallTiming:
        """The first call (compilation, lazy initialisation): the end of the time to the first video."""
        release_freed_memory()
        with compile_cache.watch(self.cfg.opt, self.result.startup):  # torch.compile's caches: hit, miss or off
            _, cold = self.tracked("cold call")
        startup = self.result.startup
        self.result.latency.cold_s = startup.cold_call_s = cold.total_s
        parts = (startup.build_s, startup.placement_s, startup.optimize_s, startup.cold_call_s)
        startup.time_to_first_video_s = sum(parts) if None not in parts else None  # type: ignore[arg-type]
        log.info(
            "cold call: %.3f s (first video %.3f s after the start of the build)",
            cold.total_s,
            startup.time_to_first_video_s or float("nan"),
        )
        return cold

    def warm_up(self) -> None:
        warmups = self.cfg.bench.warmup
        for i in range(warmups):
            self.result.latency.warmup_s.append(self.tracked(f"warm-up {i + 1}/{warmups}")[1].total_s)

    def measured_calls(self) -> MeasuredCalls:
        """The measured calls: at least bench.repeats, more while they add up to less than bench.min_seconds,
        at most bench.max_calls. Each call's energy is read outside its timed region."""
        assert self.probe is not None
        bench = self.cfg.bench
        calls = MeasuredCalls(meter=EnergyMeter(self.device, self.cfg.energy.source))
        release_freed_memory()
        while enough([t.total_s for t in calls.timings], bench) is None:  # bench.repeats, min_seconds, target_rel_width
            with calls.meter.call():  # its readings come before and after the timed region
                calls.frames, timing = self.tracked(f"measured {len(calls.timings) + 1}/{bench.repeats}")
            calls.latents = self.probe.last_latents  # the measured call's: the quality metrics decode them
            self.watch.during_call()
            calls.windows.append(self.probe.phase_windows())
            calls.timings.append(timing)
            assert self.memory.last is not None  # set by every tracked call
            calls.peak = self.memory.last if calls.peak is None else calls.peak.merge(self.memory.last)
            log.info("measured call %d: %.3f s", len(calls.timings), timing.total_s)
        if len(calls.timings) == bench.max_calls and bench.min_seconds > 0:
            self.result.notes.append(
                f"Stopped at bench.max_calls={bench.max_calls} measured calls before "
                f"bench.min_seconds={bench.min_seconds} was reached."
            )
        return calls

    def summarize(self, cold: CallTiming, calls: MeasuredCalls) -> None:
        """Latency, phases, steps, throughput, memory, energy and cost of the measured calls."""
        cfg, result = self.cfg, self.result
        result.memory = calls.peak
        result.applied = inspect_pipeline(self.pipe)  # again: some effects (DeepCache's) show only in use
        result.latency, result.phases, result.steps, result.throughput = summarize_calls(
            cold, calls.timings, cfg, result.latency.warmup_s
        )
        phases = {name: [w[name] for w in calls.windows if name in w] for name in ("denoising", "decode")}
        result.energy = calls.meter.summary(CallShape.of(cfg), phases if self.device.type == "cuda" else None)
        # Always there: without prices its figures are null and its method says none were given.
        result.cost = cost(
            result.throughput.s_per_video, result.energy.total_j, cfg.cost.usd_per_hour, cfg.cost.usd_per_kwh
        )

    def count_flops(self) -> None:
        """After the measured calls, so that counting costs them nothing."""
        self.result.flops, notes = flop_report(self.pipe, self.cfg, self.result, self.device, self.dtype)
        self.result.notes += notes

    def predict_memory(self) -> None:
        if self.result.memory is not None:  # after the measured calls, like the FLOPs: it costs them nothing
            record_prediction(self.result.memory, self.cfg, self.device, self.result.dtype)

    def check_compiled(self) -> None:
        """A compiled mode: calls with another image and another seed (bench.second_input)."""
        cfg = self.cfg
        if cfg.bench.second_input and (cfg.opt.compile.unet or cfg.opt.compile.vae):
            self.result.compile_check = compile_check(self.tracked, self.call, self.image, cfg, self.device)

    def profile(self) -> None:
        """One more call under the profiler, after the measured ones: it never enters the figures above."""
        if self.cfg.profile.enabled:
            self.pipe.set_progress_bar_config(desc="profiled call", leave=False, disable=not self.cfg.bench.progress)
            self.result.profile, self.measurement.trace = profile_call(
                self.pipe, self.call, self.device, self.cfg.profile, self.result.notes
            )

    def videos_and_metrics(self, calls: MeasuredCalls) -> np.ndarray:
        """The last measured call's frames (uint8, batch x T x H x W x 3), their hash and quality metrics."""
        cfg, result = self.cfg, self.result
        assert calls.frames is not None
        videos = np.stack([to_uint8(video) for video in calls.frames])
        result.frames_hash = frames_hash(videos[0] if cfg.batch_size == 1 else videos)
        if cfg.metrics.enabled:
            latents = calls.latents[:1] if calls.latents is not None else None
            result.metrics = quality_metrics(self.pipe, latents, videos[0], np.asarray(self.image), cfg)
            if cfg.batch_size > 1:
                result.notes.append(f"Quality metrics are those of video 0 of the batch of {cfg.batch_size}.")
        return videos


@dataclass
class MeasuredCalls:
    """What the measured calls leave: their timings and phase windows, the last one's frames and latents (the
    quality metrics are of that call), the merged memory peak and the energy meter that read them."""

    meter: EnergyMeter
    timings: list[CallTiming] = field(default_factory=list)
    windows: list[dict[str, tuple[float, float]]] = field(default_factory=list)
    frames: np.ndarray | None = None
    latents: torch.Tensor | None = None
    peak: MemoryPeak | None = None


def _measure(cfg: RunConfig, result: RunResult, measurement: Measurement) -> np.ndarray:
    """Measure, step by step; return the frames of every video of the last measured call."""
    bench = Bench(cfg, result, measurement)
    bench.check()
    bench.build()
    cold = bench.cold_call()
    bench.warm_up()
    calls = bench.measured_calls()
    bench.summarize(cold, calls)
    bench.count_flops()
    bench.predict_memory()
    bench.check_compiled()
    bench.profile()
    videos = bench.videos_and_metrics(calls)
    if cfg.quality.enabled:  # after everything measured, never timed: one video per image x seed
        result.quality, measurement.samples = generate_samples(cfg, bench.call)
    return videos


def record_prediction(memory: MemoryPeak, cfg: RunConfig, device: torch.device, dtype: str) -> None:
    """The planner's prediction of this run's peak (svdbench.plan), beside the measured one, so that every run
    checks the model again; or why there is none."""
    prediction = try_predict(cfg, device=device.type, dtype=dtype)
    if isinstance(prediction, str):
        memory.predicted_method = f"not predicted: {prediction}"
        return
    memory.predicted_gib = prediction.peak_gib
    memory.predicted_method = f"{prediction.method}; peak in the {prediction.peak_phase} phase" + (
        "; on a CPU it is the peak of live tensor bytes (weights included), not the resident memory measured here"
        if device.type == "cpu"
        else "; compare with device_max_allocated_gib"
    )


def describe_source(cfg: RunConfig) -> str:
    """What building the pipeline reads or makes: Startup.source."""
    if cfg.model.weights == "random":
        return f"the {cfg.model.architecture} architecture initialised with random weights (nothing read from disk)"
    return f"checkpoint {cfg.model.path}" if cfg.model.path else f"Hugging Face cache of {cfg.model.repo_id}"


def compile_check(tracked, call, image, cfg: RunConfig, device: torch.device) -> CompileCheck:
    """After the measured calls of a compiled mode: one call with another conditioning image (the test card
    mirrored: same shape, other values) and one with another seed. Counts the graphs dynamo compiles during
    each (a compiled mode that holds should compile none), its latency and the growth of the device's peak
    allocated memory. A failure is recorded as data; the measured figures above stand either way."""
    from torch._dynamo.utils import counters

    check = CompileCheck(
        method="dynamo counters['stats']['unique_graphs'] before and after each call; device growth = max "
        "allocated during the call minus allocated before it"
    )
    mirrored = ImageOps.mirror(image)
    for kind, picture, seed in (("another image", mirrored, None), ("another seed", image, cfg.seed + 1000)):
        graphs = counters["stats"]["unique_graphs"]
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
        extra = ExtraCall(kind=kind, status="ok")
        try:
            _, timing = tracked(f"compile check: {kind}", lambda p=picture, s=seed: call(p, s))
            extra.latency_s = timing.total_s
        except Exception as exc:
            if isinstance(exc, Unsupported):
                raise
            extra.status, extra.reason = "error", f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
            log.warning("compile check (%s) failed: %s", kind, extra.reason)
        extra.recompilations = counters["stats"]["unique_graphs"] - graphs
        if before is not None:
            extra.device_memory_growth_gib = (torch.cuda.max_memory_allocated(device) - before) / GIB
        check.calls.append(extra)
    return check


def quality_metrics(pipe, latents, video: np.ndarray, image: np.ndarray, cfg: RunConfig) -> dict:
    """The flicker suite, plus the paired one-chunk decode when the run decodes in chunks."""
    metrics = compute_suite(video, decode_chunk_size=cfg.opt.decode_chunk_size, reference=image)
    metrics["paired_chunk_psnr"] = None
    if not decodes_in_chunks(cfg):
        metrics["paired_decode"] = "not needed: all frames decoded in one chunk"
    elif not cfg.metrics.paired_decode:
        metrics["paired_decode"] = "skipped: metrics.paired_decode=false"
    else:
        try:
            with torch.no_grad():
                metrics["paired_chunk_psnr"] = paired_chunk_psnr(pipe, latents, cfg.num_frames, decode_chunk(cfg))
            metrics["paired_decode"] = "done"
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            metrics["paired_decode"] = f"skipped: out of memory decoding all {cfg.num_frames} frames at once"
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return metrics


def flop_report(
    pipe, cfg: RunConfig, result: RunResult, device: torch.device, dtype: torch.dtype
) -> tuple[RunFlops | None, list[str]]:
    """FLOPs of one call (every video of the batch) and the utilization the measured calls reached; notes."""
    assert result.phases is not None and result.median_s is not None
    try:
        flops = config_flops(pipe, cfg)
        peak, source = device_peak_tflops(device, dtype, rate(flops.denoising_tflop, result.phases.denoising_s))
    except Exception as exc:  # a model the counter cannot trace must not cost the timing results
        log.warning("FLOP counting failed: %s", exc)
        return None, [f"FLOPs not counted: {type(exc).__name__}: {exc}"]
    if cfg.opt.deepcache.enabled:  # the count is of the full UNet; DeepCache skips most of it on cached steps
        report = RunFlops(call=flops, utilization=utilization(flops, 0.0, 0.0, peak, source))
        return report, ["FLOPs are those of the full UNet; DeepCache skips blocks, so no TFLOP/s or MFU."]
    achieved = utilization(flops, result.phases.denoising_s, result.median_s, peak, source)
    return RunFlops(call=flops, utilization=achieved), []
