"""The comparison of a sweep's jobs as data: the jobs read back, each job's baseline, the intervals of its
speed-up and memory saving, its faithfulness verdict (svdbench.compare.gate), the table's rows and cells, and the
Pareto plot. `svdbench.compare` writes them as files (comparison.md/.csv, pareto.png, report.html) and is the
command line; `svdbench.compare.page` draws them as a page. docs/comparison.md says what every column means.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from svdbench.compare import gate, samples
from svdbench.files.atomic import atomic_path
from svdbench.files.ownership import is_job_of
from svdbench.files.read import FRAMES_MAX_BYTES, UnreadableFile, find_records, load_npz_array, read_text
from svdbench.measure.memory import MemoryPeak
from svdbench.measure.timing import Stats
from svdbench.quality.verdict import INCONCLUSIVE
from svdbench.record.identity import is_presentation
from svdbench.record.results import RESULTS_FILE, ResultsError, RunResult
from svdbench.settings.config import GATE_MIN_PSNR_DB, ConfigError, RunConfig, lookup, settings, show
from svdbench.settings.saved import CONFIG_FILE, from_values, load_saved, value_at

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
    config: RunConfig  # the job's settings as the run had them (svdbench.settings.saved)
    result: RunResult
    label: str = ""
    baseline: Job | None = field(default=None, repr=False)
    verdict: gate.Verdict | None = None  # against the baseline (assign_verdicts)
    quality: Any = None  # its quality samples against the baseline's (svdbench.compare.samples), if both made some
    config_notes: list[str] = field(default_factory=list)  # how the settings were read, where not plainly
    unreadable: str = ""  # why the job's record cannot be read (its result is then a stand-in with that reason)

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
        """Video 0 of the job (frames x H x W x 3): what its baseline's video is compared with. A batch's
        frames.npz holds every video (batch x frames x H x W x 3); video 0 has the job's own seed."""
        path = self.directory / "frames.npz"
        if not os.path.lexists(path):  # anything else by that name is read, and refused with its reason
            return None
        frames = load_npz_array(path, "frames", FRAMES_MAX_BYTES)  # UnreadableFile: the verdict's reason
        return frames[0] if frames.ndim == 5 else frames


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job under `sweep_dir` (earlier attempts set aside in previous-N/, and directories the sweep did not
    make, excluded: svdbench.files.ownership.is_job_of); a job whose files cannot be read is kept as an
    unreadable job (its row says why) and warned about."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise CompareError(f"{sweep_dir} is not a directory. Pass a sweep directory (outputs/sweeps/<date>/<time>).")
    jobs, skipped = [], []
    paths = [p for p in find_records(sweep_dir, RESULTS_FILE) if is_job_of(p.parent, sweep_dir)]
    for path in sorted(paths, key=lambda p: _job_order(p.parent, sweep_dir)):
        try:
            jobs.append(load_job(path.parent, sweep_dir))
        except (ResultsError, CompareError, UnreadableFile) as exc:
            log.warning("Unreadable job: %s", exc)
            skipped.append(str(exc))
            jobs.append(unreadable_job(path.parent, sweep_dir, str(exc)))
    if all(job.unreadable for job in jobs):
        found = f" ({len(skipped)} unreadable: {'; '.join(skipped)[:600]})" if skipped else ""
        raise CompareError(
            f"No readable {RESULTS_FILE} found under {sweep_dir}{found}. Point svdbench.compare at the directory of "
            "a sweep run with `python -m svdbench -m ...` (its jobs are numbered subdirectories)."
        )
    return jobs


def job_count(jobs: list[Job]) -> str:
    """ "9 jobs (6 unreadable)": how many jobs a comparison holds, the unreadable ones counted apart."""
    unreadable = sum(1 for job in jobs if job.unreadable)
    return f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}" + (f" ({unreadable} unreadable)" if unreadable else "")


