"""Sweeps that compare: each job in a fresh process, failures recorded as results, resumable runs,
and a one-line summary plus the comparison table when the sweep ends.

Hydra's basic launcher calls the task function once per job in the sweep's own process. A model,
allocator caches, compiled graphs and peak-memory high-water marks from one job would leak into the
next; so in a multirun the task function re-executes `python -m svdbench` for the job in a child
process (same overrides, the job's directory as run directory) and reads its results.json back.
Launchers that already run jobs in their own processes (submitit) do not need this and skip it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from svdbench.results import RESULTS_FILE, RunResult, read_results, write_results

log = logging.getLogger("svdbench.sweep")

# Statuses of a finished job; `error` and `interrupted` jobs are redone when a sweep is re-run.
COMPLETE = ("ok", "unsupported", "oom", "nan")
# Objective value Optuna gets for a failed job or one over the flicker limit.
PENALTY = 1e9


def launcher_isolates_jobs() -> bool:
    """True when the Hydra launcher already gives each job its own process (everything but basic)."""
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    return not target.endswith("BasicLauncher")


def previous_result(run_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The job's earlier results, if they are complete and were made by the same configuration."""
    try:
        previous = read_results(run_dir)
    except (OSError, ValueError):
        return None
    if previous.get("config_hash") == config_hash and previous.get("status") in COMPLETE:
        return previous
    return None


def run_in_child(run_dir: Path, overrides: list[str]) -> None:
    """Run one job in a fresh `python -m svdbench` process; its results.json is in `run_dir` afterwards.

    A crash becomes a result, not an exception: if the child wrote no results, a failure record is written.
    """
    results = run_dir / RESULTS_FILE
    if results.exists():  # an earlier, incomplete attempt: keep it beside, never lose it
        results.replace(run_dir / "results.previous.json")
    command = [sys.executable, "-m", "svdbench", *overrides, f"hydra.run.dir={run_dir}", "hydra.mode=RUN"]
    child = subprocess.Popen(command)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # let the child record its interruption, then stop the sweep
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        if not results.exists():
            write_results(run_dir, RunResult(status="interrupted", reason="Interrupted before the job finished."))
        raise
    if results.exists():
        return
    if code < 0 and -code == signal.SIGKILL:
        status, reason = "oom", "The job's process was killed by SIGKILL, most likely by the kernel's OOM killer."
    elif code < 0:
        status, reason = "error", f"The job's process died from signal {signal.Signals(-code).name}."
    else:
        status, reason = "error", f"The job's process exited with code {code} without writing {RESULTS_FILE}."
    write_results(run_dir, RunResult(status=status, reason=reason + " Its log is in this directory."))


def objectives(result: dict[str, Any], flicker_limit: float | None) -> tuple[float, float]:
    """(latency s, peak memory GiB) for multi-objective search; PENALTY for failed or too-flickery jobs."""
    if result.get("status") != "ok":
        return PENALTY, PENALTY
    warp = (result.get("metrics") or {}).get("warp_error")
    if flicker_limit is not None and (warp is None or warp > flicker_limit):
        return PENALTY, PENALTY
    memory = result.get("memory") or {}
    peak = memory.get("device_max_allocated_gib") or memory.get("host_peak_gib")
    return result["latency"]["stats"]["median"], peak


def sweep_statuses(sweep_dir: Path) -> Counter:
    statuses: Counter = Counter()
    for path in Path(sweep_dir).rglob(RESULTS_FILE):
        try:
            statuses[read_results(path.parent).get("status", "unknown")] += 1
        except (OSError, ValueError):
            statuses["unreadable"] += 1
    return statuses


class SweepSummary(Callback):
    """At the end of a multirun: a one-line status summary, the comparison table, and the exit status."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = sweep_statuses(sweep_dir)
        total = sum(statuses.values())
        summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0])))
        log.info("Sweep finished: %d jobs: %s -> %s", total, summary or "none", sweep_dir)
        try:
            from svdbench.compare import compare

            comparison = compare(sweep_dir)
            log.info("Comparison: %s", ", ".join(str(p) for p in comparison.files.values()))
            if config.get("logger", {}).get("name") == "wandb":
                from svdbench.tracking import log_comparison

                log_comparison(config.logger, sweep_dir, comparison.table, comparison.files)
        except Exception as exc:  # the table is a convenience; the jobs' records are what matters
            log.warning("Could not write the comparison table: %s", exc)
        if any(status != "ok" for status in statuses):
            sys.exit(1)
