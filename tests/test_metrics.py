"""The flicker suite on synthetic videos whose answer is known, the paired chunk check, the CLI and the pictures.

Each synthetic video isolates one effect: nothing changes (static), everything moves rigidly (translation),
rigid motion plus a brightness seam at every 8th frame (seams), brightness alone jumps (flicker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from svdbench.media.image import test_card
from svdbench.media.video import to_uint8, write_mp4
from svdbench.metrics import METRICS, PSNR_IDENTICAL, compute_suite, flow, paired_chunk_psnr, psnr, ssim
from svdbench.metrics.__main__ import main as metrics_main
from svdbench.metrics.definitions import DOC, HIGHER, LOWER, NA, markdown_table
from svdbench.metrics.fidelity import decode_to_uint8
from svdbench.metrics.plots import save_filmstrip, save_flicker_plot
from svdbench.metrics.suite import SEAM_FLOOR_LUMA, SEAM_FLOOR_WARP, STATIC_PX_PER_256, boundary_pairs

from .conftest import offline_env, returns_quickly

T, H, W = 25, 144, 256
CHUNK = 8


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth multi-scale noise: structure at every scale, like a photograph, and no flat or periodic regions
    where optical flow is ambiguous."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((2, 1.0), (6, 1.5), (20, 2.0), (60, 2.5)):
        noise = rng.normal(0, 1, (height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        out += weight * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    out = (out - out.mean()) / out.std() * 40 + 128
    return np.clip(out, 0, 255).round().astype(np.uint8)


TEXTURE = texture(H + 20, W + 2 * T + 20)


def brighten(frames: np.ndarray, offsets) -> np.ndarray:
    shifted = frames.astype(np.int16) + np.asarray(offsets, np.int16)[:, None, None, None]
    return np.clip(shifted, 0, 255).astype(np.uint8)


def static_video() -> np.ndarray:
    return np.repeat(TEXTURE[None, :H, :W], T, axis=0)


def translation_video(step: int = 2) -> np.ndarray:
    """The texture seen through a window sliding `step` px per frame: new content enters at the border."""
    return np.stack([TEXTURE[10 : 10 + H, step * t : step * t + W] for t in range(T)])


def noisy_translation_video() -> np.ndarray:
    noise = np.random.default_rng(2).normal(0, 2, (T, H, W, 3)).round().astype(np.int16)
    return np.clip(translation_video().astype(np.int16) + noise, 0, 255).astype(np.uint8)


def seams_video() -> np.ndarray:
    """Translation whose brightness jumps by 10 grey levels between chunks of 8 frames (a decode seam)."""
    return brighten(translation_video(), [10 * ((t // CHUNK) % 2) for t in range(T)])


def flicker_video() -> np.ndarray:
    """A still picture whose brightness jumps randomly by up to 10 grey levels every frame."""
    return brighten(static_video(), np.random.default_rng(1).integers(-10, 11, T))


@pytest.fixture(scope="module")
def suites() -> dict[str, dict]:
    videos = {
        "static": static_video(),
        "translation": translation_video(),
        "noisy_translation": noisy_translation_video(),
        "seams": seams_video(),
        "flicker": flicker_video(),
    }
    return {name: compute_suite(frames, decode_chunk_size=CHUNK) for name, frames in videos.items()}


# --- the synthetic videos: each metric moves the right way, by the right order ---------------------------


def test_static_video_scores_perfectly(suites):
    s = suites["static"]
    assert s["temporal_flickering"] == 1.0
    assert s["static"] is True
    assert s["warp_error"] < 1e-9 and s["warp_valid_fraction"] > 0.99
    assert s["luma_diff1"] == 0.0 and s["luma_diff2"] == 0.0
    assert s["motion_mean"] < 0.01 and s["motion_top5"] < 0.05
    assert s["boundary_warp_ratio"] == 1.0 and s["boundary_luma_ratio"] == 1.0  # nothing changes, no seam


def test_translation_moves_without_flicker(suites):
    """Rigid motion: VBench's score drops, yet warping explains every pixel and no brightness changes."""
    s, still = suites["translation"], suites["static"]
    assert s["temporal_flickering"] < still["temporal_flickering"] - 0.02  # dominated by motion
    assert s["warp_error"] < 1e-5  # RMS residual under 0.3 % of full scale
    assert s["warp_valid_fraction"] > 0.9  # only the entering border column is masked
    assert s["static"] is False
    assert 1.9 < s["motion_mean"] < 2.1 and 1.9 < s["motion_top5"] < 2.5  # 2 px per frame
    assert s["luma_diff1"] < 0.2
    assert s["boundary_warp_ratio"] == pytest.approx(1.0, abs=0.5)