def unreadable_job(job_dir: Path, sweep_dir: Path, why: str) -> Job:
    """A stand-in for a job whose record cannot be read: a row with the reason, never a baseline, never judged."""
    name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
    result = RunResult(status="error", reason=f"unreadable: {why}")
    return Job(directory=job_dir, name=name, overrides={}, config=from_values({}), result=result, unreadable=why)


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    result = RunResult.load(job_dir)
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(read_text(overrides_file)) if os.path.lexists(overrides_file) else []
    except Exception as exc:  # YAML errors
        raise CompareError(f"{overrides_file} cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(overrides, list):
        raise CompareError(f"{overrides_file} is not a list of overrides.")
    parsed = dict(str(o).split("=", 1) for o in overrides if "=" in str(o) and not str(o).startswith("hydra"))
    config, notes = job_config(job_dir, result)
    name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
    return Job(directory=job_dir, name=name, overrides=parsed, config=config, result=result, config_notes=notes)


# What results.json keeps of a run's settings: where a record has no .hydra/config.yaml, these and the
# schema's defaults are its settings.
RESULT_SETTINGS = {
    "model.name": "model",
    "opt.name": "opt",
    "cond.name": "cond",
    "dtype": "dtype",
    "num_frames": "num_frames",
    "height": "height",
    "width": "width",
    "num_inference_steps": "num_inference_steps",
    "seed": "seed",
    "batch_size": "batch_size",
}


def job_config(job_dir: Path, result: RunResult) -> tuple[RunConfig, list[str]]:
    """The job's typed settings from its `.hydra/config.yaml` (svdbench.settings.saved.load_saved), and notes.
    Without that file (a job refused before it started, a record copied without it), or where it no longer
    reads as settings, the values results.json kept over the schema's defaults, with a note saying so."""
    path = job_dir / CONFIG_FILE
    why = f"it has no {CONFIG_FILE}"
    if path.is_file():
        try:
            return load_saved(path)
        except ConfigError as exc:
            why = f"its {CONFIG_FILE} does not read as svdbench's settings ({exc})"
    given = {key: getattr(result, name) for key, name in RESULT_SETTINGS.items()}
    given = {key: value for key, value in given.items() if value not in (None, "", 0)}
    try:
        config = from_values(given)
    except ConfigError:
        config, given = from_values({}), {}
    kept = ", ".join(given) or "none"
    return config, [f"settings read from results.json ({why}): {kept}; every other setting is taken to be its default."]


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
        (k, repr(v))
        for k, v in _values(job.config)
        if not k.startswith(excluded_group + ".") and not is_presentation(k) and not _ignored(k, ignored)
    )


def _values(cfg: RunConfig) -> list[tuple[str, Any]]:
    return [(info.key, value_at(cfg, info.key)) for info in settings()]


def _ignored(key: str, ignored: tuple[str, ...]) -> bool:
    return any(key == i or key.startswith(i + ".") for i in ignored)


def check_setting(key: str, given: str) -> None:
    """Raise CompareError unless `key` names a setting (or a group of settings) of the schema; `given` is the
    option as written ("--ignore max_guidance"), which the message starts with."""
    if lookup(key) is None:
        raise CompareError(
            f"{given}: `{key}` is not a setting of svdbench. Name a setting by its dotted key, as on the "
            "command line (e.g. opt.name, max_guidance_scale, opt.compile.mode); python -m svdbench --help lists "
            "every setting."
        )


def _distance_from_defaults(job: Job, ignored: tuple[str, ...]) -> int:
    """How many opt settings and ignored settings differ from the schema's defaults: the plainest candidate
    wins."""
    count = 0
    for info in settings():
        if not (info.key.startswith("opt.") or _ignored(info.key, ignored)) or info.key == "opt.name":
            continue
        if info.default != "???" and value_at(job.config, info.key) != info.default:
            count += 1
    return count


def _matches(value: Any, wanted: str) -> bool:
    """A setting's value against the VALUE of --baseline KEY=VALUE, as the command line writes it."""
    return show(value) == wanted or str(value) == wanted


