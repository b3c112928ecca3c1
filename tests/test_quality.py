"""The quality samples' parts that need no pipeline: the built-in images (offline), VMAF through imageio-ffmpeg's
ffmpeg, the bootstrap interval, the verdict's bands, and the pairing of two runs' samples."""

from __future__ import annotations

import socket
import sys

import cv2
import numpy as np
import pytest

from svdbench.quality.bootstrap import RESAMPLES, Estimate, bootstrap_mean, samples_needed
from svdbench.quality.images import IMAGE_SET, QualityImagesError, image_set
from svdbench.quality.paired import pair_scores
from svdbench.quality.records import QualitySample, QualitySamples, sample_key
from svdbench.quality.samples import add_array, load_sample
from svdbench.quality.verdict import FAITHFUL, INCONCLUSIVE, LOSSLESS, LOSSY, compare_samples, decide
from svdbench.quality.vmaf import vmaf


def moving_video(frames: int = 6, size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth random texture panning 2 px per frame: content VMAF and flow can work with."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(
        rng.integers(0, 256, (size + 2 * frames, size + 2 * frames, 3), dtype=np.uint8), (0, 0), 2
    )
    return np.stack([texture[:size, 2 * t : 2 * t + size] for t in range(frames)])


def test_image_set_loads_with_no_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    images = image_set(str(len(IMAGE_SET)), 128, 64)
    assert [name for name, _ in images] == [image.name for image in IMAGE_SET]
    assert len(images) >= 6
    for _, picture in images:
        assert picture.size == (128, 64) and picture.mode == "RGB"
    arrays = [np.asarray(p) for _, p in images]
    assert len({a.tobytes() for a in arrays}) == len(arrays)  # all different photographs
    assert "skimage" not in sys.modules  # read as files: scikit-image itself is never imported


def test_image_folder(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "b.png")
    Image.new("L", (30, 40), 90).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images = image_set(str(tmp_path), 64, 64)
    assert [name for name, _ in images] == ["a", "b"]
    assert all(p.size == (64, 64) and p.mode == "RGB" for _, p in images)
    (tmp_path / "empty").mkdir()
    with pytest.raises(QualityImagesError, match="holds no images"):
        image_set(str(tmp_path / "empty"), 64, 64)


def test_vmaf_top_for_itself_lower_for_degraded():
    video = moving_video(frames=8, size=128)
    same = vmaf(video, video)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.5) for f in video])
    degraded = vmaf(blurred, video)
    assert same >= 97.0  # the top of the 0-100 scale (static-ish frames lose a little to the motion feature)
    assert degraded < same - 10


def test_bootstrap_on_known_samples():
    constant = bootstrap_mean([3.0] * 5)
    assert (constant.mean, constant.lo, constant.hi, constant.n) == (3.0, 3.0, 3.0, 5)
    values = np.random.default_rng(1).normal(10.0, 2.0, 400)
    estimate = bootstrap_mean(values)
    assert estimate.lo < estimate.mean < estimate.hi
    # The normal-theory 95 % half-width, 1.96 s / sqrt(n), is what the percentile bootstrap approaches.
    expected = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert estimate.half_width == pytest.approx(expected, rel=0.15)
    assert bootstrap_mean(values) == estimate  # seeded: the same samples give the same interval
    assert bootstrap_mean([1.0, None, float("nan"), 2.0]).n == 2
    one = bootstrap_mean([5.0])
    assert one.n == 1 and one.lo == one.hi == 5.0 and "no interval" in one.text()
    assert RESAMPLES >= 1000


def test_verdict_bands():
    assert decide(Estimate(200.0, 200.0, 200.0, 4), 1, 50.4)[0] == LOSSLESS
    assert decide(Estimate(60.0, 55.0, 64.0, 4), 5, 50.4)[0] == FAITHFUL
    assert decide(Estimate(40.0, 38.0, 42.0, 4), 5, 50.4)[0] == LOSSY
    verdict, reason, needed = decide(Estimate(51.0, 49.0, 53.0, 4), 5, 50.4)
    assert verdict == INCONCLUSIVE and "run more samples" in reason
    # half-width 2 dB at n=4, 0.6 dB from the threshold: n (2 / 0.6)^2 = 44.4 -> 45 samples
    assert needed == 45 == samples_needed(Estimate(51.0, 49.0, 53.0, 4), 50.4)
    assert "41 more" in reason


