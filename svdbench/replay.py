"""`python -m svdbench.replay RUN_DIR [--out DIR] [OVERRIDE ...]`: repeat a recorded run and compare.

The run is repeated from its record: the Hydra overrides in `.hydra/overrides.yaml`, through the same
entry point (`python -m svdbench`) in a subprocess, from the directory it was started in, into a new
directory (default `RUN_DIR/replay-<time>`). The config hash says whether that composed the same
experiment (it does not if `conf/` defaults changed since); the frames hash whether the output is
bit-identical; the timing ratios how far the machine's speed moved. Extra overrides (e.g. `logger=none`)
are appended; any that change the experiment show up as a different config hash.

The replay's directory is a run directory like any other: it must be new or empty (svdbench.files.ownership),
and the run writes its marker; replay.json is written beside the replay's record.

Exit status: 0 reproduced, 1 not reproduced (frames, metrics, status or config differ, or the replay
wrote no results), 2 RUN_DIR is not a run directory or its record cannot be read, or --out is not free (not
empty, a file, a dangling link), 3 replay.json could not be written (a full disk, a read-only file system).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from svdbench.files.atomic import describe_os_error, write_json_atomic
from svdbench.files.ownership import DirectoryTaken, check_free
from svdbench.files.read import UnreadableFile, read_yaml
from svdbench.record.results import RESULTS_FILE, ResultsError, RunResult
from svdbench.record.rundir import OVERRIDES_FILE, RUN_PURPOSE, existing_record
from svdbench.settings.dotted import flatten

REPORT_FILE = "replay.json"
METRIC_RTOL = 1e-6  # identical frames give identical metrics up to float noise of multi-threaded kernels


class NotARunDir(ValueError):
    pass


def load_record(run_dir: Path) -> tuple[RunResult, list[str]]:
    """results.json and the overrides of a run directory; NotARunDir says what is missing."""
    if not run_dir.is_dir():
        raise NotARunDir(f"{run_dir} does not exist or is not a directory: pass a run directory of svdbench.")
    missing = [name for name in (RESULTS_FILE, str(OVERRIDES_FILE)) if not os.path.lexists(run_dir / name)]
    if missing:
        raise NotARunDir(
            f"{run_dir} is not an svdbench run directory: it has no {' and no '.join(missing)}. A run directory "
            "is what `python -m svdbench` creates, outputs/runs/<date>/<time>_<model>_<opt>/ or a numbered job "
            "directory of a sweep under outputs/sweeps/<date>/<time>/; pass one of those."
        )
    try:
        overrides = read_yaml(run_dir / OVERRIDES_FILE) or []
    except (UnreadableFile, yaml.YAMLError) as exc:
        raise NotARunDir(f"{run_dir / OVERRIDES_FILE} cannot be read ({exc}).") from None
    if not isinstance(overrides, list):
        raise NotARunDir(f"{run_dir / OVERRIDES_FILE} is not a list of overrides; restore it from the run's log.")
    try:
        result = RunResult.load(run_dir)
    except ResultsError as exc:
        raise NotARunDir(f"Cannot replay {run_dir}: {exc}") from None
    return result, [str(o) for o in overrides]


def replay_command(overrides: list[str], extra: list[str], out: Path) -> list[str]:
    quoted = str(out).replace("\\", "\\\\").replace("'", "\\'")
    return [sys.executable, "-m", "svdbench", *overrides, *extra, f"hydra.run.dir='{quoted}'"]


def _numbers(metrics: dict[str, Any] | None) -> dict[str, float]:
    flat = flatten(metrics or {}, "/")
    return {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _code(result: RunResult) -> str | None:
    prov = result.provenance
    if prov is None:
        return None
    return f"{prov.git_commit} (dirty)" if prov.git_commit and prov.git_dirty else prov.git_commit


def compare(old: RunResult, new: RunResult) -> dict[str, Any]:
    """What matched between two runs' results, and how the timings moved (ratios new / old)."""

    def ratio(before: float | None, after: float | None) -> float | None:
        return after / before if after is not None and before else None

    def step(result: RunResult) -> float | None:
        return result.steps.s_per_step if result.steps else None

    def host_peak(result: RunResult) -> float | None:
        return result.memory.host_peak_gib if result.memory else None

    old_metrics, new_metrics = _numbers(old.metrics), _numbers(new.metrics)
    differing = {
        key: [old_metrics.get(key), new_metrics.get(key)]
        for key in sorted(old_metrics.keys() | new_metrics.keys())
        if key not in old_metrics
        or key not in new_metrics
        or not math.isclose(old_metrics[key], new_metrics[key], rel_tol=METRIC_RTOL, abs_tol=1e-12)
    }
    old_packages = old.environment.packages if old.environment else {}
    new_packages = new.environment.packages if new.environment else {}
    report: dict[str, Any] = {
        "config_hash": [old.config_hash, new.config_hash],
        "status": [old.status, new.status],
        "frames_hash": [old.frames_hash, new.frames_hash],
        "metrics_compared": len(old_metrics.keys() | new_metrics.keys()),
        "metrics_differing": differing,
        "latency_median_ratio": ratio(old.median_s, new.median_s),
        "s_per_step_ratio": ratio(step(old), step(new)),
        "cold_ratio": ratio(old.latency.cold_s, new.latency.cold_s),
        "host_peak_ratio": ratio(host_peak(old), host_peak(new)),
        "device": [old.device, new.device],
        "code": [_code(old), _code(new)],
        "packages_changed": {
            name: [version, new_packages.get(name)]
            for name, version in old_packages.items()
            if version != new_packages.get(name)
        },
    }
    # What must be equal for the replay to count as reproduced.
    report["differs"] = [key for key in ("config_hash", "status", "frames_hash") if len(set(report[key])) > 1]
    report["differs"] += ["metrics"] if differing else []
    report["reproduced"] = not report["differs"]
    return report


