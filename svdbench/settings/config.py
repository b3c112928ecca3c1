"""Typed configuration: one dataclass per config group, checked before any model is built.

Every setting is defined once, here: its type, its default, its one-line help and its valid values
(`setting(...)` keeps them in the field's metadata). The YAML files under `conf/` only select and
change; docs/config.md and `python -m svdbench --help` are generated from these fields
(scripts/config_docs.py). `OmegaConf.to_object` instantiates the dataclasses, which runs every check:
first the generic ones the metadata describes (choices, ranges, finite numbers), then each class's own.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from svdbench.settings.hydra_api import ConfigStore, is_none_node, raw_value

DTYPES = ("auto", "fp32", "fp16", "bf16")
ARCHITECTURES = ("svd", "svd_xt", "small", "tiny")
WEIGHT_SOURCES = ("pretrained", "random")
OFFLOAD_MODES = ("none", "model", "sequential", "group")
GROUP_OFFLOAD_TYPES = ("leaf_level", "block_level")
# Weight storage dtypes of layerwise casting (opt.storage_dtype); compute stays in the run's dtype.
STORAGE_DTYPES = ("fp8_e4m3", "fp8_e5m2")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LOGGERS = ("wandb", "none")
# torch.nn.attention.sdpa_kernel backends (opt.attention_backend); auto = PyTorch's own choice per call.
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
# torchao quantization of the UNet (opt.quantize); float8 needs fp8 tensor cores (compute capability 8.9+).
QUANTIZE_MODES = ("int8_weight_only", "int8_dynamic", "float8_dynamic")
# Where energy figures come from (energy.source): svdbench.measure.energy says what each reads.
ENERGY_SOURCES = ("auto", "zeus", "nvml", "none")
# One run over torchrun's processes (parallel): none, the guidance batch split over 2 ranks, a batch's videos split.
PARALLEL_MODES = ("none", "cfg", "data")
# Set by a sweep for the job processes it starts: the job's directory is the sweep's to manage, and its
# settings were checked before it started.
SWEEP_ENV = "SVDBENCH_SWEEP"
# Videos per pipeline call above this are a typo here (SVD-XT at batch 2 already needs most of an 80 GB card).
MAX_BATCH_SIZE = 256
WANDB_MODES = ("offline", "online", "disabled")
MAX_SIDE = 4096
# bench.max_calls's default: the runner's bound on measured calls, whatever bench.min_seconds asks for.
MAX_MEASURED_CALLS = 1000
# bench.max_calls above this is a typo (a million tiny-model calls would take days).
MAX_CALLS_BOUND = 1_000_000
# bench.min_seconds above a day is a typo, not a benchmark (the calls are capped at bench.max_calls anyway).
MAX_MIN_SECONDS = 86400.0
# torch.Generator.manual_seed takes a signed or unsigned 64-bit seed; results and W&B keep a signed one.
MAX_SEED = 2**63 - 1
# gate.min_psnr_db's default: the PSNR between the frames of fp16 and bf16 runs of opt=none, 50.48 dB measured on
# the tiny model (25 steps, seed 42, CPU; docs/comparison.md "The default threshold"), rounded down: a job is
# faithful if it deviates no more than a change of precision that users accept. Model-dependent.
GATE_MIN_PSNR_DB = 50.4
# The built-in set of conditioning photographs (svdbench/quality/images.py) and a bound on seeds per image.
QUALITY_SET_SIZE = 8
MAX_QUALITY_SEEDS = 1000


class ConfigError(ValueError):
    """A configuration value is invalid. The message says which one and how to fix it."""


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = None,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    multiple_of: int | None = None,
    why: str | None = None,
    valid: str | None = None,
) -> Any:
    """A dataclass field with its help and valid values in the metadata.

    choices: the allowed values (None among them means null is allowed); minimum/maximum: inclusive bounds;
    above: an exclusive lower bound; multiple_of: the value must be a multiple of it; why: the reason for
    the bounds, added to the message when a value is refused; valid: the valid values in words, for the docs,
    where a class's own check decides them. Floats must be finite in every case.
    """
    metadata = {
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "multiple_of": multiple_of,
        "why": why,
        "valid": valid,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _side(help: str) -> Any:
    """An output height or width: a multiple of 64 from 64 to MAX_SIDE, defaulting to the model's."""
    return setting(MISSING, help, minimum=64, maximum=MAX_SIDE, multiple_of=64, why="SVD's native size is 576x1024")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def show(value: Any) -> str:
    """A value as it is written on the command line and in YAML: null, true, 0.02, fp16."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


class _Checked:
    """Runs the generic checks of every field's metadata, then the class's own `_check_values`."""

    def __post_init__(self) -> None:
        prefix = _prefixes().get(type(self), "")
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            info = Setting(f"{prefix}{field.name}", field, _hints(type(self))[field.name])
            problem = info.problem(getattr(self, field.name))
            _check(problem is None, problem or "")
        self._check_values()

    def _check_values(self) -> None:
        """Checks between fields and checks the metadata cannot express."""


@dataclass
class ModelConfig(_Checked):
    name: str = setting("tiny", "Preset name, shown in results and run directories.")
    architecture: str = setting(
        "tiny", "Packaged component configs the model is built from (svdbench/architectures/).", choices=ARCHITECTURES
    )
    weights: str = setting(
        "random",
        "random = the architecture with seeded random weights; pretrained = load model.path or model.repo_id.",
        choices=WEIGHT_SOURCES,
    )
    repo_id: str | None = setting(None, "Hugging Face repository of the pretrained weights (null: none).")
    path: str | None = setting(
        None,
        "Local diffusers directory (with model_index.json) to load with weights=pretrained; null: the Hugging Face "
        "cache for repo_id.",
    )
    weights_seed: int | None = setting(
        None,
        "Seed of random weights (null: the run's seed). Fix it to compare generations of one random model across "
        "seeds, e.g. video k of a batch against an unbatched run with seed + k.",
        minimum=0,
        maximum=MAX_SEED,
        why="torch.Generator.manual_seed takes 0 <= seed < 2**63 here",
    )
    variant: str | None = setting(None, "Weight-file variant to load, e.g. fp16 (null: the default files).")
    download: bool = setting(
        False, "Allow downloading pretrained weights from the Hub (off: fail fast when they are not local)."
    )
    dtype: str = setting("fp32", "The dtype `dtype=auto` picks on an accelerator (CPU runs use fp32).", choices=DTYPES)
    num_frames: int = setting(8, "Native number of frames: the default of num_frames.", minimum=1)
    height: int = setting(
        128, "Native height in pixels: the default of height.", minimum=64, maximum=MAX_SIDE, multiple_of=64
    )
    width: int = setting(
        128, "Native width in pixels: the default of width.", minimum=64, maximum=MAX_SIDE, multiple_of=64
    )

    def _check_values(self) -> None:
        _check(
            self.weights != "pretrained" or bool(self.path or self.repo_id),
            f"model.weights=pretrained needs model.path=/dir/with/model_index.json or a model.repo_id; "
            f"the '{self.name}' preset has neither. Use model.weights=random to benchmark without weights.",
        )
        _check(
            self.weights != "random" or self.path is None,
            f"model.path={self.path} is given, but model.weights=random builds the architecture with random "
            "weights and loads nothing, so the path would be ignored. Use model.weights=pretrained to load it, "
            "or drop model.path.",
        )


@dataclass
class CompileConfig(_Checked):
    unet: bool = setting(False, "torch.compile the UNet after moving it to the device.")
    vae: bool = setting(False, "torch.compile the VAE decoder as well.")
    mode: str = setting("reduce-overhead", "torch.compile mode.", choices=COMPILE_MODES)
    fullgraph: bool = setting(
        True, "Compile the whole model as one graph (fail rather than fall back on graph breaks); false allows breaks."
    )


@dataclass
class GroupOffloadConfig(_Checked):
    """diffusers group offloading, used when opt.offload=group."""

    offload_type: str = setting(
        "leaf_level",
        "Used when opt.offload=group: each layer on its own (leaf_level) or num_blocks_per_group blocks at a time.",
        choices=GROUP_OFFLOAD_TYPES,
    )
    num_blocks_per_group: int | None = setting(
        None, "Blocks moved together when offload_type=block_level (required there).", minimum=1
    )
    use_stream: bool = setting(True, "Overlap weight copies with compute on a CUDA stream (prefetches the next group).")
    record_stream: bool = setting(
        False, "With use_stream: record_stream instead of synchronizing (faster, a little more memory)."
    )
    low_cpu_mem_usage: bool = setting(
        False, "With use_stream: pin host copies on the fly instead of up front (less host memory, slower)."
    )

    def _check_values(self) -> None:
        _check(
            self.offload_type != "block_level" or (self.num_blocks_per_group or 0) >= 1,
            f"opt.group_offload.offload_type=block_level needs opt.group_offload.num_blocks_per_group of at least "
            f"1 (got {self.num_blocks_per_group}): diffusers moves that many blocks at a time. Set it, e.g. "
            "opt.group_offload.num_blocks_per_group=1, or use offload_type=leaf_level.",
        )
        _check(
            self.use_stream or not self.record_stream,
            "opt.group_offload.record_stream=true needs opt.group_offload.use_stream=true: diffusers records "
            "tensors on the transfer stream, and without streams there is none. Turn record_stream off or "
            "use_stream on.",
        )


@dataclass
class DeepCacheConfig(_Checked):
    """DeepCache (the `deepcache` package): reuse the UNet's deep features between denoising steps."""

    enabled: bool = setting(
        False, "Reuse the UNet's deep features between steps (the deepcache package; lossy, faster)."
    )
    cache_interval: int = setting(
        3,
        "Run the whole UNet every N steps and only the shallow branch in between (1 = every step, lossless).",
        minimum=1,
        why="the cache is refreshed every N steps; 1 refreshes every step, which changes nothing; 3 is the usual value",
    )
    cache_branch_id: int = setting(
        0,
        "The skip branch that keeps running: 0 = shallowest (fastest), higher = deeper (closer to the baseline).",
        minimum=0,
        why="it numbers the skip branch from the shallowest (0) down",
    )


