"""Apply an optimization mode to a pipeline as diffusers documents it, and report what was verifiably
applied (read back from the pipeline's modules and hooks, not assumed from the config).

Order matters and is fixed here: layerwise casting first (its hooks must sit under any offload hooks, and
the weights are cast once where they were built), then placement or offload, then forward chunking, then
DeepCache (its wrappers outermost, so a skipped block skips its offload hooks too), then torch.compile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from svdbench.config import GroupOffloadConfig, OptConfig
from svdbench.deepcache import DeepCacheUnavailable, enable_deepcache, import_helper, inspect_deepcache
from svdbench.models import unwrap

STORAGE_TORCH_DTYPES = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


class Unsupported(RuntimeError):
    """The mode cannot run on this device or with this configuration; the message says why."""


def check_supported(opt: OptConfig, device: torch.device) -> None:
    """Refuse, before any model is built, a mode this device or this installation cannot run."""
    reason = opt.needs_accelerator
    if reason and device.type != "cuda":
        raise Unsupported(
            f"opt={opt.name} is unsupported on device {device}: {reason}, and this run has no CUDA device. "
            "Run it on a machine with a GPU, or pick a mode without offload (none, compile, chunking, "
            "fp8_storage, deepcache)."
        )
    if opt.storage_dtype and not hasattr(torch, STORAGE_TORCH_DTYPES[opt.storage_dtype]):
        raise Unsupported(
            f"opt.storage_dtype={opt.storage_dtype} needs torch.{STORAGE_TORCH_DTYPES[opt.storage_dtype]}, which "
            f"torch {torch.__version__} lacks. Upgrade torch (2.1 or later has it)."
        )
    if opt.deepcache.enabled:
        try:
            import_helper()
        except DeepCacheUnavailable as exc:
            raise Unsupported(f"opt={opt.name} is unsupported here: {exc}") from exc


@contextmanager
def call_context(opt: OptConfig, device: torch.device) -> Iterator[None]:
    """What a mode sets around every pipeline call (attention kernel, TF32), undone afterwards."""
    yield


def apply_optimizations(pipe, opt: OptConfig, device: torch.device):
    """Place the pipeline on `device` and apply `opt`. Returns the pipeline (modules may be replaced)."""
    if opt.storage_dtype:
        storage = getattr(torch, STORAGE_TORCH_DTYPES[opt.storage_dtype])
        # Compute stays in the run's dtype: only the storage of the UNet's weights changes.
        pipe.unet.enable_layerwise_casting(storage_dtype=storage, compute_dtype=pipe.unet.dtype)
    if opt.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif opt.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif opt.offload == "group":
        enable_group_offload(pipe, opt.group_offload, onload_device=device)
    else:
        pipe.to(device)
    if opt.forward_chunking:
        pipe.unet.enable_forward_chunking(chunk_size=opt.forward_chunk_size, dim=0)
    if opt.deepcache.enabled:
        try:
            enable_deepcache(pipe, opt.deepcache)
        except DeepCacheUnavailable as exc:
            raise Unsupported(str(exc)) from exc
    if opt.compile.unet:
        pipe.unet = torch.compile(pipe.unet, mode=opt.compile.mode, fullgraph=opt.compile.fullgraph)
    if opt.compile.vae:
        pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=opt.compile.mode, fullgraph=opt.compile.fullgraph)
    return pipe


def enable_group_offload(pipe, cfg: GroupOffloadConfig, onload_device: torch.device) -> None:
    """Group offloading of every model component, as diffusers' memory guide does it.

    The UNet and the image encoder use the configured streams. The VAE does not when it is fp16 with
    `force_upcast` (SVD's is): the pipeline then casts it to fp32 in place around encoding and decoding,
    but a streamed group onloads from pinned copies taken when offloading was enabled, which would bring
    the fp16 weights back under fp32 inputs. Without streams the onload copies the current weights.
    """
    from diffusers.hooks import apply_group_offloading

    kwargs: dict[str, Any] = dict(
        onload_device=onload_device,
        offload_device=torch.device("cpu"),
        offload_type=cfg.offload_type,
        num_blocks_per_group=cfg.num_blocks_per_group,
        use_stream=cfg.use_stream,
        record_stream=cfg.record_stream,
        low_cpu_mem_usage=cfg.low_cpu_mem_usage,
    )
    pipe.unet.enable_group_offload(**kwargs)
    apply_group_offloading(pipe.image_encoder, **kwargs)  # a transformers model: no enable_group_offload
    upcasts = pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast
    if upcasts:
        kwargs.update(use_stream=False, record_stream=False)
    pipe.vae.enable_group_offload(**kwargs)


def inspect_pipeline(pipe) -> dict:
    """What is actually in effect on the pipeline, read from its modules and their hooks."""
    from diffusers.utils.torch_utils import is_compiled_module

    unet = unwrap(pipe.unet)
    chunked = [m for m in unet.modules() if getattr(m, "_chunk_size", None) is not None]
    components = {
        name: unwrap(module) for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)
    }
    hooks = {
        name: type(module._hf_hook).__name__
        for name, module in components.items()
        if getattr(module, "_hf_hook", None) is not None
    }
    return {
        "unet_compiled": is_compiled_module(pipe.unet),
        "vae_decoder_compiled": is_compiled_module(pipe.vae.decoder),
        "forward_chunking_blocks": len(chunked),
        "offload_hooks": hooks,
        "offload_hooked_modules": {
            name: count
            for name, module in components.items()
            if (count := sum(getattr(m, "_hf_hook", None) is not None for m in module.modules()))
        },
        "group_offload": {name: info for name, module in components.items() if (info := _group_offload_info(module))},
        "layerwise_casting": {
            name: info for name, module in components.items() if (info := _layerwise_casting_info(module))
        },
        "deepcache": inspect_deepcache(pipe),
        "unet_parameter_dtypes": dict(Counter(str(p.dtype).removeprefix("torch.") for p in unet.parameters())),
        "execution_device": str(pipe._execution_device),
    }


def _diffusers_hooks(module: torch.nn.Module, name: str) -> list:
    return [
        registry.hooks[name]
        for m in module.modules()
        if (registry := getattr(m, "_diffusers_hook", None)) is not None and name in registry.hooks
    ]


def _group_offload_info(module: torch.nn.Module) -> dict | None:
    hooks = _diffusers_hooks(module, "group_offloading")
    if not hooks:
        return None
    return {
        "hooks": len(hooks),
        "offload_type": sorted({str(h.config.offload_type.value) for h in hooks}),
        "onload_device": sorted({str(h.group.onload_device) for h in hooks}),
        "streams": any(h.group.stream is not None for h in hooks),
    }


def _layerwise_casting_info(module: torch.nn.Module) -> dict | None:
    hooks = _diffusers_hooks(module, "layerwise_casting")
    if not hooks:
        return None
    return {
        "hooks": len(hooks),
        "storage_dtype": sorted({str(h.storage_dtype).removeprefix("torch.") for h in hooks}),
        "compute_dtype": sorted({str(h.compute_dtype).removeprefix("torch.") for h in hooks}),
    }
