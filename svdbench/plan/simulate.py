"""Run diffusers' own `StableVideoDiffusionPipeline.__call__` on weightless tensors and record live bytes.

The pipeline is built from the packaged component configs on the meta device: every tensor has its shape,
dtype and storage size but no memory, and every kernel is skipped, so SVD-XT's whole call takes seconds on a
CPU. `LiveBytes` counts what the call keeps alive op by op; weights are left out here (the planner adds the
weights each offload mode keeps on the device, `svdbench.plan.weights`). Four things are adapted so that the
simulation is the GPU's (or the CPU's) call and not the meta device's:

- attention: `F.scaled_dot_product_attention` is the fused kernel a GPU (flash / memory-efficient) or a CPU
  (PyTorch's flash kernel for CPUs) runs: the output and a float32 log-sum-exp, never the attention matrix.
  The meta device would otherwise take the math path and materialize it (42 GB for one SVD-XT layer).
- the scheduler keeps its timesteps on the CPU (as `timestep_device` does under XLA), so that its step-index
  search (`nonzero`) and DeepCache's `.item()` read real values;
- the weight casts around the VAE (`vae.to(fp32)` for `force_upcast`) are not counted as activations;
- the final `.cpu().numpy()` of the frames is a no-op (host memory, not device memory).

Phases are marked by hooks: `image_encoder`, `vae_encode` (both "conditioning"), `denoising` (each UNet
call), `decode` (each VAE decode chunk, through the end of the call). The live bytes when a phase starts
are what the pipeline keeps from earlier phases; the peak above them is the phase's activations.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from svdbench.pipeline import use_pil_clip_processor
from svdbench.pipeline.models import build_components
from svdbench.plan.tracker import LiveBytes
from svdbench.plan.weights import SUB_PHASES


@dataclass
class PhaseRecord:
    """The peak of live (non-weight) bytes in one sub-phase and what was alive when that peak's span began."""

    peak: int = 0
    kept: int = 0


@dataclass
class Simulation:
    """Live non-weight bytes per sub-phase of one pipeline call (the steady-state call, after a first one)."""

    phases: dict[str, PhaseRecord] = field(default_factory=dict)
    attention_calls: int = 0


@functools.cache
def _planned_pipeline_class() -> type:
    use_pil_clip_processor()
    from diffusers import StableVideoDiffusionPipeline

    class PlannedPipeline(StableVideoDiffusionPipeline):
        """The pipeline, with the one data-dependent question it asks of a device tensor answered from the
        config: `do_classifier_free_guidance` is `guidance_scale.max() > 1`, i.e. max_guidance_scale > 1."""

        planned_guidance: bool | None = None

        @property
        def do_classifier_free_guidance(self) -> bool:
            scale: Any = getattr(self, "_guidance_scale", None)
            if isinstance(scale, (int, float)):
                return scale > 1
            assert self.planned_guidance is not None
            return self.planned_guidance

    return PlannedPipeline


def meta_pipeline(architecture: str, dtype: torch.dtype):
    """The architecture's StableVideoDiffusionPipeline with every weight on the meta device, in `dtype`."""
    pipe: Any = _planned_pipeline_class()(**build_components(architecture, dtype, "meta"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.lru_cache(maxsize=2)
def pristine_pipeline(architecture: str, dtype: torch.dtype):
    """One meta pipeline per architecture and dtype for read-only uses (weight counts, FLOP counts);
    simulations modify theirs (hooks, chunking, DeepCache) and build their own."""
    return meta_pipeline(architecture, dtype)


class FusedAttention:
    """`F.scaled_dot_product_attention` as a fused kernel, while the block runs: output (in the layout the
    fused kernels return, batch x length x heads x dim underneath) and a float32 log-sum-exp per query, no
    attention matrix. diffusers and transformers look the function up on `torch.nn.functional` at every
    call, so replacing it there reaches every attention (cheaper than a TorchFunctionMode, which would
    intercept every torch call)."""

    def __init__(self) -> None:
        self.calls = 0
        self.original: Callable[..., torch.Tensor] | None = None

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any):
        self.calls += 1
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, scale=kwargs.get("scale"))[
            0
        ]

    def __enter__(self) -> FusedAttention:
        self.original = torch.nn.functional.scaled_dot_product_attention
        torch.nn.functional.scaled_dot_product_attention = self.attention
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.original is not None
        torch.nn.functional.scaled_dot_product_attention = self.original


class _Probe:
    """Marks phases in the tracker from hooks on the pipeline's components."""

    def __init__(self, tracker: LiveBytes):
        self.tracker = tracker
        self.records: dict[str, PhaseRecord] = {}
        self.current: str | None = None
        self.kept = 0

    def mark(self, name: str) -> None:
        self.close()
        self.current, self.kept = name, self.tracker.live
        self.tracker.reset_peak()

    def close(self) -> None:
        if self.current is None:
            return
        record = self.records.setdefault(self.current, PhaseRecord())
        if self.tracker.peak > record.peak:
            record.peak, record.kept = self.tracker.peak, self.kept
        self.current = None