@dataclass
class OptConfig(_Checked):
    name: str = setting("none", "Preset name, shown in results and run directories.")
    offload: str = setting(
        "none",
        "Move weights to the CPU between uses: none, model (enable_model_cpu_offload), sequential "
        "(enable_sequential_cpu_offload) or group (group offloading, see opt.group_offload).",
        choices=OFFLOAD_MODES,
    )
    group_offload: GroupOffloadConfig = setting(help="diffusers group offloading.", factory=GroupOffloadConfig)
    forward_chunking: bool = setting(
        False, "Chunk the UNet's feed-forward layers (unet.enable_forward_chunking): less memory, a little slower."
    )
    forward_chunk_size: int = setting(1, "Items per feed-forward chunk when forward_chunking is on.", minimum=1)
    decode_chunk_size: int | None = setting(
        None,
        "Frames the VAE decodes at a time (null = all at once); smaller saves memory but can flicker.",
        minimum=1,
        why="the VAE decodes at least one frame at a time; use a value from 1 to num_frames, or null to decode "
        "all frames in one chunk",
    )
    storage_dtype: str | None = setting(
        None,
        "Store the UNet's weights in float8 (unet.enable_layerwise_casting), computing in the run's dtype (lossy); "
        "null: stored in the run's dtype.",
        choices=(None, *STORAGE_DTYPES),
    )
    deepcache: DeepCacheConfig = setting(help="DeepCache feature caching.", factory=DeepCacheConfig)
    attention_backend: str = setting(
        "auto",
        "Scaled-dot-product attention kernel, forced with torch.nn.attention.sdpa_kernel around every call: auto "
        "(PyTorch picks per call), flash, efficient (memory-efficient), cudnn or math (the unfused reference).",
        choices=ATTENTION_BACKENDS,
    )
    fuse_qkv: bool = setting(
        False, "Fuse the attention projections of the UNet (and VAE) into one matmul (fuse_qkv_projections)."
    )
    tf32: bool = setting(
        False, "Allow TF32 matmuls and convolutions (fp32 runs on GPUs with TF32 tensor cores; lossy within fp32)."
    )
    quantize: str | None = setting(
        None,
        "Quantize the UNet's linear layers with torchao: int8_weight_only, int8_dynamic (int8 activations and "
        "weights) or float8_dynamic (fp8 tensor cores only); null: no quantization. Lossy.",
        choices=(None, *QUANTIZE_MODES),
    )
    quantize_vae: bool = setting(False, "With opt.quantize: quantize the VAE decoder's linear layers too.")
    guidance_until_step: int | None = setting(
        None,
        "Classifier-free guidance only for the first k denoising steps, then the UNet runs at half batch without "
        "it (lossy: judge it with svdbench.compare); null: guidance at every step.",
        minimum=0,
        why="it is a number of steps, 0 or more (0: no guidance at all), or null for guidance at every step",
    )
    compile: CompileConfig = setting(help="torch.compile.", factory=CompileConfig)

    def _check_values(self) -> None:
        _check(
            not (self.deepcache.enabled and self.compile.unet),
            "opt.deepcache.enabled=true cannot be combined with opt.compile.unet=true: DeepCache decides in Python, "
            "at every step, which UNet blocks to skip (reading the timestep with .item()), which torch.compile "
            "cannot capture in one graph (fullgraph fails) and otherwise recompiles for every step pattern. "
            "Benchmark them separately (opt=deepcache, opt=compile), or compile only the VAE "
            "(opt.compile.vae=true).",
        )
        _check(
            self.quantize is not None or not self.quantize_vae,
            "opt.quantize_vae=true quantizes the VAE decoder with the mode of opt.quantize, which is null. Set "
            "opt.quantize (one of " + ", ".join(QUANTIZE_MODES) + ") or drop opt.quantize_vae.",
        )
        _check(
            self.quantize is None or self.storage_dtype is None,
            f"opt.quantize={self.quantize} cannot be combined with opt.storage_dtype={self.storage_dtype}: both "
            "replace how the UNet's weights are stored (torchao's quantized tensors, or float8 upcast per layer), "
            "and torchao cannot quantize weights stored in float8 (tried: it fails on the first layer). Pick one.",
        )

    @property
    def needs_accelerator(self) -> str | None:
        """Why this mode cannot run on a CPU-only machine, or None if it can."""
        if self.offload == "group":
            streams = " (with CUDA streams to overlap the copies, opt.group_offload.use_stream=true)"
            return (
                "opt.offload=group moves groups of layers between host memory and an accelerator"
                + (streams if self.group_offload.use_stream else "")
                + "; on a CPU both ends are the same memory, so there is nothing to measure"
            )
        if self.offload != "none":
            return f"opt.offload={self.offload} moves weights between host and accelerator memory"
        return None


