"""report.html: one self-contained page per run and per sweep, to open in any browser from the file system.

The page links the media beside it (video.mp4, the PNGs) by relative paths, so a directory that is copied,
zipped or mailed keeps working; charts are inline SVG drawn from the numbers here; sorting and the synchronised
players are a few lines of plain JavaScript in the template (svdbench/templates/). Nothing comes from a network.
This module turns records into plain values (text, pixels, links); the templates do the layout. It draws the
run's page (written with the run's record, svdbench/record/rundir.py) and holds what both pages use; the sweep's page,
which needs the comparison table, is svdbench/compare/page.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from svdbench.metrics.definitions import HIGHER, LOWER, METRICS
from svdbench.record.results import RESULTS_FILE, RunResult
from svdbench.settings.dotted import flatten

REPORT_FILE = "report.html"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
ARROWS = {HIGHER: "\u2191", LOWER: "\u2193"}


# ------------------------------------------------------------------------------------------------- charts


@dataclass
class Chart:
    """An SVG chart already in pixels: the template only draws it."""

    width: int
    height: int
    x_label: str
    y_label: str
    x_ticks: list[tuple[float, str]]  # (pixel, text)
    y_ticks: list[tuple[float, str]]
    lines: list[dict[str, Any]] = field(default_factory=list)  # points ("x,y x,y ..."), color, title
    dots: list[dict[str, Any]] = field(default_factory=list)  # x, y, color, title, href, text
    front: str = ""  # the Pareto front, as polyline points
    left: int = 60
    top: int = 12
    right: int = 0
    bottom: int = 0


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) covering [lo, hi]."""
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(first + len(ticks) * step)
    return ticks


