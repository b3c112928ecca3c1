"""The conditioning image: an embedded synthetic test card (no download) or a user's file.

A user's file must be a regular file (symlinks are followed): a named pipe would block the run forever
waiting for a writer, and a device or socket is not an image. It is shown the way photo apps and browsers
show it: an EXIF Orientation tag (phones store portrait photos as landscape pixels plus that tag) is
applied before anything else, so a portrait photo is not fed to the model sideways.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageOps, UnidentifiedImageError

# Decoding is bounded by this many pixels (Pillow's decompression-bomb limit); larger files are refused.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)


class InputImageError(ValueError):
    """The conditioning image cannot be used; the message says why and what to do."""


def test_card(width: int = 1024, height: int = 576) -> Image.Image:
    """A deterministic picture with edges, shapes, gradients and fine texture.

    Motion and flicker are only measurable where there is structure to move or flicker: smooth
    gradients show brightness drift, hard edges and stripes show warping and seams.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    rgb = np.stack([0.15 + 0.7 * u, 0.25 + 0.5 * v, 0.85 - 0.6 * u * v], axis=-1)
    image = Image.fromarray((rgb * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    s = min(width, height)
    edge = max(s // 100, 1)
    # Colour bars along the top.
    bars = [(230, 230, 230), (230, 230, 40), (40, 230, 230), (40, 230, 40), (230, 40, 230), (230, 40, 40)]
    for i, colour in enumerate(bars):
        draw.rectangle([i * width // 6, 0, (i + 1) * width // 6, height // 10], fill=colour)
    # Checkerboard patch, bottom left.
    cell = max(s // 24, 2)
    x0, y0 = width // 20, height - height // 20 - 6 * cell
    for i in range(6):
        for j in range(i % 2, 6, 2):
            box: list[float] = [x0 + i * cell, y0 + j * cell, x0 + (i + 1) * cell - 1, y0 + (j + 1) * cell - 1]
            draw.rectangle(box, fill=(0, 0, 0))
    # Shapes with hard edges.
    disc = [width * 0.30, height * 0.25, width * 0.30 + s * 0.4, height * 0.25 + s * 0.4]
    draw.ellipse(disc, fill=(250, 120, 30), outline=(20, 20, 20), width=edge)
    box = [width * 0.62, height * 0.30, width * 0.85, height * 0.70]
    draw.rectangle(box, fill=(30, 90, 200), outline=(255, 255, 255), width=edge)
    triangle = [(width * 0.12, height * 0.62), (width * 0.24, height * 0.22), (width * 0.36, height * 0.62)]
    draw.polygon(triangle, fill=(60, 180, 90))
    # Diagonal stripes, bottom right: fine texture for the optical flow.
    stripe = max(s // 48, 2)
    for k in range(0, width, 3 * stripe):
        x = width * 0.55 + k
        draw.line([(x, height), (x + height * 0.2, height * 0.78)], fill=(20, 20, 20), width=stripe)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB 8-bit from any mode: alpha is composited on white, 16-bit and float are rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I") else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / peak * 255.0, 0, 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def not_a_regular_file(path: Path) -> str | None:
    """What `path` is when it is not a regular file after following symlinks ("a directory", "a named pipe
    (FIFO)", ...), or None when it is one. Only stats the path: opening a FIFO would block until a writer came.
    """
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except FileNotFoundError:
        return None  # the caller's "does not exist" check says more
    if stat.S_ISREG(mode):
        return None
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    if Path(path).is_symlink():
        kind = f"a symbolic link to {Path(path).resolve()}, which is {kind}"
    return kind


def upright(image: Image.Image) -> Image.Image:
    """`image` as photo apps show it: rotated or flipped by its EXIF Orientation tag, if it has one other than 1."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image  # no tag: no copy (exif_transpose copies even then, which costs on huge images)


def load_image(path: str | Path) -> Image.Image:
    path = Path(path).expanduser()
    if not path.exists():
        broken = f" (a symbolic link to {path.resolve()}, which does not exist)" if path.is_symlink() else ""
        raise InputImageError(
            f"input.path={path} does not exist{broken}. Give the path of a PNG or JPEG image (relative paths are "
            "relative to the directory you run from), or leave input.path unset to use the embedded test card."
        )
    kind = not_a_regular_file(path)
    if kind is not None:
        raise InputImageError(
            f"input.path={path} is {kind}; it must be one regular image file (PNG, JPEG, ...). svdbench reads "
            "the conditioning image whole from a file: a directory holds no single image, a named pipe would "
            "make the run wait for a writer forever, and a device or socket is not an image. Save the image to "
            "a file and give that file's path, or leave input.path unset to use the embedded test card."
        )
    try:
        with Image.open(path) as image:
            image.draft("RGB", (4096, 4096))  # JPEGs decode at a reduced size when they are huge
            image.load()
            return to_rgb(upright(image))
    except Image.DecompressionBombError as exc:
        raise InputImageError(
            f"input.path={path} is larger than svdbench decodes ({MAX_PIXELS} pixels): {exc} Downscale it "
            "first; it is resized to the run's width and height anyway."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(
            f"input.path={path} could not be read as an image ({type(exc).__name__}: {exc}). It may be "
            "truncated or not an image at all; re-export it as PNG or JPEG."
        ) from exc


def conditioning_image(path: str | None, width: int, height: int) -> Image.Image:
    """The run's conditioning image at width x height (resized as in the diffusers SVD guide)."""
    image = test_card() if path is None else load_image(path)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


# A picture maker, not a pytest test, whatever pytest makes of the name (a function attribute mypy cannot see).
test_card.__test__ = False  # type: ignore[attr-defined]
