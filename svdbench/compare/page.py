"""The sweep's page, report.html beside comparison.md: the comparison table (sortable, each failed job with its
reason), a clickable Pareto chart with intervals and verdicts, every job's video, per-step charts, environments
and the command. The run page and the drawing helpers are in svdbench/record/report.py; the table's data comes from
svdbench/compare/jobs.py.
"""

from __future__ import annotations

import shlex
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from svdbench.compare import samples
from svdbench.compare.jobs import (
    Job,
    cell_text,
    job_count,
    job_label,
    pareto_front,
    shown_columns,
    swept_keys,
    table_notes,
)
from svdbench.metrics.definitions import HIGHER, LOWER, METRICS
from svdbench.record.report import (
    ARROWS,
    COLORS,
    Chart,
    finite,
    num,
    pairs,
    render,
    run_view,
    step_chart,
    wandb_sync,
    xy_chart,
)
from svdbench.record.rundir import SWEEP_FILE

# Direction and meaning of the comparison table's own columns (metrics take theirs from METRICS).
COLUMNS = {
    "latency_s": (LOWER, "seconds per video: median of the measured calls"),
    "frames_per_s": (HIGHER, "frames per second of the median call"),
    "s_per_step": (LOWER, "seconds per denoising step: median over all steps of all measured calls"),
    "device_peak_gib": (LOWER, "peak device memory, max allocated (GiB)"),
    "host_peak_gib": (LOWER, "peak host memory, resident (GiB)"),
    "mfu": (HIGHER, "model FLOPs utilisation of the denoising loop"),
    "speedup": (HIGHER, "baseline latency / this job's latency, with its 95 % interval; ~noise: it includes 1.0x"),
    "memory_saved_gib": (HIGHER, "baseline peak - this job's peak (GiB), with its range; ~noise: it includes 0"),
    "warp_error_change": (LOWER, "this job's warp_error - the baseline's"),
    "psnr_vs_baseline_db": (HIGHER, "PSNR of the exact frames against the baseline's (dB)"),
    "max_diff_levels": (LOWER, "largest |difference| of the uint8 frames against the baseline's"),
    "verdict": ("", "lossless, faithful, lossy or unknown against the baseline (docs/comparison.md)"),
    "memory_vs_predicted": ("", "measured device peak allocated / the planner's prediction"),
    "j_per_video": (LOWER, "energy per video (J), measured sources"),
    "usd_per_video": (LOWER, "cost per video (USD)"),
    "usd_per_1000_videos": (LOWER, "cost per 1000 videos (USD)"),
    "videos_per_hour": (HIGHER, "videos per hour at the median call"),
}
# Outline of a Pareto point by the job's verdict (the fill stays the job's colour).
VERDICT_STROKES = {"lossless": "#2ca02c", "faithful": "#1f77b4", "lossy": "#d62728", "unknown": "#7f7f7f"}
# The column of the comparison table shown as a row of its own, across the table under its job's row.
OWN_ROW = "reason"


def pareto_chart(points: list[dict[str, Any]], memory_label: str) -> Chart | None:
    """Memory against latency, one linked dot per job ({x, y, color, title, href, text}), and the front."""

    if not points:
        return None
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    # The axis covers the latency intervals (error bars) too.
    span = xs + [x for p in points if p.get("interval") for x in p["interval"]]
    chart, px, py = xy_chart(
        span, ys, "latency per call (s, median; bars: 95 % interval)", memory_label, zero=False, size=(600, 360)
    )
    chart.dots = [{**p, "x": px(p["x"]), "y": py(p["y"])} for p in points]
    chart.lines = [
        {"points": f"{px(lo)},{py(p['y'])} {px(hi)},{py(p['y'])}", "color": p["color"], "title": p["title"]}
        for p in points
        if p.get("interval")
        for lo, hi in [p["interval"]]
    ]
    front = [(xs[i], ys[i]) for i in pareto_front(list(zip(xs, ys)))]
    corners = [front[0]] + [c for a, b in zip(front, front[1:]) for c in ((b[0], a[1]), b)]
    chart.front = " ".join(f"{px(x)},{py(y)}" for x, y in corners)
    return chart


# ------------------------------------------------------------------------------------------------- values


def column(key: str) -> dict[str, str]:
    """A comparison-table header: its key, and its direction (arrow, tooltip) where it has one."""
    direction, meaning = COLUMNS.get(key) or (
        (METRICS[key].direction, METRICS[key].definition) if key in METRICS else ("", "")
    )
    hint = f"{direction}: {meaning}" if direction and meaning else meaning
    return {"key": key, "arrow": ARROWS.get(direction, ""), "hint": hint}


