"""The quality samples of a run: after the measured calls (never timed), one video per image x seed, each with
its own metrics, its exact frames spooled to a temporary file until the record writer copies it into the run
directory (samples.npz). One sample's frames are in memory at a time.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from svdbench.files.read import load_npz_array
from svdbench.media.video import to_uint8
from svdbench.metrics import compute_suite
from svdbench.quality.images import QualityImagesError, image_set
from svdbench.quality.records import SAMPLES_FILE, QualitySample, QualitySamples, sample_key
from svdbench.settings.config import RunConfig

log = logging.getLogger(__name__)

# The unpaired metrics kept per sample (the paired ones need the baseline's frames: svdbench.quality.paired).
SAMPLE_METRICS = ("temporal_flickering", "warp_error", "luma_diff1", "motion_mean")


def add_array(archive: Path, name: str, array: np.ndarray) -> None:
    """Append one array to an .npz archive (a zip of .npy files, as np.savez_compressed writes it), without
    reading the arrays already in it."""
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def generate(cfg: RunConfig, call: Callable[..., np.ndarray]) -> tuple[QualitySamples, Path | None]:
    """Every image x seed of cfg.quality through `call(picture, seed)` (the run's pipeline call, returning its
    batch's frames as floats in [0, 1]); returns the records and the spooled samples.npz (None if no sample was
    made). Images that cannot be read, or a sample that fails (out of memory, NaN frames), are recorded as `error`,
    not raised: the measurement before them, and the samples already made, stand."""
    started = time.perf_counter()
    seeds = [cfg.seed + k for k in range(cfg.quality.seeds)]
    record = QualitySamples(images=cfg.quality.images, seeds=seeds, method=METHOD)
    try:
        images = image_set(cfg.quality.images, cfg.width, cfg.height)
    except QualityImagesError as exc:
        record.error = str(exc)
        log.warning("No quality samples: %s", exc)
        return record, None
    record.image_names = [name for name, _ in images]
    handle, name = tempfile.mkstemp(prefix="svdbench-samples-", suffix=".npz")
    os.close(handle)
    spool = Path(name)
    spool.unlink()  # zipfile creates it on the first sample
    try:
        for image_name, picture in images:
            for seed in seeds:
                log.info("quality sample %s, seed %d", image_name, seed)
                video = to_uint8(call(picture, seed)[0])  # video 0 of the call's batch has this seed
                key = sample_key(image_name, seed)
                add_array(spool, key, video)
                suite = compute_suite(video)
                metrics = {name: suite.get(name) for name in SAMPLE_METRICS}
                record.samples.append(QualitySample(image=image_name, seed=seed, key=key, metrics=metrics))
                del video
    except Exception as exc:  # out of memory, NaN frames...: the samples made so far and the measurement stand
        record.error = f"stopped after {len(record.samples)} sample(s): {type(exc).__name__}: {str(exc)[:300]}"
        log.warning("Quality samples %s", record.error)
    except BaseException:  # Ctrl-C: nothing half-made is kept
        spool.unlink(missing_ok=True)
        raise
    record.seconds = time.perf_counter() - started
    if not record.samples:
        spool.unlink(missing_ok=True)
        return record, None
    return record, spool


METHOD = (
    "one video per image x seed after the measured calls (never timed), with the run's settings; video 0 of the "
    "call's batch; frames kept exactly (uint8) in samples.npz; per-sample metrics of svdbench.metrics"
)


def store(spool: Path, artifact: Callable) -> None:
    """The record writer's part: the spooled samples.npz copied into the run directory (through `artifact`, the
    writer's safe write), then the spool removed."""
    import shutil

    try:
        artifact("samples", SAMPLES_FILE, lambda tmp: shutil.copyfile(spool, tmp))
    finally:
        spool.unlink(missing_ok=True)


def load_sample(run_dir: Path, key: str) -> np.ndarray | None:
    """One sample's frames (T x H x W x 3 uint8) from a run directory's samples.npz; None if the run has no
    samples.npz. Read as a regular file under a size cap: svdbench.files.read.UnreadableFile if it is cut short,
    is no archive or lacks the sample."""
    path = Path(run_dir) / SAMPLES_FILE
    if not os.path.lexists(path):
        return None
    return load_npz_array(path, key)