def write_samples(directory, videos: dict[tuple[str, int], np.ndarray]) -> QualitySamples:
    directory.mkdir(parents=True, exist_ok=True)
    record = QualitySamples(images="folder", seeds=sorted({s for _, s in videos}))
    for (image, seed), video in videos.items():
        key = sample_key(image, seed)
        add_array(directory / "samples.npz", key, video)
        record.samples.append(QualitySample(image, seed, key, {"warp_error": float(video.mean()) / 1000}))
    return record


def test_samples_pair_by_image_and_seed(tmp_path):
    base_videos = {(image, seed): moving_video(seed=10 * i + seed) for i, image in enumerate("ab") for seed in (0, 1)}
    rng = np.random.default_rng(5)
    noisy = {
        key: np.clip(v.astype(np.int16) + rng.integers(-3, 4, v.shape), 0, 255).astype(np.uint8)
        for key, v in base_videos.items()
    }
    base = write_samples(tmp_path / "base", base_videos)
    job = write_samples(tmp_path / "job", {**noisy, ("c", 0): moving_video(seed=99)})  # c has no baseline sample
    assert np.array_equal(load_sample(tmp_path / "job", "a_1"), noisy[("a", 1)])

    result = compare_samples(tmp_path / "job", job, tmp_path / "base", base, threshold=30.0)
    assert result.estimates["psnr_db"].n == 4 == len(result.per_sample)
    for name in ("vmaf", "psnr_db", "ssim", "tof", "motion_ratio", "warp_error_change"):
        e = result.estimates[name]
        assert e.lo <= e.mean <= e.hi, name
    assert result.verdict == FAITHFUL and result.max_diff == 3
    strict = compare_samples(tmp_path / "job", job, tmp_path / "base", base, threshold=60.0)
    assert strict.verdict == LOSSY
    same = compare_samples(tmp_path / "base", base, tmp_path / "base", base, threshold=30.0)
    assert same.verdict == LOSSLESS and same.estimates["tof"].mean == 0.0
    assert same.estimates["motion_ratio"].mean == 1.0


def test_pair_scores_of_identical_and_shifted():
    video = moving_video()
    same = pair_scores(video, video, with_vmaf=False)
    assert same.psnr_db == 200.0 and same.ssim == pytest.approx(1.0) and same.tof == 0.0 and same.max_diff == 0
    still = np.repeat(video[:1], len(video), axis=0)  # no motion at all
    moved = pair_scores(still, video, with_vmaf=False)
    assert moved.motion_ratio is not None and moved.motion_ratio < 0.2
    assert moved.tof is not None and moved.tof > 1.0  # the baseline pans 2 px per frame, the job stands still


def test_unreadable_samples_are_a_reason(tmp_path):
    video = moving_video()
    base = write_samples(tmp_path / "base", {("a", 0): video})
    job = write_samples(tmp_path / "job", {("a", 0): video})
    (tmp_path / "job" / "samples.npz").write_bytes(b"not a zip archive")
    judged = compare_samples(tmp_path / "job", job, tmp_path / "base", base, threshold=30.0)
    assert judged.verdict is None and "cannot be read" in judged.reason


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["quality.images=2"], "set both"),
        (["quality.seeds=2"], "set both"),
        (["quality.images=9", "quality.seeds=1"], "more than the built-in set"),
        (["quality.images=/no/such/folder", "quality.seeds=1"], "neither a number of images"),
        (["quality.images=2", "quality.seeds=-1"], "quality.seeds"),
    ],
)
def test_bad_quality_settings_are_refused(tmp_path, overrides, message):
    from .conftest import run_cli

    proc = run_cli(tmp_path, *overrides, "logger=none", "hydra.run.dir=run")
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_failing_sample_keeps_the_ones_before(tmp_path):
    """The pipeline call is a stand-in here: an out-of-memory error on demand cannot be made real on this CPU."""
    from svdbench.quality.samples import generate

    from .conftest import typed_config

    cfg = typed_config("quality.images=1", "quality.seeds=2", "height=64", "width=64", "num_frames=3")
    calls = []

    def call(picture, seed):
        calls.append((picture.size, seed))
        if len(calls) == 2:
            raise MemoryError("out of memory (stand-in)")
        return np.full((1, 3, 64, 64, 3), 0.5, dtype=np.float32)

    record, spool = generate(cfg, call)
    try:
        assert calls == [((64, 64), 42), ((64, 64), 43)]
        assert [s.key for s in record.samples] == ["astronaut_42"]
        assert "stopped after 1 sample(s): MemoryError" in record.error
        with np.load(spool) as archive:
            assert archive.files == ["astronaut_42"] and archive["astronaut_42"].shape == (3, 64, 64, 3)
    finally:
        spool.unlink()
