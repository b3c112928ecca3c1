"""FLOPs of one pipeline call, counted on meta tensors, and model FLOP utilization (MFU).

Counting runs each component once on the meta device under `torch.utils.flop_counter.FlopCounterMode`:
no weights, no memory, no real compute, about two seconds for the full SVD-XT UNet. Counts are cached
per component config and input shape, in memory and on disk (svdbench.files.cache). A multiply-add counts as 2 FLOPs.

MFU = achieved FLOP/s / the device's dense peak for the run's dtype: a table of vendor figures for
GPUs, and for CPUs a GEMM peak measured on this machine (once, cached).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from svdbench.files.cache import JsonCache
from svdbench.measure.machine import cpu_model
from svdbench.pipeline.call import CallShape, decode_chunk, guided
from svdbench.pipeline.models import dtype_name, meta_module, unwrap
from svdbench.settings.config import RunConfig

TERA = 1e12
FLOP_METHOD = "torch.utils.flop_counter on meta tensors (multiply-add = 2 FLOPs), median measured call"


FLOP_CACHE = JsonCache("flops.json")
PEAK_CACHE = JsonCache("cpu_peaks.json")


def count_flops(fn, *args, **kwargs) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def _meta_copy(module: nn.Module) -> nn.Module:
    """A weightless copy of a diffusers or transformers model, everything on the meta device."""
    module = unwrap(module)
    cls, config = type(module), module.config
    factory = (lambda: cls.from_config(config)) if hasattr(cls, "from_config") else (lambda: cls(config))
    return nn.Module.to(meta_module(factory), "meta")


def _config(module: nn.Module) -> Any:
    """The model's config: diffusers' FrozenDict or a transformers PretrainedConfig.

    Typed Any on purpose: nn.Module.__getattr__ would type `module.config` as Tensor | Module.
    """
    return unwrap(module).config


def _cached_count(module: nn.Module, label: str, shapes: dict, run) -> float:
    config = _config(module)
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)  # transformers / diffusers
    blob = json.dumps({"class": type(unwrap(module)).__name__, "config": config, "shapes": shapes}, default=str)
    key = f"{label}:{hashlib.sha256(blob.encode()).hexdigest()[:20]}"
    cached = FLOP_CACHE.get(key)
    if cached is None:
        with torch.no_grad():
            cached = float(run(_meta_copy(module)))
        FLOP_CACHE.put(key, cached)
    return cached


def unet_step_flops(unet: nn.Module, batch: int, num_frames: int, latent_h: int, latent_w: int) -> float:
    cfg = _config(unet)
    shapes = {"batch": batch, "frames": num_frames, "h": latent_h, "w": latent_w}

    def run(meta: nn.Module) -> int:
        with torch.device("meta"):
            sample = torch.empty(batch, num_frames, cfg.in_channels, latent_h, latent_w)
            states = torch.empty(batch, 1, cfg.cross_attention_dim)
            time_ids = torch.empty(batch, 3)
            timestep = torch.tensor(1.0)
        return count_flops(meta, sample, timestep, encoder_hidden_states=states, added_time_ids=time_ids)

    return _cached_count(unet, "unet", shapes, run)


def vae_decode_flops(vae: nn.Module, num_frames: int, chunk: int, latent_h: int, latent_w: int) -> float:
    """FLOPs of `decode_latents`: the VAE decodes `chunk` frames at a time, the last chunk may be shorter."""
    sizes = [min(chunk, num_frames - start) for start in range(0, num_frames, chunk)]
    channels = _config(vae).latent_channels
    total = 0.0
    for size in set(sizes):

        def run(meta: nn.Module, size: int = size) -> int:
            with torch.device("meta"):
                latents = torch.empty(size, channels, latent_h, latent_w)
            return count_flops(meta.decode, latents, num_frames=size)

        shapes = {"frames": size, "h": latent_h, "w": latent_w}
        total += sizes.count(size) * _cached_count(vae, "vae_decode", shapes, run)
    return total


def conditioning_flops(image_encoder: nn.Module, vae: nn.Module, videos: int, height: int, width: int) -> float:
    """CLIP image embedding (the pipeline resizes to 224x224) plus the VAE encoding of the image, once per video
    of the call (a batch repeats the image)."""

    def run_encoder(meta: nn.Module) -> int:
        with torch.device("meta"):
            pixels = torch.empty(videos, 3, 224, 224)
        return count_flops(meta, pixels)

    def run_vae(meta: nn.Module) -> int:
        with torch.device("meta"):
            image = torch.empty(videos, 3, height, width)
        return count_flops(meta.encode, image)

    return _cached_count(image_encoder, "image_encoder", {"n": videos, "h": 224, "w": 224}, run_encoder) + (
        _cached_count(vae, "vae_encode", {"n": videos, "h": height, "w": width}, run_vae)
    )


@dataclass
class CallFlops:
    """FLOPs of one pipeline call (every video of it), in TFLOP (1e12 floating-point operations)."""

    unet_per_step_tflop: float
    denoising_tflop: float
    vae_decode_tflop: float
    conditioning_tflop: float
    total_tflop: float
    videos: int = 1  # videos the call makes (batch_size): the counts are of all of them


def call_flops(
    pipe,
    *,
    shape: CallShape,
    height: int,
    width: int,
    steps: int,
    guidance: bool,
    decode_chunk: int,
) -> CallFlops:
    """FLOPs of one call of `shape.videos` videos: the UNet on the whole batch (twice it with guidance), the
    VAE decoding the frames of every video `decode_chunk` at a time, the conditioning of every video."""
    scale = pipe.vae_scale_factor
    latent_h, latent_w = height // scale, width // scale
    unet_batch = shape.videos * (2 if guidance else 1)
    per_step = unet_step_flops(pipe.unet, unet_batch, shape.frames_per_video, latent_h, latent_w)
    decode = vae_decode_flops(pipe.vae, shape.frames, decode_chunk, latent_h, latent_w)
    conditioning = conditioning_flops(pipe.image_encoder, pipe.vae, shape.videos, height, width)
    denoising = per_step * steps
    return CallFlops(
        unet_per_step_tflop=per_step / TERA,
        denoising_tflop=denoising / TERA,
        vae_decode_tflop=decode / TERA,
        conditioning_tflop=conditioning / TERA,
        total_tflop=(denoising + decode + conditioning) / TERA,
        videos=shape.videos,
    )


def config_flops(pipe, cfg: RunConfig) -> CallFlops:
    """`call_flops` of one call with the run's settings: all `batch_size` videos of it."""
    return call_flops(
        pipe,
        shape=CallShape.of(cfg),
        height=cfg.height,
        width=cfg.width,
        steps=cfg.num_inference_steps,
        guidance=guided(cfg),
        decode_chunk=decode_chunk(cfg),
    )