@dataclass
class CondConfig(_Checked):
    name: str = setting("default", "Preset name, shown in results.")
    fps: int = setting(
        7,
        "Frame rate the model is conditioned on (also the fps of the written video).",
        minimum=1,
        why="the frame-rate conditioning must be at least 1",
    )
    motion_bucket_id: int = setting(
        127,
        "Amount of motion the model is conditioned on: higher means more motion.",
        minimum=0,
        maximum=255,
        why="SVD was trained with 0..255; 127 is the default, higher means more motion",
    )
    noise_aug_strength: float = setting(
        0.02,
        "Noise added to the conditioning image: more noise, less resemblance to the image, more motion.",
        minimum=0,
        why="0.02 is the default; more noise means less resemblance to the image, more motion",
    )


@dataclass
class InputConfig(_Checked):
    path: str | None = setting(
        None, "Conditioning image, a PNG or JPEG (null: the embedded synthetic test card, no download)."
    )


@dataclass
class BenchConfig(_Checked):
    warmup: int = setting(
        1,
        "Untimed calls after the cold first call, to settle caches and autotuning.",
        minimum=0,
        why="use 0 or more warm-up calls",
    )
    repeats: int = setting(
        3,
        "Measured calls (at least this many; at most bench.max_calls).",
        minimum=1,
        why="at least one measured call is needed",
    )
    min_seconds: float = setting(
        0.0,
        "Keep measuring until the measured calls also add up to this many seconds (still at most bench.max_calls "
        "calls).",
        minimum=0,
        maximum=MAX_MIN_SECONDS,
        why="seconds of measured calls, up to a day; the runner stops after bench.max_calls calls in any case",
    )
    max_calls: int = setting(
        MAX_MEASURED_CALLS,
        "The most measured calls a run makes, whatever bench.repeats or bench.min_seconds ask for.",
        minimum=1,
        maximum=MAX_CALLS_BOUND,
        why="at least one measured call is needed, and a million calls is a typo",
    )
    progress: bool = setting(True, "Show a progress bar over the denoising steps of each call.")
    second_input: bool = setting(
        True,
        "With torch.compile: after the measured calls, one call with a different conditioning image and one with "
        "another seed; recompilations, their latency and device-memory growth go into results (compile_check).",
    )
    target_rel_width: float | None = setting(
        None,
        "Stop measuring once the 95 percent interval of the median latency is at most this wide, relative to the "
        "median (0.05 = 5 percent), after at least 6 calls (the fewest with such an interval); bench.repeats stays "
        "the cap. null: always measure bench.repeats calls.",
        above=0,
        maximum=1,
        why="it is a width relative to the median, e.g. 0.05, or null to measure bench.repeats calls",
    )

    def _check_values(self) -> None:
        _check(
            self.repeats <= self.max_calls,
            f"bench.repeats={self.repeats} measured calls is more than bench.max_calls={self.max_calls}, the most a "
            "run makes. Ask for fewer repeats, or raise bench.max_calls.",
        )


