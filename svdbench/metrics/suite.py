"""The weight-free flicker and temporal-consistency suite of one video.

Four families of figures, none of which needs a network or downloaded weights:

- photometric flicker: VBench's temporal_flickering (exact), and the frame-mean BT.601 luma per frame,
  per pair and its first and second differences;
- flicker that motion does not explain: Lai et al.'s warping error on DIS optical flow (also on
  EvalCrafter's 3x scale), with occlusions and motion boundaries masked, and the flow's own motion
  figures and VBench's static flag;
- VAE chunk seams: the pairs that straddle two decode chunks against the pairs inside chunks;
- first-frame fidelity: PSNR and SSIM of frame 0 against the conditioning image.

`compute_suite(frames)` returns plain JSON values only (floats, ints, bools, lists, None), so the runner
can store it as it is. Pair metrics are None for a one-frame video; chunk-boundary ratios are None
when the video is decoded in one chunk; first-frame fidelity is None without a reference image.
Every key is defined, with its unit, direction and formula, in `svdbench.metrics.definitions.METRICS`,
which docs/metrics.md reproduces along with the method and its limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from svdbench.files.plain import plain_json
from svdbench.metrics import flow
from svdbench.metrics.fidelity import psnr, ssim
from svdbench.pipeline.call import decode_frames

# BT.601 luma weights (R, G, B): what "brightness" means for the photometric flicker metrics.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Floors for the chunk-boundary ratios: a pair changing less than uint8 rounding alone would make counts as
# changing by that much. Rounding a value to uint8 errs uniformly within half a grey level (variance 1/12),
# so the difference of two independently rounded values has variance 2/12 = 1/6 grey level^2: the warp
# floor is that mean square, on the [0, 1] scale (2.56e-6), and the luma floor its root, 0.408 grey level.
# Without them a seam in an otherwise static video divides by next to nothing (a +8 grey-level seam read
# about 1000 with floors of 1e-6 and 0.01); with them it reads 8^2 x 6 = 384 (warp) and 8 / 0.408 = 19.6
# (luma), a seam of 1 grey level still 6 and 2.4, and a video without any change exactly 1.
QUANTIZATION_DIFF_VAR = 2 / 12  # grey level^2
SEAM_FLOOR_WARP = QUANTIZATION_DIFF_VAR / 255.0**2
SEAM_FLOOR_LUMA = math.sqrt(QUANTIZATION_DIFF_VAR)
# VBench's static filter: a pair moves if its top-2 % flow exceeds 3 px per 256 px of the shorter side.
STATIC_PX_PER_256 = 3.0
# EvalCrafter's warping error divides the masked squared RGB residual by kept pixels, Lai et al.'s by kept
# values (pixels x 3 channels): the same residual is 3x larger on EvalCrafter's scale.
EVALCRAFTER_SCALE = 3


def check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(
            f"The metrics need uint8 RGB frames shaped T x H x W x 3 with T >= 1; got dtype {frames.dtype} and "
            f"shape {frames.shape}. Convert float frames in [0, 1] with svdbench.media.video.to_uint8, and grey or "
            "RGBA frames to RGB first."
        )
    if frames.shape[1] < 16 or frames.shape[2] < 16:
        raise ValueError(f"Frames of {frames.shape[1]} x {frames.shape[2]} px are too small for optical flow.")
    return np.ascontiguousarray(frames)


def temporal_flickering(frames: np.ndarray) -> float | None:
    """VBench's score, 1 - mean_t(mean |x[t+1] - x[t]|) / 255, in exact integer arithmetic.

    Every pair has the same number of values, so the mean of per-pair means is the total sum of absolute
    differences over (pairs x values); the sum is an exact integer (per frame far below 2**53).
    """
    if len(frames) < 2:
        return None
    total = sum(int(sum(cv2.sumElems(cv2.absdiff(a, b)))) for a, b in zip(frames[:-1], frames[1:]))
    return 1.0 - total / ((len(frames) - 1) * frames[0].size) / 255.0


def luma_means(frames: np.ndarray) -> list[float]:
    """Mean BT.601 luma of each frame, 0..255."""
    # cv2.mean returns per-channel means in the array's order, which is R, G, B here.
    return [float(np.dot(cv2.mean(frame)[:3], LUMA_WEIGHTS)) for frame in frames]


def boundary_pairs(num_frames: int, decode_chunk_size: int | None) -> list[int]:
    """Pair indices t whose frames t and t+1 were decoded in different VAE chunks."""
    chunk = decode_frames(decode_chunk_size, num_frames)
    return [t for t in range(num_frames - 1) if (t + 1) % chunk == 0]


def boundary_ratio(per_pair: Sequence[float], boundaries: Sequence[int], floor: float) -> float | None:
    """Mean residual at chunk boundaries over the median residual inside chunks (1: no seam).

    Both sides are raised to `floor` first (SEAM_FLOOR_WARP or SEAM_FLOOR_LUMA), so static chunk interiors
    do not turn a seam of a few grey levels into a ratio of thousands.
    """
    seams = set(boundaries)
    inside = [v for t, v in enumerate(per_pair) if t not in seams]
    if not boundaries or not inside:
        return None
    seam = float(np.mean([per_pair[t] for t in boundaries]))
    return max(seam, floor) / max(float(np.median(inside)), floor)


def is_static(pair_scores: Sequence[float], loop_scores: Sequence[float], num_frames: int, height: int, width: int):
    """VBench's static-filter rule (vbench2_beta_long/static_filter.py), on DIS flow instead of RAFT.

    A pair "moves" when the mean of its top 2 % flow magnitudes exceeds 3 px per 256 px of the shorter
    side. VBench ranks all pixels of its RAFT flow; here only the forward-backward-consistent pixels of
    the DIS flow count, because DIS's arbitrary vectors on flat regions and straight edges would fill the
    top 2 % (flow.TOP_STATIC says by how much). The video is static when at most round(2 T / 16) pairs of
    neighbouring frames move and the first-to-last and last-to-first flows (all pixels: there is no
    backward flow to check them with) stay below twice that count times the threshold (the count is taken
    as at least 1 there, where VBench would demand exactly zero flow for videos under five frames).
    """
    threshold = STATIC_PX_PER_256 * min(height, width) / 256.0
    allowed = round(2 * num_frames / 16)
    moving = sum(score > threshold for score in pair_scores)
    return bool(moving <= allowed and all(s <= threshold * max(allowed, 1) * 2 for s in loop_scores))


def _flow_pairs(small: np.ndarray, factor: int) -> tuple[list[flow.PairFlow], list[float]]:
    """Per-pair flow results, and the top-2 % flow of first->last and last->first for the static rule."""
    # One thread: a pool over pairs measured no faster on 2 cores (about 0.35 s either way for 25 x 576 x 1024).
    dis = flow.make_dis()
    grays = flow.gray(small)
    rgb = small.astype(np.float32)
    grid = np.meshgrid(np.arange(small.shape[2], dtype=np.float32), np.arange(small.shape[1], dtype=np.float32))
    pairs = [
        flow.pair_flow(dis, grays[t], grays[t + 1], rgb[t], rgb[t + 1], grid, factor) for t in range(len(small) - 1)
    ]
    # No backward flow for these two, so no consistency mask: all pixels, as VBench ranks them.
    loop_scores = [
        flow.top_means(
            # cv2's stubs want an output array for `flow`; None (allocate a new one) is valid at runtime.
            flow.magnitude_px(dis.calc(grays[a], grays[b], None), factor),  # type: ignore[call-overload]
            (flow.TOP_STATIC,),
        )[0]
        for a, b in ((0, -1), (-1, 0))
    ]
    return pairs, loop_scores


def _mean(values: Sequence[float] | np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def compute_suite(
    frames: np.ndarray, *, decode_chunk_size: int | None = None, reference: np.ndarray | None = None
) -> dict:
    """All metrics of one uint8 RGB video (T x H x W x 3), as a JSON-ready dict.

    `decode_chunk_size`: the VAE's decode chunk, for the chunk-boundary ratios (None: one chunk).
    `reference`: the conditioning image (uint8 H x W x 3, resized to the frames if needed), for the
    first-frame PSNR and SSIM.
    """
    frames = check_frames(frames)
    num_frames, height, width = frames.shape[:3]
    if decode_chunk_size is not None and decode_chunk_size < 1:
        raise ValueError(f"decode_chunk_size must be a positive number of frames, got {decode_chunk_size}.")
    if reference is not None:
        reference = fit_reference(reference, height, width)
    factor = flow.analysis_factor(height, width)
    small = flow.downscale(frames, factor)
    pairs, loop_scores = _flow_pairs(small, factor) if num_frames > 1 else ([], [])
    warp = [p.warp_error for p in pairs]
    warp_mean = _mean(warp)
    luma = luma_means(frames)
    luma_change = np.abs(np.diff(luma)).tolist()
    seams = boundary_pairs(num_frames, decode_chunk_size)
    result = {
        "frames": num_frames,
        "height": height,
        "width": width,
        "analysis_size": list(small.shape[1:3]),
        "temporal_flickering": temporal_flickering(frames),
        "static": is_static([p.motion_top2 for p in pairs], loop_scores, num_frames, height, width) if pairs else None,
        "warp_error": warp_mean,
        "warp_error_evalcrafter": None if warp_mean is None else EVALCRAFTER_SCALE * warp_mean,
        "warp_error_per_pair": warp,
        "warp_valid_fraction": _mean([p.valid_fraction for p in pairs]),
        "luma_per_frame": luma,
        "luma_change_per_pair": luma_change,
        "luma_diff1": _mean(luma_change),
        "luma_diff2": _mean(np.abs(np.diff(luma, n=2))),
        "decode_chunk_size": decode_chunk_size,
        "chunk_boundary_pairs": seams,
        "boundary_warp_ratio": boundary_ratio(warp, seams, SEAM_FLOOR_WARP),
        "boundary_luma_ratio": boundary_ratio(luma_change, seams, SEAM_FLOOR_LUMA),
        "motion_mean": _mean([p.motion_mean for p in pairs]),
        "motion_top5": _mean([p.motion_top5 for p in pairs]),
        "first_frame_psnr": None if reference is None else psnr(frames[0], reference),
        "first_frame_ssim": None if reference is None else ssim(frames[0], reference),
    }
    return {key: plain_json(value) for key, value in result.items()}


def fit_reference(reference: np.ndarray, height: int, width: int) -> np.ndarray:
    """The conditioning image as uint8 RGB at the frame size (bicubic, as the runner resizes it)."""
    reference = np.asarray(reference)
    if reference.dtype != np.uint8 or reference.ndim != 3 or reference.shape[-1] != 3:
        raise ValueError(
            f"The reference image must be uint8 RGB shaped H x W x 3; got dtype {reference.dtype} and shape "
            f"{reference.shape}. Load it with PIL and convert('RGB') first."
        )
    if reference.shape[:2] != (height, width):
        reference = np.asarray(Image.fromarray(reference).resize((width, height), Image.Resampling.BICUBIC))
    return reference
