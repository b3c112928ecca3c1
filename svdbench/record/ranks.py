"""The one record of a run over torchrun's ranks (`parallel=cfg|data`, svdbench.pipeline.parallel): rank 0
merges what every rank measured and made.

- Every rank's device, seeds, median call, peak memory, videos/hour and energy go into `ranks`.
- `parallel=cfg`: the frames, timings and throughput are rank 0's (both ranks make the same video at the same
  pace, as they meet every step); memory is the larger rank's peak (per GPU).
- `parallel=data`: the frames are every rank's videos in rank order (video k seeded seed + k); a call lasts as
  long as its slowest rank (latency = the per-call maximum), videos/hour is the sum over ranks.
- Energy: GPU counters are summed over ranks; CPU and DRAM counters (RAPL) measure a whole host, so each host's
  are counted once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from svdbench.measure.energy import Energy, cost
from svdbench.measure.timing import Stats
from svdbench.pipeline.parallel import RankShare
from svdbench.record.results import RunResult, Throughput
from svdbench.settings.config import RunConfig


def share(rank: int, result: RunResult, host: str, visible: str | None) -> RankShare:
    return RankShare(
        rank=rank,
        host=host,
        device=result.device,
        cuda_visible_devices=visible,
        status=result.status,
        seeds=list(result.seeds),
        s_per_call=result.median_s,
        peak_memory_gib=result.peak_memory_gib,
        peak_memory_kind=result.peak_memory_kind,
        videos_per_hour=result.throughput.videos_per_hour if result.throughput else None,
        energy_j_per_video=result.energy.total_j if result.energy else None,
    )


def merge(
    cfg: RunConfig, gathered: list[tuple[RunResult, np.ndarray | None, str, str | None]]
) -> tuple[RunResult, np.ndarray | None]:
    """Rank 0's result and frames, completed with every rank's (`gathered` in rank order: result, frames, host,
    CUDA_VISIBLE_DEVICES)."""
    results = [g[0] for g in gathered]
    per_call = [res.batch_size for res in results]  # videos of each rank's calls, before rank 0's becomes the run's
    result = results[0]
    result.ranks = [share(r, res, host, visible) for r, (res, _, host, visible) in enumerate(gathered)]
    result.seed, result.batch_size = cfg.seed, cfg.batch_size
    result.seeds = [cfg.seed + k for k in range(cfg.batch_size)]
    failed = next(((r, res) for r, res in enumerate(results) if res.status != "ok"), None)
    if failed is not None:
        rank, bad = failed
        if rank != 0:
            result.fail(bad.status, f"rank {rank}: {bad.reason}")
        return result, None
    videos = [g[1] for g in gathered]
    with_memory = [res for res in results if res.memory is not None]
    if with_memory:
        result.memory = max(with_memory, key=lambda res: res.peak_memory_gib or 0.0).memory
    if cfg.parallel == "data":
        _merge_throughput(cfg, result, results)
        frames = np.concatenate([v for v in videos if v is not None]) if all(v is not None for v in videos) else None
    else:
        frames = videos[0]
    result.energy = _merge_energy(cfg, gathered, per_call, result)
    if result.throughput is not None and result.energy is not None:
        result.cost = cost(
            result.throughput.s_per_video, result.energy.total_j, cfg.cost.usd_per_hour, cfg.cost.usd_per_kwh
        )
    how = (
        "each rank ran half of the UNet's guidance batch every step and the noise predictions were all-gathered"
        if cfg.parallel == "cfg"
        else f"each rank generated {cfg.batch_size // len(results)} of the batch's {cfg.batch_size} videos"
    )
    result.notes.append(
        f"parallel={cfg.parallel} over {len(results)} ranks (torchrun): {how}. Memory is the largest rank's peak "
        "(per GPU); every rank's device, timing, memory and energy are in `ranks`."
    )
    return result, frames


def _merge_throughput(cfg: RunConfig, result: RunResult, results: list[RunResult]) -> None:
    """A call of the whole batch lasts as long as its slowest rank; videos/hour add up over the ranks."""
    calls = [res.latency.calls_s for res in results]
    count = min(len(c) for c in calls)
    slowest = [max(c[i] for c in calls) for i in range(count)]
    result.latency.calls_s = slowest
    result.latency.stats = Stats.of(slowest) if slowest else None
    result.latency.cold_s = max((res.latency.cold_s or 0.0) for res in results) or None
    rates = [res.throughput.videos_per_hour for res in results if res.throughput is not None]
    if len(rates) != len(results) or None in rates or not slowest:
        return
    per_hour = float(sum(rates))  # type: ignore[arg-type]
    result.throughput = Throughput(
        frames_per_s=per_hour * cfg.num_frames / 3600.0,
        s_per_video=3600.0 / per_hour,
        s_per_call=float(np.median(slowest)),
        videos_per_hour=per_hour,
    )


def _merge_energy(cfg: RunConfig, gathered: list[Any], per_call: list[int], result: RunResult) -> Energy | None:
    """Energy per video of the whole run: per-call joules of every rank (its per-video figure times its videos
    per call), GPU summed over ranks, CPU and DRAM once per host, over the videos of a call."""
    parts = [(res.energy, videos, host) for (res, _, host, _), videos in zip(gathered, per_call)]
    if any(energy is None for energy, _, _ in parts):
        return result.energy
    hosts: set[str] = set()
    sums: dict[str, float | None] = {"gpu_j": None, "cpu_j": None, "dram_j": None}
    for energy, videos, host in parts:
        for key in sums:
            value = getattr(energy, key)
            if value is None or (key != "gpu_j" and host in hosts):
                continue
            sums[key] = (sums[key] or 0.0) + value * videos
        hosts.add(host)
    merged: Energy = parts[0][0]
    per_video = {key: (value / cfg.batch_size if value is not None else None) for key, value in sums.items()}
    merged.gpu_j, merged.cpu_j, merged.dram_j = per_video["gpu_j"], per_video["cpu_j"], per_video["dram_j"]
    present = [v for v in per_video.values() if v is not None]
    merged.total_j = sum(present) if present else None
    merged.j_per_frame = merged.total_j / cfg.num_frames if merged.total_j is not None else None
    merged.videos_per_kwh = 3.6e6 / merged.total_j if merged.total_j else None
    call_s = result.throughput.s_per_call if result.throughput else None
    merged.avg_w = merged.total_j * cfg.batch_size / call_s if merged.total_j is not None and call_s else None
    merged.calls_j = []
    merged.phases_j = {}
    merged.method += (
        f" Over {len(parts)} ranks: GPU energy summed over ranks, CPU and DRAM counted once per host; per-call "
        "and per-phase figures are in each rank's own measurement only."
    )
    return merged
