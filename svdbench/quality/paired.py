"""Paired metrics of one quality sample against the baseline's sample of the same image and seed.

- psnr_db: PSNR of all uint8 values (svdbench.metrics.psnr; identical videos score PSNR_IDENTICAL, 200 dB).
- ssim: SSIM (Wang et al. 2004, svdbench.metrics.ssim) of the luma (BT.601, OpenCV's RGB2GRAY), mean over every
  other frame (SSIM_FRAME_STRIDE) and the pixels; luma only, as video codecs' SSIM is usually quoted, and a third
  of the cost of three channels.
- vmaf: svdbench.quality.vmaf (ffmpeg's libvmaf), the job's video against the baseline's.
- tof: the difference of optical flow (TecoGAN's tOF): mean over neighbouring-frame pairs and pixels of
  |flow_job - flow_baseline|, in pixels of the original frames; 0 when both videos move alike.
- motion_ratio: mean flow magnitude of the job's video / the baseline's (1: as much motion).
- max_diff: largest |difference| of two uint8 values (lossless needs <= 1 on every sample).
Flow is svdbench.metrics.flow's (OpenCV DIS on the downscaled analysis frames).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from svdbench.metrics import flow, psnr, ssim

# The paired metrics, in the order tables show them; higher is better for all but tof and max_diff.
PAIRED = ("vmaf", "psnr_db", "ssim", "tof", "motion_ratio")


@dataclass
class PairScores:
    psnr_db: float
    ssim: float
    vmaf: float | None
    tof: float | None
    motion_ratio: float | None
    max_diff: int

    def to_dict(self) -> dict:
        return asdict(self)


# SSIM is the costliest paired metric (five 11 x 11 Gaussian blurs per frame); every other frame (0, 2, 4, ...)
# keeps it within the flicker suite's time budget at 25 x 576 x 1024 (tests/benchmarks/test_quality_speed.py).
SSIM_FRAME_STRIDE = 2


def luma_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the luma of two videos, mean over frames 0, SSIM_FRAME_STRIDE, ... and their pixels."""
    values = [
        ssim(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(y, cv2.COLOR_RGB2GRAY))
        for x, y in zip(a[::SSIM_FRAME_STRIDE], b[::SSIM_FRAME_STRIDE])
    ]
    return float(np.mean(values))


def forward_flows(frames: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Flow from each frame to the next (analysis pixels) and the analysis factor."""
    factor = flow.analysis_factor(*frames.shape[1:3])
    grays = flow.gray(flow.downscale(frames, factor))
    dis = flow.make_dis()
    # cv2's stubs want an output array for `flow`; None (allocate a new one) is valid at runtime.
    return [dis.calc(grays[t], grays[t + 1], None) for t in range(len(grays) - 1)], factor  # type: ignore[call-overload]


def flow_scores(job: np.ndarray, base: np.ndarray) -> tuple[float | None, float | None]:
    """(tOF, motion ratio) of two videos of one shape; None for a single frame or a still baseline."""
    if len(job) < 2:
        return None, None
    job_flows, factor = forward_flows(job)
    base_flows, _ = forward_flows(base)
    tof = float(
        np.mean([flow.magnitude_px(a - b, factor).mean(dtype=np.float64) for a, b in zip(job_flows, base_flows)])
    )
    job_motion = float(np.mean([flow.magnitude_px(f, factor).mean(dtype=np.float64) for f in job_flows]))
    base_motion = float(np.mean([flow.magnitude_px(f, factor).mean(dtype=np.float64) for f in base_flows]))
    return tof, (job_motion / base_motion if base_motion > 0 else None)


def pair_scores(job: np.ndarray, base: np.ndarray, with_vmaf: bool = True) -> PairScores:
    """Every paired metric of a job's sample against the baseline's (uint8 T x H x W x 3, one shape)."""
    if job.shape != base.shape:
        raise ValueError(f"samples of shape {job.shape} and {base.shape} cannot be paired")
    diff = cv2.absdiff(job.reshape(-1), base.reshape(-1))
    tof, motion = flow_scores(job, base)
    value = None
    if with_vmaf:
        from svdbench.quality.vmaf import vmaf

        value = vmaf(job, base)
    return PairScores(
        psnr_db=psnr(job, base),
        ssim=luma_ssim(job, base),
        vmaf=value,
        tof=tof,
        motion_ratio=motion,
        max_diff=int(diff.max()) if diff.size else 0,
    )
