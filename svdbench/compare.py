"""Compare the jobs of a sweep: one table (Markdown + CSV) and a memory/latency Pareto plot.

`python -m svdbench.compare SWEEP_DIR [--out DIR] [--baseline opt.name=none]`

Exit status: 0 compared (jobs whose files cannot be read are skipped, each with a warning naming the file);
2 nothing to compare, or --out holds another directory's comparison.

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
from svdbench.dotted import flatten
from svdbench.files import DirectoryBusy, DirectoryLock, atomic_path, write_text_atomic
from svdbench.guide_claims import check_claims
from svdbench.identity import is_presentation
from svdbench.results import RESULTS_FILE, ResultsError, RunResult

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
    config: dict[str, Any]  # the job's settings, flattened to dotted keys
    result: RunResult
    label: str = ""
    baseline: Job | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def latency(self) -> float | None:
        return self.result.median_s

    @property
    def peak_memory_gib(self) -> float | None:
        return self.result.peak_memory_gib

    def metric(self, name: str) -> Any:
        return (self.result.metrics or {}).get(name)

    def frames(self) -> np.ndarray | None:
        path = self.directory / "frames.npz"
        return np.load(path)["frames"] if path.is_file() else None


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job under `sweep_dir` (earlier attempts set aside in previous-N/ excluded); a job whose files
    cannot be read is skipped with a warning that names the file and the problem."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise CompareError(f"{sweep_dir} is not a directory. Pass a sweep directory (outputs/sweeps/<date>/<time>).")
    jobs, skipped = [], []
    paths = [p for p in sweep_dir.rglob(RESULTS_FILE) if not _set_aside(p, sweep_dir)]
    for path in sorted(paths, key=lambda p: _job_order(p.parent, sweep_dir)):
        try:
            jobs.append(load_job(path.parent, sweep_dir))
        except (ResultsError, CompareError) as exc:
            log.warning("Skipping a job: %s", exc)
            skipped.append(str(exc))
    if not jobs:
        found = f" ({len(skipped)} unreadable: {'; '.join(skipped)[:600]})" if skipped else ""
        raise CompareError(
            f"No readable {RESULTS_FILE} found under {sweep_dir}{found}. Point svdbench.compare at the directory of "
            "a sweep run with `python -m svdbench -m ...` (its jobs are numbered subdirectories)."
        )
    return jobs


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    result = RunResult.load(job_dir)
    overrides_file, config_file = job_dir / ".hydra" / "overrides.yaml", job_dir / ".hydra" / "config.yaml"
    try:
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        config: dict[str, Any] = {}
        if config_file.is_file():
            container = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
            config = flatten({str(k): v for k, v in container.items()}, ".") if isinstance(container, dict) else {}
    except Exception as exc:  # YAML errors, interpolations that no longer resolve
        raise CompareError(f"{job_dir / '.hydra'} cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(overrides, list):
        raise CompareError(f"{overrides_file} is not a list of overrides.")
    parsed = dict(str(o).split("=", 1) for o in overrides if "=" in str(o) and not str(o).startswith("hydra"))
    name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
    return Job(directory=job_dir, name=name, overrides=parsed, config=config, result=result)


def _set_aside(path: Path, root: Path) -> bool:
    return any(part.startswith("previous-") for part in path.relative_to(root).parts)


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
        result = job.result
        row.update(
            status=result.status,
            latency_s=job.latency,
            frames_per_s=result.throughput.frames_per_s if result.throughput else None,
            s_per_step=result.steps.s_per_step if result.steps else None,
            device_peak_gib=result.memory.device_max_allocated_gib if result.memory else None,
            host_peak_gib=result.memory.host_peak_gib if result.memory else None,
            mfu=(result.flops or {}).get("mfu_denoising"),
        )
        for metric in FLICKER_COLUMNS:
            row[metric] = job.metric(metric)
        row["baseline"] = base.name if base is not None else None
        ok_pair = base is not None and job.ok and base.ok
        latencies = (base.latency, job.latency) if base is not None and ok_pair else (None, None)
        peaks = (base.peak_memory_gib, job.peak_memory_gib) if base is not None and ok_pair else (None, None)
        row["speedup"] = latencies[0] / latencies[1] if latencies[0] is not None and latencies[1] else None
        row["memory_saved_gib"] = peaks[0] - peaks[1] if peaks[0] is not None and peaks[1] is not None else None
        warp, base_warp = job.metric("warp_error"), base.metric("warp_error") if base else None
        row["warp_error_change"] = warp - base_warp if ok_pair and None not in (warp, base_warp) else None
        row["psnr_vs_baseline_db"] = psnr_vs_baseline(job)
        row["reason"] = result.reason or ""
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
    points = [(float(j.latency or 0.0), float(j.peak_memory_gib or 0.0)) for j in done]  # both set: see `done`
    front = pareto_front(points)
    device = any(j.result.peak_memory_kind == "device allocated" for j in done)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
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
    """comparison.md, comparison.csv and pareto.png of the jobs under `sweep_dir`, written into `out` (default
    the sweep directory). The files are derived, so a new comparison of the same directory replaces the old
    one; a comparison of another directory is refused (CompareError)."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    keys = swept_keys(jobs)
    assign_baselines(jobs, baseline, tuple(ignore))
    table = rows(jobs, keys)
    out = Path(out) if out else sweep_dir
    title = f"# Comparison of {sweep_dir.resolve()}"
    try:
        lock = DirectoryLock(out).acquire().announce()
    except DirectoryBusy as exc:
        raise CompareError(str(exc.strerror)) from None
    try:
        if out.resolve() != sweep_dir.resolve():  # the sweep's own comparison is simply made again
            _refuse_foreign_comparison(out / "comparison.md", title)
        markdown = to_markdown(table)
        claims = check_claims(jobs)
        files = {"markdown": out / "comparison.md", "csv": out / "comparison.csv"}
        text = f"{title}\n\nBaseline: {baseline}\n\n{markdown}"
        if claims:
            text += "\n## Claims of the diffusers guide\n\n" + "\n".join(claims) + "\n"
        write_text_atomic(files["markdown"], text)
        with atomic_path(files["csv"]) as tmp:
            write_csv(table, tmp)
        plot = save_pareto_plot(jobs, keys, out / "pareto.png")
        if plot:
            files["pareto"] = plot
        profiled = [(job_label(j, keys), j.result.profile) for j in jobs if j.result.profile is not None]
        if profiled:  # the jobs run with profile.enabled=true: where the time went, side by side
            from svdbench.profile import save_profile_comparison

            with atomic_path(out / "profiles.png") as tmp:
                if save_profile_comparison(profiled, tmp):
                    files["profiles"] = out / "profiles.png"
        from svdbench.report import REPORT_FILE, write_sweep_report

        files["report"] = out / REPORT_FILE
        with atomic_path(files["report"]) as tmp:
            write_sweep_report(tmp, out, jobs, table, sweep_dir=sweep_dir, baseline=baseline)
    finally:
        lock.release()
    return Comparison(table=table, markdown=markdown + ("\n" + "\n".join(claims) + "\n" if claims else ""), files=files)


def _refuse_foreign_comparison(path: Path, title: str) -> None:
    if not path.is_file():
        return
    first = (path.read_text(errors="replace").splitlines() or [""])[0]
    if first.startswith("# Comparison of ") and first != title:
        raise CompareError(
            f"{path.parent} already holds the comparison of another directory ({first[len('# Comparison of ') :]}). "
            "svdbench never replaces it: pass another --out, or move that comparison away."
        )


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
