"""The verdict of a job's quality samples against its baseline's, with the interval and the sample size.

Samples are paired by (image, seed). Per paired metric (svdbench.quality.paired) and per change of a flicker
metric (job - baseline), the mean over the pairs and its bootstrap interval (svdbench.quality.bootstrap). Then:

- `lossless`: every pair within svdbench's rounding tolerance (at most 1 uint8 level anywhere), exactly as the
  single-video gate: no interval is needed for an exact statement.
- `faithful`: the PSNR interval's pessimistic end (its low end) is at or above the threshold (gate.min_psnr_db).
- `lossy`: the optimistic end (the high end) is below it.
- `inconclusive`: the threshold lies inside the interval; the reason says how many samples in all would likely
  decide it, from the interval's width (half-width shrinking as 1/sqrt(n)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svdbench.files.read import UnreadableFile
from svdbench.quality.bootstrap import METHOD as BOOTSTRAP_METHOD
from svdbench.quality.bootstrap import Estimate, bootstrap_mean, samples_needed
from svdbench.quality.paired import PAIRED, PairScores, pair_scores
from svdbench.quality.records import QualitySamples
from svdbench.quality.samples import SAMPLE_METRICS, load_sample

LOSSLESS, FAITHFUL, LOSSY, INCONCLUSIVE = "lossless", "faithful", "lossy", "inconclusive"
LOSSLESS_MAX_LEVELS = 1  # as svdbench.compare.gate: what float rounding alone can change
# The changes of the per-sample flicker metrics, job - baseline, shown beside the paired metrics.
CHANGES = tuple(f"{name}_change" for name in SAMPLE_METRICS if name != "motion_mean")
METHOD = BOOTSTRAP_METHOD


@dataclass
class QualityVerdict:
    verdict: str | None  # LOSSLESS, FAITHFUL, LOSSY, INCONCLUSIVE; None when nothing could be paired
    estimates: dict[str, Estimate] = field(default_factory=dict)  # per metric
    per_sample: list[dict] = field(default_factory=list)  # image, seed and every score of each pair
    max_diff: int | None = None
    min_psnr_db: float | None = None
    reason: str = ""  # why no verdict; for inconclusive, how many samples would decide
    samples_needed: int | None = None  # for inconclusive: samples in all that would likely decide

    def to_dict(self) -> dict:
        return {name: estimate.to_dict() for name, estimate in self.estimates.items()}


def decide(psnr: Estimate, max_diff: int, threshold: float) -> tuple[str, str, int | None]:
    """(verdict, reason, samples needed) from the PSNR estimate and the largest difference over all pairs."""
    if max_diff <= LOSSLESS_MAX_LEVELS:
        return LOSSLESS, "", None
    assert psnr.mean is not None and psnr.lo is not None and psnr.hi is not None
    if psnr.lo >= threshold:
        return FAITHFUL, "", None
    if psnr.hi < threshold:
        return LOSSY, "", None
    needed = samples_needed(psnr, threshold)
    more = (
        f"about {needed} paired samples in all ({needed - psnr.n} more: raise quality.seeds or quality.images)"
        if needed is not None
        else "many more samples (the mean sits on the threshold)"
    )
    if psnr.n < 2:
        more = "at least 2 paired samples (one sample has no interval)"
    reason = (
        f"the PSNR interval {psnr.lo:.3g} to {psnr.hi:.3g} dB (n={psnr.n}) holds the threshold {threshold:g} dB: "
        f"run more samples; {more} would likely decide it"
    )
    return INCONCLUSIVE, reason, needed


def compare_samples(
    job_dir: Path,
    job: QualitySamples,
    base_dir: Path,
    base: QualitySamples,
    threshold: float,
    scores: Callable[[np.ndarray, np.ndarray], PairScores] = pair_scores,
) -> QualityVerdict:
    """Pair a job's samples with its baseline's by (image, seed), score each pair, and judge the set."""
    base_by_key = {s.key: s for s in base.samples}
    pairs = [(s, base_by_key[s.key]) for s in job.samples if s.key in base_by_key]
    if not pairs:
        return QualityVerdict(
            None,
            min_psnr_db=threshold,
            reason="no quality sample of the job has a baseline sample of its image and seed",
        )
    per_sample: list[dict] = []
    for sample, base_sample in pairs:
        try:
            frames, base_frames = load_sample(job_dir, sample.key), load_sample(base_dir, base_sample.key)
        except UnreadableFile as exc:
            return QualityVerdict(None, min_psnr_db=threshold, reason=f"quality samples cannot be read: {exc}")
        if frames is None or base_frames is None or frames.shape != base_frames.shape:
            continue
        row: dict = {"image": sample.image, "seed": sample.seed, "key": sample.key}
        row.update(scores(frames, base_frames).to_dict())
        for name in SAMPLE_METRICS:
            if name == "motion_mean":
                continue
            value, base_value = sample.metrics.get(name), base_sample.metrics.get(name)
            row[f"{name}_change"] = value - base_value if value is not None and base_value is not None else None
        per_sample.append(row)
        del frames, base_frames
    if not per_sample:
        return QualityVerdict(
            None,
            min_psnr_db=threshold,
            reason="the paired samples' frames are missing from samples.npz or differ in shape",
        )
    estimates = {name: bootstrap_mean([r.get(name) for r in per_sample]) for name in (*PAIRED, *CHANGES)}
    estimates = {name: e for name, e in estimates.items() if e.n > 0}
    max_diff = max(int(r["max_diff"]) for r in per_sample)
    verdict, reason, needed = decide(estimates["psnr_db"], max_diff, threshold)
    return QualityVerdict(verdict, estimates, per_sample, max_diff, threshold, reason, needed)