def test_noisy_translation_has_no_seam(suites):
    """Per-pixel noise lifts every pair's warp error alike: boundary and inside pairs agree."""
    s = suites["noisy_translation"]
    assert 2e-5 < s["warp_error"] < 5e-4
    assert s["boundary_warp_ratio"] == pytest.approx(1.0, abs=0.2)
    assert 0.2 < s["boundary_luma_ratio"] < 5


def test_seams_at_chunk_boundaries_stand_out(suites):
    s, smooth = suites["seams"], suites["translation"]
    assert s["chunk_boundary_pairs"] == [7, 15, 23]
    assert s["boundary_warp_ratio"] > 100
    assert s["boundary_luma_ratio"] > 20
    per_pair = np.array(s["warp_error_per_pair"])
    jumps = [7, 15]  # 23 joins two chunks of equal brightness
    assert per_pair[jumps].min() == pytest.approx((10 / 255) ** 2, rel=0.1)  # the seam's squared step
    assert per_pair[jumps].min() > 100 * np.delete(per_pair, [7, 15, 23]).max()
    assert s["luma_diff1"] > 5 * smooth["luma_diff1"]
    assert s["motion_mean"] == pytest.approx(smooth["motion_mean"], abs=0.05)  # brightness is not motion


def test_brightness_flicker_is_photometric_not_motion(suites):
    s, still = suites["flicker"], suites["static"]
    assert s["static"] is True
    assert s["motion_mean"] < 0.05
    assert 4 < s["luma_diff1"] < 10  # E|X - Y| = 7.3 for X, Y uniform on -10..10
    assert s["luma_diff2"] > s["luma_diff1"]  # jitter, not a drift
    assert s["warp_error"] > 1e-4 > still["warp_error"]
    assert 0.95 < s["temporal_flickering"] < still["temporal_flickering"]


def test_metrics_rank_the_videos(suites):
    """The order each metric puts the videos in, from least to most of what it measures."""

    def order(key):
        return sorted(["static", "translation", "seams", "flicker"], key=lambda name: suites[name][key])

    assert order("warp_error") == ["static", "translation", "seams", "flicker"]
    assert order("luma_diff1") == ["static", "translation", "seams", "flicker"]
    assert order("motion_mean")[-2:] in (["translation", "seams"], ["seams", "translation"])
    assert order("temporal_flickering")[-1] == "static"


# --- exact definitions ------------------------------------------------------------------------------------


def vbench_reference(frames: np.ndarray) -> float:
    """VBench's temporal_flickering, pair by pair in float64, as its reference code does."""
    per_pair = [np.mean(np.abs(frames[t + 1].astype(np.float64) - frames[t])) for t in range(len(frames) - 1)]
    return 1.0 - np.mean(per_pair) / 255.0


def random_video() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (7, 33, 47, 3), np.uint8)


@pytest.mark.parametrize("make", [random_video, seams_video])
def test_temporal_flickering_matches_the_per_pair_reference(make):
    frames = make()
    assert compute_suite(frames)["temporal_flickering"] == pytest.approx(vbench_reference(frames), abs=1e-6)
    assert abs(compute_suite(frames)["temporal_flickering"] - vbench_reference(frames)) < 1e-12


def test_luma_and_boundaries_follow_their_definitions(suites):
    frames = seams_video()
    s = suites["seams"]
    luma = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(s["luma_per_frame"], luma.mean(axis=(1, 2)), atol=1e-9)
    assert np.allclose(s["luma_change_per_pair"], np.abs(np.diff(luma.mean(axis=(1, 2)))), atol=1e-9)
    assert boundary_pairs(25, 8) == [7, 15, 23]
    assert boundary_pairs(14, 4) == [3, 7, 11]
    assert boundary_pairs(14, 14) == boundary_pairs(14, None) == boundary_pairs(14, 20) == []


