"""Videos from other tools as uint8 RGB frames: mp4 (or any container ffmpeg reads), gif, a folder of images.

Every failure is a `VideoInputError` whose message says what was wrong and how to fix it; the CLI
prints it and exits with status 2. Only regular files (after following symlinks) and folders are read: a
named pipe would block forever and a device never ends. Images (frames and the reference) are turned
upright by their EXIF Orientation tag, as photo apps show them and as svdbench.media.image loads input.path.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from svdbench.media.image import not_a_regular_file, to_rgb, upright

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class VideoInputError(ValueError):
    """A video, folder of frames or reference image that cannot be used; the message says why."""


def _natural_key(path: Path) -> list:
    # frame_2.png before frame_10.png: tools that do not zero-pad their frame numbers are common.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _same_size(frames: list[np.ndarray], names: list[str], where: Path) -> np.ndarray:
    sizes = {frame.shape for frame in frames}
    if len(sizes) > 1:
        first = frames[0].shape
        odd = next(i for i, frame in enumerate(frames) if frame.shape != first)
        raise VideoInputError(
            f"The frames of {where} have different sizes: {names[0]} is {first[1]} x {first[0]} px but "
            f"{names[odd]} is {frames[odd].shape[1]} x {frames[odd].shape[0]} px. Every frame of a video must "
            "have one size; resize them to a common size first (for example with ffmpeg -vf scale=W:H)."
        )
    return np.stack(frames)


def refuse_special_file(path: Path, what: str, fix: str) -> None:
    """A VideoInputError when `path` is not a regular file (a FIFO, a device, ...), before anything opens it."""
    kind = not_a_regular_file(path)
    if kind is not None:
        raise VideoInputError(
            f"{what} {path} is {kind}, not a regular file: a named pipe would make this wait for a writer "
            f"forever, and a device or socket is not {fix}. Save it to a file first and give that file's path."
        )


def read_image(path: Path) -> np.ndarray:
    """One image file as uint8 RGB (H x W x 3), upright by its EXIF orientation."""
    refuse_special_file(path, "The image", "an image")
    try:
        with Image.open(path) as image:
            return np.asarray(to_rgb(upright(image)))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise VideoInputError(
            f"{path} could not be read as an image ({type(exc).__name__}: {exc}). It may be truncated or not an "
            "image at all; re-export it as PNG."
        ) from exc


def read_folder(folder: Path) -> np.ndarray:
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key
    )
    if not files:
        raise VideoInputError(
            f"{folder} is a folder without frame images. Put the frames there as PNG or JPEG files whose names "
            f"sort in playback order (frame_0001.png, ...); recognised suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}."
        )
    return _same_size([read_image(p) for p in files], [p.name for p in files], folder)


def read_gif(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            frames = [np.asarray(to_rgb(frame)) for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise VideoInputError(
            f"{path} could not be read as a GIF ({type(exc).__name__}: {exc}). It may be truncated; re-export it "
            "or convert it to mp4."
        ) from exc
    return _same_size(frames, [f"frame {i}" for i in range(len(frames))], path)


def read_any_video(path: Path) -> np.ndarray:
    from svdbench.media.video import read_video

    try:
        frames, _ = read_video(path)
    except (RuntimeError, OSError, StopIteration, ValueError) as exc:
        # imageio-ffmpeg puts ffmpeg's whole log in the message; its first and last lines say what failed.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("===")]
        reason = ": ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else type(exc).__name__
        raise VideoInputError(
            f"{path} could not be decoded as a video ({reason}). It may be truncated or not a video at all; check "
            "that it plays, or export it as mp4, gif or a folder of PNG frames."
        ) from exc
    return frames


def load_frames(path: str | Path) -> np.ndarray:
    """The frames of an mp4 (or other ffmpeg-readable video), a gif or a folder of images: uint8 T x H x W x 3."""
    path = Path(path).expanduser()
    if not path.exists():
        raise VideoInputError(
            f"{path} does not exist. Give the path of a video file (mp4, gif, ...) or of a folder of frame images; "
            "relative paths are relative to the directory you run from."
        )
    if path.is_dir():
        return read_folder(path)
    refuse_special_file(path, "The video", "a video")
    if path.suffix.lower() == ".gif":
        return read_gif(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise VideoInputError(
            f"{path} is a single image, not a video. Pass the folder that holds all the frames instead."
        )
    return read_any_video(path)


def load_reference(path: str | Path) -> np.ndarray:
    """The conditioning image for the first-frame fidelity metrics, uint8 RGB."""
    path = Path(path).expanduser()
    if not path.exists():
        raise VideoInputError(
            f"--reference {path} does not exist. Give the conditioning image (PNG or JPEG) the video was "
            "generated from, or leave --reference out to skip the first-frame PSNR and SSIM."
        )
    kind = not_a_regular_file(path)
    if kind is not None:
        raise VideoInputError(
            f"--reference {path} is {kind}, not an image file: a directory holds no single image, a named pipe "
            "would make this wait for a writer forever, and a device or socket is not an image. Give the "
            "conditioning image (PNG or JPEG) the video was generated from, saved as a file, or leave --reference "
            "out to skip the first-frame PSNR and SSIM."
        )
    return read_image(path)
