"""`python -m svdbench` end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import numpy as np
import yaml

from svdbench.video import read_video

from .conftest import FAST, read_json, run_cli


def test_default_run_end_to_end(tmp_path):
    """No arguments: the tiny model, the embedded image, 25 steps, a video and a results.json."""
    proc = run_cli(tmp_path, "hydra.run.dir=outputs/run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "run"
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny" and config["num_inference_steps"] == 25
    frames, fps = read_video(run_dir / "video.mp4")
    assert frames.shape == (8, 128, 128, 3)
    assert fps == 7
    assert frames.std() > 5  # a picture, not a flat colour
    exact = np.load(run_dir / "frames.npz")["frames"]
    assert exact.shape == frames.shape and exact.dtype == np.uint8
    assert np.abs(exact.astype(int) - frames.astype(int)).mean() < 8  # the mp4 is lossy, but the same video
    result = read_json(run_dir / "results.json")
    assert result["status"] == "ok"
    assert result["latency"]["stats"]["n"] == 3 and result["latency"]["stats"]["median"] > 0
    assert result["throughput"]["frames_per_s"] > 0
    assert result["memory"]["host_peak_gib"] > result["memory"]["host_before_gib"] > 0
    assert "random weights" in " ".join(result["notes"]).lower()
    assert "measured 3/3" in proc.stderr  # progress was shown


def test_offload_on_cpu_is_recorded_as_unsupported(tmp_path):
    proc = run_cli(tmp_path, "hydra.run.dir=run", "opt=offload", "device=cpu", *FAST)
    assert proc.returncode == 1
    result = read_json(tmp_path / "run" / "results.json")
    assert result["status"] == "unsupported"
    assert "opt=offload is unsupported on device cpu" in result["reason"]
    assert "Traceback" not in proc.stderr


def test_cuda_device_without_cuda_is_unsupported(tmp_path):
    proc = run_cli(tmp_path, "hydra.run.dir=run", "device=cuda", *FAST)
    result = read_json(tmp_path / "run" / "results.json")
    assert proc.returncode == 1 and result["status"] == "unsupported"
    assert "no usable CUDA device" in result["reason"]


def test_multirun_sweep(tmp_path):
    proc = run_cli(
        tmp_path,
        "-m",
        "hydra.sweep.dir=sweep",
        "opt=none,chunking",
        "cond.motion_bucket_id=60,180",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [read_json(p) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert len(results) == 4
    assert {r["status"] for r in results} == {"ok"}
    assert sorted((r["opt"], r["cond"]) for r in results) == sorted(
        [("none", "default"), ("none", "default"), ("chunking", "default"), ("chunking", "default")]
    )
    assert {r["applied"]["forward_chunking_blocks"] > 0 for r in results if r["opt"] == "chunking"} == {True}
    # The motion bucket reached the pipeline: different conditioning, different frames.
    videos = {}
    for path in sorted((tmp_path / "sweep").glob("*/video.mp4")):
        overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        videos[tuple(sorted(o for o in overrides if o.startswith(("opt=", "cond."))))] = read_video(path)[0]
    a = videos[("cond.motion_bucket_id=60", "opt=none")]
    b = videos[("cond.motion_bucket_id=180", "opt=none")]
    assert not np.array_equal(a, b)