def rate(tflop: float, seconds: float | None) -> float | None:
    """TFLOP/s; None for a phase that took no measurable time."""
    return tflop / seconds if seconds is not None and seconds > 0 else None


@dataclass
class Utilization:
    """What a run achieved with the call's FLOPs: TFLOP/s of the denoising loop and of the whole call (median
    measured call), and MFU = TFLOP/s / the device's dense peak."""

    denoising_tflops_per_s: float | None = None
    call_tflops_per_s: float | None = None
    peak_tflops_per_s: float | None = None
    peak_source: str = ""
    mfu_denoising: float | None = None
    mfu_call: float | None = None


@dataclass
class RunFlops:
    """The run's FLOPs (RunResult.flops): the counts of one call and the utilization they reached."""

    call: CallFlops
    utilization: Utilization = field(default_factory=Utilization)
    method: str = FLOP_METHOD

    @property
    def per_video_tflop(self) -> float:
        """The whole call's FLOPs shared out over its videos."""
        return self.call.total_tflop / max(self.call.videos, 1)


def utilization(flops: CallFlops, denoising_s: float, call_s: float, peak: float | None, source: str) -> Utilization:
    """Achieved TFLOP/s of the denoising loop and of the whole call, and MFU against `peak`."""
    denoising_rate = rate(flops.denoising_tflop, denoising_s)
    call_rate = rate(flops.total_tflop, call_s)
    return Utilization(
        denoising_tflops_per_s=denoising_rate,
        call_tflops_per_s=call_rate,
        peak_tflops_per_s=peak,
        peak_source=source,
        mfu_denoising=denoising_rate / peak if peak and denoising_rate else None,
        mfu_call=call_rate / peak if peak and call_rate else None,
    )