@pytest.mark.parametrize("chunk", [None, T, T + 5, 1])
def test_no_boundary_ratio_without_inside_and_boundary_pairs(chunk):
    s = compute_suite(translation_video()[:T], decode_chunk_size=chunk)
    assert s["boundary_warp_ratio"] is None and s["boundary_luma_ratio"] is None
    assert s["chunk_boundary_pairs"] == (list(range(T - 1)) if chunk == 1 else [])


# --- side by side with the references: Lai et al., EvalCrafter, VBench, and where svdbench departs ---------


def lai_warp_error(img1: np.ndarray, warp_img2: np.ndarray, noc_mask: np.ndarray) -> float:
    """Lai et al.'s evaluate_WarpError.py for one pair: its occlusion mask is read as a 3-channel image, so N
    counts values (pixels x 3); with no kept value N is all values and the masked residual, all zeros, scores 0."""
    mask = np.repeat(noc_mask[..., None], 3, axis=2).astype(np.float64)
    diff = (warp_img2.astype(np.float64) - img1) / 255.0 * mask
    n = mask.sum() or diff.size
    return float(np.sum(diff**2) / n)


def evalcrafter_warp_error(img1: np.ndarray, warp_img2: np.ndarray, noc_mask: np.ndarray) -> float:
    """EvalCrafter's compute_video_warping_error for one pair: an H x W mask, so N counts pixels."""
    mask = noc_mask.astype(np.float64)
    diff = (warp_img2.astype(np.float64) - img1) / 255.0 * mask[..., None]
    n = mask.sum() or diff.size
    return float(np.sum(diff**2) / n)


def test_warp_error_on_lai_and_evalcrafter_scales():
    """A still picture whose R, G, B step by 4, 8 and 12 grey levels: the flow is 0 and every pixel is kept,
    so both references can be evaluated on the frames themselves, and EvalCrafter's is 3x Lai et al.'s."""
    still = TEXTURE[:H, :W] // 2 + 40  # 40..167: no clipping after +12
    frames = np.stack([still, still + np.array([4, 8, 12], np.uint8)])
    s = compute_suite(frames)
    assert s["warp_valid_fraction"] > 0.95 and s["motion_mean"] < 0.05
    everything = np.ones((H, W), bool)
    lai, evalcrafter = (ref(frames[0], frames[1], everything) for ref in (lai_warp_error, evalcrafter_warp_error))
    assert lai == pytest.approx((16 + 64 + 144) / 3 / 255**2) and evalcrafter == pytest.approx(3 * lai)
    assert s["warp_error"] == pytest.approx(lai, rel=0.01)
    assert s["warp_error_evalcrafter"] == pytest.approx(evalcrafter, rel=0.01)
    assert s["warp_error_evalcrafter"] == pytest.approx(3 * s["warp_error"], rel=1e-12)
    assert (
        METRICS["warp_error_evalcrafter"].direction == LOWER
        and "3 x warp_error" in METRICS["warp_error_evalcrafter"].definition
    )
    assert compute_suite(frames[:1])["warp_error_evalcrafter"] is None


def masks_eat_the_pair(kept: int, size: tuple[int, int] = (60, 80)):
    """A pair whose flow is known exactly: forward flow 0 everywhere, backward flow 0 at the first `kept`
    pixels (consistent) and 3 px elsewhere (|F_fw + F_bw|^2 = 9 > 0.01 x 9 + 0.5: occluded). Frame t+1 is
    2 grey levels brighter at the kept pixels and 10 brighter elsewhere."""
    h, w = size
    forward = np.zeros((h, w, 2), np.float32)
    backward = np.full((h, w, 2), [3.0, 0.0], np.float32)
    backward.reshape(-1, 2)[:kept] = 0
    rgb0 = np.full((h, w, 3), 100, np.float32)
    rgb1 = np.full((h, w, 3), 110, np.float32)
    rgb1.reshape(-1, 3)[:kept] = 102
    grid = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    noc = np.zeros(h * w, bool)
    noc[:kept] = True
    result = flow.warp_residual(forward, backward, rgb0, rgb1, grid, factor=1)
    return result, rgb0, rgb1, noc.reshape(h, w)


