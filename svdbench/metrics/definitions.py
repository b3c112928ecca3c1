"""Every metric of the suite in one table: direction, unit, one-line definition.

docs/metrics.md carries the same table between two markers; a test keeps them identical. After editing
the table here, regenerate the doc with
`python -c "from svdbench.metrics.definitions import write_doc; write_doc()"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HIGHER = "higher is better"
LOWER = "lower is better"
NA = "n/a"


@dataclass(frozen=True)
class Metric:
    direction: str  # HIGHER, LOWER or NA (descriptive values and metadata)
    unit: str
    definition: str


METRICS: dict[str, Metric] = {
    "frames": Metric(NA, "frames", "Number of frames T."),
    "height": Metric(NA, "px", "Frame height."),
    "width": Metric(NA, "px", "Frame width."),
    "analysis_size": Metric(
        NA, "px", "[height, width] of the area-downscaled copy on which flow, masks and warp error are computed."
    ),
    "temporal_flickering": Metric(
        HIGHER,
        "fraction 0..1",
        "VBench: 1 - mean over pairs of mean |x[t+1] - x[t]| over all pixels and channels, / 255 (VBench "
        "tables show it x100). Dominated by motion: compare it only between static videos.",
    ),
    "static": Metric(
        NA,
        "bool",
        "VBench's static-filter rule on DIS flow: at most round(2T/16) pairs have a top-2 % flow magnitude "
        "above 3 px per 256 px of the shorter side, and first<->last flow stays below 2x that count x threshold. "
        "Unlike VBench (all pixels of RAFT flow), a pair's top 2 % ranks only pixels whose forward and backward "
        "flow agree: DIS's arbitrary vectors on flat regions and straight edges would fill it.",
    ),
    "warp_error": Metric(
        LOWER,
        "MSE, values in [0, 1]",
        "Mean over pairs of warp_error_per_pair: Lai et al. 2018's warping error and scale (squared RGB residual "
        "per value, pixels x 3 channels). EvalCrafter uses the same error divided by pixels only, 3x this: see "
        "warp_error_evalcrafter.",
    ),
    "warp_error_per_pair": Metric(
        LOWER,
        "MSE, values in [0, 1], list of T-1",
        "Frame t+1 warped onto frame t with DIS flow; mean squared RGB residual over the values of pixels not "
        "masked as occluded (forward-backward check), motion boundary or out of frame. A pair with under 1 % "
        "of pixels kept (a cut, a flash, unrelated frames) is scored over all pixels, so the event counts; Lai "
        "et al.'s and EvalCrafter's code score a pair with no kept pixel 0, and one with a few over those few.",
    ),
    "warp_error_evalcrafter": Metric(
        LOWER,
        "squared RGB residual per pixel, values in [0, 1], 0..3",
        "warp_error on EvalCrafter's scale, exactly 3 x warp_error: EvalCrafter's compute_video_warping_error "
        "sums the squared residual over the 3 channels and divides by the number of unmasked pixels, not "
        "values. Same flow, masks and rules as warp_error (EvalCrafter uses RAFT at half size, so numbers are "
        "comparable in scale, not equal).",
    ),
    "warp_valid_fraction": Metric(NA, "fraction 0..1", "Share of pixels the warp-error masks kept, mean over pairs."),
    "luma_per_frame": Metric(NA, "grey level 0..255, list of T", "Mean BT.601 luma (0.299 R + 0.587 G + 0.114 B)."),
    "luma_change_per_pair": Metric(LOWER, "grey level 0..255, list of T-1", "|luma[t+1] - luma[t]|."),
    "luma_diff1": Metric(LOWER, "grey level 0..255", "Photometric flicker: mean |first difference| of frame luma."),
    "luma_diff2": Metric(
        LOWER,
        "grey level 0..255",
        "Mean |luma[t+1] - 2 luma[t] + luma[t-1]|: brightness jitter, blind to steady fades (None below 3 frames).",
    ),
    "decode_chunk_size": Metric(NA, "frames", "The VAE decode chunk the boundary ratios assume (None: one chunk)."),
    "chunk_boundary_pairs": Metric(
        NA, "pair indices", "Pairs t whose frames t and t+1 lie in different chunks: (t + 1) % decode_chunk_size == 0."
    ),
    "boundary_warp_ratio": Metric(
        LOWER,
        "ratio (1 = no seam)",
        "Mean warp error at chunk-boundary pairs / median warp error of the other pairs, both floored at "
        "2.56e-6 (1/6 grey level^2: the mean square of the difference of two values rounded to uint8), so a "
        "+8 grey-level seam in a static video reads 384, not about 1000; None without a boundary. A ratio of "
        "squared residuals: a seam twice as strong reads 4x.",
    ),
    "boundary_luma_ratio": Metric(
        LOWER,
        "ratio (1 = no seam)",
        "Mean luma change at chunk-boundary pairs / median luma change of the other pairs, both floored at "
        "0.408 grey level (the RMS difference of two values rounded to uint8), so a +8 grey-level seam in a "
        "static video reads 19.6, not 800; None without a boundary.",
    ),
    "motion_mean": Metric(
        NA,
        "px per frame",
        "Mean forward optical-flow magnitude over the pixels whose forward and backward flow agree, mean over pairs.",
    ),
    "motion_top5": Metric(
        NA,
        "px per frame",
        "Mean of the largest 5 % of those magnitudes in each pair, mean over pairs (a dynamic-degree proxy).",
    ),
    "first_frame_psnr": Metric(
        HIGHER, "dB", "PSNR of frame 0 against the conditioning image at frame size (200 = identical)."
    ),
    "first_frame_ssim": Metric(
        HIGHER, "-1..1", "SSIM (11x11 Gaussian window, sigma 1.5) of frame 0 against the conditioning image."
    ),
    "paired_chunk_psnr": Metric(
        HIGHER,
        "dB",
        "Runner only: PSNR between the same latents decoded in one chunk and in decode_chunk_size chunks "
        "(200 = identical).",
    ),
}

START = "<!-- metrics-table:start (generated from svdbench/metrics/definitions.py) -->"
END = "<!-- metrics-table:end -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def markdown_table() -> str:
    rows = ["| metric | direction | unit | definition |", "| --- | --- | --- | --- |"]
    rows += [f"| `{name}` | {m.direction} | {m.unit} | {m.definition} |" for name, m in METRICS.items()]
    return "\n".join([START, *rows, END])


def with_table(doc: str) -> str:
    """`doc` with the text between the markers replaced by the current table."""
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + markdown_table() + tail


def write_doc(path: Path = DOC) -> None:
    path.write_text(with_table(path.read_text()))