def xy_chart(xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str, *, zero: bool, size=(600, 320)):
    """An empty chart whose axes cover `xs` and `ys` (y from 0 when `zero`), and its value -> pixel maps."""
    width, height = size
    chart = Chart(width, height, x_label, y_label, [], [])
    chart.right, chart.bottom = width - 14, height - 42
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(0.0 if zero else min(ys), max(ys))

    def px(value: float) -> float:
        return round(chart.left + (value - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (chart.right - chart.left), 1)

    def py(value: float) -> float:
        return round(chart.bottom - (value - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (chart.bottom - chart.top), 1)

    chart.x_ticks = [(px(t), f"{t:g}") for t in x_ticks]
    chart.y_ticks = [(py(t), f"{t:g}") for t in y_ticks]
    return chart, px, py


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def step_chart(series: list[tuple[str, str, list[float]]], size=(600, 320)) -> Chart | None:
    """Seconds of each denoising step, one line per (title, color, seconds); steps without a number are left out."""
    lines = [(title, color, [s if finite(s) else None for s in seconds]) for title, color, seconds in series]
    values = [v for _, _, seconds in lines for v in seconds if v is not None]
    if not values:
        return None
    steps = max(len(seconds) for _, _, seconds in lines)
    chart, px, py = xy_chart([1, max(steps, 2)], values, "denoising step", "seconds", zero=True, size=size)
    chart.x_ticks = [t for t in chart.x_ticks if float(t[1]) >= 1 and float(t[1]).is_integer()]
    for title, color, seconds in lines:
        points = " ".join(f"{px(i + 1)},{py(s)}" for i, s in enumerate(seconds) if s is not None)
        chart.lines.append({"title": title, "color": color, "points": points})
        if len(seconds) <= 60:  # a dot per step, with its value on hover
            chart.dots += [
                {
                    "x": px(i + 1),
                    "y": py(s),
                    "color": color,
                    "title": f"{title}: step {i + 1}, {s:.4g} s",
                    "href": "",
                    "text": "",
                }
                for i, s in enumerate(seconds)
                if s is not None
            ]
    return chart


def num(value: Any, digits: int = 4) -> str:
    """A value as table text: floats to `digits` significant digits, None as an empty string."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):  # long lists of numbers (per frame, per pair) cut short
        cut = 12 if all(isinstance(v, (int, float)) for v in value) else len(value)
        shown = ", ".join(num(v, 3) for v in value[:cut])
        return f"[{shown}{', ...' if len(value) > cut else ''}]"
    return str(value)


def pairs(data: Any) -> list[tuple[str, str]]:
    """A record (dataclass or dict) as (dotted key, text) rows, empty values left out."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    return [(key, num(value)) for key, value in flatten(data or {}, ".").items() if value not in (None, "", [], {})]


def link(directory: Path, name: str, base: Path) -> str:
    """The URL of `directory/name` relative to the page in `base`."""
    return quote(Path(os.path.relpath(Path(directory) / name, base)).as_posix())


def run_view(result: RunResult, directory: Path, base: Path) -> dict[str, Any]:
    """What both pages show of one run: its status, figures and the links to its files (those it lists)."""
    stats = result.latency.stats
    spread = (
        f"n={stats.n}, min {stats.min:.4g} s, max {stats.max:.4g} s, spread {stats.rel_spread:.1%}" if stats else ""
    )
    if stats and stats.ci95_low is not None and stats.ci95_high is not None:
        spread += f"; median's 95% interval {stats.ci95_low:.4g}-{stats.ci95_high:.4g} s"
    files = {key: link(directory, name, base) for key, name in result.files.items()}
    pictures = [(key, files[key]) for key, name in result.files.items() if name.lower().endswith(".png")]
    return {
        "status": result.status,
        "reason": result.reason or "",
        "median_s": num(result.median_s),
        "spread": spread,
        "memory": f"{result.peak_memory_gib:.4g} GiB {result.peak_memory_kind}" if result.peak_memory_gib else "",
        "files": files,
        "pictures": pictures,
        "frames": result.num_frames,
        "results": link(directory, RESULTS_FILE, base),
        "warnings": result.environment.state.warnings if result.environment and result.environment.state else [],
    }


def metric_rows(metrics: dict[str, Any] | None) -> list[dict[str, str]]:
    rows = []
    for name, value in (metrics or {}).items():
        known = METRICS.get(name)
        direction = known.direction if known else ""
        rows.append(
            {
                "name": name,
                "value": num(value),
                "arrow": ARROWS.get(direction, ""),
                "direction": direction,
                "unit": known.unit if known else "",
                "definition": known.definition if known else "",
            }
        )
    return rows


def phase_bar(result: RunResult) -> list[dict[str, Any]]:
    if result.phases is None:
        return []
    names = ("conditioning", "denoising", "decode", "other")
    seconds = [max(getattr(result.phases, f"{n}_s") or 0.0, 0.0) for n in names]
    total = sum(seconds) or 1.0
    return [
        {"name": n, "seconds": num(s), "share": round(100 * s / total, 2), "color": COLORS[i]}
        for i, (n, s) in enumerate(zip(names, seconds))
    ]


def command(provenance: Any) -> str:
    """The command line of a run, as typed in its working directory."""
    if provenance is None:
        return ""
    return "python -m svdbench " + shlex.join(provenance.argv[1:])


def wandb_sync(directories: list[Path], base: Path) -> str:
    """`wandb sync` of the offline W&B runs in `directories`, relative to `base`; empty when there are none."""
    runs = [run for d in directories for run in sorted(Path(d).glob("wandb/offline-run-*"))]
    return "wandb sync " + " ".join(shlex.quote(os.path.relpath(r, base)) for r in runs) if runs else ""


# -------------------------------------------------------------------------------------------------- pages


_templates: jinja2.Environment | None = None


def render(template: str, **values: Any) -> str:
    global _templates
    if _templates is None:
        _templates = jinja2.Environment(
            loader=jinja2.PackageLoader("svdbench", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _templates.filters["num"] = num
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return _templates.get_template(template).render(generated=generated, **values)


def cost_view(result: RunResult) -> dict[str, Any]:
    """The run page's startup, energy, cost and compile-check tables."""
    energy = result.energy
    checks = result.compile_check.calls if result.compile_check else []
    return {
        "startup": pairs(result.startup),
        "energy": pairs(energy),
        "energy_sources": ", ".join(energy.sources) if energy and energy.sources else "no source measured",
        "energy_missing": "; ".join(f"{k}: {v}" for k, v in energy.missing.items()) if energy else "",
        "cost": pairs(result.cost),
        "compile_check": [
            (
                c.kind,
                c.status
                + (f", {c.recompilations} recompilations" if c.recompilations is not None else "")
                + (f", {num(c.latency_s)} s" if c.latency_s is not None else "")
                + (f": {c.reason}" if c.reason else ""),
            )
            for c in checks
        ],
    }


def write_run_report(path: Path, run_dir: Path, result: RunResult) -> None:
    """The run's report.html, written to `path` (a temporary name inside `run_dir`)."""
    run_dir = Path(run_dir)
    calls = result.steps.per_call_s if result.steps else []
    series = [(f"call {i + 1}", COLORS[i % len(COLORS)], seconds) for i, seconds in enumerate(calls)]
    latency = result.latency
    calls_rows = [
        ("measured calls (s)", num(latency.calls_s)),
        ("warm-up calls (s)", num(latency.warmup_s) if latency.warmup_s else ""),
        ("compile overhead (s)", num(latency.compile_overhead_s)),
        ("timing method", result.timing_method),
    ]
    html = render(
        "run.html.j2",
        title=f"svdbench run: {result.model} opt={result.opt} on {result.device} ({result.status})",
        run=run_view(result, run_dir, run_dir),
        result=result,
        steps=step_chart(series),
        phases=phase_bar(result),
        calls=[(k, v) for k, v in calls_rows if v],
        memory=pairs(result.memory),
        cost=cost_view(result),
        flops=pairs(result.flops),
        applied=pairs(result.applied),
        metrics=metric_rows(result.metrics),
        environment=pairs(result.environment),
        provenance=pairs(result.provenance),
        command=command(result.provenance),
        wandb=wandb_sync([run_dir], run_dir),
    )
    Path(path).write_text(html, encoding="utf-8")
