"""`python -m svdbench.replay RUN_DIR [--out DIR] [OVERRIDE ...]`: repeat a recorded run and compare.

The run is repeated from its record: the Hydra overrides in `.hydra/overrides.yaml`, through the same
entry point (`python -m svdbench`) in a subprocess, from the directory it was started in, into a new
directory (default `RUN_DIR/replay-<time>`). The config hash says whether that composed the same
experiment (it does not if `conf/` defaults changed since); the frames hash whether the output is
bit-identical; the timing ratios how far the machine's speed moved. Extra overrides (e.g. `logger=none`)
are appended; any that change the experiment show up as a different config hash.

Exit status: 0 reproduced, 1 not reproduced (frames, metrics, status or config differ, or the replay
wrote no results), 2 RUN_DIR is not a run directory.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from svdbench.results import RESULTS_FILE, flatten, lookup, read_results, write_json_atomic

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
REPORT_FILE = "replay.json"
METRIC_RTOL = 1e-6  # identical frames give identical metrics up to float noise of multi-threaded kernels


class NotARunDir(ValueError):
    pass


def load_record(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """results.json and the overrides of a run directory; NotARunDir says what is missing."""
    if not run_dir.is_dir():
        raise NotARunDir(f"{run_dir} does not exist or is not a directory: pass a run directory of svdbench.")
    missing = [name for name in (RESULTS_FILE, str(OVERRIDES_FILE)) if not (run_dir / name).is_file()]
    if missing:
        raise NotARunDir(
            f"{run_dir} is not an svdbench run directory: it has no {' and no '.join(missing)}. A run directory "
            "is what `python -m svdbench` creates, outputs/runs/<date>/<time>_<model>_<opt>/ or a numbered job "
            "directory of a sweep under outputs/sweeps/<date>/<time>/; pass one of those."
        )
    overrides = yaml.safe_load((run_dir / OVERRIDES_FILE).read_text()) or []
    return read_results(run_dir), [str(o) for o in overrides]


def replay_command(overrides: list[str], extra: list[str], out: Path) -> list[str]:
    quoted = str(out).replace("\\", "\\\\").replace("'", "\\'")
    return [sys.executable, "-m", "svdbench", *overrides, *extra, f"hydra.run.dir='{quoted}'"]


def _numbers(record: dict[str, Any], key: str) -> dict[str, float]:
    flat = flatten(record.get(key) or {}, "/")
    return {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _code(record: dict[str, Any]) -> str | None:
    commit = lookup(record, "provenance.git_commit")
    return f"{commit} (dirty)" if commit and lookup(record, "provenance.git_dirty") else commit


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What matched between two results.json records, and how the timings moved (ratios new / old)."""

    def both(dotted: str) -> list[Any]:
        return [lookup(old, dotted), lookup(new, dotted)]

    def ratio(dotted: str) -> float | None:
        before, after = both(dotted)
        return after / before if after is not None and before else None

    old_metrics, new_metrics = _numbers(old, "metrics"), _numbers(new, "metrics")
    differing = {
        key: [old_metrics.get(key), new_metrics.get(key)]
        for key in sorted(old_metrics.keys() | new_metrics.keys())
        if key not in old_metrics
        or key not in new_metrics
        or not math.isclose(old_metrics[key], new_metrics[key], rel_tol=METRIC_RTOL, abs_tol=1e-12)
    }
    old_packages, new_packages = both("environment.packages")
    report = {
        "config_hash": both("config_hash"),
        "status": both("status"),
        "frames_hash": both("frames_hash"),
        "metrics_compared": len(old_metrics.keys() | new_metrics.keys()),
        "metrics_differing": differing,
        "latency_median_ratio": ratio("latency.stats.median"),
        "s_per_step_ratio": ratio("steps.s_per_step"),
        "cold_ratio": ratio("latency.cold_s"),
        "host_peak_ratio": ratio("memory.host_peak_gib"),
        "device": both("device"),
        "code": [_code(old), _code(new)],
        "packages_changed": {
            name: [version, (new_packages or {}).get(name)]
            for name, version in (old_packages or {}).items()
            if version != (new_packages or {}).get(name)
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
    if (out / RESULTS_FILE).exists():
        print(f"error: {out} already holds a run; pass another --out or remove it.", file=sys.stderr)
        return 2
    # Relative paths among the overrides (input.path=...) meant the original working directory.
    recorded_cwd = Path(lookup(old, "provenance.cwd") or ".")
    cwd = recorded_cwd if recorded_cwd.is_dir() else Path.cwd()
    command = replay_command(overrides, args.overrides, out)
    print(f"Replaying {run_dir}\n  in {cwd}: {' '.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=cwd)  # its exit status is the run's; the comparison below decides ours
    if not (out / RESULTS_FILE).is_file():
        print(f"error: the replay wrote no {RESULTS_FILE} in {out}; its log is above.", file=sys.stderr)
        return 1
    report = {"run_dir": str(run_dir), "replay_dir": str(out), **compare(old, read_results(out))}
    write_json_atomic(out / REPORT_FILE, report)
    print(f"Replay of {run_dir}\n       -> {out}\n{format_report(report)}")
    return 0 if report["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())