@pytest.mark.parametrize("kept", [0, 24, 47, 48, 96])
def test_pairs_the_masks_eat_are_scored_over_all_pixels(kept):
    """The documented rule: under 1 % of pixels kept (48 of 4800 here), the pair is scored over all pixels, where
    Lai et al. and EvalCrafter score the few kept pixels, and a pair with none kept 0."""
    result, rgb0, rgb1, noc = masks_eat_the_pair(kept)
    total = 60 * 80
    assert result.valid_fraction == kept / total
    over_all = np.mean((rgb1.astype(np.float64) - rgb0) ** 2) / 255**2
    assert over_all == pytest.approx((kept * 4 + (total - kept) * 100) / total / 255**2)
    lai = lai_warp_error(rgb0, rgb1, noc)
    if kept < flow.MIN_VALID_FRACTION * total:
        assert result.warp_error == pytest.approx(over_all, rel=1e-9)
        assert lai == (0.0 if kept == 0 else pytest.approx(4 / 255**2))  # where the references differ
        assert result.warp_error > 20 * lai
    else:
        assert result.warp_error == pytest.approx(4 / 255**2, rel=1e-9) == lai
    assert evalcrafter_warp_error(rgb0, rgb1, noc) == pytest.approx(3 * lai)


def test_a_negative_frame_counts_as_a_large_change():
    """A frame followed by its negative: the masks keep no pixel, which Lai et al.'s and EvalCrafter's code would
    score 0 (perfectly consistent); svdbench scores the pair over all pixels, near the unwarped difference."""
    frames = np.stack([TEXTURE[:H, :W], 255 - TEXTURE[:H, :W]])
    s = compute_suite(frames)
    assert s["warp_valid_fraction"] < flow.MIN_VALID_FRACTION
    unwarped = np.mean((frames[1].astype(np.float64) - frames[0]) ** 2) / 255**2
    assert 0.3 * unwarped < s["warp_error"] <= unwarped


def moving_block(consistent: bool, factor: int = 2):
    """Forward flow 0 except a block of 3 of 100 columns moving 10 px right; its backward flow agrees (it is
    consistent) or is 0 (it is not)."""
    forward = np.zeros((100, 100, 2), np.float32)
    forward[:, 40:43] = [10.0, 0.0]
    backward = np.zeros((100, 100, 2), np.float32)
    if consistent:
        backward[:, 50:53] = [-10.0, 0.0]  # where the block lands
    rgb = np.zeros((100, 100, 3), np.float32)
    grid = np.meshgrid(np.arange(100, dtype=np.float32), np.arange(100, dtype=np.float32))
    return flow.warp_residual(forward, backward, rgb, rgb, grid, factor)


def test_static_filter_ranks_only_consistent_flow():
    """The documented departure from VBench: a pair's top 2 % ranks the forward-backward-consistent pixels.
    VBench, ranking all pixels, would score both pairs 10 px x factor 2 = 20 px."""
    assert moving_block(consistent=True).motion_top2 == 20.0
    assert moving_block(consistent=False).motion_top2 == 0.0
    assert moving_block(consistent=False).motion_top5 == 0.0 and moving_block(consistent=True).motion_top5 > 5


def test_why_the_static_filter_masks_dis_flow():
    """The reason for that departure, measured: on the test card panning 1 px per frame (1.4 px per pair, far
    under the 6.75 px threshold at 576 x 1024), DIS's vectors on flat regions and straight edges fill the top
    2 % of all pixels, while the consistent pixels stay under the threshold."""
    t, h, w = 9, 576, 1024
    card = np.asarray(test_card(w + t + 16, h + t + 16))
    frames = np.stack([card[t - i : t - i + h, i : i + w] for i in range(t)])
    factor = flow.analysis_factor(h, w)
    small = flow.downscale(frames, factor)
    grays, rgb = flow.gray(small), small.astype(np.float32)
    grid = np.meshgrid(np.arange(small.shape[2], dtype=np.float32), np.arange(small.shape[1], dtype=np.float32))
    dis = flow.make_dis()
    masked = [
        flow.pair_flow(dis, grays[i], grays[i + 1], rgb[i], rgb[i + 1], grid, factor).motion_top2 for i in range(t - 1)
    ]
    every = [
        flow.top_means(flow.magnitude_px(dis.calc(grays[i], grays[i + 1], None), factor), (flow.TOP_STATIC,))[0]
        for i in range(t - 1)
    ]
    threshold = STATIC_PX_PER_256 * h / 256
    assert np.median(every) > 3 * threshold
    assert np.median(masked) < threshold


