"""What a run costs in device seconds, before it runs: the time model of the planner and of sweep budgets.

A job is priced as its parts: building the pipeline, placing it (offload hooks), the cold call (torch.compile's
compilation happens there), the warm-ups, the measured calls, and the job's own overhead (process start, imports,
the machine's state, FLOP counting, metrics, writing the record, and the extra calls some settings add). One call
takes FLOPs / (the device's dense peak x the efficiency the mode reached):

- on a GPU, the efficiency each opt preset reached on the H100 with SVD-XT, 576x1024, fp16
  (svdbench.plan.fit.H100_MEASURED, docs/benchmarks.md), applied to the GPU's data-sheet peak. A mode without a
  measurement takes the measured mode it is closest to (its `stand_in`), and the estimate says so; sequential
  offload has no stand-in and no estimate;
- on a CPU, the CPU's measured GEMM peak (svdbench.measure.flops.device_peak_tflops) x CPU_CALL_EFFICIENCY.

Every constant below is either measured (with where) or an assumption (said as one); a sweep corrects the
estimates by what its finished jobs took (`corrected`).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from svdbench.plan.fit import H100_MEASURED, efficiency, usable_gib
from svdbench.settings.config import RunConfig

if TYPE_CHECKING:
    from svdbench.measure.flops import CallFlops

# docs/benchmarks.md, H100 table: cold call minus the median call of the modes that compile nothing (none 2.3 s,
# offload 1.0, chunking 1.5, lowmem 1.5, group_offload 1.7, deepcache 1.6): lazy initialisation, cuDNN's choice of
# kernels. The largest, for every uncompiled mode.
GPU_FIRST_CALL_S = 2.3
# The same table: compile's cold call minus its median call, 143.8 - 14.91 (the UNet, mode reduce-overhead,
# fullgraph). Measured once.
GPU_UNET_COMPILE_S = 128.9
# Compiling the VAE on a GPU has not been measured: assumed 40 s. On the 2-core CPU, compile_vae (UNet and VAE)
# took 36.7 s over its steady call on model=small (docs/benchmarks.md), compile (UNet only) about 28 s.
GPU_VAE_COMPILE_S = 40.0
CPU_UNET_COMPILE_S = 28.0
CPU_VAE_COMPILE_S = 9.0
# torchao quantization of the UNet (opt.quantize): not measured on a GPU; assumed 10 s of setup.
QUANTIZE_S = 10.0
# Random weights built on a GPU: not measured; assumed 5 s (each tensor filled once on the device).
GPU_RANDOM_BUILD_S = 5.0
# Random weights built on this CPU: bytes of weights filled per second. svdbench.pipeline.models filled SVD-XT's
# 9.0 GB (fp32) in 10.4 s of CPU time on the 2-core development VM, about 1.7 GB/s over its two cores; 1.5 GB/s
# leaves room for building the modules themselves.
CPU_FILL_BYTES_PER_S = 1.5e9
# Reading a checkpoint (pretrained weights): assumed 1 GB/s from disk or the page cache, then a copy to the GPU.
READ_BYTES_PER_S = 1e9
# Placing the pipeline: installing offload hooks (moving the weights to the host) is assumed 3 s; a pipeline
# built on its device is already placed.
OFFLOAD_PLACEMENT_S = 3.0
# A job's own overhead: a fresh process (imports, the machine's state), FLOP counting, the metrics and the
# record. Assumed 25 s on a GPU machine (the metrics of 25 frames at 576x1024 run on its CPU) and 8 s on the
# 2-core CPU for the tiny model (the tiny default end to end took 9.9 s, calls included, docs/benchmarks.md).
GPU_JOB_OVERHEAD_S = 25.0
CPU_JOB_OVERHEAD_S = 8.0
# A CPU call's FLOP rate as a share of the CPU's measured GEMM peak: assumed 0.3 (the denoising loop of
# model=small reached 0.63 of it, docs/benchmarks.md; the whole call, with its smaller kernels, less).
CPU_CALL_EFFICIENCY = 0.3
# Device memory of the GPUs of svdbench.measure.flops.GPU_PEAK_TFLOPS, GB as sold (the fit of a job).
GPU_MEMORY_GB = {
    "H200": 141,
    "H100 PCIe": 80,
    "H100": 80,
    "A100": 80,
    "L40S": 48,
    "L4": 24,
    "A10": 24,
    "RTX 4090": 24,
    "RTX 3090": 24,
    "V100": 32,
    "T4": 16,
}


@dataclass
class JobEstimate:
    """A job's estimated device seconds (None with `reason` where it cannot be priced) and their parts."""

    seconds: float | None
    reason: str | None = None
    call_s: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    device: str = ""  # what it is priced on: "H100" or "this CPU"
    peak_tflops: float | None = None
    efficiency: float | None = None
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stand_in(cfg: RunConfig) -> tuple[str | None, str | None]:
    """The H100-measured preset whose efficiency prices this mode, and what is assumed in taking it (None when
    the mode is the measured preset itself); (None, why) for a mode with no measured stand-in."""
    opt = cfg.opt
    extra = []
    if opt.fuse_qkv or opt.tf32:
        extra.append("fused QKV and TF32 assumed to change nothing")
    if opt.quantize:
        extra.append(f"quantization ({opt.quantize}) assumed to change nothing")
    if opt.storage_dtype:
        extra.append(f"{opt.storage_dtype} storage (a cast of every layer per use) assumed to change nothing")
    if opt.compile.vae and not opt.compile.unet:
        extra.append("the compiled VAE assumed to change nothing")
    if opt.offload == "sequential":
        return None, (
            "sequential offload (every layer moved to the GPU at each use) has no measurement and no measured mode "
            "close to it"
        )
    if opt.deepcache.enabled:
        name = "deepcache"
    elif opt.forward_chunking and opt.offload == "model":
        name = "lowmem"
    elif opt.forward_chunking:
        name = "chunking"
    elif opt.offload == "group":
        name = "group_offload"
    elif opt.offload == "model":
        name = "offload"
    elif opt.compile.unet:
        name = "compile"
    else:
        name = "none"
    exact = opt.name == name and not extra
    if exact:
        return name, None
    said = f"opt={opt.name} is not measured on the H100: priced as {name}" if opt.name != name else f"priced as {name}"
    return name, "; ".join([said, *extra])


