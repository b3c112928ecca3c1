"""Typed configuration: one dataclass per config group, checked before any model is built.

The YAML files under `conf/` only select and override; these dataclasses define what exists, the types
and the valid ranges. `OmegaConf.to_object` instantiates them, which runs every `__post_init__` check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

DTYPES = ("auto", "fp32", "fp16", "bf16")
ARCHITECTURES = ("svd", "svd_xt", "small", "tiny")
WEIGHT_SOURCES = ("pretrained", "random")
OFFLOAD_MODES = ("none", "model", "sequential", "group")
GROUP_OFFLOAD_TYPES = ("leaf_level", "block_level")
# Weight storage dtypes of layerwise casting (opt.storage_dtype); compute stays in the run's dtype.
STORAGE_DTYPES = ("fp8_e4m3", "fp8_e5m2")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
MAX_SIDE = 4096


class ConfigError(ValueError):
    """A configuration value is invalid. The message says which one and how to fix it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    _check(value in choices, f"{key}={value!r} is not valid: choose one of {', '.join(choices)}.")


@dataclass
class ModelConfig:
    name: str = "tiny"
    architecture: str = "tiny"
    weights: str = "random"
    repo_id: str | None = None
    path: str | None = None
    variant: str | None = None
    download: bool = False
    dtype: str = "fp32"
    num_frames: int = 8
    height: int = 128
    width: int = 128

    def __post_init__(self) -> None:
        _check_choice(self.architecture, ARCHITECTURES, "model.architecture")
        _check_choice(self.weights, WEIGHT_SOURCES, "model.weights")
        _check_choice(self.dtype, DTYPES, "model.dtype")
        _check(
            self.weights != "pretrained" or bool(self.path or self.repo_id),
            f"model.weights=pretrained needs model.path=/dir/with/model_index.json or a model.repo_id; "
            f"the '{self.name}' preset has neither. Use model.weights=random to benchmark without weights.",
        )


@dataclass
class CompileConfig:
    unet: bool = False
    vae: bool = False
    mode: str = "reduce-overhead"
    fullgraph: bool = True

    def __post_init__(self) -> None:
        _check_choice(self.mode, COMPILE_MODES, "opt.compile.mode")


@dataclass
class GroupOffloadConfig:
    """diffusers group offloading, used when opt.offload=group."""

    offload_type: str = "leaf_level"
    num_blocks_per_group: int | None = None
    use_stream: bool = True
    record_stream: bool = False
    low_cpu_mem_usage: bool = False

    def __post_init__(self) -> None:
        _check_choice(self.offload_type, GROUP_OFFLOAD_TYPES, "opt.group_offload.offload_type")
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
class DeepCacheConfig:
    """DeepCache (the `deepcache` package): reuse the UNet's deep features between denoising steps."""

    enabled: bool = False
    cache_interval: int = 3
    cache_branch_id: int = 0

    def __post_init__(self) -> None:
        _check(
            self.cache_interval >= 1,
            f"opt.deepcache.cache_interval={self.cache_interval} is invalid: the cache is refreshed every N steps, "
            "N at least 1 (1 refreshes every step, which changes nothing; 3 is the usual value).",
        )
        _check(
            self.cache_branch_id >= 0,
            f"opt.deepcache.cache_branch_id={self.cache_branch_id} is invalid: it numbers the skip branch from the "
            "shallowest (0) down, so it must be 0 or more.",
        )


