"""The quality samples in a comparison: a job's samples (quality.images x quality.seeds) against its baseline's,
paired by (image, seed) in svdbench.quality, as the job's verdict, the table's columns with their intervals, the
notes under the table and the JSON of `python -m svdbench.compare --json`.

A job whose run and baseline both made samples is judged on the samples (with n and intervals); otherwise on its
one video as before (svdbench.compare.gate).
"""

from __future__ import annotations

from typing import Any

from svdbench.compare import gate
from svdbench.quality.bootstrap import METHOD as BOOTSTRAP_METHOD
from svdbench.quality.verdict import INCONCLUSIVE, QualityVerdict, compare_samples
from svdbench.quality.vmaf import METHOD as VMAF_METHOD

# A job of svdbench.compare.jobs (not imported: jobs imports this module, and the layout test forbids cycles).
Job = Any

# Metric of svdbench.quality -> the table's column (the mean), beside `<column>_lo` and `<column>_hi`.
METRICS = {
    "vmaf": "samples_vmaf",
    "psnr_db": "samples_psnr_db",
    "ssim": "samples_ssim",
    "tof": "samples_tof",
    "motion_ratio": "samples_motion_ratio",
    "warp_error_change": "samples_warp_error_change",
    "temporal_flickering_change": "samples_temporal_flickering_change",
}
N_COLUMN = "samples_n"
COLUMNS = (N_COLUMN, *METRICS.values())
# The interval ends folded into their column's cell in comparison.md and report.html (the CSV keeps them apart).
FOLDED = {column: (f"{column}_lo", f"{column}_hi") for column in METRICS.values()}


def has_samples(job: Job) -> bool:
    quality = job.result.quality
    return quality is not None and bool(quality.samples)


def judge(
    job: Job, base: Job, threshold: float, expected: str | None, reasons: list[str]
) -> tuple[gate.Verdict, QualityVerdict] | None:
    """The job's verdict from its samples against the baseline's; None when either side made none."""
    if not has_samples(job) or not has_samples(base):
        return None
    assert job.result.quality is not None and base.result.quality is not None
    judged = compare_samples(job.directory, job.result.quality, base.directory, base.result.quality, threshold)
    if judged.verdict is None:
        return gate.Verdict(gate.UNKNOWN, expected, min_psnr_db=threshold, reason=judged.reason), judged
    psnr = judged.estimates["psnr_db"]
    reason = judged.reason if judged.verdict == INCONCLUSIVE else "; ".join(reasons)
    verdict = gate.Verdict(
        judged.verdict, expected, psnr_db=psnr.mean, max_diff=judged.max_diff, min_psnr_db=threshold, reason=reason
    )
    return verdict, judged


def cells(job: Job) -> dict[str, Any]:
    """The job's sample columns: n, and each metric's mean and interval (None where not judged on samples)."""
    judged: QualityVerdict | None = getattr(job, "quality", None)
    row: dict[str, Any] = {N_COLUMN: None}
    for metric, column in METRICS.items():
        estimate = judged.estimates.get(metric) if judged is not None else None
        row[column] = estimate.mean if estimate is not None else None
        row[f"{column}_lo"] = estimate.lo if estimate is not None else None
        row[f"{column}_hi"] = estimate.hi if estimate is not None else None
        if estimate is not None:
            row[N_COLUMN] = estimate.n
    return row


def drop_empty(table: list[dict[str, Any]]) -> None:
    """The sample columns go when no job was judged on samples."""
    if all(row.get(N_COLUMN) is None for row in table):
        for row in table:
            for column in COLUMNS:
                for key in (column, f"{column}_lo", f"{column}_hi"):
                    row.pop(key, None)


def cell(row: dict[str, Any], key: str) -> str:
    """`99.1 (98.7 to 99.5)`; n as is."""
    value = row.get(key)
    if value is None:
        return ""
    if key == N_COLUMN:
        return str(value)
    low, high = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if low is None or high is None or row.get(N_COLUMN, 0) < 2:
        return f"{value:.4g}"
    return f"{value:.4g} ({low:.4g} to {high:.4g})"


