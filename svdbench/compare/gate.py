"""The faithfulness gate: does an optimization mode change the video, and by as much as it is allowed to?

Every job of a comparison gets a verdict against its baseline job (opt=none with the same other settings), from
the exact uint8 frames both saved (frames.npz):

- `lossless`: the frames are bit-identical, or differ by at most LOSSLESS_MAX_LEVELS (1) uint8 level anywhere.
  A frame value is a float in [0, 1] rounded to one of 256 levels (svdbench.media.video.quantize); a float deviation
  smaller than one level (1/255) moves a value by at most one level, and only where it sits near a rounding
  boundary. So a difference of one level is what float rounding noise alone can cause; two levels cannot come
  from a deviation of less than one level.
- `faithful`: not lossless, but the PSNR of the frames against the baseline's is at least the threshold
  (gate.min_psnr_db, whose default is the measured PSNR between fp16 and bf16 runs: a change of precision
  users accept; docs/comparison.md).
- `lossy`: below the threshold.
- `unknown`: no verdict, with the reason (the job or its baseline failed, a side saved no frames, no baseline).

What a mode is meant to be comes from `expectation`, from its opt settings alone; a job fails the gate when
its verdict is worse than that (lossless < faithful < lossy), e.g. a mode meant to be lossless that is not.
The reasons per setting are in `REASONS` and in docs/comparison.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svdbench.pipeline.call import decode_frames
from svdbench.settings.config import OptConfig

LOSSLESS, FAITHFUL, LOSSY, UNKNOWN = "lossless", "faithful", "lossy", "unknown"
# The baseline job itself: compared with nothing.
BASELINE = "baseline"
VERDICTS = (LOSSLESS, FAITHFUL, LOSSY, UNKNOWN, BASELINE)
RANK = {LOSSLESS: 0, FAITHFUL: 1, LOSSY: 2}
# Largest |difference| of two uint8 frame values that float rounding alone can cause (see the module docstring).
LOSSLESS_MAX_LEVELS = 1

# Why each setting makes a mode lossless, faithful or lossy (docs/comparison.md repeats these).
REASONS = {
    "none": (LOSSLESS, "the baseline's own computation"),
    "offload": (
        LOSSLESS,
        "offload (model, sequential, group) only moves weights between host and device memory; every operation "
        "runs on the same device, with the same kernels and the same inputs",
    ),
    "forward_chunking": (
        FAITHFUL,
        "feed-forward chunking runs the same matmuls on slices of the rows; each output row is the same dot "
        "products, but BLAS/cuBLAS may pick another kernel (another summation order) for the smaller shape",
    ),
    "tf32": (FAITHFUL, "TF32 rounds matmul and convolution inputs to 10 mantissa bits (on GPUs that have it)"),
    "compile": (
        FAITHFUL,
        "torch.compile fuses kernels and reorders floating-point sums (and may pick other matmul algorithms)",
    ),
    "attention_backend": (
        FAITHFUL,
        "another attention kernel (flash, memory-efficient, cudnn, math) computes the same softmax(QK^T)V with "
        "another blocking and summation order (flash: online softmax)",
    ),
    "fuse_qkv": (
        FAITHFUL,
        "one fused projection matmul instead of three: the same dot products, but a wider matmul may use another "
        "kernel and summation order",
    ),
    "deepcache": (LOSSY, "DeepCache reuses deep features of earlier steps instead of computing them"),
    "deepcache_every_step": (
        FAITHFUL,
        "DeepCache with cache_interval=1 refreshes every step (no reuse), through its own forward path",
    ),
    "storage_dtype": (LOSSY, "the UNet's weights are stored in float8 (3 or 2 mantissa bits)"),
    "quantize": (LOSSY, "int8/float8 weights (and activations): quantization error by design"),
    "guidance_until_step": (
        LOSSY,
        "classifier-free guidance stops after opt.guidance_until_step steps: the later steps follow the "
        "conditional prediction alone",
    ),
    "dtype": (
        FAITHFUL,
        "it runs in another precision (dtype) than its baseline, and the threshold gate.min_psnr_db is by "
        "definition what an accepted change of precision costs",
    ),
    "decode_chunk_size": (
        LOSSY,
        "the temporal VAE decoder mixes frames within a chunk: another chunking decodes each frame with another "
        "temporal context",
    ),
}


def _chunks(value: int | None, num_frames: int | None) -> int | None:
    """The frames the decoder takes at a time (svdbench.pipeline.call.decode_frames), None for a whole video."""
    if not num_frames:
        return value
    chunk = decode_frames(value, num_frames)
    return None if chunk == num_frames else chunk


def expectation(
    opt: OptConfig,
    baseline_opt: OptConfig | None = None,
    num_frames: int | None = None,
    dtype: str | None = None,
    baseline_dtype: str | None = None,
) -> tuple[str, list[str]]:
    """What a job with these opt settings is meant to be against its baseline ("lossless", "faithful" or
    "lossy", the worst of its settings) and the reasons (one per setting that is not lossless). A baseline of
    another dtype (chosen with --ignore dtype or --baseline) makes the job at best faithful. Each setting counts
    where it differs from the schema's default (OptConfig), which changes nothing."""
    plain = OptConfig()
    found: list[tuple[str, str]] = []
    if dtype is not None and baseline_dtype is not None and dtype != baseline_dtype:
        found.append(REASONS["dtype"])
    if opt.offload != plain.offload:
        found.append(REASONS["offload"])
    if opt.forward_chunking:
        found.append(REASONS["forward_chunking"])
    if opt.tf32:
        found.append(REASONS["tf32"])
    if opt.compile.unet or opt.compile.vae:
        found.append(REASONS["compile"])
    if opt.attention_backend != plain.attention_backend:
        found.append(REASONS["attention_backend"])
    if opt.fuse_qkv:
        found.append(REASONS["fuse_qkv"])
    if opt.deepcache.enabled:
        every_step = opt.deepcache.cache_interval <= 1
        found.append(REASONS["deepcache_every_step" if every_step else "deepcache"])
    if opt.storage_dtype is not None:
        found.append(REASONS["storage_dtype"])
    if opt.quantize is not None:
        found.append(REASONS["quantize"])
    if opt.guidance_until_step is not None:
        found.append(REASONS["guidance_until_step"])
    base_chunks = _chunks(baseline_opt.decode_chunk_size, num_frames) if baseline_opt is not None else None
    if _chunks(opt.decode_chunk_size, num_frames) != base_chunks:
        found.append(REASONS["decode_chunk_size"])
    worst = max((verdict for verdict, _ in found), key=RANK.__getitem__, default=LOSSLESS)
    return worst, [reason for verdict, reason in found if verdict != LOSSLESS]


