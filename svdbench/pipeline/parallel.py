"""One run over several processes started by torchrun (`parallel=cfg` or `parallel=data`).

- `parallel=cfg`: one video over two ranks. The UNet's batch under classifier-free guidance is
  (unconditional, conditional); rank r runs chunk r of it each step, and the two noise predictions are
  exchanged with all_gather and concatenated, so every rank continues with the exact prediction a single
  process makes (the UNet's maths per sample do not depend on the batch). Everything else (conditioning,
  scheduler, VAE decode) runs on both ranks alike.
- `parallel=data`: a batch of videos over N ranks. Rank r generates videos k = r * B/N ... (r + 1) * B/N - 1 of
  the batch, each seeded seed + k as in a single-process batch, with the same random weights.

Ranks talk through torch.distributed: gloo on CPUs, NCCL on GPUs (each rank on the GPU of its LOCAL_RANK).
Rank 0 gathers every rank's results and frames and writes the one record (`svdbench.record.ranks`); the
other ranks write nothing.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from svdbench.settings.config import RunConfig

# Environment variables torchrun sets in every process it starts.
RANK_ENV, WORLD_ENV, LOCAL_RANK_ENV = "RANK", "WORLD_SIZE", "LOCAL_RANK"


@dataclass
class World:
    """This process's place among torchrun's processes."""

    rank: int
    size: int
    local_rank: int
    backend: str = ""
    host: str = dataclasses.field(default_factory=socket.gethostname)


@dataclass
class RankShare:
    """One rank's part of a parallel run, as rank 0's record lists it (results.json `ranks`)."""

    rank: int
    host: str
    device: str
    cuda_visible_devices: str | None  # as this rank's process saw it
    status: str
    seeds: list[int]  # the videos this rank generated (parallel=data), or the whole call's (parallel=cfg)
    s_per_call: float | None = None  # median of its measured calls
    peak_memory_gib: float | None = None
    peak_memory_kind: str | None = None  # "device allocated" or "host resident"
    videos_per_hour: float | None = None  # of this rank's own calls
    energy_j_per_video: float | None = None  # of this rank's measured sources, per video of its calls


def launched_rank() -> int:
    """This process's rank under torchrun, 0 without it: only rank 0 writes a record."""
    return int(os.environ.get(RANK_ENV, "0") or 0)


def join(device: str) -> World:
    """Join torchrun's process group (once per process): NCCL when the run is on CUDA, else gloo. On CUDA each
    rank takes the GPU of its LOCAL_RANK, so that device=auto or device=cuda means that GPU."""
    world = World(
        rank=int(os.environ[RANK_ENV]), size=int(os.environ[WORLD_ENV]), local_rank=int(os.environ[LOCAL_RANK_ENV])
    )
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_cuda and torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    world.backend = "nccl" if on_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=world.backend)
    return world


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_config(cfg: RunConfig, world: World) -> RunConfig:
    """The settings this rank runs: for parallel=data its share of the batch (its first video's seed, the run's
    random weights); for parallel=cfg the run's own."""
    if cfg.parallel != "data":
        return cfg
    share = cfg.batch_size // world.size
    model = dataclasses.replace(cfg.model, weights_seed=cfg.weights_seed)  # the same weights on every rank
    # a batch of its own, which this rank runs as a single process would (parallel=none)
    return dataclasses.replace(cfg, batch_size=share, seed=cfg.seed + world.rank * share, model=model, parallel="none")


def split_guidance(pipe: Any, cfg: RunConfig) -> None:
    """With parallel=cfg, make `pipe.unet` run this rank's half of its guidance batch (a no-op otherwise)."""
    if cfg.parallel == "cfg":
        GuidanceSplit(dist.get_rank(), dist.get_world_size()).install(pipe.unet)


class GuidanceSplit:
    """Forward hooks on a UNet: each call runs chunk `rank` of `world` of its batch, and the chunks of every
    rank are gathered and concatenated in rank order into the whole batch's output. Exact, since the UNet
    treats every sample of its batch on its own; a batch that does not split evenly runs whole on every rank.

    `simulate=True` (the memory planner, on meta tensors) runs chunk `rank` and stands in for the gathered
    chunks with empty tensors of their shape, so the planner sees one rank's memory; otherwise calls on meta
    tensors (FLOP counting) pass through whole."""

    def __init__(self, rank: int, world: int, simulate: bool = False) -> None:
        self.rank, self.world, self.simulate = rank, world, simulate
        self.batch: int | None = None

    def install(self, unet: torch.nn.Module) -> None:
        unet.register_forward_pre_hook(self._split, with_kwargs=True)
        unet.register_forward_hook(self._gather)

    def _chunk(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == self.batch:
            return value.chunk(self.world)[self.rank]
        return value

    def _split(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        sample = args[0] if args else kwargs["sample"]
        self.batch = None
        if sample.device.type == "meta" and not self.simulate:
            return args, kwargs
        if sample.shape[0] % self.world:  # a step without guidance (a batch of one): every rank runs it whole
            return args, kwargs
        self.batch = sample.shape[0]
        return tuple(self._chunk(a) for a in args), {k: self._chunk(v) for k, v in kwargs.items()}

    def _gather(self, module: Any, args: tuple, output: Any) -> Any:
        if self.batch is None:
            return output
        self.batch = None
        half = output[0] if isinstance(output, tuple) else output.sample
        if self.simulate:
            parts = [torch.empty_like(half) if r != self.rank else half for r in range(self.world)]
        else:
            parts = [torch.empty_like(half) for _ in range(self.world)]
            dist.all_gather(parts, half.contiguous())
        whole = torch.cat(parts)
        if isinstance(output, tuple):
            return (whole, *output[1:])
        output.sample = whole
        return output


def gather(world: World, value: Any) -> list[Any] | None:
    """Every rank's `value` (picklable) on rank 0, in rank order; None on the other ranks."""
    received: list[Any] | None = [None] * world.size if world.rank == 0 else None
    dist.gather_object(value, received, dst=0)
    return received


def cuda_visible_devices() -> str | None:
    """CUDA_VISIBLE_DEVICES as this process saw it (set by Ray, SLURM or the user; None when unset)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")