@dataclass
class LoggerConfig(_Checked):
    """Where results go besides the run directory. Offline by default: a fresh machine has no W&B account."""

    name: str = setting(
        "wandb", "Where results go besides the run directory: W&B, or nowhere else (none).", choices=LOGGERS
    )
    project: str = setting("svdbench", "W&B project the run belongs to.")
    entity: str | None = setting(None, "W&B team or user name; null = your default entity.")
    group: str | None = setting(
        None, "W&B run group; null = the sweep's directory in a multirun, no group for a single run."
    )
    tags: list[str] = setting(help="W&B tags, e.g. logger.tags=[h100,nightly].", factory=list)
    notes: str | None = setting(None, "Free-text notes shown on the W&B run page.")
    mode: str = setting(
        "offline",
        "offline (local files, `wandb sync` later), online (needs `wandb login` and network) or disabled.",
        choices=WANDB_MODES,
    )
    init_timeout_s: float = setting(
        30.0,
        "Seconds W&B may take to start before the run gives up on it (the local record is kept either way).",
        above=0,
        why="W&B needs some seconds to start, 30 is the default; use logger=none to turn W&B off",
    )


@dataclass
class MetricsConfig(_Checked):
    enabled: bool = setting(True, "Compute the flicker and temporal-consistency suite on the frames (docs/metrics.md).")
    paired_decode: bool = setting(
        True,
        "When decode_chunk_size < num_frames, also decode the same latents in one chunk and report the PSNR "
        "between the two videos (after the measured calls; skipped, not failed, if it runs out of memory).",
    )
    pictures: bool = setting(True, "Write filmstrip.png and flicker_plot.png next to the video.")


@dataclass
class ProfileConfig(_Checked):
    enabled: bool = setting(
        False,
        "One extra call after the measured ones, under torch.profiler: time by phase, UNet block kind and operator "
        "category in results.json (profile), trace.json.gz for Perfetto and profile.png (docs/profile.md). It never "
        "enters the measured figures.",
    )
    top_ops: int = setting(15, "Operators listed in the profile's top_ops, by self time.", minimum=1)
    shapes: bool = setting(
        True,
        "Record operator input shapes (FLOPs and TFLOP/s per category, shapes in the trace). Costs host memory while "
        "profiling, about 75 KiB per operator event (4 GiB for model=small, 5 steps); false: no FLOPs, little memory.",
    )
    gzip: bool = setting(
        True, "Write the trace gzip-compressed as trace.json.gz (Perfetto opens it as is); false: plain trace.json."
    )