@dataclass
class Verdict:
    """A job's frames against its baseline's."""

    verdict: str  # one of VERDICTS
    expected: str | None  # what the job's settings are meant to be (`expectation`) (None for the baseline itself)
    psnr_db: float | None = None
    max_diff: int | None = None  # largest |difference| of two uint8 values
    differing: float | None = None  # share of the uint8 values that differ
    min_psnr_db: float | None = None
    reason: str = ""  # why unknown; the expectation's reasons otherwise

    @property
    def failed(self) -> bool:
        """Worse than the mode is meant to be (a mode meant to be lossless that is not, a faithful one that is
        lossy). An unknown verdict does not fail: there is nothing to judge (the gate lists it)."""
        if self.expected is None or self.verdict not in RANK:
            return False
        return RANK[self.verdict] > RANK[self.expected]

    def describe(self) -> str:
        """The deviation in words: "bit-identical", "max diff 1 level (0.3 % of values), PSNR 61.2 dB"."""
        if self.verdict in (UNKNOWN, BASELINE):
            return self.reason
        if self.max_diff == 0:
            return "bit-identical"
        shown = f"max |diff| {self.max_diff} uint8 level{'s' if self.max_diff != 1 else ''}"
        if self.differing is not None:
            shown += f" ({self.differing:.2%} of values differ)"
        if self.psnr_db is not None:
            shown += f", PSNR {self.psnr_db:.1f} dB"
        return shown