def assign_baselines(jobs: list[Job], baseline: str, ignored: tuple[str, ...] = ()) -> None:
    """Give each job the baseline job it is compared with; settings in `ignored` may differ from it.
    Raises CompareError where `baseline` (KEY=VALUE) or an ignored key names no setting."""
    key, equals, wanted = baseline.partition("=")
    if not equals:
        raise CompareError(f"--baseline {baseline}: give KEY=VALUE, e.g. --baseline opt.name=none.")
    check_setting(key, f"--baseline {baseline}")
    for name in ignored:
        check_setting(name, f"--ignore {name}")
    group = key.split(".")[0]
    for job in jobs:
        candidates = [
            b
            for b in jobs
            if not b.unreadable and _matches(value_at(b.config, key), wanted)
            if _identity(b, group, ignored) == _identity(job, group, ignored)
        ]
        if candidates:
            job.baseline = min(candidates, key=lambda b: _distance_from_defaults(b, ignored))


# ------------------------------------------------------------------------------------------- intervals

SIGNIFICANT, WITHIN_NOISE, BASELINE_ROW = "significant", "within noise", "baseline"
NO_CI = "n<6: no interval"  # a median of fewer than 6 calls has no 95 % order-statistic interval
NO_CALLS = "no per-call peaks: no interval"  # results written before memory.calls_gib existed
FEW_CALLS = "n<2: no interval"  # one call's peak says nothing about how peaks vary
MARK_NOISE, MARK_WARNING, MARK_FAIL = "~noise", "\u26a0", "\u2717"
SPEEDUP_METHOD = (
    "speed-up = baseline median / job median; its interval [base_low / job_high, base_high / job_low] combines "
    "the two medians' 95 % intervals (distribution-free order-statistic intervals, which need 6 or more "
    "measured calls) at their least favourable ends, so it is conservative (coverage at least about 90 %)"
)
MEMORY_METHOD = (
    "memory saved = baseline peak - job peak (the limiting peak, over all measured calls); its range "
    "[base_min - job_max, base_max - job_min] comes from the per-call peaks (memory.calls_gib) and needs 2 or "
    "more calls on each side; allocated device memory is usually identical call to call: a zero-width range"
)


@dataclass
class Interval:
    """A difference and its interval: `status` is SIGNIFICANT, WITHIN_NOISE, BASELINE_ROW or why there is no
    interval (NO_CI, NO_CALLS, FEW_CALLS); "" where nothing is compared."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    status: str = ""


def _noise(low: float, high: float, none: float) -> str:
    return WITHIN_NOISE if low <= none <= high else SIGNIFICANT


def speedup_interval(base: Stats | None, job: Stats | None) -> Interval:
    """Baseline median / job median with the conservative interval of the ratio of two medians."""
    if base is None or job is None or not job.median > 0:
        return Interval()
    value = base.median / job.median
    if None in (base.ci95_low, base.ci95_high, job.ci95_low, job.ci95_high):
        return Interval(value, status=NO_CI)
    assert base.ci95_low is not None and base.ci95_high is not None
    assert job.ci95_low is not None and job.ci95_high is not None
    if not job.ci95_low > 0:
        return Interval(value, status=NO_CI)
    low, high = base.ci95_low / job.ci95_high, base.ci95_high / job.ci95_low
    return Interval(value, low, high, _noise(low, high, 1.0))


def memory_interval(base: MemoryPeak | None, job: MemoryPeak | None) -> Interval:
    """Baseline peak - job peak, with the range of the difference over the per-call peaks."""
    if base is None or job is None:
        return Interval()
    value = base.limiting_gib - job.limiting_gib
    if not base.calls_gib or not job.calls_gib:
        return Interval(value, status=NO_CALLS)
    if len(base.calls_gib) < 2 or len(job.calls_gib) < 2:
        return Interval(value, status=FEW_CALLS)
    low, high = min(base.calls_gib) - max(job.calls_gib), max(base.calls_gib) - min(job.calls_gib)
    return Interval(value, low, high, _noise(low, high, 0.0))


# ----------------------------------------------------------------------------------------------- verdicts


def min_psnr_for(job: Job, override: float | None = None) -> float:
    """The PSNR threshold of `faithful`: --min-psnr-db, else the baseline job's gate.min_psnr_db (a record
    from before the gate existed reads the schema's default)."""
    if override is not None:
        return override
    source = job.baseline if job.baseline is not None else job
    return source.config.gate.min_psnr_db


