"""batch.png: throughput and peak memory against batch size, one line per optimization mode.

Drawn by `python -m svdbench.compare` when a sweep ran more than one batch size (experiment=batch). The
left panel shows videos per hour, where the gain of a larger batch levels off; the right one the peak
memory of a call, where it runs out: a batch that ran out of memory is marked at the top of both panels.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from svdbench.record.results import RunResult

PICTURE = "batch.png"


def batch_sizes(results: list[RunResult]) -> list[int]:
    return sorted({r.batch_size for r in results})


def save_batch_plot(results: list[RunResult], path: Path) -> Path | None:
    """Draw the picture if the results hold more than one batch size; returns the path, or None."""
    if len(batch_sizes(results)) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[RunResult]] = defaultdict(list)
    for result in results:
        lines[result.opt or "?"].append(result)
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for opt, runs in sorted(lines.items()):
        runs = sorted(runs, key=lambda r: r.batch_size)
        ok = [r for r in runs if r.ok and r.throughput is not None and r.throughput.videos_per_hour is not None]
        speeds = [r.throughput.videos_per_hour for r in ok if r.throughput is not None]
        shown = speed.plot([r.batch_size for r in ok], speeds, "o-", label=opt)
        colour = shown[0].get_color()
        measured = [r for r in ok if r.peak_memory_gib is not None]
        memory.plot([r.batch_size for r in measured], [r.peak_memory_gib for r in measured], "o-", color=colour)
        for r in runs:
            if r.status == "oom":
                for axis in (speed, memory):
                    axis.axvline(r.batch_size, color=colour, linestyle=":", alpha=0.7)
                    axis.annotate(
                        "out of memory",
                        (r.batch_size, 1.0),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        va="top",
                        ha="right",
                        fontsize=8,
                        color=colour,
                    )
    kind = next((r.peak_memory_kind for r in results if r.peak_memory_kind), "peak")
    speed.set(xlabel="batch size (videos per call)", ylabel="videos per hour", title="Throughput")
    memory.set(xlabel="batch size (videos per call)", ylabel=f"peak {kind} memory per call (GiB)", title="Memory")
    for axis in (speed, memory):
        axis.set_xticks(batch_sizes(results))
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    speed.legend(title="opt")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