def notes(jobs: list[Job]) -> list[str]:
    """How the sample columns were made, under the table."""
    if not any(getattr(job, "quality", None) is not None for job in jobs):
        return []
    return [
        f"samples_*: a job's quality samples (quality.images x quality.seeds) paired with its baseline's by image and "
        f"seed; {BOOTSTRAP_METHOD}; samples_n = pairs. VMAF: {VMAF_METHOD}. PSNR over all values (identical "
        "pairs count as 200 dB), SSIM of the luma, tOF = mean |flow difference| in pixels, motion ratio = mean flow "
        "magnitude of the job / the baseline's, flicker changes = job - baseline. The verdict of a job with samples: "
        "faithful when the PSNR interval's low end is at or above the threshold, lossy when its high end is below, "
        "inconclusive in between (run more samples), lossless when every pair is within 1 uint8 level "
        "(docs/comparison.md)."
    ]


def job_json(job: Job) -> dict[str, Any]:
    """A job's verdict for `compare --json`: the verdict, what it was meant to be, and per metric of its samples
    {mean, lo, hi, n} (empty without samples)."""
    verdict = job.verdict
    judged: QualityVerdict | None = getattr(job, "quality", None)
    return {
        "job": job.name,
        "status": job.result.status,
        "baseline": job.baseline.name if job.baseline is not None else None,
        "verdict": verdict.verdict if verdict is not None else None,
        "expected": verdict.expected if verdict is not None else None,
        "gate": ("fail" if verdict.failed else "pass")
        if verdict is not None and verdict.verdict in gate.RANK
        else None,
        "psnr_db": verdict.psnr_db if verdict is not None else None,
        "max_diff": verdict.max_diff if verdict is not None else None,
        "min_psnr_db": verdict.min_psnr_db if verdict is not None else None,
        "reason": verdict.reason if verdict is not None else "",
        "samples_needed": judged.samples_needed if judged is not None else None,
        "quality": judged.to_dict() if judged is not None else {},
        "per_sample": judged.per_sample if judged is not None else [],
    }


THUMB_HEIGHT = 72  # pixels of each frame in the page's sample grid


def thumbnail(frames: Any) -> str:
    """The first and the last frame of a sample side by side, as a PNG data URI for the sweep's page."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    first, last = (Image.fromarray(np.asarray(frames[i])) for i in (0, -1))
    width = max(1, round(first.width * THUMB_HEIGHT / first.height))
    strip = Image.new("RGB", (2 * width + 2, THUMB_HEIGHT), "white")
    for i, picture in enumerate((first, last)):
        strip.paste(picture.resize((width, THUMB_HEIGHT), Image.Resampling.BILINEAR), (i * (width + 2), 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grids(jobs: list[Job]) -> list[dict[str, Any]]:
    """Per job judged on samples: its samples (image x seed) beside the baseline's, first and last frame of
    each, with the pair's scores; for the sweep's page."""
    from svdbench.quality.samples import load_sample

    shown = []
    for job in jobs:
        judged: QualityVerdict | None = getattr(job, "quality", None)
        if judged is None or job.baseline is None or not judged.per_sample:
            continue
        samples = []
        for pair in judged.per_sample:
            frames, base = load_sample(job.directory, pair["key"]), load_sample(job.baseline.directory, pair["key"])
            scores = {
                "VMAF": pair.get("vmaf"),
                "PSNR dB": pair.get("psnr_db"),
                "SSIM": pair.get("ssim"),
                "tOF px": pair.get("tof"),
                "motion": pair.get("motion_ratio"),
                "max diff": pair.get("max_diff"),
            }
            samples.append(
                {
                    "image": pair["image"],
                    "seed": pair["seed"],
                    "job": thumbnail(frames) if frames is not None else "",
                    "baseline": thumbnail(base) if base is not None else "",
                    "scores": [
                        (k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in scores.items() if v is not None
                    ],
                }
            )
        verdict = job.verdict
        summary = ", ".join(
            f"{name} {judged.estimates[metric].text()}"
            for name, metric in (("VMAF", "vmaf"), ("PSNR", "psnr_db"), ("tOF", "tof"))
            if metric in judged.estimates
        )
        shown.append(
            {
                "name": job.name,
                "baseline": job.baseline.name,
                "verdict": verdict.verdict if verdict is not None else "",
                "reason": verdict.reason if verdict is not None else "",
                "summary": summary,
                "samples": samples,
            }
        )
    return shown
