"""Apply an optimization mode to a pipeline as diffusers documents it, and report what was verifiably
applied (read back from the pipeline's modules and hooks, not assumed from the config).

Order matters and is fixed here:

1. QKV fusion (`opt.fuse_qkv`) first: it adds new `nn.Linear` layers (`to_qkv`, `to_kv`), which must exist
   before anything casts, quantizes, hooks or compiles the layers, or they would be left out of it.
2. Layerwise casting (its hooks must sit under any offload hooks, and the weights are cast once where they
   were built).
3. torchao quantization (`opt.quantize`) before torch.compile (the compiled graph must see the quantized
   weights' kernels). With offload it comes before the offload hooks (they capture the weights as they are
   when installed); without, right after placement, on the device that will run it, as torchao does it.
4. Placement or offload; 5. forward chunking; 6. DeepCache (its wrappers outermost, so a skipped block skips
   its offload hooks too); 7. torch.compile.

What applies around each call instead of to the modules (the forced SDPA kernel, TF32) is `call_context`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any

import torch

from svdbench.pipeline.call import enable_forward_chunking, vae_upcasts
from svdbench.pipeline.deepcache import DeepCacheUnavailable, enable_deepcache, import_helper, inspect_deepcache
from svdbench.pipeline.models import unwrap
from svdbench.pipeline.quantize import QuantizeUnavailable, inspect_quantized, quantize_linears, unavailable_reason
from svdbench.settings.config import GroupOffloadConfig, OptConfig

STORAGE_TORCH_DTYPES = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}
# opt.attention_backend -> torch.nn.attention.SDPBackend member.
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}
# TF32 tensor cores arrived with Ampere (compute capability 8.0).
TF32_MIN_CAPABILITY = (8, 0)
# What torch raises when the forced SDPA backends have no kernel for a call's inputs.
NO_SDPA_KERNEL = ("No available kernel", "No viable backend for scaled_dot_product_attention")
# Where pipelines remember what call_context sets, so that inspect_pipeline can read it back.
CALL_SETTINGS_ATTR = "_svdbench_call_settings"


class Unsupported(RuntimeError):
    """The mode cannot run on this device or with this configuration; the message says why."""


def check_supported(opt: OptConfig, device: torch.device, dtype: torch.dtype | None = None) -> None:
    """Refuse, before any model is built, a mode this device or this installation cannot run.

    `dtype` is the run's compute dtype (None: fp16 on CUDA, fp32 elsewhere); the forced attention kernel is
    tried for real on `device` in it, since which kernels exist depends on both.
    """
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
    # What this device or installation lacks, all of it: a preset may ask for several GPU-only pieces.
    problems: list[str] = []
    if opt.tf32:
        if device.type != "cuda":
            problems.append(
                f"opt={opt.name} with opt.tf32=true is unsupported on device {device}: TF32 is a format of NVIDIA "
                "tensor cores (Ampere and later), and on this device fp32 matmuls and convolutions run in full "
                "fp32 whatever the flag says, so there is nothing to measure. Run it on a GPU of compute "
                "capability 8.0 or later, or drop opt.tf32."
            )
        elif (capability := torch.cuda.get_device_capability(device)) < TF32_MIN_CAPABILITY:
            problems.append(
                f"opt={opt.name} with opt.tf32=true is unsupported on {torch.cuda.get_device_name(device)} "
                f"(compute capability {capability[0]}.{capability[1]}): TF32 tensor cores need compute capability "
                "8.0 (Ampere) or later. Drop opt.tf32 on this GPU."
            )
    if opt.attention_backend != "auto":
        probe_dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        why = attention_kernel_missing(opt.attention_backend, device, probe_dtype)
        if why:
            here = ", ".join(attention_backends_here(device, probe_dtype)) or "none"
            problems.append(
                f"opt={opt.name} with opt.attention_backend={opt.attention_backend} is unsupported on device "
                f"{device} in {str(probe_dtype).removeprefix('torch.')}: {why}. Use opt.attention_backend=auto "
                f"(PyTorch picks per call), or one this device has ({here})."
            )
    if opt.quantize:
        why = unavailable_reason(opt.quantize, device)
        if why:
            problems.append(f"opt={opt.name} with opt.quantize={opt.quantize} is unsupported here: {why}.")
    if problems:
        raise Unsupported(" Also: ".join(problems))


def _sdpa_backend(name: str):
    from torch.nn.attention import SDPBackend

    return getattr(SDPBackend, SDPA_BACKENDS[name])


def _sdpa_warnings(caught) -> list[str]:
    """torch's explanations (UserWarnings from its SDPA kernel selection) of why a kernel was not used."""
    lines = []
    for w in caught:
        text = str(w.message).split(" (Triggered internally", 1)[0].strip()
        if "sdp_utils" in str(w.message) and text not in lines:
            lines.append(text)
    return lines