@dataclass
class OptConfig:
    name: str = "none"
    offload: str = "none"
    group_offload: GroupOffloadConfig = field(default_factory=GroupOffloadConfig)
    forward_chunking: bool = False
    forward_chunk_size: int = 1
    decode_chunk_size: int | None = None
    storage_dtype: str | None = None
    deepcache: DeepCacheConfig = field(default_factory=DeepCacheConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)

    def __post_init__(self) -> None:
        _check_choice(self.offload, OFFLOAD_MODES, "opt.offload")
        _check(
            self.forward_chunk_size >= 1,
            f"opt.forward_chunk_size={self.forward_chunk_size} is invalid: it must be at least 1.",
        )
        _check(
            self.decode_chunk_size is None or self.decode_chunk_size >= 1,
            f"opt.decode_chunk_size={self.decode_chunk_size} is invalid: the VAE decodes at least one frame "
            "at a time. Use a value from 1 to num_frames, or null to decode all frames in one chunk.",
        )
        _check(
            self.storage_dtype is None or self.storage_dtype in STORAGE_DTYPES,
            f"opt.storage_dtype={self.storage_dtype!r} is not valid: choose null (weights stored in the run's "
            f"dtype) or one of {', '.join(STORAGE_DTYPES)} (UNet weights stored in float8, computed in the run's "
            "dtype).",
        )
        _check(
            not (self.deepcache.enabled and self.compile.unet),
            "opt.deepcache.enabled=true cannot be combined with opt.compile.unet=true: DeepCache decides in Python, "
            "at every step, which UNet blocks to skip (reading the timestep with .item()), which torch.compile "
            "cannot capture in one graph (fullgraph fails) and otherwise recompiles for every step pattern. "
            "Benchmark them separately (opt=deepcache, opt=compile), or compile only the VAE "
            "(opt.compile.vae=true).",
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
class CondConfig:
    name: str = "default"
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02

    def __post_init__(self) -> None:
        _check(self.fps >= 1, f"cond.fps={self.fps} is invalid: the frame-rate conditioning must be at least 1.")
        _check(
            0 <= self.motion_bucket_id <= 255,
            f"cond.motion_bucket_id={self.motion_bucket_id} is out of range: SVD was trained with 0..255 "
            "(127 is the default; higher means more motion).",
        )
        _check(
            self.noise_aug_strength >= 0,
            f"cond.noise_aug_strength={self.noise_aug_strength} is invalid: it must be 0 or more "
            "(0.02 is the default; more noise means less resemblance to the image, more motion).",
        )


@dataclass
class InputConfig:
    path: str | None = None


@dataclass
class BenchConfig:
    warmup: int = 1
    repeats: int = 3
    min_seconds: float = 0.0
    progress: bool = True

    def __post_init__(self) -> None:
        _check(self.warmup >= 0, f"bench.warmup={self.warmup} is invalid: use 0 or more warm-up calls.")
        _check(self.repeats >= 1, f"bench.repeats={self.repeats} is invalid: at least one measured call is needed.")
        _check(self.min_seconds >= 0, f"bench.min_seconds={self.min_seconds} is invalid: it must be 0 or more.")


@dataclass
class LoggerConfig:
    """Where results go besides the run directory. Offline by default: a fresh machine has no W&B account."""

    name: str = "wandb"
    project: str = "svdbench"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    mode: str = "offline"
    init_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _check_choice(self.name, LOGGERS, "logger.name")
        _check_choice(self.mode, WANDB_MODES, "logger.mode")
        _check(
            self.init_timeout_s > 0,
            f"logger.init_timeout_s={self.init_timeout_s} is invalid: W&B needs some seconds to start (30 is "
            "the default); use logger=none to turn W&B off.",
        )


@dataclass
class MetricsConfig:
    enabled: bool = True
    paired_decode: bool = True
    pictures: bool = True


@dataclass
class SweepConfig:
    isolate: bool = True
    redo: bool = False
    flicker_limit: float | None = None

    def __post_init__(self) -> None:
        _check(
            self.flicker_limit is None or self.flicker_limit >= 0,
            f"sweep.flicker_limit={self.flicker_limit} is invalid: it is a warp error (0 or more), or null for none.",
        )


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    opt: OptConfig = field(default_factory=OptConfig)
    cond: CondConfig = field(default_factory=CondConfig)
    input: InputConfig = field(default_factory=InputConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    height: int = MISSING
    width: int = MISSING
    num_frames: int = MISSING
    num_inference_steps: int = 25
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0
    seed: int = 42
    device: str = "auto"
    dtype: str = "auto"
    save_frames: bool = True

    def __post_init__(self) -> None:
        for key in ("height", "width"):
            value = getattr(self, key)
            _check(
                value > 0 and value % 64 == 0 and value <= MAX_SIDE,
                f"{key}={value} is invalid: it must be a positive multiple of 64 up to {MAX_SIDE} "
                f"(SVD's native size is 576x1024), for example {key}={max(64, round(value / 64) * 64)}.",
            )
        _check(self.num_frames >= 1, f"num_frames={self.num_frames} is invalid: generate at least 1 frame.")
        _check(
            self.num_inference_steps >= 1,
            f"num_inference_steps={self.num_inference_steps} is invalid: at least 1 denoising step is needed "
            "(25 is the default).",
        )
        _check(
            1.0 <= self.min_guidance_scale <= self.max_guidance_scale,
            f"min_guidance_scale={self.min_guidance_scale}, max_guidance_scale={self.max_guidance_scale} are "
            "invalid: need 1 <= min <= max (max_guidance_scale=1 turns classifier-free guidance off).",
        )
        _check_choice(self.dtype, DTYPES, "dtype")
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"device={self.device!r} is not valid: use auto, cpu, cuda or cuda:N.",
        )


def register_configs() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed config and return it as typed objects (raises ConfigError)."""
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError:
        raise
    except Exception as exc:  # OmegaConf type errors: a string where an int belongs, a missing value
        raise ConfigError(f"The configuration is invalid: {exc}".strip()) from exc
