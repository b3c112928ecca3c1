"""Predict the peak device memory of one pipeline call from its configuration: no GPU, no weights.

`predict(cfg)` simulates the call (svdbench.plan.simulate: diffusers' own `__call__` on weightless tensors,
live bytes counted op by op), adds the weights the offload mode keeps on the device in each phase
(svdbench.plan.weights), and reports the peak, its phase and what it is made of. Simulations are cached by
everything that shapes them, in memory and in ~/.cache/svdbench/plan.json, so that the runner can call
`predict` on every run: the tiny model costs a JSON lookup after its first prediction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from svdbench.files.cache import JsonCache
from svdbench.pipeline.call import decode_chunk, guided
from svdbench.settings.config import RunConfig

log = logging.getLogger(__name__)

GIB = 2**30
# Bump when the simulation or the weight accounting changes: old cache entries are then ignored.
PLAN_VERSION = 1
PHASES = ("conditioning", "denoising", "decode")
SUB_PHASE_OF = {
    "start": "conditioning",
    "image_encoder": "conditioning",
    "vae_encode": "conditioning",
    "denoising": "denoising",
    "decode": "decode",
}
# Denoising steps simulated: the second step's peak is every later step's (the previous step's UNet output
# and inputs are still referenced while the next one runs), so two steps give the peak of any number.
SIMULATED_STEPS = 2
FUSED_ATTENTION = {
    "cuda": "fused SDPA (flash / memory-efficient kernel: no attention matrix)",
    "cpu": "fused SDPA (PyTorch's flash-attention kernel for CPUs: no attention matrix)",
}
# Settings of opt that do not change memory (tf32: matmul precision), and the values of the others that the
# planner knows. Any other non-default setting of opt makes it refuse rather than guess.
MEMORY_NEUTRAL = {"name", "tf32", "compile", "group_offload"}
# Fused kernels: output and log-sum-exp only. "math" (the unfused reference) materializes the attention matrix.
FUSED_BACKENDS = {"auto", "flash", "efficient", "cudnn"}


class CannotPredict(Exception):
    """The planner cannot model this configuration; the message says what and why."""


@dataclass
class Prediction:
    """Predicted device memory of one pipeline call (GiB = 2**30 bytes), as torch.cuda.max_memory_allocated
    would report it (allocated, not reserved)."""

    peak_gib: float  # predicted peak allocated device memory of one call
    peak_phase: str  # "conditioning" | "denoising" | "decode"
    phases_gib: dict[str, float]  # peak per phase
    breakdown_gib: dict[str, float]  # weights, kept tensors, activations at the peak
    host_weights_gib: float | None  # offload modes: host memory the weights need
    attention: str  # the attention kernel the prediction assumes
    method: str  # one line: how it was predicted
    device: str = "cuda"
    dtype: str = "fp16"
    resident_gib: dict[str, float] = field(default_factory=dict)  # weights on the device per phase
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Target:
    """The device kind and dtype the prediction is for, and the assumption made to get them."""

    device: str  # "cuda" or "cpu"
    dtype: str  # fp32, fp16, bf16
    assumption: str | None = None


def resolve_target(cfg: RunConfig, device: str | None = None, dtype: str | None = None) -> Target:
    """The device and dtype to plan for. device=auto is planned as cuda (what users plan memory for), and
    dtype=auto then as the model's dtype, as a run on a GPU would pick it (svdbench.runner.select_dtype)."""
    device = device or cfg.device
    dtype = dtype or cfg.dtype
    assumption = None
    kind = "cpu" if device == "cpu" else "cuda"
    if device == "auto":
        assumption = "device=auto is planned as a CUDA GPU"
    if dtype == "auto":
        dtype = cfg.model.dtype if kind == "cuda" and cfg.model.dtype != "auto" else "fp32"
        assumption = (assumption + f" with dtype=auto as {dtype}") if assumption else f"dtype=auto is {dtype}"
        if kind == "cuda" and cfg.model.dtype != "auto":
            assumption += " (the model's dtype, model.dtype)"
    return Target(kind, dtype, assumption)