@dataclass
class EnergyConfig(_Checked):
    source: str = setting(
        "auto",
        "Energy of every measured call: auto (Zeus, else NVML and RAPL directly), zeus, nvml (GPU only) or none; "
        "a source this machine lacks is reported as missing with its reason, never estimated (docs/energy.md).",
        choices=ENERGY_SOURCES,
    )


@dataclass
class CostConfig(_Checked):
    """Prices to turn seconds and joules into dollars. Null by default: svdbench makes up no prices."""

    usd_per_hour: float | None = setting(
        None,
        "Rental price of the machine in US dollars per hour (null: no rental cost).",
        minimum=0,
        why="a price in dollars per hour, 0 or more, or null for none",
    )
    usd_per_kwh: float | None = setting(
        None,
        "Electricity price in US dollars per kWh, applied to the measured energy (null: no energy cost).",
        minimum=0,
        why="a price in dollars per kWh, 0 or more, or null for none",
    )


@dataclass
class GateConfig(_Checked):
    """The faithfulness gate of `python -m svdbench.compare` (docs/comparison.md)."""

    min_psnr_db: float = setting(
        GATE_MIN_PSNR_DB,
        "Lowest PSNR of a job's exact frames against its opt=none baseline for the verdict 'faithful' (default: "
        "the PSNR between fp16 and bf16 runs of opt=none, an accepted change of precision; docs/comparison.md).",
        above=0,
        why="a PSNR in dB, more than 0",
    )


@dataclass
class QualityConfig(_Checked):
    """Quality samples beside the measurement: after the measured calls (never timed), one video per image x seed,
    compared pair by pair with the baseline's by svdbench.compare (docs/comparison.md)."""

    images: str = setting(
        "0",
        f"Conditioning images of the quality samples: N = the first N of svdbench's set of {QUALITY_SET_SIZE} real "
        "photographs (no download; docs/metrics.md), or a folder of your own PNG/JPEG images; 0 = no samples.",
        valid=f"an integer from 0 to {QUALITY_SET_SIZE}, or a folder of images",
    )
    seeds: int = setting(
        0,
        "Seeds per image of the quality samples (seed, seed+1, ...); 0 = no samples.",
        minimum=0,
        maximum=MAX_QUALITY_SEEDS,
        why=f"a number of seeds from 0 to {MAX_QUALITY_SEEDS}: each is one more video per image",
    )

    @property
    def image_count(self) -> int | None:
        """N of quality.images=N, or None for a folder."""
        return int(self.images) if self.images.strip().isdigit() else None

    @property
    def enabled(self) -> bool:
        return self.seeds > 0 and self.image_count != 0

    def _check_values(self) -> None:
        count = self.image_count
        if count is None:
            _check(
                Path(self.images).expanduser().is_dir(),
                f"quality.images={self.images} is neither a number of images (0 to {QUALITY_SET_SIZE}) nor a "
                "folder: give quality.images=N for the first N of the built-in set, or the path of a folder of "
                "PNG/JPEG images.",
            )
        else:
            _check(
                count <= QUALITY_SET_SIZE,
                f"quality.images={count} is more than the built-in set's {QUALITY_SET_SIZE} photographs: use 1 to "
                f"{QUALITY_SET_SIZE}, or a folder of your own images.",
            )
        _check(
            (count == 0) == (self.seeds == 0),
            f"quality.images={self.images} with quality.seeds={self.seeds}: the samples are every image x seed, so "
            "set both (e.g. quality.images=4 quality.seeds=2), or neither.",
        )


@dataclass
class SweepConfig(_Checked):
    isolate: bool = setting(
        True, "In a multirun, run every job in a fresh process so that no job's memory or caches affect another's."
    )
    redo: bool = setting(
        False, "Re-run jobs whose directory already holds complete results for the same config (off: skip them)."
    )
    flicker_limit: float | None = setting(
        None,
        "Highest acceptable warp error for the Optuna trade-off search (null: no limit).",
        minimum=0,
        why="it is a warp error (0 or more), or null for none",
    )
    budget_s: float | None = setting(
        None,
        "Seconds the sweep may spend on its jobs: a job whose estimated time (svdbench.plan.cost, corrected by "
        "what earlier jobs took) exceeds what is left is recorded as `skipped` and the sweep goes on; re-running "
        "the sweep runs the skipped jobs. null: no budget.",
        above=0,
        why="a number of seconds, or null for no budget",
    )