def assign_verdicts(jobs: list[Job], min_psnr_db: float | None = None, baseline: str = "opt.name=none") -> None:
    """Give each job its faithfulness verdict against its baseline (svdbench.compare.gate)."""
    frames: dict[Path, np.ndarray | None] = {}  # the baselines' frames, each read once

    def baseline_frames(base: Job) -> np.ndarray | None:
        if base.directory not in frames:
            frames[base.directory] = base.frames()
        return frames[base.directory]

    for job in jobs:
        base, threshold = job.baseline, min_psnr_for(job, min_psnr_db)
        if base is job:
            job.verdict = gate.Verdict(gate.BASELINE, None, min_psnr_db=threshold, reason="the baseline itself")
            continue
        expected, reasons = gate.expectation(
            job.config.opt,
            base.config.opt if base is not None else None,
            job.config.num_frames,
            dtype=job.result.dtype or job.config.dtype,
            baseline_dtype=(base.result.dtype or base.config.dtype) if base is not None else None,
        )
        unknown = None
        if job.unreadable:
            unknown = f"its record cannot be read ({job.unreadable})"
        elif not job.ok:
            unknown = f"the job did not finish ({job.result.status})"
        elif base is None:
            unknown = f"no baseline job ({baseline} with the same other settings) in the comparison"
        elif not base.ok:
            unknown = f"its baseline, job {base.name}, did not finish ({base.result.status})"
        if unknown or base is None:
            job.verdict = gate.judge(None, None, threshold, expected, unknown or "no baseline")
        else:
            try:
                job.verdict = gate.judge(job.frames(), baseline_frames(base), threshold, expected, reasons=reasons)
            except UnreadableFile as exc:  # a frames.npz cut short, without the array, not a regular file
                job.verdict = gate.judge(None, None, threshold, expected, f"frames cannot be read: {exc}")
            judged = samples.judge(job, base, threshold, expected, reasons)  # a set of samples, where both made one
            if judged is not None:
                job.verdict, job.quality = judged


# ----------------------------------------------------------------------------------------------- the table


def machine_warnings(result: RunResult) -> list[str]:
    """What made the machine unrepresentative while the job ran (environment.state.warnings; results written
    before the state was recorded have none)."""
    state = result.environment.state if result.environment is not None else None
    return list(state.warnings) if state is not None else []


def _memory_ratio(result: RunResult) -> float | None:
    """Measured device peak allocated / the planner's prediction of it."""
    memory = result.memory
    if memory is None or not memory.predicted_gib or memory.device_max_allocated_gib is None:
        return None
    return memory.device_max_allocated_gib / memory.predicted_gib


# Columns shown only when some job has a value in them.
OPTIONAL_COLUMNS = ("memory_vs_predicted", "j_per_video", "usd_per_video", "usd_per_1000_videos")
# Columns shown only when their values differ between jobs.
SWEPT_COLUMNS = ("batch_size", "videos_per_hour")
# Columns folded into another's cell in comparison.md and report.html (comparison.csv keeps them apart).
FOLDED = {
    "job": ("warnings",),
    "latency_s": ("latency_ci95_low", "latency_ci95_high"),
    "speedup": ("speedup_low", "speedup_high", "speedup_interval"),
    "memory_saved_gib": ("memory_saved_low_gib", "memory_saved_high_gib", "memory_saved_interval"),
    "verdict": ("expected_verdict", "gate", "verdict_note"),
    **samples.FOLDED,
}
# Verdicts whose reason the table shows: why there is none, and how many samples would decide.
NOTED_VERDICTS = (gate.UNKNOWN, INCONCLUSIVE)
FOLDED_INTO = {part: key for key, parts in FOLDED.items() for part in parts}


