"""Pictures of a run: a filmstrip of the frames and a per-pair flicker plot with chunk boundaries marked.

Matplotlib is used through its object API with the Agg canvas, so nothing needs a display and no global
pyplot state leaks between runs (or threads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from svdbench.metrics.suite import boundary_pairs

# The pictures of a run (runner) or of any video (python -m svdbench.metrics --pictures), by results key.
PICTURES = {"filmstrip": "filmstrip.png", "flicker_plot": "flicker_plot.png"}


def save_pictures(directory: Path, frames: np.ndarray, suite: dict, chunk: int | None = None) -> dict[str, str]:
    """The filmstrip and the flicker plot of `frames` into `directory`; returns their file names by key."""
    save_filmstrip(frames, Path(directory) / PICTURES["filmstrip"])
    save_flicker_plot(suite, Path(directory) / PICTURES["flicker_plot"], decode_chunk_size=chunk)
    return dict(PICTURES)


def filmstrip_indices(num_frames: int, max_frames: int) -> list[int]:
    """Evenly spaced frame indices, always the first and the last."""
    if num_frames <= max_frames:
        return list(range(num_frames))
    return sorted({round(i) for i in np.linspace(0, num_frames - 1, max_frames)})


def save_filmstrip(
    frames: np.ndarray, path: str | Path, max_frames: int = 8, columns: int = 8, thumb_height: int = 160
) -> Path:
    """PNG of up to `max_frames` evenly spaced frames in a grid of `columns`, each labelled with its index."""
    frames = np.asarray(frames)
    indices = filmstrip_indices(len(frames), max_frames)
    height, width = frames.shape[1:3]
    thumb_height = min(thumb_height, height)
    thumb_width = max(1, round(width * thumb_height / height))
    columns = min(columns, len(indices))
    rows = -(-len(indices) // columns)
    gap = 4
    sheet = Image.new("RGB", (columns * (thumb_width + gap) + gap, rows * (thumb_height + gap) + gap), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=max(10, thumb_height // 10))
    for n, index in enumerate(indices):
        x = gap + (n % columns) * (thumb_width + gap)
        y = gap + (n // columns) * (thumb_height + gap)
        thumb = Image.fromarray(frames[index]).resize((thumb_width, thumb_height), Image.Resampling.BILINEAR)
        sheet.paste(thumb, (x, y))
        label = f"{index}"
        box = draw.textbbox((x + 3, y + 2), label, font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((x + 3, y + 2), label, fill=(255, 255, 255), font=font)
    path = Path(path)
    sheet.save(path)
    return path


def save_flicker_plot(suite: dict, path: str | Path, decode_chunk_size: int | None = None) -> Path:
    """PNG of per-pair warp error and luma change from `compute_suite`, chunk boundaries as dashed lines.

    `decode_chunk_size` defaults to the one the suite was computed with.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if decode_chunk_size is None:
        decode_chunk_size = suite.get("decode_chunk_size")
    warp = suite.get("warp_error_per_pair") or []
    luma = suite.get("luma_change_per_pair") or []
    seams = boundary_pairs(suite["frames"], decode_chunk_size)

    figure = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    panels = (
        (top, warp, "warp error (MSE, [0, 1] scale)", "tab:blue"),
        (bottom, luma, "|luma change| (grey levels)", "tab:orange"),
    )
    for axis, values, label, colour in panels:
        if values:
            axis.plot(range(len(values)), values, marker="o", markersize=3, color=colour)
        else:
            axis.text(0.5, 0.5, "no frame pairs", ha="center", va="center", transform=axis.transAxes)
        for n, t in enumerate(seams):
            axis.axvline(t, color="tab:red", linestyle="--", linewidth=1, label="chunk boundary" if n == 0 else None)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    if seams:
        top.legend(loc="upper right")
    bottom.set_xlabel("pair t (frame t -> t + 1)")
    chunk = f", decode_chunk_size={decode_chunk_size}" if decode_chunk_size else ""
    top.set_title(f"{suite['frames']} frames, {suite['width']}x{suite['height']}{chunk}")
    path = Path(path)
    figure.savefig(path)
    return path
