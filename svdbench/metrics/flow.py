"""Optical flow between neighbouring frames and what it yields: warp error, occlusion masks, motion.

Everything here runs on an analysis copy of the video, downscaled by an integer factor (area averaging)
until at most `ANALYSIS_MAX_PIXELS` pixels remain: 576 x 1024 becomes 288 x 512. Flow, masks and
residuals at full size cost about ten times more (seconds per SVD-XT video on a 2-core CPU) and add
little: seams and brightness flicker are low-frequency, and the flow itself is only estimated on a
coarse grid. Flow is OpenCV DIS (Kroeger et al. 2016, no weights), preset ULTRAFAST with the finest
pyramid level set to 1 (patches on the half-resolution level of the analysis frames) and a patch stride of 6.
Flow magnitudes are reported in pixels of the original frames (analysis pixels times the factor),
computed as sqrt(u*u + v*v) in numpy so that the same video always gives the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ANALYSIS_MAX_PIXELS = 160_000
# Below this share of kept pixels the masks have eaten the pair (a cut, a flash, a blank or garbage frame):
# the pair is then scored over all pixels, so that the event counts as the large change it is. Lai et al.'s
# evaluate_WarpError.py and EvalCrafter's compute_video_warping_error instead divide the masked sum by the
# kept count, which scores a pair with no kept pixel 0 (the masked residual is all zeros) and a pair with a
# handful over that handful: a broken model whose frames are unrelated noise would then score as perfectly
# consistent. See docs/metrics.md.
MIN_VALID_FRACTION = 0.01
# Forward-backward consistency and motion-boundary thresholds of Sundaram et al. 2010 / Ruder et al.
# 2016, in the form Lai et al. 2018 use for the warping error (squared flow magnitudes, in pixels of the
# analysis frames).
OCCLUSION_REL, OCCLUSION_ABS = 0.01, 0.5
BOUNDARY_REL, BOUNDARY_ABS = 0.01, 0.002
# VBench's static filter scores a pair by the mean of its top 2 % flow magnitudes; the motion metric
# uses the top 5 % (a dynamic-degree proxy). Both rank only the forward-backward-consistent pixels, where
# VBench ranks all pixels: its RAFT flow is dense and smooth, while DIS (no global regularisation here)
# returns arbitrary vectors along straight edges (the aperture problem) and in flat regions, and those
# fill the top 2 %. Measured on the test card panning 1 px per frame at 576 x 1024 (288 x 512 analysis):
# the top 2 % of all pixels had a median over pairs of 79 px, of the consistent pixels 5 px, and on
# photo-like texture both rules gave the same numbers. The mask removes most of those vectors.
TOP_STATIC, TOP_MOTION = 0.02, 0.05


def analysis_factor(height: int, width: int) -> int:
    """The smallest integer downscale that leaves at most ANALYSIS_MAX_PIXELS pixels."""
    factor = 1
    while (height // factor) * (width // factor) > ANALYSIS_MAX_PIXELS:
        factor += 1
    return factor


def downscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """T x H x W x C uint8 frames area-averaged by `factor` (cropping the remainder rows/columns)."""
    if factor == 1:
        return frames
    t, h, w = frames.shape[:3]
    size = (w // factor, h // factor)
    # Cropping to a multiple of the factor keeps the pixel grid exact: analysis pixel (i, j) is the mean
    # of original pixels (i*f .. i*f+f-1, j*f .. j*f+f-1), so flow scales back by exactly `factor`.
    frames = frames[:, : size[1] * factor, : size[0] * factor]
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])


def gray(frames: np.ndarray) -> list[np.ndarray]:
    return [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]


def make_dis() -> cv2.DISOpticalFlow:
    dis = cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_ULTRAFAST)
    # ULTRAFAST stops at pyramid level 2 (quarter size). Level 1 halves the flow error on textured
    # content; patches every 6 px instead of 4 give most of that time back (measured on 288 x 512:
    # mean error 0.048 px at about 4 ms per flow, against 0.068 px at level 2 and 0.041 px at stride 4
    # for twice the time).
    dis.setFinestScale(1)
    dis.setPatchStride(6)
    return dis


def _sq(flow: np.ndarray) -> np.ndarray:
    """Squared magnitude of an H x W x 2 flow."""
    return flow[..., 0] * flow[..., 0] + flow[..., 1] * flow[..., 1]


def magnitude_px(flow: np.ndarray, factor: int) -> np.ndarray:
    """Flow magnitude in original-frame pixels.

    Not cv2.magnitude: its last bits depend on how the buffer happens to be aligned (its SIMD and scalar
    paths round differently), so the same video would not always give the same numbers.
    """
    return np.sqrt(_sq(flow)) * factor


@dataclass
class PairFlow:
    """What one (t, t+1) pair yields."""

    warp_error: float  # mean squared residual per value (pixels x 3 channels), values scaled to [0, 1]
    valid_fraction: float  # share of pixels the masks kept
    # Forward flow magnitude in original-frame px, over the pixels where the flow is consistent.
    motion_mean: float
    motion_top2: float  # mean of the largest 2 %: VBench's static-filter score (see TOP_STATIC)
    motion_top5: float  # mean of the largest 5 %: the dynamic-degree proxy


def pair_flow(
    dis: cv2.DISOpticalFlow,
    gray0: np.ndarray,
    gray1: np.ndarray,
    rgb0: np.ndarray,
    rgb1: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    factor: int,
) -> PairFlow:
    """DIS flow both ways between frames t and t+1, and what `warp_residual` makes of it."""
    # cv2's stubs want an output array for `flow`; None (allocate a new one) is valid at runtime.
    forward = dis.calc(gray0, gray1, None)  # type: ignore[call-overload]
    backward = dis.calc(gray1, gray0, None)  # type: ignore[call-overload]
    return warp_residual(forward, backward, rgb0, rgb1, grid, factor)


def warp_residual(
    forward: np.ndarray,
    backward: np.ndarray,
    rgb0: np.ndarray,
    rgb1: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    factor: int,
) -> PairFlow:
    """Warp error of frame t+1 against frame t, with occlusions and motion boundaries masked (Lai et al. 2018).

    `forward` is the flow from t to t+1 at frame t's pixels, so sampling frame t+1 at x + forward(x)
    brings it onto frame t's grid (backward warping). `backward` (t+1 to t) sampled at the same points
    should cancel `forward` wherever the pixel is visible in both frames. Flows are float32 H x W x 2 in
    analysis pixels; `rgb0` and `rgb1` float32 H x W x 3 in 0..255; `grid` the (x, y) pixel coordinates.

    The residual is averaged over kept pixels x 3 channels (Lai et al.'s scale), or over all pixels when
    under MIN_VALID_FRACTION of them are kept.
    """
    map_x = grid[0] + forward[..., 0]
    map_y = grid[1] + forward[..., 1]
    warped = cv2.remap(rgb1, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    backward_at = cv2.remap(backward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    sq_forward = _sq(forward)
    consistent = _sq(forward + backward_at) <= OCCLUSION_REL * (sq_forward + _sq(backward_at)) + OCCLUSION_ABS
    # Forward differences of the flow, as in Lai et al.'s compute_flow_gradients.
    grad = np.zeros(forward.shape[:2], np.float32)
    grad[:, :-1] += _sq(forward[:, :-1] - forward[:, 1:])
    grad[:-1] += _sq(forward[:-1] - forward[1:])
    h, w = forward.shape[:2]
    valid = (
        consistent
        & (grad <= BOUNDARY_REL * sq_forward + BOUNDARY_ABS)
        & (map_x >= 0)
        & (map_x <= w - 1)
        & (map_y >= 0)
        & (map_y <= h - 1)
    )
    kept = int(np.count_nonzero(valid))
    # The masked sum of squared differences in one pass (cv2.norm takes a uint8 mask, float64 total).
    mask = valid.view(np.uint8) if kept >= MIN_VALID_FRACTION * valid.size else None
    sse = cv2.norm(warped, rgb0, cv2.NORM_L2SQR, mask=mask)
    values = 3 * (kept if mask is not None else valid.size)

    # Motion only where forward and backward flow agree: in flat or periodic regions DIS returns
    # arbitrary vectors that would otherwise dominate the top 5 % (see docs/metrics.md).
    # Also the static filter's top 2 %, where VBench ranks every pixel of its RAFT flow; see TOP_STATIC.
    enough = np.count_nonzero(consistent) >= MIN_VALID_FRACTION * valid.size
    reliable = np.sqrt(sq_forward[consistent] if enough else sq_forward) * factor
    top2, top5 = top_means(reliable, (TOP_STATIC, TOP_MOTION))
    return PairFlow(
        warp_error=sse / values / 255.0**2,
        valid_fraction=kept / valid.size,
        motion_mean=float(reliable.mean(dtype=np.float64)),
        motion_top2=top2,
        motion_top5=top5,
    )


def top_means(values: np.ndarray, fractions: tuple[float, ...]) -> list[float]:
    """Mean of the largest `fraction` of `values` (at least one value), for each fraction, in one partition."""
    flat = values.ravel()
    starts = [flat.size - max(1, int(flat.size * f)) for f in fractions]
    part = np.partition(flat, sorted(set(starts)))
    return [float(part[s:].mean(dtype=np.float64)) for s in starts]