def classify(frames: np.ndarray, baseline: np.ndarray, min_psnr_db: float) -> tuple[str, float, int, float]:
    """(verdict, PSNR in dB, max |difference| in uint8 levels, share of differing values) of two uint8 videos of
    the same shape."""
    from svdbench.metrics import psnr

    a, b = np.asarray(frames), np.asarray(baseline)
    if a.shape != b.shape:
        raise ValueError(f"frames of shape {a.shape} and {b.shape} cannot be compared")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    max_diff = int(diff.max()) if diff.size else 0
    differing = float(np.count_nonzero(diff)) / diff.size if diff.size else 0.0
    value = psnr(a, b)
    if max_diff <= LOSSLESS_MAX_LEVELS:
        verdict = LOSSLESS
    elif math.isfinite(value) and value >= min_psnr_db:
        verdict = FAITHFUL
    else:
        verdict = LOSSY
    return verdict, value, max_diff, differing


def judge(
    frames: np.ndarray | None,
    baseline: np.ndarray | None,
    min_psnr_db: float,
    expected: str | None,
    unknown_reason: str | None = None,
    reasons: list[str] | None = None,
) -> Verdict:
    """The verdict of a job's frames against the baseline's; `unknown_reason` (a job or baseline that failed,
    no baseline) or missing frames give `unknown`."""
    if unknown_reason:
        return Verdict(UNKNOWN, expected, min_psnr_db=min_psnr_db, reason=unknown_reason)
    if frames is None or baseline is None:
        both = frames is None and baseline is None
        side = "the job and the baseline" if both else ("the job" if frames is None else "the baseline")
        return Verdict(
            UNKNOWN,
            expected,
            min_psnr_db=min_psnr_db,
            reason=f"no frames.npz from {side} (run with save_frames=true to judge it)",
        )
    if np.shape(frames) != np.shape(baseline):
        return Verdict(
            UNKNOWN,
            expected,
            min_psnr_db=min_psnr_db,
            reason=f"frames of shape {np.shape(frames)} against the baseline's {np.shape(baseline)}",
        )
    verdict, value, max_diff, differing = classify(frames, baseline, min_psnr_db)
    return Verdict(
        verdict,
        expected,
        psnr_db=value,
        max_diff=max_diff,
        differing=differing,
        min_psnr_db=min_psnr_db,
        reason="; ".join(reasons or []),
    )


ADVICE = {
    LOSSLESS: (
        "A mode meant to be lossless changed the frames: check what else differs from the baseline (the job's "
        "applied settings in results.json, the library versions), run the job and its baseline again on the same "
        "machine, and if it persists, the mode is not lossless here: report it, or pass --baseline/--ignore if "
        "the wrong baseline was chosen."
    ),
    FAITHFUL: (
        "The deviation is larger than the accepted change of precision: look at the two videos side by side; if "
        "it is acceptable for your use, lower the threshold with --min-psnr-db (or gate.min_psnr_db in the sweep), "
        "else do not use this mode for this model and dtype."
    ),
}


def failure_message(job: str, verdict: Verdict) -> str:
    """One paragraph: the job, expected against found, the deviation, and what to do."""
    assert verdict.expected is not None
    threshold = f" (threshold {verdict.min_psnr_db:g} dB)" if verdict.min_psnr_db is not None else ""
    why = f" It is expected to be {verdict.expected} because {verdict.reason}." if verdict.reason else ""
    if verdict.expected == LOSSLESS and not verdict.reason:
        why = " Nothing in its opt settings changes the arithmetic."
    return (
        f"Job {job} is meant to be {verdict.expected} and is {verdict.verdict}: {verdict.describe()}{threshold} "
        f"against its baseline.{why} {ADVICE[verdict.expected]}"
    )
