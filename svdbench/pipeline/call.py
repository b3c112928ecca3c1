"""One pipeline call, described once: its videos, their seeds and generators, its images and arguments.

The runner, the planner's simulation and their tests all build a `StableVideoDiffusionPipeline` call from
`call_inputs`, and every figure that converts between a call and a video (throughput, energy, cost, FLOPs,
the planner's FLOPs) does it through `CallShape`. The rules a call's memory and FLOPs depend on are stated
here too: the frames the VAE decodes at a time (`decode_chunk`), forward chunking (`enable_forward_chunking`)
and the VAE's fp32 upcast (`vae_upcasts`).

A batch is the image repeated once per video with one generator per video, not `num_videos_per_prompt`:
video k of a batch is then the video an unbatched call with seed + k makes (tests/test_batch_and_startup.py
shows why `num_videos_per_prompt` would not do that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from svdbench.settings.config import OptConfig, RunConfig

if TYPE_CHECKING:  # torch is imported where a call is made, so that the planner's settings checks stay light
    import torch


@dataclass(frozen=True)
class CallShape:
    """How many videos, and frames, one call makes: the one conversion between per call and per video."""

    videos: int  # videos per call (batch_size)
    frames_per_video: int

    @classmethod
    def of(cls, cfg: RunConfig) -> CallShape:
        return cls(videos=cfg.batch_size, frames_per_video=cfg.num_frames)

    @property
    def frames(self) -> int:
        """Frames of every video of a call: what the VAE decodes in one call."""
        return self.videos * self.frames_per_video

    def per_video(self, per_call: float) -> float:
        """A quantity of one call (seconds, joules, FLOPs) shared out over its videos."""
        return per_call / self.videos

    def per_call(self, per_video: float) -> float:
        """A quantity of one video, for a whole call."""
        return per_video * self.videos


def video_seeds(cfg: RunConfig, first: int | None = None) -> list[int]:
    """The seed of every video of a call, from `first` (default: the run's seed): video k of a batch is the
    video an unbatched run with seed + k makes."""
    first = cfg.seed if first is None else first
    return [first + k for k in range(cfg.batch_size)]


def generators(cfg: RunConfig, seed: int | None = None) -> torch.Generator | list[torch.Generator]:
    """One seeded CPU generator per video (the same noise on every device). The pipeline draws each video's
    noise from its own generator, in the order an unbatched call draws it from its one."""
    import torch

    made = [torch.Generator("cpu").manual_seed(s) for s in video_seeds(cfg, seed)]
    return made[0] if cfg.batch_size == 1 else made


def images(image: Any, cfg: RunConfig) -> Any:
    """The conditioning image once per video: one image for a batch of one, a list of them otherwise."""
    return [image] * cfg.batch_size if cfg.batch_size > 1 else image


def decode_frames(decode_chunk_size: int | None, num_frames: int) -> int:
    """Frames the VAE decodes at a time: decode_chunk_size, or every frame of a video when it is null or
    larger than the video (a larger chunk would mix the frames of two videos of a batch)."""
    return num_frames if decode_chunk_size is None else min(decode_chunk_size, num_frames)


def decode_chunk(cfg: RunConfig) -> int:
    """The run's effective decode chunk (`decode_frames` of its settings)."""
    return decode_frames(cfg.opt.decode_chunk_size, cfg.num_frames)


def decodes_in_chunks(cfg: RunConfig) -> bool:
    """Whether a video is decoded in more than one chunk (its frames then see different temporal contexts)."""
    return decode_chunk(cfg) < cfg.num_frames


def guided(cfg: RunConfig) -> bool:
    """Classifier-free guidance: the UNet then runs on twice the batch (the pipeline's own rule)."""
    return cfg.max_guidance_scale > 1.0


def call_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The settings' keyword arguments of a StableVideoDiffusionPipeline call (no image, no generators)."""
    return dict(
        height=cfg.height,
        width=cfg.width,
        num_frames=cfg.num_frames,
        num_inference_steps=cfg.num_inference_steps,
        min_guidance_scale=cfg.min_guidance_scale,
        max_guidance_scale=cfg.max_guidance_scale,
        fps=cfg.cond.fps,
        motion_bucket_id=cfg.cond.motion_bucket_id,
        noise_aug_strength=cfg.cond.noise_aug_strength,
        decode_chunk_size=decode_chunk(cfg),
    )


def call_inputs(cfg: RunConfig, image: Any, seed: int | None = None) -> dict[str, Any]:
    """Everything a call of the run passes the pipeline but its callback and output type: the image once per
    video, one generator per video (from `seed`, default the run's), and the settings' arguments."""
    return dict(image=images(image, cfg), generator=generators(cfg, seed), **call_arguments(cfg))


def enable_forward_chunking(pipe: Any, opt: OptConfig) -> bool:
    """The UNet's feed-forward layers in chunks of opt.forward_chunk_size along dim 0, when opt asks for it."""
    if opt.forward_chunking:
        pipe.unet.enable_forward_chunking(chunk_size=opt.forward_chunk_size, dim=0)
    return opt.forward_chunking


def vae_upcasts(vae: Any) -> bool:
    """Whether the pipeline casts the VAE to fp32 around encoding and decoding: an fp16 VAE whose config says
    force_upcast (SVD's does)."""
    import torch

    return vae.dtype == torch.float16 and bool(vae.config.force_upcast)