def _install(pipe, probe: _Probe, tracker: LiveBytes, stub_unet: bool, stub_decode: bool) -> None:
    """Hooks that mark phases, keep the scheduler on the CPU and keep weight casts out of the count; and the
    stubs: a UNet or a VAE decode that only returns a tensor of its output's shape (when a simulation is only
    after the other phases, whose peaks do not depend on what the stubbed part does inside)."""
    pipe.image_encoder.register_forward_pre_hook(lambda *_: probe.mark("image_encoder"))
    pipe.unet.register_forward_pre_hook(lambda *_: probe.mark("denoising"))
    encode, decode = pipe.vae.encode, pipe.vae.decode
    out_channels = pipe.unet.config.out_channels
    scale = pipe.vae_scale_factor

    def stubbed_unet(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        batch, frames, _, height, width = sample.shape
        # the real output is conv_out's (batch x frames) x C x h x w, reshaped: the same storage size
        return (torch.empty(batch, frames, out_channels, height, width, dtype=sample.dtype, device=sample.device),)

    if stub_unet:
        pipe.unet.forward = stubbed_unet

    def marked_encode(*args: Any, **kwargs: Any) -> Any:
        probe.mark("vae_encode")
        return encode(*args, **kwargs)

    def marked_decode(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        probe.mark("decode")
        if stub_decode:
            from diffusers.models.autoencoders.vae import DecoderOutput

            count, _, height, width = latents.shape
            channels = pipe.vae.config.out_channels
            dtype = pipe.vae.dtype
            frames = torch.empty(count, channels, height * scale, width * scale, dtype=dtype, device=latents.device)
            return DecoderOutput(sample=frames)
        return decode(latents, *args, **kwargs)

    pipe.vae.encode, pipe.vae.decode = marked_encode, marked_decode
    cast = pipe.vae.to

    def uncounted_cast(*args: Any, **kwargs: Any) -> Any:
        with tracker.paused():
            return cast(*args, **kwargs)

    pipe.vae.to = uncounted_cast
    set_timesteps = pipe.scheduler.set_timesteps

    def cpu_timesteps(*args: Any, **kwargs: Any) -> Any:
        kwargs["device"] = "cpu"
        return set_timesteps(*args, **kwargs)

    pipe.scheduler.set_timesteps = cpu_timesteps
    pipe.video_processor.pt_to_numpy = lambda images: np.zeros(0)


@contextlib.contextmanager
def fast_chunked_feed_forward(round_bytes: Callable[[int], int]) -> Iterator[None]:
    """diffusers' `_chunked_feed_forward` with the same live bytes in far fewer ops.

    The original runs the feed-forward on every chunk and concatenates: while the last chunk runs, the n-1
    earlier outputs are alive, and then the concatenation holds all n outputs and the result. With chunk size 1
    along dim 0 that is one chunk per frame, or per latent pixel in the temporal blocks (18432 chunks per
    SVD-XT block at 576x1024), too many ops to simulate in seconds. Here the first and the last chunk run for
    real, the n-2 in between are one placeholder of their (rounded) bytes, and the result is allocated while all
    of them are alive: the same peak, in a handful of ops.
    """
    from diffusers.models import attention

    original = attention._chunked_feed_forward

    def chunked(ff: nn.Module, hidden_states: torch.Tensor, chunk_dim: int, chunk_size: int) -> torch.Tensor:
        size = hidden_states.shape[chunk_dim]
        if size % chunk_size != 0 or size // chunk_size <= 3:
            return original(ff, hidden_states, chunk_dim, chunk_size)
        chunks = hidden_states.chunk(size // chunk_size, dim=chunk_dim)
        first = ff(chunks[0])
        between = torch.empty(
            (len(chunks) - 2) * round_bytes(first.untyped_storage().nbytes()), dtype=torch.uint8, device=first.device
        )
        last = ff(chunks[-1])
        shape = list(first.shape)
        shape[chunk_dim] = sum(chunk.shape[chunk_dim] for chunk in chunks)
        result = torch.empty(shape, dtype=first.dtype, device=first.device)
        del first, between, last
        return result

    attention._chunked_feed_forward = chunked
    try:
        yield
    finally:
        attention._chunked_feed_forward = original


def simulate(
    pipe,
    inputs: dict[str, Any],
    *,
    count_host: bool,
    round_bytes: Callable[[int], int],
    calls: int = 1,
    stub_unet: bool = False,
    stub_decode: bool = False,
) -> Simulation:
    """Run the call `calls` times on the meta pipeline and return the last call's phases (the steady state:
    DeepCache, for one, keeps the previous call's cached features alive into the next).

    inputs: the call's keyword arguments as the runner passes them (svdbench.pipeline.call.call_inputs).
    count_host: count CPU tensors too (the device is the CPU); otherwise only the simulated device's.
    """
    # On a GPU target only device tensors count, and every one of them comes out of an op: inputs need no look.
    tracker = LiveBytes(
        round_bytes, count_parameters=False, devices=None if count_host else ("meta",), count_inputs=count_host
    )
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        tracker.ignore(module.buffers())
        tracker.ignore(module.parameters())
    probe = _Probe(tracker)
    _install(pipe, probe, tracker, stub_unet, stub_decode)
    attention = FusedAttention()
    pipe.planned_guidance = inputs["max_guidance_scale"] > 1.0
    result = None
    with torch.no_grad(), fast_chunked_feed_forward(tracker.round_bytes), attention, tracker:
        for call in range(calls):
            last = call == calls - 1
            probe.records = {}
            probe.mark("start")
            # Earlier calls only leave their state behind (DeepCache's cache): one step, no decode.
            steps = inputs["num_inference_steps"] if last else 1
            result = pipe(**{**inputs, "num_inference_steps": steps}, output_type="np" if last else "latent")
            probe.close()
    del result
    records = {name: rec for name, rec in probe.records.items() if name in SUB_PHASES}
    return Simulation(phases=records, attention_calls=attention.calls)
