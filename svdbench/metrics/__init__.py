"""Weight-free flicker and temporal-consistency metrics of generated (or any) videos.

The runner calls `compute_suite(frames, decode_chunk_size=..., reference=...)` on the run's uint8
frames and, when the VAE decodes in chunks, `paired_chunk_psnr(pipe, latents, num_frames, chunk)`.
`METRICS` defines every key; docs/metrics.md is generated from it.
"""

from __future__ import annotations

from svdbench.metrics.definitions import METRICS, Metric
from svdbench.metrics.fidelity import PSNR_IDENTICAL, paired_chunk_psnr, psnr, ssim
from svdbench.metrics.suite import compute_suite

__all__ = ["METRICS", "PSNR_IDENTICAL", "Metric", "compute_suite", "paired_chunk_psnr", "psnr", "ssim"]
