"""The diffusers SVD guide's claims, checked against the jobs of a comparison.

The guide (https://huggingface.co/docs/diffusers/using-diffusers/svd) says that torch.compile makes the
UNet 20-25 percent faster, and that the memory-saving combination (model CPU offload, feed-forward
chunking, decode_chunk_size=2) runs in under 8 GB of GPU memory. A claim is checked only where the
comparison has the jobs for it (`opt=compile` with its `opt=none` baseline; an `opt=lowmem` run on a GPU)
and said to be "not checked" otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from svdbench.record.results import RunResult
from svdbench.settings.config import RunConfig


class Job(Protocol):
    """What a claim needs of a compared job (svdbench.compare.jobs.Job has it)."""

    name: str
    config: RunConfig
    result: RunResult
    baseline: Any

    @property
    def ok(self) -> bool: ...

    @property
    def latency(self) -> float | None: ...


COMPILE_CLAIM = (0.20, 0.25)  # compile is 20-25 percent faster than none
LOWMEM_CLAIM_GB = 8.0  # decimal gigabytes, as the guide writes them
GB_PER_GIB = 2**30 / 1e9


def check_claims(jobs: Sequence[Job]) -> list[str]:
    """One Markdown bullet per claim whose mode is among the jobs; [] when none of them is."""
    modes = {job.config.opt.name for job in jobs}
    lines = []
    if "compile" in modes:
        lines.append(_compile_claim([j for j in jobs if j.config.opt.name == "compile"]))
    if "lowmem" in modes:
        lines.append(_lowmem_claim([j for j in jobs if j.config.opt.name == "lowmem"]))
    return lines


def _compile_claim(compiled: list[Job]) -> str:
    lo, hi = COMPILE_CLAIM
    claim = f"compile is {lo:.0%}-{hi:.0%} faster than none"
    pairs = [
        (j, j.baseline) for j in compiled if j.ok and j.baseline is not None and j.baseline.ok and j.baseline is not j
    ]
    if not pairs:
        return f"- {claim}: not checked (needs ok runs of opt=compile and of its opt=none baseline)."
    job, base = pairs[0]
    assert job.latency is not None and base.latency is not None
    gain = 1 - job.latency / base.latency
    verdict = "holds" if lo <= gain <= hi else ("faster than claimed" if gain > hi else "does not hold")
    return f"- {claim}: measured {gain:.1%} ({job.latency:.2f} s vs {base.latency:.2f} s, job {job.name}): {verdict}."


def _lowmem_claim(lowmem: list[Job]) -> str:
    claim = f"lowmem (offload + chunking + decode_chunk_size=2) runs in under {LOWMEM_CLAIM_GB:.0f} GB"
    measured = [j for j in lowmem if j.ok and j.result.memory and j.result.memory.device_max_reserved_gib is not None]
    if not measured:
        return f"- {claim}: not checked (needs an ok opt=lowmem run on a GPU)."
    job = measured[0]
    memory = job.result.memory
    assert memory is not None and memory.device_max_reserved_gib is not None
    reserved = memory.device_max_reserved_gib * GB_PER_GIB
    allocated = (memory.device_max_allocated_gib or 0.0) * GB_PER_GIB
    verdict = "holds" if reserved < LOWMEM_CLAIM_GB else "does not hold"
    return f"- {claim}: peak reserved {reserved:.2f} GB, allocated {allocated:.2f} GB (job {job.name}): {verdict}."