def call_tflop(cfg: RunConfig, dtype: str) -> CallFlops:
    """FLOPs of one call, every video of it (svdbench.plan.planner.planned_flops), TFLOP."""
    from svdbench.plan.planner import planned_flops

    return planned_flops(cfg, dtype)


def weights_bytes(cfg: RunConfig, dtype: str) -> int:
    """Bytes of the pipeline's weights in `dtype` (from the meta pipeline: nothing allocated)."""
    from svdbench.pipeline.models import TORCH_DTYPES
    from svdbench.plan.simulate import pristine_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pristine_pipeline(cfg.model.architecture, TORCH_DTYPES[dtype])
    size = TORCH_DTYPES[dtype].itemsize
    return sum(
        t.numel() * size
        for module in (pipe.unet, pipe.vae, pipe.image_encoder)
        for t in [*module.parameters(), *module.buffers()]
    )


def cpu_peak_tflops(dtype: str) -> float | None:
    """This CPU's measured GEMM peak in `dtype` (measured once and cached, svdbench.measure.flops)."""
    import torch

    from svdbench.pipeline.models import TORCH_DTYPES

    return device_peak(torch.device("cpu"), TORCH_DTYPES[dtype])


def device_peak(device: Any, dtype: Any) -> float | None:
    from svdbench.measure.flops import device_peak_tflops

    return device_peak_tflops(device, dtype)[0]


