"""Compare the jobs of a sweep: one table (Markdown + CSV) and a memory/latency Pareto plot.

`python -m svdbench.compare SWEEP_DIR [--out DIR] [--baseline opt.name=none]`

Each job is compared with a baseline job: by default the one with `opt.name=none` whose settings
outside the `opt` group are equal (when several qualify, the one closest to the default options).
Ratios: speed-up = baseline latency / job latency; memory saved = baseline peak - job peak; flicker
change = job - baseline; PSNR of the job's exact frames (frames.npz) against the baseline's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from svdbench.config import OptConfig, RunConfig
from svdbench.record import is_presentation
from svdbench.results import RESULTS_FILE, flatten, lookup, read_results

log = logging.getLogger(__name__)

# Flicker metrics shown in the table, if the runs computed them (all: lower is better except
# temporal_flickering, where higher is better).
FLICKER_COLUMNS = ("temporal_flickering", "warp_error", "luma_diff1")


class CompareError(ValueError):
    """The directory cannot be compared; the message says why."""


@dataclass
class Job:
    directory: Path
    name: str  # the job's path under the compared directory, e.g. "3" or "modes/3"
    overrides: dict[str, str]
    config: dict[str, Any]
    result: dict[str, Any]
    label: str = ""
    baseline: Job | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.result.get("status") == "ok"

    def get(self, dotted: str) -> Any:
        return lookup(self.result, dotted)

    @property
    def latency(self) -> float | None:
        return self.get("latency.stats.median")

    @property
    def peak_memory_gib(self) -> float | None:
        """Device peak (max allocated) when there is a device, else host peak resident memory."""
        device = self.get("memory.device_max_allocated_gib")
        return device if device is not None else self.get("memory.host_peak_gib")

    def frames(self) -> np.ndarray | None:
        path = self.directory / "frames.npz"
        return np.load(path)["frames"] if path.is_file() else None


def load_jobs(sweep_dir: Path) -> list[Job]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise CompareError(f"{sweep_dir} is not a directory. Pass a sweep directory (outputs/sweeps/<date>/<time>).")
    jobs = []
    for path in sorted(sweep_dir.rglob(RESULTS_FILE), key=lambda p: _job_order(p.parent, sweep_dir)):
        job_dir = path.parent
        try:
            result = read_results(job_dir)
        except ValueError as exc:
            log.warning("Skipping %s: unreadable results.json (%s)", job_dir, exc)
            continue
        overrides_file, config_file = job_dir / ".hydra" / "overrides.yaml", job_dir / ".hydra" / "config.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        config = {}
        if config_file.is_file():
            config = flatten(OmegaConf.to_container(OmegaConf.load(config_file), resolve=True), ".")
        parsed = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("hydra"))
        name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
        jobs.append(Job(directory=job_dir, name=name, overrides=parsed, config=config, result=result))
    if not jobs:
        raise CompareError(
            f"No {RESULTS_FILE} found under {sweep_dir}. Point svdbench.compare at the directory of a sweep "
            "run with `python -m svdbench -m ...` (its jobs are numbered subdirectories)."
        )
    return jobs


def _job_order(job_dir: Path, root: Path) -> tuple:
    parts = job_dir.relative_to(root).parts
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose values differ between jobs, in the order they were given."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def _identity(job: Job, excluded_group: str, ignored: tuple[str, ...] = ()) -> tuple:
    return tuple(
        sorted(
            (k, repr(v))
            for k, v in job.config.items()
            if not k.startswith(excluded_group + ".") and not is_presentation(k) and k not in ignored
        )
    )


def schema_default(key: str) -> Any:
    """The default of a dotted setting in the typed schema (None where it has none)."""
    node: Any = RunConfig
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return None
        field_ = fields[part]
        node = field_.default_factory() if field_.default_factory is not dataclasses.MISSING else field_.default
    return None if node in (dataclasses.MISSING, "???") else node


def _distance_from_defaults(job: Job, ignored: tuple[str, ...]) -> int:
    """How many option and ignored settings differ from their defaults: the plainest candidate wins."""
    defaults = flatten({"opt": dataclasses.asdict(OptConfig())}, ".")
    defaults.update({key: schema_default(key) for key in ignored})
    return sum(1 for k, v in defaults.items() if k != "opt.name" and job.config.get(k, v) != v)


def assign_baselines(jobs: list[Job], baseline: str, ignored: tuple[str, ...] = ()) -> None:
    """Give each job the baseline job it is compared with; settings in `ignored` may differ from it."""
    key, _, wanted = baseline.partition("=")
    group = key.split(".")[0]
    for job in jobs:
        candidates = [
            b
            for b in jobs
            if str(b.config.get(key)) == wanted or (wanted == "null" and b.config.get(key) is None)
            if _identity(b, group, ignored) == _identity(job, group, ignored)
        ]
        if candidates:
            job.baseline = min(candidates, key=lambda b: _distance_from_defaults(b, ignored))


def psnr_vs_baseline(job: Job) -> float | None:
    from svdbench.metrics import psnr

    if job.baseline is None or job.baseline is job or not (job.ok and job.baseline.ok):
        return None
    a, b = job.frames(), job.baseline.frames()
    if a is None or b is None or a.shape != b.shape:
        return None
    return psnr(a, b)


def rows(jobs: list[Job], sweep_keys: list[str]) -> list[dict[str, Any]]:
    table = []
    for job in jobs:
        base = job.baseline
        row: dict[str, Any] = {"job": job.name}
        row.update({k: job.overrides.get(k, "") for k in sweep_keys})
        row.update(
            status=job.result.get("status"),
            latency_s=job.latency,
            frames_per_s=job.get("throughput.frames_per_s"),
            s_per_step=job.get("steps.s_per_step"),
            device_peak_gib=job.get("memory.device_max_allocated_gib"),
            host_peak_gib=job.get("memory.host_peak_gib"),
            mfu=job.get("flops.mfu_denoising"),
        )
        for metric in FLICKER_COLUMNS:
            row[metric] = job.get(f"metrics.{metric}")
        both_ok = base is not None and job.ok and base.ok
        row["baseline"] = base.name if base is not None else None
        row["speedup"] = base.latency / job.latency if both_ok and job.latency else None
        row["memory_saved_gib"] = (
            base.peak_memory_gib - job.peak_memory_gib
            if both_ok and None not in (base.peak_memory_gib, job.peak_memory_gib)
            else None
        )
        warp, base_warp = job.get("metrics.warp_error"), base.get("metrics.warp_error") if base else None
        row["warp_error_change"] = warp - base_warp if both_ok and None not in (warp, base_warp) else None
        row["psnr_vs_baseline_db"] = psnr_vs_baseline(job)
        row["reason"] = job.result.get("reason") or ""
        table.append(row)
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == float("inf"):
            return "inf"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: list[dict[str, Any]]) -> str:
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = [_fmt(row[c]) if c != "reason" else _fmt(row[c])[:120] for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats in both coordinates (lower is better), by latency."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox <= x and oy <= y) and (ox < x or oy < y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def job_label(job: Job, sweep_keys: list[str]) -> str:
    parts = [f"{k.split('.')[-1]}={job.overrides[k]}" for k in sweep_keys if k in job.overrides]
    return ", ".join(parts) or job.name


def save_pareto_plot(jobs: list[Job], sweep_keys: list[str], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [j for j in jobs if j.ok and j.latency is not None and j.peak_memory_gib is not None]
    if not done:
        return None
    points = [(j.latency, j.peak_memory_gib) for j in done]
    front = pareto_front(points)
    device = any(j.get("memory.device_max_allocated_gib") is not None for j in done)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    ax.scatter(*zip(*points), color="tab:blue", zorder=3)
    for job, (x, y) in zip(done, points):
        ax.annotate(job_label(job, sweep_keys), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    fx, fy = zip(*[points[i] for i in front])
    ax.step(fx, fy, where="post", color="tab:red", linewidth=1.5, label="Pareto front", zorder=2)
    ax.scatter(fx, fy, facecolors="none", edgecolors="tab:red", s=120, zorder=4)
    ax.set_xlabel("latency per video (s, median of measured calls)")
    ax.set_ylabel("peak device memory, max allocated (GiB)" if device else "peak host memory, resident (GiB)")
    ax.set_title("Memory against latency (lower-left is better)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass
class Comparison:
    table: list[dict[str, Any]]
    markdown: str
    files: dict[str, Path]


def compare(
    sweep_dir: Path, out: Path | None = None, baseline: str = "opt.name=none", ignore: tuple[str, ...] = ()
) -> Comparison:
    jobs = load_jobs(sweep_dir)
    keys = swept_keys(jobs)
    assign_baselines(jobs, baseline, tuple(ignore))
    table = rows(jobs, keys)
    out = Path(out) if out else Path(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table)
    files = {"markdown": out / "comparison.md", "csv": out / "comparison.csv"}
    files["markdown"].write_text(f"# Comparison of {Path(sweep_dir)}\n\nBaseline: {baseline}\n\n" + markdown)
    write_csv(table, files["csv"])
    plot = save_pareto_plot(jobs, keys, out / "pareto.png")
    if plot:
        files["pareto"] = plot
    return Comparison(table=table, markdown=markdown, files=files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m svdbench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (outputs/sweeps/<date>/<time>)")
    parser.add_argument("--out", type=Path, help="where to write comparison.md/.csv and pareto.png")
    parser.add_argument("--baseline", default="opt.name=none", help="KEY=VALUE selecting baseline jobs")
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="a setting that may differ from the baseline's, e.g. max_guidance_scale (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        comparison = compare(args.sweep_dir, args.out, args.baseline, tuple(args.ignore))
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(comparison.markdown)
    print("written: " + ", ".join(str(p) for p in comparison.files.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