def rows(jobs: list[Job], sweep_keys: list[str]) -> list[dict[str, Any]]:
    """One row per job; `assign_baselines` and `assign_verdicts` have run."""
    table = []
    batches = len({job.result.batch_size for job in jobs}) > 1
    for job in jobs:
        base = job.baseline
        row: dict[str, Any] = {"job": job.name, "warnings": "; ".join(machine_warnings(job.result))}
        row.update({k: job.overrides.get(k, "") for k in sweep_keys})
        result = job.result
        stats = result.latency.stats
        row.update(
            status="unreadable" if job.unreadable else result.status,
            latency_s=job.latency,
            latency_ci95_low=stats.ci95_low if stats else None,
            latency_ci95_high=stats.ci95_high if stats else None,
            frames_per_s=result.throughput.frames_per_s if result.throughput else None,
            s_per_step=result.steps.s_per_step if result.steps else None,
            device_peak_gib=result.memory.device_max_allocated_gib if result.memory else None,
            host_peak_gib=result.memory.host_peak_gib if result.memory else None,
            memory_vs_predicted=_memory_ratio(result),
            mfu=result.flops.utilization.mfu_denoising if result.flops else None,
            j_per_video=result.energy.total_j if result.energy is not None else None,
            usd_per_video=result.cost.usd_per_video if result.cost is not None else None,
            usd_per_1000_videos=result.cost.usd_per_1000_videos if result.cost is not None else None,
        )
        if batches and "batch_size" not in sweep_keys:
            row["batch_size"] = result.batch_size
        if batches:
            row["videos_per_hour"] = result.throughput.videos_per_hour if result.throughput else None
        if "num_inference_steps" in sweep_keys:  # fewer steps leave the VAE decode a larger share of each call
            phases = result.phases
            row["decode_share"] = phases.decode_s / job.latency if phases is not None and job.latency else None
        for metric in FLICKER_COLUMNS:
            row[metric] = job.metric(metric)
        row["baseline"] = base.name if base is not None else None
        ok_pair = base is not None and job.ok and base.ok
        speed, memory = Interval(), Interval()
        if base is not None and ok_pair:
            speed = speedup_interval(base.result.latency.stats, stats)
            memory = memory_interval(base.result.memory, result.memory)
            if base is job:
                speed.status = memory.status = BASELINE_ROW
        row.update(
            speedup=speed.value,
            speedup_low=speed.low,
            speedup_high=speed.high,
            speedup_interval=speed.status,
            memory_saved_gib=memory.value,
            memory_saved_low_gib=memory.low,
            memory_saved_high_gib=memory.high,
            memory_saved_interval=memory.status,
        )
        warp, base_warp = job.metric("warp_error"), base.metric("warp_error") if base else None
        row["warp_error_change"] = warp - base_warp if ok_pair and None not in (warp, base_warp) else None
        verdict = job.verdict
        row["psnr_vs_baseline_db"] = verdict.psnr_db if verdict is not None else None
        row["max_diff_levels"] = verdict.max_diff if verdict is not None else None
        row["verdict"] = verdict.verdict if verdict is not None else None
        row["expected_verdict"] = verdict.expected if verdict is not None else None
        row["gate"] = _gate_cell(verdict)
        row["verdict_note"] = verdict.reason if verdict is not None and verdict.verdict in NOTED_VERDICTS else ""
        row.update(samples.cells(job))
        row["reason"] = result.reason or ""
        table.append(row)
    for key in OPTIONAL_COLUMNS:
        if all(row.get(key) is None for row in table):
            for row in table:
                row.pop(key, None)
    samples.drop_empty(table)
    return table


def _gate_cell(verdict: gate.Verdict | None) -> str:
    if verdict is None or verdict.expected is None or verdict.verdict not in gate.RANK:
        return ""
    return "fail" if verdict.failed else "pass"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == float("inf"):
            return "inf"
        return f"{value:.4g}"
    return str(value)


