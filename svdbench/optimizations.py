"""Apply an optimization mode to a pipeline exactly as the diffusers SVD guide does, and report what
was verifiably applied (read back from the pipeline, not assumed from the config)."""

from __future__ import annotations

import torch

from svdbench.config import OptConfig


class Unsupported(RuntimeError):
    """The mode cannot run on this device or with this configuration; the message says why."""


def check_supported(opt: OptConfig, device: torch.device) -> None:
    reason = opt.needs_accelerator
    if reason and device.type != "cuda":
        raise Unsupported(
            f"opt={opt.name} is unsupported on device {device}: {reason}, and this run has no CUDA device. "
            "Run it on a machine with a GPU, or pick a mode without offload (none, compile, chunking)."
        )


def apply_optimizations(pipe, opt: OptConfig, device: torch.device):
    """Place the pipeline on `device` and apply `opt`. Returns the pipeline (modules may be replaced)."""
    if opt.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif opt.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if opt.forward_chunking:
        pipe.unet.enable_forward_chunking(chunk_size=opt.forward_chunk_size, dim=0)
    if opt.compile.unet:
        pipe.unet = torch.compile(pipe.unet, mode=opt.compile.mode, fullgraph=opt.compile.fullgraph)
    if opt.compile.vae:
        pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=opt.compile.mode, fullgraph=opt.compile.fullgraph)
    return pipe


def inspect_pipeline(pipe) -> dict:
    """What is actually in effect on the pipeline, read from its modules."""
    from diffusers.utils.torch_utils import is_compiled_module

    unet = pipe.unet._orig_mod if is_compiled_module(pipe.unet) else pipe.unet
    chunked = [m for m in unet.modules() if getattr(m, "_chunk_size", None) is not None]
    hooks = {
        name: type(getattr(module, "_hf_hook", None)).__name__
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module) and getattr(module, "_hf_hook", None) is not None
    }
    return {
        "unet_compiled": is_compiled_module(pipe.unet),
        "vae_decoder_compiled": is_compiled_module(pipe.vae.decoder),
        "forward_chunking_blocks": len(chunked),
        "offload_hooks": hooks,
        "execution_device": str(pipe._execution_device),
    }