@dataclass
class RunConfig(_Checked):
    model: ModelConfig = setting(help="Model preset (model=...).", factory=ModelConfig)
    opt: OptConfig = setting(help="Optimization mode (opt=...).", factory=OptConfig)
    cond: CondConfig = setting(help="SVD micro-conditioning (cond=...).", factory=CondConfig)
    input: InputConfig = setting(help="Conditioning image.", factory=InputConfig)
    bench: BenchConfig = setting(help="Measurement loop.", factory=BenchConfig)
    metrics: MetricsConfig = setting(help="Quality metrics of the frames.", factory=MetricsConfig)
    profile: ProfileConfig = setting(help="Where the time goes: one extra profiled call.", factory=ProfileConfig)
    sweep: SweepConfig = setting(help="Multirun behaviour.", factory=SweepConfig)
    energy: EnergyConfig = setting(help="Energy measurement.", factory=EnergyConfig)
    cost: CostConfig = setting(help="Prices for dollars per video (null: none).", factory=CostConfig)
    gate: GateConfig = setting(help="The faithfulness verdict of comparisons.", factory=GateConfig)
    quality: QualityConfig = setting(
        help="Quality samples over images x seeds, after the measured calls.", factory=QualityConfig
    )
    logger: LoggerConfig = setting(
        help="Where results go besides the run directory (logger=...).", factory=LoggerConfig
    )
    height: int = _side("Output height in pixels (default: the model's native height).")
    width: int = _side("Output width in pixels (default: the model's native width).")
    num_frames: int = setting(
        MISSING,
        "Frames to generate (default: the number the model was trained for).",
        minimum=1,
        why="generate at least 1 frame",
    )
    batch_size: int = setting(
        1,
        "Videos per pipeline call; video k of a batch is seeded with seed + k, so it is the same video as an "
        "unbatched run with that seed.",
        minimum=1,
        maximum=MAX_BATCH_SIZE,
        why=f"a pipeline call generates at least 1 video; more than {MAX_BATCH_SIZE} is no benchmark",
    )
    num_inference_steps: int = setting(
        25,
        "Denoising steps of the Euler scheduler.",
        minimum=1,
        why="at least 1 denoising step is needed; 25 is the default",
    )
    min_guidance_scale: float = setting(
        1.0,
        "Classifier-free guidance of the first frame; the scale ramps linearly over the frames to max_guidance_scale.",
        minimum=1,
        why="need 1 <= min <= max; max_guidance_scale=1 turns classifier-free guidance off",
    )
    max_guidance_scale: float = setting(
        3.0,
        "Classifier-free guidance of the last frame; 1 turns guidance off (half the UNet batch).",
        minimum=1,
        why="need 1 <= min <= max; max_guidance_scale=1 turns classifier-free guidance off",
    )
    seed: int = setting(
        42,
        "Seed of the latent noise (a CPU generator, so the same noise on every device) and of random weights.",
        minimum=0,
        maximum=MAX_SEED,
        why="torch.Generator.manual_seed takes 0 <= seed < 2**63 here",
        valid="an integer from 0 up to 2**63 - 1",
    )
    device: str = setting(
        "auto", "auto = cuda when available, else cpu; or cpu, cuda, cuda:N.", valid="auto, cpu, cuda or cuda:N"
    )
    dtype: str = setting(
        "auto",
        "Compute dtype: auto = the model's dtype (model.dtype) on an accelerator and fp32 on a CPU.",
        choices=DTYPES,
    )
    save_frames: bool = setting(
        True, "Keep the exact uint8 frames as frames.npz beside the (lossy) mp4, for comparisons between runs."
    )
    parallel: str = setting(
        "none",
        "One run over the processes of `torchrun --nproc_per_node=N -m svdbench ...`: none (one process), cfg (2 "
        "ranks each run half of the UNet's guidance batch every step; the same frames) or data (N ranks each "
        "generate batch_size/N of the batch's videos). Rank 0 writes the record (docs/scaling.md).",
        choices=PARALLEL_MODES,
    )

    @property
    def weights_seed(self) -> int:
        """The seed random weights are built from: model.weights_seed, else the run's seed."""
        return self.seed if self.model.weights_seed is None else self.model.weights_seed

    def _check_values(self) -> None:
        _check(
            1.0 <= self.min_guidance_scale <= self.max_guidance_scale,
            f"min_guidance_scale={self.min_guidance_scale}, max_guidance_scale={self.max_guidance_scale} are "
            "invalid: need 1 <= min <= max (max_guidance_scale=1 turns classifier-free guidance off).",
        )
        # diffusers' StableVideoDiffusionPipeline prepares the conditioning for classifier-free guidance when
        # max_guidance_scale > 1 (a doubled batch), then sets the per-frame scales to
        # torch.linspace(min, max, num_frames): with one frame that is [min_guidance_scale], and at 1 guidance is
        # off from the first step on, so the UNet gets a single latent batch beside doubled image latents.
        _check(
            not (self.num_frames == 1 and self.min_guidance_scale <= 1.0 < self.max_guidance_scale),
            f"num_frames=1 with max_guidance_scale={self.max_guidance_scale} fails inside diffusers' "
            "StableVideoDiffusionPipeline: it prepares classifier-free guidance because max_guidance_scale > 1, "
            "but a single frame gets the first scale of the ramp, min_guidance_scale="
            f"{self.min_guidance_scale}, which turns guidance off again, and the UNet's inputs no longer match "
            "(a tensor-size error). Turn guidance off with max_guidance_scale=1, generate at least 2 frames "
            "(num_frames=2), or guide the one frame with min_guidance_scale > 1 (e.g. min_guidance_scale="
            f"{self.max_guidance_scale}).",
        )
        _check(
            self.seed + self.batch_size - 1 <= MAX_SEED,
            f"seed={self.seed} with batch_size={self.batch_size}: video k of a batch uses seed + k, and the last "
            f"one, {self.seed + self.batch_size - 1}, is above the largest seed torch takes (2**63 - 1). Use a "
            "smaller seed.",
        )
        self._check_parallel()
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"device={self.device!r} is not valid: use auto, cpu, cuda or cuda:N.",
        )

    def _check_parallel(self) -> None:
        if self.parallel == "none":
            return
        world = os.environ.get("WORLD_SIZE")
        _check(
            world is not None,
            f"parallel={self.parallel} runs one run over several processes, which torchrun starts: use "
            f"`torchrun --nproc_per_node=2 -m svdbench parallel={self.parallel} ...` (not `python -m svdbench`, "
            "and not inside a -m sweep, whose jobs are single processes), or parallel=none.",
        )
        size = int(world or 1)
        _check(
            self.parallel != "cfg" or (size == 2 and self.max_guidance_scale > 1.0),
            f"parallel=cfg splits the UNet's guidance batch (unconditional, conditional) over exactly 2 ranks, "
            f"so it needs `torchrun --nproc_per_node=2` (this run has {size}) and guidance on "
            f"(max_guidance_scale > 1, here {self.max_guidance_scale}). For more ranks use parallel=data.",
        )
        _check(
            self.parallel != "data" or self.batch_size % size == 0,
            f"parallel=data gives each of the {size} ranks the same share of the batch, but batch_size="
            f"{self.batch_size} is not a multiple of {size}: use batch_size={size * max(1, self.batch_size // size)}"
            f" or another --nproc_per_node.",
        )