def _interval_text(value: float, low: float | None, high: float | None, status: str, unit: str) -> str:
    """`1.02x (0.97-1.08) ~noise`, `0.5 GiB (0.5 to 0.5)`, `1.3x n<6: no interval`."""
    if unit == "x":
        shown = f"{value:.2f}x"
        between = f" ({low:.2f}-{high:.2f})" if low is not None and high is not None else ""
    else:
        shown = f"{value:.3g} {unit}"
        between = f" ({low:.3g} to {high:.3g})" if low is not None and high is not None else ""
    if status == WITHIN_NOISE:
        return f"{shown}{between} {MARK_NOISE}"
    if status in (SIGNIFICANT, BASELINE_ROW, ""):
        return shown + (between if status == SIGNIFICANT else "")
    return f"{shown} {status}"


def cell_text(row: dict[str, Any], key: str) -> str:
    """A cell of comparison.md and report.html: intervals, markers and the gate folded into their column."""
    value = row.get(key)
    if key == "job":
        return _fmt(value) + (f" {MARK_WARNING}" if row.get("warnings") else "")
    if key in samples.COLUMNS:
        return samples.cell(row, key)
    if key == "latency_s" and value is not None and row.get("latency_ci95_low") is not None:
        return f"{value:.4g} ({row['latency_ci95_low']:.4g}-{row['latency_ci95_high']:.4g})"
    if key == "speedup" and value is not None:
        return _interval_text(value, row.get("speedup_low"), row.get("speedup_high"), row["speedup_interval"], "x")
    if key == "memory_saved_gib" and value is not None:
        low, high = row.get("memory_saved_low_gib"), row.get("memory_saved_high_gib")
        return _interval_text(value, low, high, row["memory_saved_interval"], "GiB")
    if key == "verdict" and value:
        if row.get("gate") == "fail":
            return f"{value} {MARK_FAIL} (meant to be {row['expected_verdict']})"
        if value in NOTED_VERDICTS and row.get("verdict_note"):
            return f"{value}: {row['verdict_note']}"
        return str(value)
    return _fmt(value)


def shown_columns(table: list[dict[str, Any]]) -> list[str]:
    """The columns of comparison.md and report.html: those of the CSV less the ones folded into another."""
    return [c for c in table[0] if c not in FOLDED_INTO]


