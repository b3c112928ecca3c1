"""VMAF of a video against a reference, through the ffmpeg binary imageio-ffmpeg ships (its libvmaf filter has
the default model, vmaf_v0.6.1, built in: no other binary, no download).

Both videos go to ffmpeg as raw RGB (rgb24) files in a temporary directory and are converted to 8-bit YUV 4:4:4
(no chroma subsampling, so nothing but the colour conversion's rounding is added to the difference); VMAF is
the mean of its per-frame scores (ffmpeg's pooled mean). 0 to 100, higher is closer to the reference. Identical
videos score at the top of the scale (100 on most frames; a few frames of little motion score a little less,
since the motion feature is part of the model).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

MODEL = "vmaf_v0.6.1"
METHOD = (
    f"VMAF ({MODEL}, ffmpeg's libvmaf from imageio-ffmpeg) on 8-bit YUV 4:4:4 converted from the uint8 RGB frames, "
    "mean over frames"
)


class VmafError(RuntimeError):
    """ffmpeg could not compute VMAF; the message has its reason."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def vmaf(distorted: np.ndarray, reference: np.ndarray, threads: int | None = None) -> float:
    """Mean VMAF of `distorted` against `reference`, uint8 T x H x W x 3 videos of one shape."""
    a, b = np.asarray(distorted), np.asarray(reference)
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(
            f"VMAF compares two uint8 videos of one shape (frames x H x W x 3); got {a.dtype} {a.shape} and "
            f"{b.dtype} {b.shape}."
        )
    height, width = a.shape[1:3]
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="svdbench-vmaf-") as tmp:
        files = [Path(tmp) / "distorted.rgb", Path(tmp) / "reference.rgb"]
        for path, video in zip(files, (a, b)):
            np.ascontiguousarray(video).tofile(path)
        log = Path(tmp) / "vmaf.json"
        raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "25"]
        graph = (
            "[0:v]format=yuv444p[d];[1:v]format=yuv444p[r];"
            f"[d][r]libvmaf=model=version={MODEL}:log_fmt=json:log_path={log}:n_threads={threads}"
        )
        command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
        command += [*raw, "-i", str(files[0]), *raw, "-i", str(files[1]), "-lavfi", graph, "-f", "null", "-"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not log.is_file():
            raise VmafError(f"ffmpeg's libvmaf failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return float(json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"])