@functools.cache
def _cached_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _hints(cls: Any) -> dict[str, Any]:
    """The resolved type hints of a settings class (cached); Any, as callers pass what is_dataclass narrowed."""
    return _cached_hints(cls)


@functools.cache
def _prefixes() -> dict[type, str]:
    """Each settings class's dotted prefix in RunConfig: {OptConfig: "opt.", CompileConfig: "opt.compile.", ...}."""
    found: dict[type, str] = {RunConfig: ""}

    def walk(cls: type, prefix: str) -> None:
        for name, hint in _hints(cls).items():
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                found[hint] = f"{prefix}{name}."
                walk(hint, f"{prefix}{name}.")

    walk(RunConfig, "")
    return found


def _plain_type(hint: Any) -> tuple[Any, bool]:
    """(the type without Optional, whether null is allowed)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else str(value)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One field of the schema, by its dotted key: type, default, help and valid values."""

    key: str
    field: dataclasses.Field
    hint: Any

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.field.metadata)

    @property
    def help(self) -> str:
        return self.meta.get("help") or ""

    @property
    def is_group(self) -> bool:
        return dataclasses.is_dataclass(self.hint)

    @property
    def nullable(self) -> bool:
        return _plain_type(self.hint)[1]

    @property
    def base_type(self) -> Any:
        return _plain_type(self.hint)[0]

    @property
    def type_name(self) -> str:
        base, nullable = _plain_type(self.hint)
        name = getattr(base, "__name__", str(base)) if typing.get_origin(base) is None else str(base)
        return f"{name} or null" if nullable else name

    @property
    def default(self) -> Any:
        """The schema's default; MISSING ("???") where config.yaml supplies it (an interpolation)."""
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    def range_text(self) -> str:
        """The valid range in words ("from 0 up to 255", "at least 1"), or "" where there is none."""
        meta = self.meta
        low, high, above, step = meta.get("minimum"), meta.get("maximum"), meta.get("above"), meta.get("multiple_of")
        if low is not None and high is not None:
            text = f"from {_number(low)} up to {_number(high)}"
        elif low is not None:
            text = "0 or more" if low == 0 else f"at least {_number(low)}"
        elif above is not None:
            text = f"more than {_number(above)}"
        elif high is not None:
            text = f"at most {_number(high)}"
        else:
            text = ""
        if step is not None:
            text = f"a multiple of {step}" + (f", {text}" if text else "")
        return text

    def valid_text(self) -> str:
        """What the setting accepts, for messages and docs: "one of auto, fp32", "an integer, from 0 up to 255"."""
        choices = self.meta.get("choices")
        if self.meta.get("valid"):
            return self.meta["valid"]
        if choices:
            return "one of " + ", ".join(show(c) for c in choices)
        base = self.base_type
        kind = {
            int: "an integer",
            float: "a finite number",
            bool: "true or false",
            str: "a string",
        }.get(base, "a list of strings, e.g. [a,b]" if typing.get_origin(base) is list else "a group of settings")
        if self.nullable:
            kind += " or null"
        return kind + (f", {self.range_text()}" if self.range_text() else "")

    def problem(self, value: Any) -> str | None:
        """Why `value` is invalid for this setting (one sentence starting with key=value), or None."""
        meta = self.meta
        why = f" ({meta['why']})" if meta.get("why") else ""
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            return f"{self.key}={value!r} is not valid: choose one of {', '.join(show(c) for c in choices)}."
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            bounds = f", {self.range_text()}" if self.range_text() else ""
            return f"{self.key}={value} is invalid: it must be a finite number{bounds}{why}."
        low, high, above, step = meta.get("minimum"), meta.get("maximum"), meta.get("above"), meta.get("multiple_of")
        if (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (above is not None and value <= above)
            or (step is not None and value % step != 0)
        ):
            example = ""
            if step is not None:  # the nearest valid value, never one outside the range
                nearest = round(value / step) * step
                nearest = max(low if low is not None else step, min(high if high is not None else nearest, nearest))
                example = f", for example {self.key}={_number(nearest)}"
            return f"{self.key}={_number(value)} is invalid: it must be {self.range_text()}{why}{example}."
        return None


