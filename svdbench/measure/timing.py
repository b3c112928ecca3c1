"""Timers for one pipeline call: total, phases and every denoising step.

On CUDA every mark is an event recorded on the current stream and read only after a synchronize, so
asynchronous kernel launches are timed where they run; on CPU a mark is `time.perf_counter()`.

Phases are taken where the pipeline does them, by wrapping the pipeline's own methods on the instance:
conditioning = `_encode_image` (CLIP) + `_encode_vae_image` (VAE encode), denoising = from the first
`scheduler.scale_model_input` of the loop to the end of the last step, decode = `decode_latents`.
Steps are delimited by `callback_on_step_end`; step 0 starts at the loop start, so all N steps are
covered and nothing leaks between calls because every call starts from an empty record.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from svdbench.pipeline.call import CallShape
from svdbench.settings.config import BenchConfig, RunConfig


class Clock:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.method = "cuda-events" if self.cuda else "perf_counter"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, start: Any, end: Any) -> float:
        if self.cuda:
            return start.elapsed_time(end) / 1000.0
        return end - start

    @contextmanager
    def section(self, spent: dict[str, float], key: str) -> Iterator[None]:
        """Add the wall time of the block to spent[key], the device synchronized before and after (setup work
        such as placement or an optimization's preparation, which no CUDA event brackets)."""
        self.sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started


@dataclass
class CallTiming:
    """Seconds spent in one pipeline call."""

    total_s: float
    conditioning_s: float
    denoising_s: float
    decode_s: float
    steps_s: list[float]

    @property
    def other_s(self) -> float:
        """Glue between the phases: preprocessing, latent setup, post-processing to arrays."""
        return self.total_s - self.conditioning_s - self.denoising_s - self.decode_s


@dataclass
class _Marks:
    start: Any = None
    end: Any = None
    conditioning: list[tuple[Any, Any]] = field(default_factory=list)
    loop_start: Any = None
    step_ends: list[Any] = field(default_factory=list)
    decode: tuple[Any, Any] | None = None


class CallProbe:
    """Instruments a pipeline (once) and times each call made through `measure`."""

    def __init__(self, pipe, clock: Clock):
        self.pipe = pipe
        self.clock = clock
        self.marks = _Marks()
        self.last_latents: torch.Tensor | None = None
        self.wall_start = 0.0  # time.perf_counter() when the last call started (after a synchronize)
        pipe._encode_image = self._interval(pipe._encode_image, self.marks_conditioning)
        pipe._encode_vae_image = self._interval(pipe._encode_vae_image, self.marks_conditioning)
        pipe.decode_latents = self._interval(pipe.decode_latents, self.marks_decode)
        scale = pipe.scheduler.scale_model_input

        def scale_model_input(*args, **kwargs):
            if self.marks.loop_start is None:
                self.marks.loop_start = self.clock.mark()
            return scale(*args, **kwargs)

        pipe.scheduler.scale_model_input = scale_model_input

    def marks_conditioning(self, start: Any, end: Any) -> None:
        self.marks.conditioning.append((start, end))

    def marks_decode(self, start: Any, end: Any) -> None:
        self.marks.decode = (start, end)

    def _interval(self, fn: Callable, record: Callable[[Any, Any], None]) -> Callable:
        def timed(*args, **kwargs):
            start = self.clock.mark()
            out = fn(*args, **kwargs)
            record(start, self.clock.mark())
            return out

        return timed

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        self.marks.step_ends.append(self.clock.mark())
        if step == pipe.num_timesteps - 1:
            self.last_latents = callback_kwargs["latents"]
        return callback_kwargs

    def measure(self, call: Callable[[], Any]) -> tuple[Any, CallTiming]:
        """Run `call()` (which must pass `callback_on_step_end=self.on_step_end`) and time it."""
        self.marks = _Marks()
        self.clock.sync()
        self.wall_start = time.perf_counter()
        self.marks.start = self.clock.mark()
        out = call()
        self.marks.end = self.clock.mark()
        self.clock.sync()
        return out, self._timing()

    def phase_windows(self) -> dict[str, tuple[float, float]]:
        """The last call's denoising loop and decode as time.perf_counter() intervals (on CUDA: the call's
        start plus the events' offsets from it, the device's own timeline), for readings taken outside the
        call, such as an energy counter sampled in the background."""
        m = self.marks

        def wall(mark: Any) -> float:
            return self.wall_start + self.clock.seconds(m.start, mark) if self.clock.cuda else mark

        windows = {}
        if m.loop_start is not None and m.step_ends:
            windows["denoising"] = (wall(m.loop_start), wall(m.step_ends[-1]))
        if m.decode is not None:
            windows["decode"] = (wall(m.decode[0]), wall(m.decode[1]))
        return windows

    def _timing(self) -> CallTiming:
        m, s = self.marks, self.clock.seconds
        bounds = [m.loop_start, *m.step_ends]
        steps = [s(a, b) for a, b in zip(bounds, bounds[1:])] if m.loop_start is not None else []
        return CallTiming(
            total_s=s(m.start, m.end),
            conditioning_s=sum(s(a, b) for a, b in m.conditioning),
            denoising_s=sum(steps),
            decode_s=s(*m.decode) if m.decode else 0.0,
            steps_s=steps,
        )


# Confidence of the interval of the median (Stats.ci95_low/high).
CI_LEVEL = 0.95
CI_METHOD = (
    "distribution-free order-statistic interval of the median: the widest symmetric pair of ranks "
    "(j, n+1-j) with binomial(n, 1/2) coverage of at least 95 percent; needs 6 or more values"
)


@dataclass
class Stats:
    """Summary of repeated measurements (seconds unless said otherwise).

    `ci95_low`/`ci95_high` bound the median with 95 percent confidence whatever the distribution (an
    order-statistic interval, `CI_METHOD`); with fewer than 6 values no such interval exists and both are
    None. Fields after `rel_spread` have defaults so that results written before them still load."""

    n: int
    median: float
    mean: float
    p90: float
    min: float
    max: float
    rel_spread: float  # (max - min) / median
    p95: float | None = None
    p99: float | None = None
    std: float | None = None  # sample standard deviation (n - 1); 0 for one value
    ci95_low: float | None = None
    ci95_high: float | None = None
    ci_method: str = CI_METHOD

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        ordered = sorted(values)
        median = statistics.median(ordered)
        low, high = median_interval(ordered)
        return cls(
            n=len(ordered),
            median=median,
            mean=statistics.fmean(ordered),
            p90=percentile(ordered, 90),
            min=ordered[0],
            max=ordered[-1],
            rel_spread=(ordered[-1] - ordered[0]) / median if median > 0 else 0.0,
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            std=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
            ci95_low=low,
            ci95_high=high,
        )


def percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of sorted values."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_interval(ordered: list[float], level: float = CI_LEVEL) -> tuple[float | None, float | None]:
    """A `level` confidence interval of the median of sorted values: (x_(j), x_(n+1-j)) for the largest j
    whose coverage 1 - 2 P(Binomial(n, 1/2) < j) is at least `level`. (None, None) where even the whole
    range (j = 1) covers less (n < 6 at 95 percent)."""
    n = len(ordered)
    best = None
    below = 0.0  # P(B < j), growing with j
    for j in range(1, n // 2 + 1):
        below += math.comb(n, j - 1) / 2.0**n
        if 1.0 - 2.0 * below >= level:
            best = j
        else:
            break
    if best is None:
        return None, None
    return ordered[best - 1], ordered[n - best]


# The fewest calls with a distribution-free 95 percent interval of the median (median_interval): the earliest an
# adaptive loop (bench.target_rel_width) can stop.
MIN_CALLS_FOR_INTERVAL = 6


def relative_width(calls_s: list[float]) -> float | None:
    """Width of the median's 95 percent interval over the median; None with fewer than 6 calls."""
    ordered = sorted(calls_s)
    low, high = median_interval(ordered)
    median = statistics.median(ordered) if ordered else 0.0
    if low is None or high is None or median <= 0:
        return None
    return (high - low) / median


def enough(calls_s: list[float], bench: BenchConfig) -> str | None:
    """Why the measured loop stops after these calls (seconds each), or None to measure another.

    At most bench.max_calls; at least until the calls add up to bench.min_seconds; then, with
    bench.target_rel_width, as soon as the median's 95 percent interval is at most that wide relative to the
    median (6 calls at the earliest: no such interval exists with fewer), with bench.repeats as the cap;
    without it, after bench.repeats calls."""
    n = len(calls_s)
    cap = bench.max_calls
    if n >= cap:
        return f"bench.max_calls: {cap} calls"
    if sum(calls_s) < bench.min_seconds:
        return None
    target = bench.target_rel_width
    if target is not None:
        width = relative_width(calls_s)
        if width is not None and width <= target:
            return (
                f"bench.target_rel_width: the median's 95 percent interval was {100 * width:.1f} percent of the "
                f"median after {n} calls (target {100 * target:g} percent)"
            )
        if n >= bench.repeats:
            shown = "none yet (fewer than 6 calls)" if width is None else f"{100 * width:.1f} percent"
            return (
                f"bench.repeats: the cap of {bench.repeats} calls, before the median's 95 percent interval was "
                f"{100 * target:g} percent of the median or narrower (it was {shown})"
            )
        return None
    if n >= bench.repeats:
        return "bench.min_seconds" if n > bench.repeats and bench.min_seconds > 0 else f"bench.repeats: {n} calls"
    return None


@dataclass
class Latency:
    """Whole-call seconds. `cold_s` is the first call (compilation, lazy init); `stats` the measured calls."""

    cold_s: float | None = None
    warmup_s: list[float] = field(default_factory=list)
    calls_s: list[float] = field(default_factory=list)
    stats: Stats | None = None
    compile_overhead_s: float | None = None  # cold minus the median measured call, when compiling
    # Why the measured loop stopped where it did: "bench.repeats" (the count asked for), "bench.min_seconds",
    # a "bench.target_rel_width" sentence (the median's interval narrow enough), or the runner's cap.
    stopped_because: str | None = None


@dataclass
class Phases:
    """Median seconds per phase over the measured calls; `coverage` = phases' sum / total."""

    conditioning_s: float
    denoising_s: float
    decode_s: float
    other_s: float
    coverage: float


@dataclass
class Steps:
    """Denoising steps of every measured call (all N, the first included)."""

    per_call_s: list[list[float]]
    s_per_step: float  # median over all steps of all measured calls
    it_per_s: float
    stats: Stats


@dataclass
class Throughput:
    """Medians over the measured calls; a call generates `batch_size` videos (RunResult.batch_size)."""

    frames_per_s: float  # frames of all videos of a call / seconds per call
    s_per_video: float  # seconds per call / batch size
    s_per_call: float | None = None  # None in results written before batches existed (then = s_per_video)
    videos_per_hour: float | None = None


@dataclass
class Startup:
    """Seconds from nothing to the first video. time_to_first_video_s = build_s + placement_s + optimize_s +
    cold_call_s: what a user waits after a cold start, before any video exists."""

    build_s: float | None = None  # building the pipeline: reading a checkpoint, or initialising the architecture
    placement_s: float | None = None  # moving it to the device, or installing offload hooks
    optimize_s: float | None = None  # the rest of the mode's setup (chunking, caching, quantization, compile wrapping)
    cold_call_s: float | None = None  # the first call (compilation happens here)
    time_to_first_video_s: float | None = None
    source: str = ""  # what was built: the checkpoint directory read, or the architecture initialised
    # torch.compile's caches (svdbench's cache directory): "hit" (the cold call's compiled graphs came from them),
    # "miss" (compiled and stored), "off" (nothing compiled); with the cold call's compile share (0-1, the cold
    # call minus the median measured call, over the cold call).
    compile_cache: str | None = None
    compile_share: float | None = None


def summarize_calls(
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
    per_call, shape = stats.median, CallShape.of(cfg)
    throughput = Throughput(
        frames_per_s=shape.frames / per_call,
        s_per_video=shape.per_video(per_call),
        s_per_call=per_call,
        videos_per_hour=3600.0 / shape.per_video(per_call),
    )
    return latency, phases, steps, throughput