def estimate(
    cfg: RunConfig,
    *,
    device: str,
    dtype: str,
    peak_tflops: float | None,
    name: str,
    flops: CallFlops | None = None,
) -> JobEstimate:
    """The seconds one run of `cfg` takes on `device` ("cuda" or "cpu", named `name`, of dense peak
    `peak_tflops` in `dtype`), by the module's time model."""
    gpu = device == "cuda"
    result = JobEstimate(seconds=None, device=name, peak_tflops=peak_tflops)
    if not peak_tflops:
        result.reason = f"no {dtype} peak FLOP rate is known for {name}"
        return result
    notes = result.assumptions
    if gpu:
        preset, note = stand_in(cfg)
        if preset is None:
            result.reason = note
            return result
        eff = efficiency(preset)
        assert eff is not None, preset  # every stand-in is in H100_MEASURED
        if note:
            notes.append(note)
        if (cfg.height, cfg.width, cfg.num_frames) != (576, 1024, 25) or cfg.model.architecture != "svd_xt":
            notes.append(
                "the H100 efficiencies were measured with SVD-XT at 576x1024, 25 frames; smaller work runs at a "
                "lower efficiency, so this estimate is likely low"
            )
    else:
        eff = CPU_CALL_EFFICIENCY
        notes.append(f"a CPU call assumed at {CPU_CALL_EFFICIENCY:g} of this CPU's measured GEMM peak, for every mode")
    result.efficiency = eff
    if flops is None:
        flops = call_tflop(cfg, dtype)
    call = flops.total_tflop / (peak_tflops * eff)
    result.call_s = call
    opt, bench = cfg.opt, cfg.bench

    weights = weights_bytes(cfg, dtype)
    if cfg.model.weights == "random":
        build = GPU_RANDOM_BUILD_S if gpu else weights / CPU_FILL_BYTES_PER_S
    else:
        build = weights / READ_BYTES_PER_S
        notes.append(f"a checkpoint read at {READ_BYTES_PER_S / 1e9:g} GB/s (assumed)")
    placement = OFFLOAD_PLACEMENT_S if opt.offload != "none" else 0.0
    optimize = QUANTIZE_S if opt.quantize else 0.0
    compile_s = 0.0
    if opt.compile.unet:
        compile_s += GPU_UNET_COMPILE_S if gpu else CPU_UNET_COMPILE_S
    if opt.compile.vae:
        compile_s += GPU_VAE_COMPILE_S if gpu else CPU_VAE_COMPILE_S
        if gpu:
            notes.append(f"compiling the VAE on a GPU is not measured: assumed {GPU_VAE_COMPILE_S:g} s")
    cold = call + (GPU_FIRST_CALL_S if gpu else 0.0) + compile_s
    warmups = bench.warmup * call
    measured = max(bench.repeats * call, bench.min_seconds)
    if bench.target_rel_width is not None:
        notes.append(
            f"measured calls priced at the cap, bench.repeats={bench.repeats} (bench.target_rel_width may stop earlier)"
        )
    extra = 0.0
    if bench.second_input and (opt.compile.unet or opt.compile.vae):
        extra += 2 * call  # the compile check's two calls
    if cfg.profile.enabled:
        extra += call
    chunk = opt.decode_chunk_size
    if cfg.metrics.enabled and cfg.metrics.paired_decode and chunk is not None and chunk < cfg.num_frames:
        extra += flops.vae_decode_tflop / (peak_tflops * eff)  # the one-chunk decode of the metrics
    overhead = (GPU_JOB_OVERHEAD_S if gpu else CPU_JOB_OVERHEAD_S) + extra
    result.parts = {
        "build_s": build,
        "placement_s": placement + optimize,
        "cold_call_s": cold,
        "compile_s": compile_s,  # inside cold_call_s
        "warmup_s": warmups,
        "measured_s": measured,
        "overhead_s": overhead,
    }
    result.seconds = build + placement + optimize + cold + warmups + measured + overhead
    return result


def on_this_machine(cfg: RunConfig, device_type: str, dtype: str, gpu_name: str | None) -> JobEstimate:
    """The estimate of `cfg` on this machine: its GPU (`gpu_name`, data-sheet peak) or this CPU (measured
    GEMM peak), as a sweep's budget needs it before each job."""
    from svdbench.measure.flops import gpu_peak_tflops

    if device_type == "cuda":
        name = gpu_name or "this GPU"
        peak = gpu_peak_tflops(name, dtype) if gpu_name else None
        return estimate(cfg, device="cuda", dtype=dtype, peak_tflops=peak, name=name)
    return estimate(cfg, device="cpu", dtype=dtype, peak_tflops=cpu_peak_tflops(dtype), name="this CPU")


def corrected(seconds: float, finished: list[tuple[float, float]]) -> tuple[float, float]:
    """An estimate corrected by the jobs finished so far ((estimated, actual) seconds each): times their total
    actual over their total estimated. Returns (corrected seconds, the ratio); the ratio is 1 before any job."""
    estimated = sum(e for e, _ in finished)
    actual = sum(a for _, a in finished)
    ratio = actual / estimated if estimated > 0 and actual > 0 else 1.0
    return seconds * ratio, ratio


def gpu_key(name: str) -> str | None:
    """The GPU_PEAK_TFLOPS entry `name` stands for: an exact name, else the longest one it contains, else the
    first one containing it ("h100" is the SXM H100, "h100 pcie" the PCIe one)."""
    from svdbench.measure.flops import GPU_PEAK_TFLOPS

    wanted = name.strip().lower()
    if not wanted:
        return None
    keys = [key for key, _ in GPU_PEAK_TFLOPS]
    exact = [key for key in keys if key.lower() == wanted]
    contained = sorted((key for key in keys if key.lower() in wanted), key=len, reverse=True)
    containing = [key for key in keys if wanted in key.lower()]
    found = exact or contained or containing
    return found[0] if found else None


def gpu_memory_gb(name: str) -> int | None:
    """The memory of a GPU of svdbench.measure.flops.GPU_PEAK_TFLOPS, GB as sold."""
    return GPU_MEMORY_GB.get(name)


def fits(peak_gib: float | None, card_gb: float | None) -> bool | None:
    """Whether a predicted peak fits a card of `card_gb` GB (its usable memory, svdbench.plan.fit)."""
    if peak_gib is None or card_gb is None:
        return None
    return peak_gib <= usable_gib(card_gb)


__all__ = ["JobEstimate", "H100_MEASURED", "corrected", "estimate", "on_this_machine", "stand_in"]
