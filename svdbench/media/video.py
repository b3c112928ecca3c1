"""Frames in and out: uint8 conversion, mp4 writing with imageio-ffmpeg, reading videos back."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class BadFrames(ValueError):
    """The pipeline produced NaN/Inf or all-black frames (as fp16 decoders can)."""


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Pipeline output (T x H x W x 3 floats in [0, 1]) as uint8 RGB; raises BadFrames on NaN or black."""
    frames = np.asarray(frames)
    bad = ~np.isfinite(frames)
    if bad.any():
        raise BadFrames(
            f"{int(bad.any(axis=(1, 2, 3)).sum())} of {len(frames)} frames contain NaN or Inf values "
            "(fp16 overflow is the usual cause: try dtype=bf16 or dtype=fp32)."
        )
    out = quantize(frames)
    if out.max() == 0:
        raise BadFrames("All frames are black (the decoder output is zero everywhere).")
    return out


def quantize(frames: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] to uint8, rounding to the nearest level (what diffusers' "pil" output does too)."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    """H.264 mp4 (yuv420p, playable everywhere) at `fps` frames per second."""
    import imageio_ffmpeg

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    _, height, width, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=8,
        macro_block_size=2,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    check_mp4(Path(path))  # imageio-ffmpeg does not report an ffmpeg that failed to finish the file
    return Path(path)


def check_mp4(path: Path) -> None:
    """Raise OSError unless `path` is a complete MP4: top-level boxes that fill the file exactly and include the
    index (`moov`), which ffmpeg writes last, so a file cut short by a full disk has none."""
    size, offset, boxes = path.stat().st_size, 0, set()
    with open(path, "rb") as handle:
        while offset < size:
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                break
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1 and len(header) == 16:  # a 64-bit size follows the type
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                length = size - offset
            if length < 8:
                break
            boxes.add(kind)
            offset += length
    if offset != size or b"moov" not in boxes:
        raise OSError(f"{path.name} is incomplete ({size} bytes): ffmpeg could not finish writing it (see its message)")


def read_video(path: Path) -> tuple[np.ndarray, float | None]:
    """A video file (mp4, gif, ...) as T x H x W x 3 uint8 frames, and its frame rate if known."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = reader.__next__()
    width, height = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
    return np.stack(frames), meta.get("fps")