def sort_key(value: Any) -> str:
    """What a table cell sorts by: the exact number, else its text (the page's script compares numbers as such)."""
    return repr(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else num(value)


def sweep_command(sweep_dir: Path, jobs: list[Job]) -> str:
    """The command that made the sweep: from Hydra's multirun.yaml, else rebuilt from the jobs' overrides."""
    try:
        overrides = yaml.safe_load((Path(sweep_dir) / SWEEP_FILE).read_text())["hydra"]["overrides"]
        args = [o for o in overrides.get("hydra") or [] if not o.startswith("hydra.mode=")] + overrides["task"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        values: dict[str, list[str]] = {}
        for job in jobs:
            for override in job.result.provenance.overrides if job.result.provenance else []:
                key, _, value = override.partition("=")
                values.setdefault(key, [])
                values[key] += [value] if value not in values[key] else []
        args = [f"{key}={','.join(v)}" for key, v in values.items()]
    return "python -m svdbench -m " + shlex.join(str(a) for a in args)


def write_sweep_report(
    path: Path,
    out: Path,
    jobs: list[Job],
    table: list[dict[str, Any]],
    sweep_dir: Path | None = None,
    baseline: str = "opt.name=none",
) -> None:
    """The report.html of the jobs of `sweep_dir` (default `out`), written to `path` (a temporary name inside
    `out`, the comparison's directory). `table` holds the rows of comparison.md, one per job, in order."""
    out = Path(out)
    sweep_dir = Path(sweep_dir or out)
    keys = swept_keys(jobs)
    views = []
    for i, job in enumerate(jobs):
        view = run_view(job.result, job.directory, out)
        calls = job.result.steps.per_call_s if job.result.steps else []
        median_steps = [statistics.median(step) for step in zip(*calls)] if calls else []
        anchor = "job-" + "".join(c if c.isalnum() else "-" for c in job.name)
        label, color = job_label(job, keys), COLORS[i % len(COLORS)]
        views.append(
            {**view, "name": job.name, "label": label, "color": color, "anchor": anchor, "steps": median_steps}
        )
    rows = []
    shown = [key for key in shown_columns(table) if key != OWN_ROW]
    for view, row in zip(views, table):
        cells = [
            {
                "text": cell_text(row, k),
                "sort": sort_key(row[k]),
                "title": view["spread"] if k == "latency_s" else row.get("warnings", "") if k == "job" else "",
            }
            for k in shown
        ]
        rows.append({"job": view, "cells": cells})
    done = [(v, j) for v, j in zip(views, jobs) if j.ok and finite(j.latency) and finite(j.peak_memory_gib)]
    device = any(j.result.peak_memory_kind == "device allocated" for _, j in done)
    memory_label = "peak device memory, allocated (GiB)" if device else "peak host memory, resident (GiB)"
    points = []
    for v, j in done:
        stats, verdict = j.result.latency.stats, j.verdict.verdict if j.verdict is not None else ""
        interval = (stats.ci95_low, stats.ci95_high) if stats is not None and stats.ci95_low is not None else None
        between = f" (95 %: {interval[0]:.4g}-{interval[1]:.4g} s)" if interval else ""
        points.append(
            {
                "x": j.latency,
                "y": j.peak_memory_gib,
                "color": v["color"],
                "stroke": VERDICT_STROKES.get(verdict, ""),
                "interval": interval,
                "href": "#" + v["anchor"],
                "text": v["name"],
                "title": f"job {v['name']} ({v['label']}): {j.latency:.4g} s{between}, {j.peak_memory_gib:.4g} GiB"
                + (f", {verdict}" if verdict else ""),
            }
        )
    environments: dict[str, dict[str, Any]] = {}
    for job in jobs:
        rows_ = pairs(job.result.environment)
        environments.setdefault(repr(rows_), {"rows": rows_, "jobs": []})["jobs"].append(job.name)
    html = render(
        "sweep.html.j2",
        title=f"svdbench sweep: {sweep_dir.resolve().name} ({job_count(jobs)})",
        sweep_dir=str(sweep_dir.resolve()),
        baseline=baseline,
        statuses=sorted(
            Counter("unreadable" if job.unreadable else job.result.status for job in jobs).items(),
            key=lambda kv: (kv[0] != "ok", kv[0]),
        ),
        columns=[column(key) for key in shown],
        notes=table_notes(jobs, table),
        rows=rows,
        jobs=views,
        pareto=pareto_chart(points, memory_label),
        pareto_png="pareto.png" if (out / "pareto.png").is_file() else "",
        batch_png="batch.png" if (out / "batch.png").is_file() else "",
        steps=step_chart([(f"job {v['name']} ({v['label']})", v["color"], v["steps"]) for v in views]),
        environments=list(environments.values()),
        command=sweep_command(sweep_dir, jobs),
        cwd=next((j.result.provenance.cwd for j in jobs if j.result.provenance), ""),
        wandb=wandb_sync([sweep_dir, *(j.directory for j in jobs)], out),
        quality=samples.grids(jobs),  # each job's quality samples beside its baseline's
    )
    Path(path).write_text(html, encoding="utf-8")