def modelling_problem(cfg: RunConfig, target: Target) -> str | None:
    """Why the planner cannot model `cfg` on `target` (one sentence), or None when it can."""
    opt = cfg.opt
    quantize = opt.quantize
    if quantize is not None:
        return (
            f"opt.quantize={quantize}: quantized weights and their kernels are not modelled yet (torchao's "
            "tensor subclasses change both the weight bytes and the activations)"
        )
    if opt.quantize_vae:
        return "opt.quantize_vae=true: quantized VAE weights are not modelled yet"
    backend = opt.attention_backend
    if backend not in FUSED_BACKENDS:
        return (
            f"opt.attention_backend={backend}: the planner models the fused attention kernels (auto, flash, "
            "efficient, cudnn), which never hold the attention matrix; this backend materializes it, in a "
            "dtype and layout that differ between devices"
        )
    if opt.offload not in ("none", "model", "sequential", "group"):
        return f"opt.offload={opt.offload} is an offload mode the planner does not know"
    if opt.offload != "none" and target.device == "cpu":
        return (
            f"opt.offload={opt.offload} moves weights between host and accelerator memory; on a CPU a run "
            "refuses it (unsupported), so there is nothing to predict"
        )
    if opt.deepcache.enabled:
        from svdbench.pipeline.deepcache import DeepCacheUnavailable, check_branch

        blocks = _unet_config(cfg.model.architecture).get("down_block_types", [])
        try:
            check_branch(types.SimpleNamespace(down_blocks=blocks), opt.deepcache)
        except DeepCacheUnavailable as exc:
            return str(exc)
    known = {f.name for f in dataclasses.fields(type(opt))} & (
        MEMORY_NEUTRAL
        | {
            "offload",
            "forward_chunking",
            "forward_chunk_size",
            "decode_chunk_size",
            "storage_dtype",
            "deepcache",
            "quantize",
            "quantize_vae",
            "attention_backend",
            "fuse_qkv",
        }
    )
    defaults = type(opt)()
    for f in dataclasses.fields(type(opt)):
        if f.name not in known and getattr(opt, f.name) != getattr(defaults, f.name):
            return f"opt.{f.name}={getattr(opt, f.name)} is a setting the planner does not know how it changes memory"
    return None


def _unet_config(architecture: str) -> dict:
    from svdbench.pipeline.models import architecture_dir

    return json.loads((architecture_dir(architecture) / "unet" / "config.json").read_text())


