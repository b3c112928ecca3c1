"""`python -m svdbench.metrics VIDEO`: the flicker suite of any video, as a table or one JSON object.

VIDEO is an mp4 (or anything ffmpeg reads), a gif, or a folder of frame images in name order. Results go
to stdout and nothing else does, so `--json` output can be piped; problems go to stderr, and unusable
input exits with status 2 and one paragraph saying what to fix.

Figures that cannot be computed are printed as "-" (null in JSON), and stderr says why, one line each
(lines starting "note: "): the chunk-seam ratios without --decode-chunk-size (or when the chunk leaves no
pair inside or across chunks), the first-frame fidelity without --reference, and every temporal metric
of a one-frame video. A one-frame video still exits with status 0: its per-frame figures (size, luma,
first-frame PSNR and SSIM) are real results. Exit status 2 is kept for input that yields no figure at all,
and for a --pictures folder that is not free (svdbench.files.ownership: not empty and not pictures of the same
video, a file or a dangling link in the way), refused before anything is computed. Exit status 3: the figures
were printed but the pictures could not be written (a full disk, a read-only file system, a file-size limit).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from svdbench.files.atomic import atomic_path, describe_os_error
from svdbench.files.ownership import DirectoryTaken, claim_directory
from svdbench.metrics.definitions import METRICS
from svdbench.metrics.io import VideoInputError, load_frames, load_reference

log = logging.getLogger("svdbench.metrics")

# Figures that are None for reasons of their own (no chunking, no reference), not for lack of a second frame.
NOT_TEMPORAL = {"decode_chunk_size", "first_frame_psnr", "first_frame_ssim"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m svdbench.metrics",
        description="Weight-free flicker and temporal-consistency metrics of a video (definitions: docs/metrics.md).",
    )
    parser.add_argument(
        "video", type=Path, help="an mp4 (or other ffmpeg-readable video), a gif, or a folder of frames"
    )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object instead of a table")
    parser.add_argument(
        "--decode-chunk-size",
        type=int,
        metavar="N",
        help="the VAE decode chunk the video was made with, for the chunk-boundary ratios",
    )
    parser.add_argument("--reference", type=Path, metavar="IMAGE", help="conditioning image, for first-frame PSNR/SSIM")
    parser.add_argument(
        "--pictures", type=Path, metavar="DIR", help="also write filmstrip.png and flicker_plot.png into this folder"
    )
    args = parser.parse_args(argv)
    if args.decode_chunk_size is not None and args.decode_chunk_size < 1:
        parser.error(f"--decode-chunk-size must be a positive number of frames, got {args.decode_chunk_size}")
    return args


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 8:
        return f"{len(value)} values (see --json)"
    if isinstance(value, list):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


def table(suite: dict) -> str:
    rows = [(name, _format(value), METRICS[name].unit, METRICS[name].direction) for name, value in suite.items()]
    header = ("metric", "value", "unit", "direction")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def notes(suite: dict, args: argparse.Namespace) -> list[str]:
    """One line for each group of figures left out ("-"), saying what they need."""
    lines = []
    if suite["frames"] < 2:
        temporal = [name for name, value in suite.items() if value is None and name not in NOT_TEMPORAL]
        lines.append(
            f"note: {args.video} has 1 frame; the temporal metrics ({', '.join(temporal)}) need at least 2 frames "
            "and are '-'. Only the per-frame figures are computed."
        )
    elif args.decode_chunk_size is None:
        lines.append(
            "note: the chunk-seam figures (boundary_warp_ratio, boundary_luma_ratio) need --decode-chunk-size N, "
            "the VAE decode chunk the video was made with; they are '-' without it."
        )
    elif suite["boundary_warp_ratio"] is None:
        seams, pairs = len(suite["chunk_boundary_pairs"]), suite["frames"] - 1
        lines.append(
            f"note: the chunk-seam figures compare pairs across and inside chunks; --decode-chunk-size "
            f"{args.decode_chunk_size} puts {seams} of the {pairs} pairs across chunks, so they are '-'."
        )
    if suite["frames"] == 2:
        lines.append("note: luma_diff2 needs at least 3 frames and is '-'.")
    if args.reference is None:
        lines.append(
            "note: the first-frame fidelity (first_frame_psnr, first_frame_ssim) needs --reference IMAGE, the "
            "conditioning image the video was generated from; it is '-' without it."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    from svdbench.metrics.suite import compute_suite

    if args.pictures is not None:  # before the work: a folder that is not free is refused with nothing computed
        try:
            claim_directory(
                args.pictures,
                "pictures",
                f"pictures of {args.video.resolve()}",
                "pass --pictures DIR with a new or empty folder",
            )
        except DirectoryTaken as exc:
            print(f"error: {exc.strerror}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: cannot write --pictures {args.pictures}: {_cannot(exc)}", file=sys.stderr)
            return 2
    start = time.perf_counter()
    try:
        frames = load_frames(args.video)
        reference = load_reference(args.reference) if args.reference is not None else None
        suite = compute_suite(frames, decode_chunk_size=args.decode_chunk_size, reference=reference)
    except ValueError as exc:  # VideoInputError, and compute_suite's refusals of unusable frames
        print(
            f"error: {args.video}: {exc}" if not isinstance(exc, VideoInputError) else f"error: {exc}", file=sys.stderr
        )
        return 2
    log.info(
        "%s: %d frames of %d x %d px (h x w), metrics in %.2f s",
        args.video,
        *frames.shape[:3],
        time.perf_counter() - start,
    )
    for line in notes(suite, args):
        print(line, file=sys.stderr)
    print(json.dumps(suite, allow_nan=False) if args.json else table(suite), flush=True)
    if args.pictures is not None:
        from svdbench.metrics.plots import PICTURES, save_filmstrip, save_flicker_plot

        try:
            with atomic_path(args.pictures / PICTURES["filmstrip"]) as tmp:
                save_filmstrip(frames, tmp)
            with atomic_path(args.pictures / PICTURES["flicker_plot"]) as tmp:
                save_flicker_plot(suite, tmp, decode_chunk_size=None)
        except OSError as exc:
            print(f"error: the pictures could not be written into {args.pictures}: {_cannot(exc)}", file=sys.stderr)
            return 3
        log.info("pictures in %s", args.pictures)
    return 0


def _cannot(exc: OSError) -> str:
    return (
        f"{exc.filename or ''}{': ' if exc.filename else ''}{describe_os_error(exc)}. Free some space, or pass "
        "--pictures DIR on a writable disk (a new or empty folder)."
    )


if __name__ == "__main__":
    sys.exit(main())