def settings(cls: type = RunConfig, prefix: str = "", groups: bool = False) -> Iterator[Setting]:
    """Every setting of the schema in field order, depth first (with groups=True also the group fields)."""
    for field in dataclasses.fields(cls):
        info = Setting(f"{prefix}{field.name}", field, _hints(cls)[field.name])
        if info.is_group:
            if groups:
                yield info
            yield from settings(info.hint, f"{info.key}.", groups)
        else:
            yield info


def lookup(key: str) -> Setting | None:
    """The setting (or group of settings) at a dotted key, or None where there is none."""
    node: Any = RunConfig
    info = None
    prefix = ""
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None
        info = Setting(f"{prefix}{part}", fields[part], _hints(node)[part])
        prefix, node = f"{info.key}.", info.hint
    return info


def unknown_setting_message(key: str, given: str) -> str | None:
    """A message for `key` if it names no setting (listing the settings that do exist there), else None.
    `given` is the argument as written (e.g. "+cond.motionbucket=200"); the message starts with it."""
    node: Any = RunConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        hints = _hints(node) if dataclasses.is_dataclass(node) else {}
        if part not in hints:
            where = ".".join(parts[:depth])
            if not hints:
                return f"{given}: `{key}` is not a setting: `{where}` is a value, not a group of settings."
            valid = sorted(hints)
            close = [v for v in valid if v.startswith(part)] or difflib.get_close_matches(part, valid, n=1)
            scope = f"`{where}`" if where else "the top level"
            return (
                f"{given}: `{key}` is not a setting of svdbench. Settings at {scope}: {', '.join(valid)}."
                + (f" Did you mean `{'.'.join([*parts[:depth], close[0]])}`?" if close else "")
                + " python -m svdbench --help lists every setting with its help (also docs/config.md)."
            )
        node = hints[part]
    return None


def register_configs() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def _unknown_keys(cfg: DictConfig, cls: type, prefix: str = "") -> str | None:
    """A message for the first key of `cfg` that is no field of `cls` (keys added with +key=value), or None."""
    fields = _hints(cls)
    for key in map(str, cfg.keys()):
        dotted = f"{prefix}{key}"
        if dotted == "hydra":
            continue
        if key not in fields:
            value = raw_value(cfg, key)
            shown = show(value) if not isinstance(value, (dict, DictConfig)) else "{...}"
            return unknown_setting_message(dotted, f"{dotted}={shown}")
        child = raw_value(cfg, key)
        if dataclasses.is_dataclass(fields[key]) and isinstance(child, DictConfig) and not is_none_node(child):
            problem = _unknown_keys(child, fields[key], f"{dotted}.")
            if problem:
                return problem
    return None


def _raw(cfg: DictConfig, key: str) -> str:
    """A value as written, without resolving interpolations (they may be what failed)."""
    try:
        return show(raw_value(cfg, key))
    except Exception:
        return "?"


def _first_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip()).strip()


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed config and return it as typed objects (raises ConfigError)."""
    problem = _unknown_keys(cfg, RunConfig)
    if problem:
        raise ConfigError(problem)
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError:
        raise
    except Exception as exc:  # OmegaConf: a missing value, an interpolation that does not resolve, a wrong type
        key = getattr(exc, "full_key", None) or ""
        info = lookup(key) if key else None
        reason = str(exc).split("\n")[0].strip()
        if info is not None and type(exc).__name__ == "MissingMandatoryValue":
            raise ConfigError(
                f"{key}=??? has no value: set it on the command line ({key}=...); it must be {info.valid_text()}. "
                f"{info.help}"
            ) from exc
        if info is not None:
            raise ConfigError(
                f"{key}={_raw(cfg, key)} is invalid: {reason}. {key} must be {info.valid_text()}. {info.help}"
            ) from exc
        raise ConfigError(f"The configuration is invalid: {_first_line(str(exc))}") from exc