def attention_kernel_missing(backend: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why `torch.nn.attention.sdpa_kernel([backend])` cannot run attention on `device` in `dtype`, tried for real
    on a small call shaped like SVD's attention (4-D, head dimension 64); None when it can."""
    from torch.nn.attention import sdpa_kernel

    q = torch.randn(1, 2, 16, 64, device=device, dtype=dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel([_sdpa_backend(backend)]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
        except RuntimeError as exc:
            details = _sdpa_warnings(caught) or [str(exc).splitlines()[0]]
            return f"torch {torch.__version__} has no {backend} attention kernel for it ({'; '.join(details)})"
    return None


def attention_backends_here(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The forced attention backends that run on `device` in `dtype` (tried for real)."""
    return [name for name in SDPA_BACKENDS if attention_kernel_missing(name, device, dtype) is None]


@contextmanager
def _tf32_allowed() -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN convolutions, restored afterwards. The legacy flags (allow_tf32) on
    purpose: torch 2.13 has the newer fp32_precision settings too, but once they are set, reading the legacy
    flags raises (diffusers, accelerate and torch.get_float32_matmul_precision still read them); setting the
    legacy flags keeps both views readable."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32, cudnn.allow_tf32 = True, True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


_REEMITTED: set[tuple[type, str]] = set()


@contextmanager
def _forced_attention(opt: OptConfig, device: torch.device) -> Iterator[None]:
    """`sdpa_kernel([backend])`; a call whose attention inputs that kernel cannot take ends `Unsupported`, with
    torch's explanation (its warnings, recorded here; other warnings are passed on, once each)."""
    from torch.nn.attention import sdpa_kernel

    with warnings.catch_warnings(record=True) as caught:
        try:
            with sdpa_kernel([_sdpa_backend(opt.attention_backend)]):
                yield
        except RuntimeError as exc:
            if isinstance(exc, Unsupported) or not any(text in str(exc) for text in NO_SDPA_KERNEL):
                raise
            details = "; ".join(_sdpa_warnings(caught)) or str(exc).splitlines()[0]
            raise Unsupported(
                f"opt={opt.name} with opt.attention_backend={opt.attention_backend} is unsupported for this run on "
                f"device {device}: an attention call of the pipeline has inputs the {opt.attention_backend} kernel "
                f"cannot take ({details}). Use opt.attention_backend=auto, which picks a kernel per call."
            ) from exc
        finally:
            others = [w for w in caught if "sdp_utils" not in str(w.message)]
    for w in others:
        key = (w.category, str(w.message))
        if key not in _REEMITTED:
            _REEMITTED.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


@contextmanager
def call_context(opt: OptConfig, device: torch.device) -> Iterator[None]:
    """What a mode sets around every pipeline call (attention kernel, TF32), undone afterwards.

    A forced attention kernel that has no implementation for some attention call of the pipeline (its dtype,
    head dimension, mask) raises `Unsupported` with torch's reason.
    """
    with ExitStack() as stack:
        if opt.tf32:
            stack.enter_context(_tf32_allowed())
        if opt.attention_backend != "auto":
            stack.enter_context(_forced_attention(opt, device))
        yield


def applied_call_settings(opt: OptConfig, device: torch.device) -> dict:
    """What torch reports as in effect for a call of this mode: read inside `call_context(opt, device)`."""
    with call_context(opt, device):
        return current_call_settings() | {"attention_backend_forced": opt.attention_backend != "auto"}


def current_call_settings() -> dict:
    """The SDPA backends torch currently allows and its TF32 flags, as torch reports them."""
    cuda = torch.backends.cuda
    enabled = {
        "flash": cuda.flash_sdp_enabled(),
        "efficient": cuda.mem_efficient_sdp_enabled(),
        "cudnn": cuda.cudnn_sdp_enabled(),
        "math": cuda.math_sdp_enabled(),
    }
    settings: dict[str, Any] = {"sdpa_backends_enabled": [name for name, on in enabled.items() if on]}
    try:
        settings["tf32_matmul"] = bool(cuda.matmul.allow_tf32)
        settings["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:  # someone set the newer fp32_precision API, which makes the legacy flags unreadable
        settings["tf32_matmul"] = cuda.matmul.fp32_precision == "tf32"
        settings["tf32_cudnn"] = torch.backends.cudnn.conv.fp32_precision == "tf32"  # type: ignore[attr-defined]
    settings["float32_matmul_precision"] = _safe(torch.get_float32_matmul_precision)
    return settings


def _safe(read) -> Any:
    try:
        return read()
    except RuntimeError:
        return None


def apply_optimizations(
    pipe, opt: OptConfig, device: torch.device, timed: Callable[[str], AbstractContextManager] | None = None
):
    """Place the pipeline on `device` and apply `opt`. Returns the pipeline (modules may be replaced).

    `timed(key)`, where given, brackets each part of the work: "placement_s" (moving to the device or installing
    the offload hooks) and "optimize_s" (everything else the mode sets up: fusing, casting, quantizing,
    chunking, DeepCache, wrapping for torch.compile; compiling itself happens in the first call). The runner
    passes its clock's `section`, so the timing is the runner's.
    """
    if timed is None:
        timed = _untimed

    with timed("optimize_s"):
        if opt.fuse_qkv:
            fuse_qkv_projections(pipe)
        if opt.storage_dtype:
            storage = getattr(torch, STORAGE_TORCH_DTYPES[opt.storage_dtype])
            # Compute stays in the run's dtype: only the storage of the UNet's weights changes.
            pipe.unet.enable_layerwise_casting(storage_dtype=storage, compute_dtype=pipe.unet.dtype)
        if opt.quantize and opt.offload != "none":
            quantize_pipeline(pipe, opt)
    with timed("placement_s"):
        if opt.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif opt.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        elif opt.offload == "group":
            enable_group_offload(pipe, opt.group_offload, onload_device=device)
        else:
            pipe.to(device)
    with timed("optimize_s"):
        if opt.quantize and opt.offload == "none":
            quantize_pipeline(pipe, opt)
        enable_forward_chunking(pipe, opt)
        if opt.deepcache.enabled:
            try:
                enable_deepcache(pipe, opt.deepcache)
            except DeepCacheUnavailable as exc:
                raise Unsupported(str(exc)) from exc
        if opt.compile.unet:
            pipe.unet = torch.compile(pipe.unet, mode=opt.compile.mode, fullgraph=opt.compile.fullgraph)
        if opt.compile.vae:
            pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=opt.compile.mode, fullgraph=opt.compile.fullgraph)
    if opt.guidance_until_step is not None:  # hooks on whatever pipe.unet now is (compiled or not)
        from svdbench.pipeline.guidance import limit_guidance

        limit_guidance(pipe, opt.guidance_until_step)
    if opt.tf32 or opt.attention_backend != "auto":
        setattr(pipe, CALL_SETTINGS_ATTR, (opt, device))  # for inspect_pipeline: read inside call_context
    return pipe


def _untimed(key: str) -> AbstractContextManager:
    return nullcontext()


def _attention_modules(module: torch.nn.Module) -> list:
    from diffusers.models.attention_processor import Attention

    return [m for m in module.modules() if isinstance(m, Attention)]


def fuse_qkv_projections(pipe) -> None:
    """Fuse the query/key/value projections of every attention of the UNet and the VAE into one matmul
    (`to_qkv`; cross-attention: key and value into `to_kv`), and switch them to `FusedAttnProcessor2_0`.

    diffusers 0.42's `fuse_qkv_projections()` is called first, but on SVD it does nothing: its AttentionMixin
    version fuses only the newer `AttentionModuleMixin` modules, and SVD's UNet and temporal VAE are built
    from the legacy `Attention` class. For those, this does what diffusers' UNet2DConditionModel used to do:
    `Attention.fuse_projections()` and the fused processor. The unfused projections stay (unused by the fused
    processor for self-attention; the query of cross-attention still uses `to_q`).
    """
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    for name in ("unet", "vae"):
        model: Any = unwrap(getattr(pipe, name))
        try:
            model.fuse_qkv_projections()
        except ValueError as exc:  # "not supported for models having added KV projections"
            raise Unsupported(f"opt.fuse_qkv=true is unsupported for this {name}: {exc}") from exc
        for attention in _attention_modules(model):
            if not getattr(attention, "fused_projections", False):
                attention.fuse_projections()
                attention.set_processor(FusedAttnProcessor2_0())


def quantize_pipeline(pipe, opt: OptConfig) -> None:
    """torchao quantization of the UNet's linear layers, and of the VAE decoder's with opt.quantize_vae."""
    assert opt.quantize is not None
    compiling = opt.compile.unet or opt.compile.vae
    targets = [("unet", unwrap(pipe.unet))] + ([("vae decoder", pipe.vae.decoder)] if opt.quantize_vae else [])
    for name, module in targets:
        try:
            quantized = quantize_linears(module, opt.quantize, set_inductor_config=compiling)
        except QuantizeUnavailable as exc:
            raise Unsupported(f"opt={opt.name} is unsupported here: {exc}") from exc
        if not quantized:
            raise Unsupported(
                f"opt.quantize={opt.quantize} quantized none of the {name}'s linear layers; nothing to measure."
            )


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
    if vae_upcasts(pipe.vae):
        kwargs.update(use_stream=False, record_stream=False)
    pipe.vae.enable_group_offload(**kwargs)


def inspect_pipeline(pipe) -> dict:
    """What is actually in effect on the pipeline, read from its modules and their hooks; and, for a mode that
    sets something around each call (TF32, a forced attention kernel), what torch reports inside
    `call_context` (`call_settings`; None when the mode sets nothing there)."""
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
        "fused_projections": {
            name: info for name in ("unet", "vae") if (info := _fused_projections_info(unwrap(getattr(pipe, name))))
        },
        "quantized": {
            name: info
            for name, module in (("unet", unet), ("vae_decoder", unwrap(pipe.vae.decoder)))
            if (info := inspect_quantized(module))
        },
        "call_settings": applied_call_settings(*call) if (call := getattr(pipe, CALL_SETTINGS_ATTR, None)) else None,
        "unet_parameter_dtypes": dict(Counter(str(p.dtype).removeprefix("torch.") for p in unet.parameters())),
        "execution_device": str(pipe._execution_device),
    }


def _fused_projections_info(module: torch.nn.Module) -> dict | None:
    attentions = _attention_modules(module)
    fused = [a for a in attentions if getattr(a, "fused_projections", False)]
    if not fused:
        return None
    return {
        "attention_modules": len(attentions),
        "fused": len(fused),
        "qkv": sum(getattr(a, "to_qkv", None) is not None for a in fused),
        "kv": sum(getattr(a, "to_kv", None) is not None for a in fused),
        "processors": dict(Counter(type(a.processor).__name__ for a in fused)),
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