def to_markdown(table: list[dict[str, Any]]) -> str:
    columns = shown_columns(table)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        texts = [cell_text(row, c)[: 120 if c == "reason" else None] for c in columns]
        cells = [text.replace("|", "\\|").replace("\n", " ") for text in texts]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_notes(jobs: list[Job], table: list[dict[str, Any]]) -> list[str]:
    """The lines under the table: how intervals were made, what the marks mean, warnings, random weights."""
    notes = [f"{method[0].upper()}{method[1:]}." for method in (SPEEDUP_METHOD, MEMORY_METHOD)]
    notes.append(
        f"{MARK_NOISE}: the interval includes 1.0x (speed) or 0 GiB (memory): the difference is within the "
        "measurement noise, not a measured gain or loss."
    )
    if any(row.get("speedup_interval") == NO_CI for row in table):
        notes.append(
            f"{NO_CI}: a job or its baseline has fewer than 6 measured calls, so its median has no 95 % interval "
            "and the speed-up cannot be called significant; bench.repeats=6 or more gives intervals."
        )
    if any(row.get("memory_saved_interval") in (NO_CALLS, FEW_CALLS) for row in table):
        notes.append(
            "Memory saved without a range: the results have no per-call peaks (written before memory.calls_gib "
            "existed) or fewer than 2 measured calls on a side."
        )
    if any(row.get("verdict") for row in table):
        thresholds = sorted({j.verdict.min_psnr_db for j in jobs if j.verdict and j.verdict.min_psnr_db is not None})
        shown = ", ".join(f"{t:g}" for t in thresholds) or f"{GATE_MIN_PSNR_DB:g}"
        notes.append(
            f"verdict: lossless = frames within {gate.LOSSLESS_MAX_LEVELS} uint8 level of the baseline's (float "
            f"rounding); faithful = PSNR >= {shown} dB (gate.min_psnr_db); lossy = below; unknown = not judged; "
            f"{MARK_FAIL} = worse than the mode is meant to be (python -m svdbench.compare --gate fails on it); "
            "max_diff_levels = largest |difference| of the uint8 frames."
        )
    notes += samples.notes(jobs)
    if any(job.result.weights == "random" for job in jobs):
        notes.append(
            "Random weights make frames noise: the verdict measures numerical deviation; perceptual quality needs "
            "the real checkpoint."
        )
    warned = [(job.name, w) for job in jobs for w in machine_warnings(job.result)]
    if warned:
        notes.append(f"{MARK_WARNING} measured on a noisy or shared machine (environment.state.warnings):")
        by_text: dict[str, list[str]] = {}
        for name, warning in warned:
            by_text.setdefault(warning, []).append(name)
        notes += [f"  - job{'s' if len(n) > 1 else ''} {', '.join(n)}: {w}" for w, n in by_text.items()]
    read: dict[str, list[str]] = {}
    for job in jobs:
        for note in job.config_notes:
            read.setdefault(note, []).append(job.name)
    if read:
        notes.append("Settings not read from the job's .hydra/config.yaml:")
        notes += [f"  - job{'s' if len(n) > 1 else ''} {', '.join(n)}: {note}" for note, n in read.items()]
    job_notes: dict[str, list[str]] = {}
    listed = {warning for _, warning in warned}
    for job in jobs:
        for note in job.result.notes:
            if note not in listed:  # a machine-state warning the runner also noted is listed once
                job_notes.setdefault(note, []).append(job.name)
    if job_notes:
        notes.append("Notes of the jobs (results.json notes):")
        notes += [f"  - job{'s' if len(n) > 1 else ''} {', '.join(n)}: {note}" for note, n in job_notes.items()]
    return notes


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


# Colours of the Pareto plot's points, by verdict.
VERDICT_COLORS = {
    gate.BASELINE: "black",
    gate.LOSSLESS: "tab:green",
    gate.FAITHFUL: "tab:blue",
    gate.LOSSY: "tab:red",
    gate.UNKNOWN: "tab:gray",
}


def save_pareto_plot(jobs: list[Job], sweep_keys: list[str], path: Path) -> Path | None:
    """Memory against latency, a point per finished job coloured by its verdict, the latency's 95 % interval as
    an error bar, and the Pareto front."""
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
    fx, fy = zip(*[points[i] for i in front])
    ax.step(fx, fy, where="post", color="0.35", linestyle="--", linewidth=1.2, label="Pareto front", zorder=2)
    ax.scatter(fx, fy, facecolors="none", edgecolors="0.35", s=140, zorder=4)
    shown: set[str] = set()
    for job, (x, y) in zip(done, points):
        verdict = job.verdict.verdict if job.verdict is not None else gate.UNKNOWN
        color = VERDICT_COLORS.get(verdict, "tab:gray")
        stats = job.result.latency.stats
        if stats is not None and stats.ci95_low is not None and stats.ci95_high is not None:
            xerr = [[max(x - stats.ci95_low, 0.0)], [max(stats.ci95_high - x, 0.0)]]
            ax.errorbar([x], [y], xerr=xerr, fmt="none", ecolor=color, elinewidth=1.2, capsize=3, zorder=3)
        failed = job.verdict is not None and job.verdict.failed
        key = f"{verdict}, worse than meant (gate fails)" if failed else verdict
        ax.scatter(
            [x],
            [y],
            color=color,
            zorder=5,
            marker="X" if failed else "o",
            s=70 if failed else 36,
            label=key if key not in shown else None,
        )
        shown.add(key)
        ax.annotate(job_label(job, sweep_keys), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("latency per call (s, median of measured calls; bars: 95 % interval)")
    ax.set_ylabel("peak device memory, max allocated (GiB)" if device else "peak host memory, resident (GiB)")
    ax.set_title("Memory against latency (lower-left is better), coloured by verdict")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path