def from_schema_3(data: dict[str, Any], videos: int) -> dict[str, Any]:
    """A results.json `flops` object written before schema 4 (a flat dict) in this layout. Those counted one
    video's FLOPs whatever the batch: a call of `videos` videos did `videos` times them, and its TFLOP/s and
    MFU were low by that factor, so all of them are scaled here."""
    counts = ("unet_per_step_tflop", "denoising_tflop", "vae_decode_tflop", "conditioning_tflop", "total_tflop")
    rates = ("denoising_tflops_per_s", "call_tflops_per_s", "mfu_denoising", "mfu_call")

    def scaled(key: str) -> Any:
        value = data.get(key)
        return value * videos if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    return {
        "call": {**{key: scaled(key) for key in counts}, "videos": videos},
        "utilization": {
            **{key: scaled(key) for key in rates},
            "peak_tflops_per_s": data.get("peak_tflops_per_s"),
            "peak_source": data.get("peak_source") or "",
        },
        "method": data.get("method") or FLOP_METHOD,
    }


# Dense (no sparsity) peak TFLOP/s from vendor data sheets. fp32 is the non-tensor-core figure: PyTorch
# runs fp32 matmuls without TF32 unless told to. The first matching substring of the device name wins.
GPU_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"fp16": 989.4, "bf16": 989.4, "fp32": 66.9}),
    ("H100 PCIe", {"fp16": 756.5, "bf16": 756.5, "fp32": 51.2}),
    ("H100", {"fp16": 989.4, "bf16": 989.4, "fp32": 66.9}),  # SXM / HBM3
    ("A100", {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"fp16": 362.1, "bf16": 362.1, "fp32": 91.6}),
    ("L4", {"fp16": 121.0, "bf16": 121.0, "fp32": 30.3}),
    ("A10", {"fp16": 125.0, "bf16": 125.0, "fp32": 31.2}),
    ("RTX 4090", {"fp16": 165.2, "bf16": 165.2, "fp32": 82.6}),  # fp16 with fp32 accumulate
    ("RTX 3090", {"fp16": 71.0, "bf16": 71.0, "fp32": 35.6}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
]


def gpu_peak_tflops(device_name: str, dtype: str) -> float | None:
    for key, peaks in GPU_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(dtype)
    return None


def measure_cpu_gemm_tflops(dtype: torch.dtype, n: int = 1024, seconds: float = 0.5) -> float:
    """Best observed matmul rate on this CPU with PyTorch's current thread count."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best / TERA


def device_peak_tflops(
    device: torch.device, dtype: torch.dtype, achieved: float | None = None
) -> tuple[float | None, str]:
    """The denominator of MFU, and where it came from.

    A CPU's GEMM peak is measured once and cached. A peak measured while the machine was busy reads
    low, and then a run beats it (MFU over 1): when `achieved` (this run's TFLOP/s) exceeds the cached
    peak, the peak is measured again and the higher of the two is kept.
    """
    name = dtype_name(dtype)
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        peak = gpu_peak_tflops(gpu, name)
        return peak, f"data sheet, {gpu}, dense {name}" if peak else f"no {name} peak known for {gpu}"
    cpu = cpu_model() or platform.machine()
    key = f"{cpu}|threads={torch.get_num_threads()}|{name}|torch={torch.__version__}"
    source = f"measured {name} GEMM peak of this CPU ({cpu}, {torch.get_num_threads()} threads)"
    peak = PEAK_CACHE.get(key)
    if peak is None:
        peak = measure_cpu_gemm_tflops(dtype)
        PEAK_CACHE.put(key, peak)
    elif achieved is not None and achieved > peak:
        stale = peak
        peak = max(stale, measure_cpu_gemm_tflops(dtype))
        PEAK_CACHE.put(key, peak)
        source += f"; re-measured, as this run's {achieved:.3g} TFLOP/s beat the cached {stale:.3g}"
    return peak, source