def format_report(report: dict[str, Any]) -> str:
    def pair(key: str) -> str:
        old, new = report[key]
        return f"same ({old})" if old == new else f"DIFFERENT: {old} -> {new}"

    def ratio(key: str) -> str:
        return "n/a" if report[key] is None else f"x{report[key]:.3f}"

    metrics = f"{report['metrics_compared']} compared"
    if report["metrics_differing"]:
        metrics += ", DIFFERENT: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in report["metrics_differing"].items())
    lines = [
        f"config:  {pair('config_hash')}",
        f"status:  {pair('status')}",
        f"frames:  {pair('frames_hash')}",
        f"metrics: {metrics}",
        f"timing (new/old): median latency {ratio('latency_median_ratio')}, s/step {ratio('s_per_step_ratio')}, "
        f"cold call {ratio('cold_ratio')}; peak host memory {ratio('host_peak_ratio')}",
        f"device:  {pair('device')}",
        f"code:    {pair('code')}",
    ]
    changed = report["packages_changed"]
    if changed:
        lines.append("packages changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    lines.append("REPRODUCED" if report["reproduced"] else f"NOT REPRODUCED: {', '.join(report['differs'])} differ")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m svdbench.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (with results.json and .hydra/)")
    parser.add_argument("--out", type=Path, help="the replay's run directory (default RUN_DIR/replay-<time>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. logger=none")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after --out
    run_dir = args.run_dir.resolve()
    try:
        old, overrides = load_record(run_dir)
    except NotARunDir as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = (args.out or run_dir / f"replay-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    try:
        check_free(out, "run", RUN_PURPOSE, "pass another --out (a new or empty directory), or move it away")
    except DirectoryTaken as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 2
    found = existing_record(out)
    if found:
        print(f"error: {out} already holds {found}; pass another --out, or move it away.", file=sys.stderr)
        return 2
    # Relative paths among the overrides (input.path=...) meant the original working directory.
    recorded_cwd = Path(old.provenance.cwd if old.provenance else ".")
    cwd = recorded_cwd if recorded_cwd.is_dir() else Path.cwd()
    command = replay_command(overrides, args.overrides, out)
    print(f"Replaying {run_dir}\n  in {cwd}: {' '.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=cwd)  # its exit status is the run's; the comparison below decides ours
    try:
        new = RunResult.load(out)
    except ResultsError as exc:
        print(
            f"error: the replay wrote no readable {RESULTS_FILE} in {out} ({exc}); its log is above.", file=sys.stderr
        )
        return 1
    report = {"run_dir": str(run_dir), "replay_dir": str(out), **compare(old, new)}
    print(f"Replay of {run_dir}\n       -> {out}\n{format_report(report)}")
    try:
        write_json_atomic(out / REPORT_FILE, report)
    except OSError as exc:
        print(
            f"error: cannot write {out / REPORT_FILE}: {describe_os_error(exc)}. The comparison is printed above; "
            "free some space and run the replay again to keep it.",
            file=sys.stderr,
        )
        return 3
    return 0 if report["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())
