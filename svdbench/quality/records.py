"""The typed records of the quality samples, as results.json holds them (svdbench.record.results.RunResult.quality).

Light on purpose (no numpy, no torch): the results schema imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The file of a run directory holding every sample's exact uint8 frames, one array per sample named by its key.
SAMPLES_FILE = "samples.npz"


def sample_key(image: str, seed: int) -> str:
    """The name of a sample's array in samples.npz, and how compare pairs it with the baseline's."""
    return f"{image}_{seed}"


@dataclass
class QualitySample:
    """One video of the quality samples: its conditioning image, its seed and its own (unpaired) metrics."""

    image: str
    seed: int
    key: str = ""  # its array in samples.npz (sample_key)
    # temporal_flickering, warp_error, luma_diff1, motion_mean of svdbench.metrics (docs/metrics.md)
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass
class QualitySamples:
    """The quality samples of a run: every image x seed, generated after the measured calls (never timed)."""

    images: str = ""  # quality.images as given: a count of the built-in set, or a folder
    image_names: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    samples: list[QualitySample] = field(default_factory=list)
    seconds: float | None = None  # wall time of generating them and their metrics (not part of any timing)
    error: str | None = None  # why there are fewer samples than images x seeds (the measurement stands)
    method: str = ""