@pytest.mark.parametrize("seam, warp_ratio, luma_ratio", [(8, 384, 19.6), (3, 54, 7.35), (1, 6, 2.45)])
def test_seam_over_static_chunks_reads_a_large_but_finite_ratio(seam, warp_ratio, luma_ratio):
    """A still picture whose brightness steps by `seam` grey levels between chunks: the inside pairs do not change
    at all, so the floors (uint8 rounding noise of a difference: 1/6 grey level^2, 0.408 grey level) decide the
    ratio. With the old floors (1e-6 and 0.01) a +8 seam read 984 and 800."""
    frames = brighten(static_video(), [seam * ((t // CHUNK) % 2) for t in range(T)])
    s = compute_suite(frames, decode_chunk_size=CHUNK)
    assert SEAM_FLOOR_WARP == pytest.approx(1 / 6 / 255**2) and SEAM_FLOOR_LUMA == pytest.approx(0.408, abs=1e-3)
    assert s["boundary_warp_ratio"] == pytest.approx(warp_ratio, rel=0.02)
    assert s["boundary_luma_ratio"] == pytest.approx(luma_ratio, rel=0.02)


def test_no_seam_reads_about_one_even_with_noise():
    noise = np.random.default_rng(6).normal(0, 2, (T, H, W, 3)).round().astype(np.int16)
    frames = np.clip(static_video().astype(np.int16) + noise, 0, 255).astype(np.uint8)
    s = compute_suite(frames, decode_chunk_size=CHUNK)
    assert s["boundary_warp_ratio"] == pytest.approx(1.0, abs=0.1)
    assert s["boundary_luma_ratio"] == pytest.approx(1.0, abs=0.1)


def test_psnr_and_ssim():
    rng = np.random.default_rng(4)
    a = TEXTURE[:H, :W]
    noisy = np.clip(a + rng.normal(0, 5, a.shape), 0, 255).round().astype(np.uint8)
    mse = np.mean((a.astype(np.float64) - noisy) ** 2)
    assert psnr(a, noisy) == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    assert psnr(a, a) == PSNR_IDENTICAL
    one_off = a.copy()
    one_off[0, 0, 0] ^= 1
    assert 60 < psnr(a, one_off) < PSNR_IDENTICAL  # the cap stays above any real difference
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, noisy) == pytest.approx(ssim(noisy, a))
    worse = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).round().astype(np.uint8)
    assert 0 < ssim(a, worse) < ssim(a, noisy) < 1
    with pytest.raises(ValueError, match="same shape|one shape"):
        psnr(a, a[:-1])


def test_ssim_matches_a_textbook_implementation():
    """Wang et al.'s formula with an explicit 11 x 11 Gaussian window, in float64, without OpenCV."""
    rng = np.random.default_rng(5)
    a = TEXTURE[:64, :80]
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).round().astype(np.uint8)
    x, y = a.astype(np.float64), b.astype(np.float64)
    g = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def blur(v):  # "symmetric" padding repeats the edge pixel, like cv2.BORDER_REFLECT
        padded = np.pad(v, ((5, 5), (5, 5), (0, 0)), mode="symmetric")
        patches = np.lib.stride_tricks.sliding_window_view(padded, (11, 11), axis=(0, 1))
        return np.einsum("hwcij,ij->hwc", patches, window)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    expected = ((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean()
    assert ssim(a, b) == pytest.approx(expected, abs=1e-5)  # float32 arithmetic in ssim()


def test_first_frame_fidelity_against_the_reference():
    frames = translation_video()
    assert compute_suite(frames)["first_frame_psnr"] is None
    exact = compute_suite(frames, reference=frames[0])
    assert exact["first_frame_psnr"] == PSNR_IDENTICAL and exact["first_frame_ssim"] == pytest.approx(1.0)
    # A reference at another size is resized to the frames (bicubic), as the runner resizes the input.
    big = np.asarray(Image.fromarray(frames[0]).resize((2 * W, 2 * H), Image.Resampling.BICUBIC))
    resized = compute_suite(frames, reference=big)
    assert 30 < resized["first_frame_psnr"] < PSNR_IDENTICAL and resized["first_frame_ssim"] > 0.95
    other = compute_suite(frames, reference=static_video()[0][::-1].copy())
    assert other["first_frame_psnr"] < 20 and other["first_frame_ssim"] < 0.5


# --- edge cases and the output contract -------------------------------------------------------------------


def plain_json(value) -> bool:
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    return value is None or type(value) in (bool, int, float)


def test_suite_is_plain_json_and_every_key_is_defined(suites):
    for s in suites.values():
        assert json.loads(json.dumps(s, allow_nan=False)) == s
        assert all(plain_json(v) for v in s.values())
        assert set(s) == set(METRICS) - {"paired_chunk_psnr"}  # the runner adds that one
    assert all(m.direction in (HIGHER, LOWER, NA) and m.unit and m.definition for m in METRICS.values())
    assert METRICS["temporal_flickering"].direction == HIGHER and METRICS["warp_error"].direction == LOWER


def test_same_video_same_numbers(suites):
    """Bit for bit: a benchmark whose metrics wobble between runs could not tell two optimizations apart."""
    assert compute_suite(seams_video(), decode_chunk_size=CHUNK) == suites["seams"]


def test_docs_carry_the_same_table():
    assert markdown_table() in DOC.read_text(), (
        "run: python -c 'from svdbench.metrics.definitions import write_doc; write_doc()'"
    )


@pytest.mark.parametrize("num_frames", [1, 2])
def test_very_short_videos(num_frames):
    s = compute_suite(translation_video()[:num_frames], decode_chunk_size=CHUNK, reference=TEXTURE[:H, :W])
    json.dumps(s, allow_nan=False)
    assert len(s["luma_per_frame"]) == num_frames
    assert s["luma_diff2"] is None
    if num_frames == 1:
        pair_keys = ["temporal_flickering", "static", "warp_error", "luma_diff1", "motion_mean", "motion_top5"]
        assert all(s[key] is None for key in pair_keys)
        assert s["warp_error_per_pair"] == [] and s["luma_change_per_pair"] == []
    else:
        assert len(s["warp_error_per_pair"]) == 1 and s["motion_mean"] == pytest.approx(2, abs=0.2)
    assert s["first_frame_psnr"] is not None


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="uint8 RGB frames shaped T x H x W x 3"):
        compute_suite(static_video().astype(np.float32) / 255)
    with pytest.raises(ValueError, match="too small"):
        compute_suite(static_video()[:, :8, :8])
    with pytest.raises(ValueError, match="positive"):
        compute_suite(static_video(), decode_chunk_size=0)
    with pytest.raises(ValueError, match="reference image"):
        compute_suite(static_video(), reference=TEXTURE[:H, :W, 0])


# --- pictures ---------------------------------------------------------------------------------------------


def test_pictures(tmp_path, suites):
    strip = save_filmstrip(seams_video(), tmp_path / "strip.png", max_frames=6)
    with Image.open(strip) as image:
        assert image.format == "PNG" and image.width > image.height > 0
    plot = save_flicker_plot(suites["seams"], tmp_path / "flicker.png", decode_chunk_size=CHUNK)
    one = save_flicker_plot(compute_suite(static_video()[:1]), tmp_path / "one.png", decode_chunk_size=None)
    for path in (plot, one):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 400


# --- the paired decode check on a real (tiny) pipeline ----------------------------------------------------


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for a correctness test: on a shared 2-core machine, two OpenMP threads that
    wait for each other made this tiny pipeline 5 to 100 times slower (0.1 s against 0.5 to 12 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_paired_chunk_psnr_on_the_tiny_pipeline(tiny_pipeline, one_torch_thread):
    import torch

    from svdbench.media.image import test_card

    latents = {}

    def keep_latents(pipe, step, timestep, tensors):
        latents["final"] = tensors["latents"]  # after the last step: what the VAE decodes
        return {}

    frames = tiny_pipeline(
        test_card(64, 64),
        height=64,
        width=64,
        num_frames=6,
        num_inference_steps=2,
        decode_chunk_size=4,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        callback_on_step_end=keep_latents,
        callback_on_step_end_tensor_inputs=["latents"],
    ).frames
    final = latents["final"]
    assert final.shape == (1, 6, 4, 8, 8)
    # The helper decodes exactly as the pipeline does: same frames for the same chunk size.
    assert np.array_equal(decode_to_uint8(tiny_pipeline, final, 6, 4)[0], to_uint8(frames[0]))
    chunked = paired_chunk_psnr(tiny_pipeline, final, 6, 4)
    assert 0 < chunked < PSNR_IDENTICAL  # the VAE's temporal layers see different neighbours per chunk
    assert paired_chunk_psnr(tiny_pipeline, final, 6, 6) == PSNR_IDENTICAL


# --- the command line -------------------------------------------------------------------------------------


def run_metrics(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svdbench.metrics", *args],
        cwd=cwd,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_on_mp4_gif_and_folder(tmp_path):
    frames = seams_video()[:12]
    write_mp4(tmp_path / "video.mp4", frames, fps=7)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "video.gif", save_all=True, append_images=images[1:], duration=140, loop=0)
    (tmp_path / "frames").mkdir()
    for i, image in enumerate(images):
        image.save(tmp_path / "frames" / f"frame_{i}.png")  # unpadded: frame_10 must come after frame_9
    Image.fromarray(frames[0]).save(tmp_path / "reference.png")

    proc = run_metrics(tmp_path, "video.mp4", "--json", "--decode-chunk-size", "8", "--reference", "reference.png")
    assert proc.returncode == 0, proc.stderr
    mp4 = json.loads(proc.stdout)  # exactly one JSON object on stdout; the log went to stderr
    assert mp4["frames"] == 12 and (mp4["height"], mp4["width"]) == (H, W)
    assert mp4["chunk_boundary_pairs"] == [7] and mp4["boundary_luma_ratio"] > 20
    assert 30 < mp4["first_frame_psnr"] < PSNR_IDENTICAL  # H.264 is lossy

    proc = run_metrics(tmp_path, "frames", "--json", "--pictures", "pictures")
    assert proc.returncode == 0, proc.stderr
    folder = json.loads(proc.stdout)
    assert folder == compute_suite(frames)  # lossless: the same numbers as in memory
    pictures = tmp_path / "pictures"
    assert (pictures / "filmstrip.png").is_file() and (pictures / "flicker_plot.png").is_file()

    proc = run_metrics(tmp_path, "video.gif")
    assert proc.returncode == 0, proc.stderr
    assert "temporal_flickering" in proc.stdout and "higher is better" in proc.stdout


@pytest.mark.parametrize("case", ["missing", "unreadable", "empty folder", "mixed sizes", "one image", "tiny"])
def test_cli_errors(tmp_path, capsys, case):
    target = tmp_path / "input"
    if case == "unreadable":
        target = tmp_path / "broken.mp4"
        target.write_bytes(b"this is not a video" * 50)
    elif case == "empty folder":
        target.mkdir()
        (target / "notes.txt").write_text("no frames here")
    elif case == "mixed sizes":
        target.mkdir()
        Image.new("RGB", (64, 48)).save(target / "a.png")
        Image.new("RGB", (64, 40)).save(target / "b.png")
    elif case == "one image":
        target = tmp_path / "frame.png"
        Image.new("RGB", (64, 48)).save(target)
    elif case == "tiny":
        target.mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(target / f"{i}.png")
    assert metrics_main([str(target), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    expected = {
        "missing": "does not exist",
        "unreadable": "could not be decoded as a video",
        "empty folder": "folder without frame images",
        "mixed sizes": "different sizes",
        "one image": "single image",
        "tiny": "too small",
    }[case]
    assert err.startswith("error: ") and expected in err and str(target) in err
    assert len(err.strip().splitlines()) == 1  # one paragraph


def test_cli_error_exit_status_in_a_subprocess(tmp_path):
    proc = run_metrics(tmp_path, "nothing.mp4")
    assert proc.returncode == 2
    assert proc.stdout == "" and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def save_frames(folder, frames) -> str:
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    return str(folder)


def note_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note: ")]


def test_cli_notes_say_what_the_missing_figures_need(tmp_path, capsys):
    video = save_frames(tmp_path / "frames", seams_video()[:12])
    Image.fromarray(seams_video()[0]).save(tmp_path / "reference.png")

    assert metrics_main([video, "--json"]) == 0
    out, err = capsys.readouterr()
    suite = json.loads(out)
    assert suite["boundary_warp_ratio"] is None and suite["first_frame_psnr"] is None
    notes = note_lines(err)
    assert len(notes) == 2
    assert "boundary_warp_ratio" in notes[0] and "--decode-chunk-size" in notes[0]
    assert "first_frame_psnr" in notes[1] and "--reference" in notes[1]

    assert (
        metrics_main([video, "--json", "--decode-chunk-size", "8", "--reference", str(tmp_path / "reference.png")]) == 0
    )
    out, err = capsys.readouterr()
    suite = json.loads(out)
    assert suite["boundary_warp_ratio"] > 1 and suite["first_frame_psnr"] == PSNR_IDENTICAL
    assert note_lines(err) == []

    assert metrics_main([video, "--decode-chunk-size", "20", "--reference", str(tmp_path / "reference.png")]) == 0
    out, err = capsys.readouterr()
    (note,) = note_lines(err)
    assert "--decode-chunk-size 20 puts 0 of the 11 pairs across chunks" in note


def test_cli_on_a_one_frame_video(tmp_path, capsys):
    """Exit 0 with the per-frame figures, and one line saying why the temporal ones are '-'."""
    video = save_frames(tmp_path / "one", translation_video()[:1])
    Image.fromarray(translation_video()[0]).save(tmp_path / "reference.png")
    assert (
        metrics_main([video, "--json", "--decode-chunk-size", "8", "--reference", str(tmp_path / "reference.png")]) == 0
    )
    out, err = capsys.readouterr()
    suite = json.loads(out)
    assert suite["frames"] == 1 and len(suite["luma_per_frame"]) == 1 and suite["first_frame_psnr"] == PSNR_IDENTICAL
    (note,) = note_lines(err)
    assert "has 1 frame" in note and "at least 2 frames" in note
    for key in ("temporal_flickering", "warp_error", "warp_error_evalcrafter", "static", "boundary_warp_ratio"):
        assert suite[key] is None and key in note

    assert metrics_main([video]) == 0  # the table: every temporal figure a "-"
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert rows["temporal_flickering"] == rows["warp_error"] == "-" and rows["frames"] == "1"
    assert len(note_lines(err)) == 2  # the frame count, and the missing reference


@pytest.mark.parametrize("role", ["video", "reference"])
def test_cli_refuses_a_named_pipe(tmp_path, capsys, role):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    video = save_frames(tmp_path / "frames", static_video()[:3])
    argv = [str(fifo)] if role == "video" else [video, "--reference", str(fifo)]
    assert returns_quickly(lambda: metrics_main(argv), fifo) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "named pipe (FIFO)" in err and str(fifo) in err
    assert len(err.strip().splitlines()) == 1


def test_cli_turns_an_exif_rotated_reference_upright(tmp_path, capsys):
    """A reference stored sideways with EXIF Orientation 6 (as phones store portrait photos) is compared upright."""
    frames = static_video()[:3]
    video = save_frames(tmp_path / "frames", frames)
    sideways = Image.fromarray(frames[0]).transpose(Image.Transpose.ROTATE_90)  # stored W x H swapped
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    sideways.save(tmp_path / "reference.jpg", quality=95, exif=exif)
    assert metrics_main([video, "--json", "--reference", str(tmp_path / "reference.jpg")]) == 0
    upright = json.loads(capsys.readouterr().out)["first_frame_psnr"]
    sideways.save(tmp_path / "plain.jpg", quality=95)  # the same pixels without the tag
    assert metrics_main([video, "--json", "--reference", str(tmp_path / "plain.jpg")]) == 0
    assert upright > 30 > json.loads(capsys.readouterr().out)["first_frame_psnr"] + 10
