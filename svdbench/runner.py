"""The measurement loop: build, optimize, cold call, warm-ups, measured calls, quality metrics.

Read top to bottom in `_measure`; everything else here is small helpers and turning failures into
results (status `unsupported`, `oom`, `nan`, `error`) instead of crashes. Nothing here writes a file:
`run` returns a `Measurement` (the results and the frames), and `svdbench.record.rundir` writes it.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import ImageOps

from svdbench.measure.energy import EnergyMeter, cost
from svdbench.measure.flops import config_flops, device_peak_tflops, rate, utilization
from svdbench.measure.machine import MachineState, MachineWatch
from svdbench.measure.memory import GIB, MemoryPeak, MemoryTracker, release_freed_memory
from svdbench.measure.profile import profile_call
from svdbench.measure.timing import CallProbe, CallTiming, Clock, Stats, enough
from svdbench.media.image import InputImageError, conditioning_image
from svdbench.media.video import BadFrames, to_uint8
from svdbench.metrics import compute_suite, paired_chunk_psnr
from svdbench.pipeline.models import TORCH_DTYPES, WeightsNotFound, build_pipeline, call_arguments, dtype_name
from svdbench.pipeline.optimizations import (
    Unsupported,
    apply_optimizations,
    call_context,
    check_supported,
    inspect_pipeline,
)
from svdbench.plan import try_predict
from svdbench.record.identity import config_hash, frames_hash
from svdbench.record.results import CompileCheck, ExtraCall, Latency, Phases, RunResult, Steps, Throughput, now_iso
from svdbench.settings.config import RunConfig

log = logging.getLogger(__name__)

MAX_CALLS = 1000  # bound on measured calls when bench.min_seconds asks for more


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

    @property
    def video(self) -> np.ndarray | None:
        """Video 0 (T x H x W x 3): the one a batch of one generates, and the one pictures show."""
        return self.videos[0] if self.videos is not None else None


def run(cfg: RunConfig) -> Measurement:
    """Measure one configuration; never raises for a failure that belongs in the results."""
    result = RunResult(
        config_hash=config_hash(cfg),
        model=cfg.model.name,
        weights=cfg.model.weights,
        opt=cfg.opt.name,
        cond=cfg.cond.name,
        num_frames=cfg.num_frames,
        height=cfg.height,
        width=cfg.width,
        num_inference_steps=cfg.num_inference_steps,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        seeds=video_seeds(cfg),
    )
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


def video_seeds(cfg: RunConfig, first: int | None = None) -> list[int]:
    """The seed of every video of a call, from `first` (default: the run's seed): video k of a batch is the
    video an unbatched run with seed + k makes."""
    first = cfg.seed if first is None else first
    return [first + k for k in range(cfg.batch_size)]


def generators(cfg: RunConfig, seed: int | None = None) -> torch.Generator | list[torch.Generator]:
    """One seeded CPU generator per video (the same noise on every device). The pipeline draws each video's
    noise from its own generator, in the order an unbatched call draws it from its one."""
    made = [torch.Generator("cpu").manual_seed(s) for s in video_seeds(cfg, seed)]
    return made[0] if cfg.batch_size == 1 else made


def _measure(cfg: RunConfig, result: RunResult, measurement: Measurement) -> np.ndarray:
    """Fill `result` as the measurement goes (a failure half-way keeps what was measured); return the frames
    of every video of the last measured call (batch x T x H x W x 3)."""
    device = select_device(cfg.device)
    dtype = select_dtype(cfg.dtype, cfg.model.dtype, device)
    result.device, result.dtype = str(device), dtype_name(dtype)
    measurement.watch = watch = MachineWatch(device)  # first: the load average before this run adds to it
    check_supported(cfg.opt, device, dtype)
    if device.type == "cpu" and dtype == torch.float16:
        result.notes.append(
            "fp16 on a CPU works but many kernels emulate it, so it is much slower than fp32 or bf16 there; "
            "its timings say little about fp16 on a GPU."
        )
    image = conditioning_image(cfg.input.path, cfg.width, cfg.height)

    log.info("Building %s (%s weights, %s) on %s", cfg.model.name, cfg.model.weights, result.dtype, device)
    startup = result.startup
    startup.source = describe_source(cfg)
    clock = Clock(device)
    started = time.perf_counter()
    pipe = build_pipeline(cfg.model, device, dtype, cfg.weights_seed)
    clock.sync()
    startup.build_s = time.perf_counter() - started
    setup: dict[str, float] = {}
    pipe = apply_optimizations(pipe, cfg.opt, device, timed=lambda key: clock.section(setup, key))
    startup.placement_s, startup.optimize_s = setup.get("placement_s"), setup.get("optimize_s")
    result.applied = inspect_pipeline(pipe)

    result.timing_method = clock.method
    probe = CallProbe(pipe, clock)
    memory = MemoryTracker(device)

    def call(picture=image, seed: int | None = None) -> np.ndarray:
        """One pipeline call: every video of the batch (batch x T x H x W x 3, floats in [0, 1])."""
        with call_context(cfg.opt, device):
            return pipe(
                [picture] * cfg.batch_size if cfg.batch_size > 1 else picture,
                **call_arguments(cfg),
                generator=generators(cfg, seed),
                callback_on_step_end=probe.on_step_end,
                output_type="np",
            ).frames

    def tracked(desc: str, one_call=call) -> tuple[np.ndarray, CallTiming]:
        """One call with its memory tracked; if it fails, its peak goes into the result."""
        pipe.set_progress_bar_config(desc=desc, leave=False, disable=not cfg.bench.progress)
        try:
            with memory.track():
                return probe.measure(one_call)
        except BaseException:
            if memory.last is not None:
                result.memory = memory.last
                result.notes.append(f"Memory: the peak reached during the failed {desc} call.")
            raise

    release_freed_memory()
    _, cold = tracked("cold call")
    result.latency.cold_s = cold.total_s
    startup.cold_call_s = cold.total_s
    parts = (startup.build_s, startup.placement_s, startup.optimize_s, startup.cold_call_s)
    startup.time_to_first_video_s = sum(parts) if None not in parts else None  # type: ignore[arg-type]
    log.info(
        "cold call: %.3f s (first video %.3f s after the start of the build)",
        cold.total_s,
        startup.time_to_first_video_s or float("nan"),
    )
    for i in range(cfg.bench.warmup):
        result.latency.warmup_s.append(tracked(f"warm-up {i + 1}/{cfg.bench.warmup}")[1].total_s)
    warmup_s = result.latency.warmup_s

    measured: list[CallTiming] = []
    windows: list[dict[str, tuple[float, float]]] = []  # each measured call's phases, for their energy
    meter = EnergyMeter(device, cfg.energy.source)
    peak = None
    release_freed_memory()
    while enough([t.total_s for t in measured], cfg.bench) is None:  # bench.repeats, min_seconds, target_rel_width
        with meter.call():  # its readings come before and after the timed region
            frames, timing = tracked(f"measured {len(measured) + 1}/{cfg.bench.repeats}")
        watch.during_call()
        windows.append(probe.phase_windows())
        measured.append(timing)
        assert memory.last is not None  # set by every tracked call
        peak = memory.last if peak is None else peak.merge(memory.last)
        log.info("measured call %d: %.3f s", len(measured), timing.total_s)
    if len(measured) == MAX_CALLS and cfg.bench.min_seconds > 0:
        result.notes.append(
            f"Stopped at {MAX_CALLS} measured calls before bench.min_seconds={cfg.bench.min_seconds} was reached."
        )
    result.memory = peak
    result.applied = inspect_pipeline(pipe)  # again: some effects (DeepCache's skipped blocks) show only in use
    result.latency, result.phases, result.steps, result.throughput = summarize(cold, measured, cfg, warmup_s)
    phases = {name: [w[name] for w in windows if name in w] for name in ("denoising", "decode")}
    result.energy = meter.summary(cfg.batch_size, cfg.num_frames, phases if device.type == "cuda" else None)
    # Always there: without prices its figures are null and its method says none were given.
    result.cost = cost(
        result.throughput.s_per_video, result.energy.total_j, cfg.cost.usd_per_hour, cfg.cost.usd_per_kwh
    )
    result.flops, notes = flop_report(pipe, cfg, result, device, dtype)
    result.notes += notes
    if result.memory is not None:  # after the measured calls, like the FLOPs: it costs them nothing
        record_prediction(result.memory, cfg, device, result.dtype)
    if cfg.bench.second_input and (cfg.opt.compile.unet or cfg.opt.compile.vae):
        latents = probe.last_latents  # as below: the metrics decode the measured call's latents
        result.compile_check = compile_check(tracked, call, image, cfg, device)
        probe.last_latents = latents
    if cfg.profile.enabled:  # one more call, after the measured ones: it never enters the figures above
        pipe.set_progress_bar_config(desc="profiled call", leave=False, disable=not cfg.bench.progress)
        latents = probe.last_latents  # the metrics below decode the measured call's latents, not these
        result.profile, measurement.trace = profile_call(pipe, call, device, cfg.profile, result.notes)
        probe.last_latents = latents

    videos = np.stack([to_uint8(video) for video in frames])
    result.frames_hash = frames_hash(videos[0] if cfg.batch_size == 1 else videos)
    if cfg.metrics.enabled:
        latents = probe.last_latents[:1] if probe.last_latents is not None else None
        result.metrics = quality_metrics(pipe, latents, videos[0], np.asarray(image), cfg)
        if cfg.batch_size > 1:
            result.notes.append(f"Quality metrics are those of video 0 of the batch of {cfg.batch_size}.")
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
    chunk = cfg.opt.decode_chunk_size
    metrics["paired_chunk_psnr"] = None
    if chunk is None or chunk >= cfg.num_frames:
        metrics["paired_decode"] = "not needed: all frames decoded in one chunk"
    elif not cfg.metrics.paired_decode:
        metrics["paired_decode"] = "skipped: metrics.paired_decode=false"
    else:
        try:
            with torch.no_grad():
                metrics["paired_chunk_psnr"] = paired_chunk_psnr(pipe, latents, cfg.num_frames, chunk)
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
) -> tuple[dict | None, list[str]]:
    """FLOPs of one call and MFU, computed after the measured calls so that they cost them nothing; and notes."""
    assert result.phases is not None and result.median_s is not None
    try:
        flops = config_flops(pipe, cfg)
        peak, source = device_peak_tflops(device, dtype, rate(flops.denoising_tflop, result.phases.denoising_s))
    except Exception as exc:  # a model the counter cannot trace must not cost the timing results
        log.warning("FLOP counting failed: %s", exc)
        return None, [f"FLOPs not counted: {type(exc).__name__}: {exc}"]
    report = utilization(flops, result.phases.denoising_s, result.median_s, peak, source)
    if cfg.opt.deepcache.enabled:  # the count is of the full UNet; DeepCache skips most of it on cached steps
        for key in ("denoising_tflops_per_s", "call_tflops_per_s", "mfu_denoising", "mfu_call"):
            report[key] = None
        return report, ["FLOPs are those of the full UNet; DeepCache skips blocks, so no TFLOP/s or MFU."]
    return report, []


def summarize(
    cold: CallTiming, measured: list[CallTiming], cfg: RunConfig, warmup_s: list[float] | None = None
) -> tuple[Latency, Phases, Steps, Throughput]:
    """Latency, phases, steps and throughput of the measured calls."""
    totals = [t.total_s for t in measured]
    stats = Stats.of(totals)
    compiling = cfg.opt.compile.unet or cfg.opt.compile.vae
    latency = Latency(
        cold_s=cold.total_s,
        warmup_s=list(warmup_s or []),
        calls_s=totals,
        stats=stats,
        compile_overhead_s=cold.total_s - stats.median if compiling else None,
        stopped_because=enough(totals, cfg.bench),
    )

    def median(values: list[float]) -> float:
        return float(np.median(values))

    phases = Phases(
        conditioning_s=median([t.conditioning_s for t in measured]),
        denoising_s=median([t.denoising_s for t in measured]),
        decode_s=median([t.decode_s for t in measured]),
        other_s=median([t.other_s for t in measured]),
        coverage=median([(t.total_s - t.other_s) / t.total_s for t in measured]),
    )
    all_steps = [s for t in measured for s in t.steps_s]
    step_stats = Stats.of(all_steps)
    steps = Steps(
        per_call_s=[t.steps_s for t in measured],
        s_per_step=step_stats.median,
        it_per_s=1.0 / step_stats.median,
        stats=step_stats,
    )
    per_call = stats.median
    throughput = Throughput(
        frames_per_s=cfg.batch_size * cfg.num_frames / per_call,
        s_per_video=per_call / cfg.batch_size,
        s_per_call=per_call,
        videos_per_hour=3600.0 * cfg.batch_size / per_call,
    )
    return latency, phases, steps, throughput