@functools.cache
def _versions() -> dict[str, str]:
    """The versions a simulation depends on (read from the installed metadata: importing is slower)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "diffusers", "transformers", "accelerate", "deepcache"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def simulation_key(cfg: RunConfig, target: Target) -> dict[str, Any]:
    """Everything the simulated activations depend on (not the weights, not the offload mode)."""
    opt = cfg.opt
    return {
        "plan": PLAN_VERSION,
        "architecture": cfg.model.architecture,
        "device": target.device,
        "dtype": target.dtype,
        "height": cfg.height,
        "width": cfg.width,
        "num_frames": cfg.num_frames,
        "steps": min(cfg.num_inference_steps, SIMULATED_STEPS),
        "guided": guided(cfg),
        "decode_chunk_size": decode_chunk(cfg),
        "batch_size": cfg.batch_size,
        "forward_chunk_size": opt.forward_chunk_size if opt.forward_chunking else None,
        "deepcache": [opt.deepcache.cache_interval, opt.deepcache.cache_branch_id] if opt.deepcache.enabled else None,
        "fuse_qkv": opt.fuse_qkv,
        **({"guidance_split": 2} if cfg.parallel == "cfg" else {}),  # parallel=cfg: half the UNet batch per rank
        "versions": _versions(),
    }


def weights_key(cfg: RunConfig, target: Target) -> dict[str, Any]:
    return {
        "plan": PLAN_VERSION,
        "architecture": cfg.model.architecture,
        "device": target.device,
        "dtype": target.dtype,
        "storage_dtype": cfg.opt.storage_dtype,
        "fuse_qkv": cfg.opt.fuse_qkv,
        "versions": _versions(),
    }


CACHE = JsonCache("plan.json")  # simulations and weight statistics, by everything they depend on


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No library warnings or notices from the simulation in a run's log (the weightless VAE's dtype casts
    make diffusers log a notice), and the global RNG left as it was: the runner may call `predict` between
    seeding and generating."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            yield
    finally:
        diffusers_logging.set_verbosity(level)


def _torch_dtype(name: str):
    from svdbench.pipeline.models import TORCH_DTYPES

    return TORCH_DTYPES[name]


def _round_bytes(target: Target):
    from svdbench.plan.tracker import cuda_block_bytes, exact_bytes

    return cuda_block_bytes if target.device == "cuda" else exact_bytes


def simulated_phases(cfg: RunConfig, target: Target) -> dict[str, list[int]]:
    """{sub-phase: [peak live non-weight bytes, bytes kept from earlier phases]}, simulated or cached.

    Two simulations that share what they can between configurations: one with the real UNet and a stubbed
    decode (conditioning and denoising: independent of decode_chunk_size), one with a stubbed UNet and the
    real decode (independent of forward chunking). The tensors kept between phases are the same in both,
    because a stub returns a tensor of the real output's size. DeepCache keeps the UNet's features alive into
    the decode, so with it one simulation does both.
    """
    key = simulation_key(cfg, target)
    if cfg.opt.deepcache.enabled:
        return _simulation(cfg, target, key, "whole")
    denoise_key = {**key, "part": "denoise", "decode_chunk_size": None}
    decode_key = {**key, "part": "decode", "forward_chunk_size": None}
    denoise = _simulation(cfg, target, denoise_key, "denoise")
    decode = _simulation(cfg, target, decode_key, "decode")
    return {**{name: value for name, value in denoise.items() if name != "decode"}, "decode": decode["decode"]}


def _simulation(cfg: RunConfig, target: Target, key: dict[str, Any], part: str) -> dict[str, list[int]]:
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    from svdbench.media.image import test_card
    from svdbench.pipeline.call import call_inputs, enable_forward_chunking
    from svdbench.plan.simulate import meta_pipeline, simulate

    with _quiet():
        pipe = meta_pipeline(cfg.model.architecture, _torch_dtype(target.dtype))
        if key.get("guidance_split"):  # one rank's memory: its half of the UNet's batch, the other half gathered
            from svdbench.pipeline.parallel import GuidanceSplit

            GuidanceSplit(0, key["guidance_split"], simulate=True).install(pipe.unet)
        if key["fuse_qkv"]:
            from svdbench.pipeline.optimizations import fuse_qkv_projections

            fuse_qkv_projections(pipe)
        if part != "decode":
            enable_forward_chunking(pipe, cfg.opt)
        calls = 1
        if cfg.opt.deepcache.enabled:
            from svdbench.pipeline.deepcache import enable_deepcache

            enable_deepcache(pipe, cfg.opt.deepcache)
            calls = 2  # DeepCache's cached features from the previous call are alive in the next one
        inputs = {**call_inputs(cfg, test_card(cfg.width, cfg.height)), "num_inference_steps": key["steps"]}
        sim = simulate(
            pipe,
            inputs,
            count_host=target.device == "cpu",
            round_bytes=_round_bytes(target),
            calls=calls,
            stub_unet=part == "decode",
            stub_decode=part == "denoise",
        )
    value = {name: [rec.peak, rec.kept] for name, rec in sim.phases.items()}
    CACHE.put(key, value)
    return value


def component_weights(cfg: RunConfig, target: Target) -> dict[str, Any]:
    """Weight statistics of unet, vae, vae_encode (the VAE as it encodes) and image_encoder, cached."""
    key = weights_key(cfg, target)
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    import torch

    from svdbench.pipeline.call import vae_upcasts
    from svdbench.pipeline.optimizations import STORAGE_TORCH_DTYPES
    from svdbench.plan import weights as w
    from svdbench.plan.simulate import meta_pipeline, pristine_pipeline

    dtype = _torch_dtype(target.dtype)
    round_bytes = _round_bytes(target)
    changed = key["fuse_qkv"] or bool(cfg.opt.storage_dtype)  # weights added or recast: a pipeline of its own
    with _quiet():
        pipe = (meta_pipeline if changed else pristine_pipeline)(cfg.model.architecture, dtype)
        if key["fuse_qkv"]:  # the fused projections are new layers beside the unfused ones (which stay)
            from svdbench.pipeline.optimizations import fuse_qkv_projections

            fuse_qkv_projections(pipe)
    upcasts = vae_upcasts(pipe.vae)
    if cfg.opt.storage_dtype:
        storage = getattr(torch, STORAGE_TORCH_DTYPES[cfg.opt.storage_dtype])
        unet = w.layerwise_cast_weights(pipe.unet, storage, dtype, round_bytes)
    else:
        unet = w.component_weights(pipe.unet, round_bytes)
    value = {
        "unet": unet.to_dict(),
        "vae": w.component_weights(pipe.vae, round_bytes).to_dict(),
        "vae_encode": w.component_weights(pipe.vae, round_bytes, element_size=4 if upcasts else None).to_dict(),
        "image_encoder": w.component_weights(pipe.image_encoder, round_bytes).to_dict(),
        "vae_upcasts": upcasts,
    }
    CACHE.put(key, value)
    return value


def planned_flops(cfg: RunConfig, dtype: str):
    """FLOPs of one call of `cfg`, every video of it (svdbench.measure.flops.CallFlops, counted on the
    architecture's weightless pipeline): the counts a run of `cfg` reports in RunResult.flops.call."""
    from svdbench.measure.flops import config_flops
    from svdbench.plan.simulate import pristine_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pristine_pipeline(cfg.model.architecture, _torch_dtype(dtype))
    return config_flops(pipe, cfg)


def predict(cfg: RunConfig, device: str | None = None, dtype: str | None = None) -> Prediction:
    """Predict the peak device memory of one call of `cfg`'s pipeline (allocated, GiB), on `device` and in
    `dtype` (default: the config's; device=auto is planned as cuda). Raises CannotPredict, and only that,
    for a configuration the planner cannot model or an unexpected failure of the simulation."""
    target = resolve_target(cfg, device, dtype)
    problem = modelling_problem(cfg, target)
    if problem:
        raise CannotPredict(problem)
    try:
        return _predict(cfg, target)
    except CannotPredict:
        raise
    except Exception as exc:  # the runner calls this on every run: a failure here must not become a crash
        log.debug("prediction failed", exc_info=True)
        raise CannotPredict(f"the simulation failed: {type(exc).__name__}: {exc}") from exc


def try_predict(cfg: RunConfig, device: str | None = None, dtype: str | None = None) -> Prediction | str:
    """`predict`, or the reason it cannot (for callers that record either, like the runner)."""
    try:
        return predict(cfg, device, dtype)
    except CannotPredict as exc:
        return str(exc)


def _predict(cfg: RunConfig, target: Target) -> Prediction:
    from svdbench.plan.weights import SUB_PHASES, ComponentWeights, resident

    phases = simulated_phases(cfg, target)
    stats = component_weights(cfg, target)
    weights = {name: ComponentWeights(**stats[name]) for name in ("unet", "vae", "vae_encode", "image_encoder")}
    opt = cfg.opt
    per_sub: dict[str, tuple[int, int, int]] = {}  # sub-phase -> (weights, kept, activations)
    for sub in SUB_PHASES:
        if sub not in phases:
            continue
        peak, kept = phases[sub]
        on_device = resident(
            sub,
            weights,
            offload=opt.offload,
            group_offload_type=opt.group_offload.offload_type,
            blocks_per_group=opt.group_offload.num_blocks_per_group,
            use_stream=opt.group_offload.use_stream,
            vae_upcasts=bool(stats["vae_upcasts"]),
        )
        per_sub[sub] = (on_device, kept, peak - kept)
    totals = {sub: sum(parts) for sub, parts in per_sub.items()}
    phases_gib: dict[str, float] = {}
    resident_gib: dict[str, float] = {}
    for sub, total in totals.items():
        phase = SUB_PHASE_OF[sub]
        phases_gib[phase] = max(phases_gib.get(phase, 0.0), total / GIB)
        resident_gib[phase] = max(resident_gib.get(phase, 0.0), per_sub[sub][0] / GIB)
    peak_sub = max(totals, key=lambda sub: totals[sub])
    on_device, kept, activations = per_sub[peak_sub]
    host = None
    if opt.offload != "none":
        host = (weights["unet"].host + weights["image_encoder"].host + weights["vae_encode"].host) / GIB
    assumptions = [
        f"attention: {FUSED_ATTENTION[target.device]}",
        "allocated bytes (what torch.cuda.max_memory_allocated reports), each tensor rounded as the CUDA caching "
        "allocator rounds it (to 512 B; from 10 MiB up to 2 MiB when that pads by at most 1 MiB)"
        if target.device == "cuda"
        else "live tensor bytes on the CPU, exact",
        f"the steady-state call; {SIMULATED_STEPS} denoising steps simulated (the peak of step 2 is that of any "
        "later step)",
    ]
    if target.assumption:
        assumptions.insert(0, target.assumption)
    if opt.compile.unet or opt.compile.vae:
        assumptions.append(
            "torch.compile is predicted as eager PyTorch (Inductor's fused kernels can only need less activation "
            "memory; CUDA graphs add reserved, not allocated, memory)"
        )
    if cfg.batch_size != 1:
        assumptions.append(
            f"batch_size={cfg.batch_size}: the image {cfg.batch_size} times, one generator per video, as a run calls it"
        )
    if cfg.model.weights == "pretrained":
        assumptions.append(f"pretrained weights are assumed to have the packaged {cfg.model.architecture} architecture")
    return Prediction(
        peak_gib=totals[peak_sub] / GIB,
        peak_phase=SUB_PHASE_OF[peak_sub],
        phases_gib=phases_gib,
        breakdown_gib={"weights": on_device / GIB, "kept": kept / GIB, "activations": activations / GIB},
        host_weights_gib=host,
        attention=FUSED_ATTENTION[target.device],
        method=(
            "diffusers' StableVideoDiffusionPipeline.__call__ run on meta tensors, live tensor bytes counted "
            "op by op (weights left out), plus the weights the offload mode keeps on the device in each phase"
        ),
        device=target.device,
        dtype=target.dtype,
        resident_gib=resident_gib,
        assumptions=assumptions,
    )
