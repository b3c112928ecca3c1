"""Weight bytes per component and which weights each offload mode keeps on the device in each phase.

Weights are counted from the weightless (meta) modules: one allocation per parameter and buffer, as
`module.to(device)` makes them, each rounded as the device's allocator rounds it. The offload modes follow
what diffusers and accelerate do during one `StableVideoDiffusionPipeline.__call__`:

- none: everything stays on the device. An fp16 VAE with `force_upcast` (SVD's) is cast to fp32 for the
  encoding of the conditioning image, and back to fp16 before the decode.
- model (`enable_model_cpu_offload`, chain image_encoder -> unet -> vae): a model moves to the device when
  it is called and its *predecessor in the chain* moves back, so the image encoder stays during the VAE
  encoding, the VAE stays during denoising, and only the VAE is there for the decode.
- sequential (`enable_sequential_cpu_offload`): each leaf module's weights only while it runs: the largest
  leaf of the running component.
- group (`enable_group_offload`): leaf_level moves one leaf at a time, with streams also the next one
  (prefetch); block_level moves `num_blocks_per_group` top-level blocks at a time (the largest such run of
  blocks, twice with streams), and keeps the component's modules outside any block list on the device. The
  VAE runs without streams when it upcasts (svdbench.pipeline.optimizations.enable_group_offload).
- storage_dtype (layerwise casting of the UNet): the cast layers' weights are stored in 1 byte, and one
  layer at a time is upcast to the compute dtype while it runs (the largest such layer is added).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

# The phases of a call in order, and the sub-phases the simulation marks (svdbench.plan.simulate).
SUB_PHASES = ("start", "image_encoder", "vae_encode", "denoising", "decode")
# Which components run in each sub-phase (for the per-leaf offload modes).
RUNNING = {
    "start": (),
    "image_encoder": ("image_encoder",),
    "vae_encode": ("vae_encode",),
    "denoising": ("unet",),
    "decode": ("vae",),
}


@dataclass
class ComponentWeights:
    """One component's weights in bytes: on the device (allocator-rounded) and on the host (exact)."""

    device: int
    host: int
    largest_leaf: int
    blocks: list[int]  # the top-level block lists' blocks, in order (group offload, block_level)
    outside_blocks: int  # parameters and buffers outside those lists
    largest_upcast: int = 0  # layerwise casting: the largest cast layer's weights in the compute dtype

    def to_dict(self) -> dict:
        return asdict(self)


def _tensors_bytes(tensors, round_bytes: Callable[[int], int], element_size: int | None = None) -> int:
    return sum(round_bytes(t.numel() * (element_size or t.element_size())) for t in tensors)


def _own_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(recurse=False), *module.buffers(recurse=False)]


def component_weights(
    module: nn.Module, round_bytes: Callable[[int], int], element_size: int | None = None
) -> ComponentWeights:
    """Bytes of `module`'s weights; element_size overrides the stored one (the VAE's fp32 upcast)."""

    def size(m: nn.Module, recurse: bool = True) -> int:
        tensors = [*m.parameters(), *m.buffers()] if recurse else _own_tensors(m)
        return _tensors_bytes(tensors, round_bytes, element_size)

    leaves = [size(m, recurse=False) for m in module.modules()]
    blocks: list[int] = []
    for child in module.children():  # diffusers' block_level groups the blocks of top-level lists
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            blocks += [size(block) for block in child]
    total = size(module)
    host = sum(t.numel() * (element_size or t.element_size()) for t in [*module.parameters(), *module.buffers()])
    return ComponentWeights(
        device=total,
        host=host,
        largest_leaf=max(leaves, default=0),
        blocks=blocks,
        outside_blocks=max(0, total - sum(blocks)),
    )


def layerwise_cast_weights(
    unet: nn.Module, storage_dtype: torch.dtype, compute_dtype: torch.dtype, round_bytes: Callable[[int], int]
) -> ComponentWeights:
    """The UNet's weights after diffusers' own `enable_layerwise_casting` (applied to a weightless copy)."""
    model: Any = unet  # nn.Module's __getattr__ types diffusers' methods as Tensor | Module
    model.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=compute_dtype)
    weights = component_weights(unet, round_bytes)
    compute_size = torch.empty((), dtype=compute_dtype).element_size()
    weights.largest_upcast = max(
        (
            _tensors_bytes(
                [p for p in m.parameters(recurse=False) if p.dtype == storage_dtype], round_bytes, compute_size
            )
            for m in unet.modules()
        ),
        default=0,
    )
    return weights


def resident(
    sub_phase: str,
    weights: dict[str, ComponentWeights],
    *,
    offload: str,
    group_offload_type: str = "leaf_level",
    blocks_per_group: int | None = None,
    use_stream: bool = True,
    vae_upcasts: bool = False,
) -> int:
    """Weight bytes on the device during `sub_phase` under `offload`.

    `weights` holds "unet", "vae", "vae_encode" (the VAE as it encodes: fp32 when it upcasts) and
    "image_encoder".
    """
    unet, vae, vae_encode, encoder = weights["unet"], weights["vae"], weights["vae_encode"], weights["image_encoder"]
    upcast = unet.largest_upcast if sub_phase == "denoising" else 0
    if offload == "none":
        return unet.device + encoder.device + (vae_encode if sub_phase == "vae_encode" else vae).device + upcast
    if offload == "model":
        on_device = {
            "start": 0,
            "image_encoder": encoder.device,
            "vae_encode": encoder.device + vae_encode.device,
            "denoising": unet.device + vae.device,
            "decode": vae.device,
        }[sub_phase]
        return on_device + upcast
    running = {"image_encoder": encoder, "vae_encode": vae_encode, "denoising": unet, "decode": vae}.get(sub_phase)
    if running is None:
        return 0
    if offload == "sequential":
        return running.largest_leaf + upcast
    # group offloading; the VAE has no streams when it upcasts
    streams = use_stream and not (vae_upcasts and running in (vae, vae_encode))
    copies = 2 if streams else 1
    if group_offload_type == "block_level":
        size = max(1, blocks_per_group or 1)
        runs = [sum(running.blocks[i : i + size]) for i in range(0, max(1, len(running.blocks)), size)]
        return running.outside_blocks + copies * max(runs, default=0) + upcast
    return copies * running.largest_leaf + upcast
