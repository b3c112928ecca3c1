"""Sweeps that compare: each job in a fresh process, failures recorded as results, resumable runs,
and a one-line summary plus the comparison table when the sweep ends.

Hydra's basic launcher calls the task function once per job in the sweep's own process. A model,
allocator caches, compiled graphs and peak-memory high-water marks from one job would leak into the
next; so in a multirun the task function re-executes `python -m svdbench` for the job in a child
process (same overrides, the job's directory as run directory) and reads its results.json back.
Launchers that already run jobs in their own processes (submitit) do not need this and skip it.

A sweep directory belongs to one sweep: re-running the same command into it resumes it (complete jobs of
the same configuration are skipped, the rest redone with their earlier record set aside); a sweep with
other settings is refused (`svdbench.record.rundir.check_sweep_dir`). A job whose settings are invalid is a
failed job, not a failed sweep (`SweepLauncher`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from svdbench.files.atomic import LOCK_FILE, DirectoryBusy, DirectoryLock
from svdbench.files.ownership import is_job_of, job_purpose, mark, read_marker
from svdbench.files.read import find_records
from svdbench.record.identity import config_hash
from svdbench.record.results import RESULTS_FILE, ResultsError, RunResult, now_iso
from svdbench.record.rundir import set_aside, write_record
from svdbench.settings.config import SWEEP_ENV, RunConfig
from svdbench.settings.hydra_api import HydraConfig
from svdbench.sweep import budget

log = logging.getLogger("svdbench.sweep.jobs")

# Statuses of a finished job; `error`, `interrupted` and `skipped` jobs are redone when a sweep is re-run.
COMPLETE = ("ok", "unsupported", "oom", "nan")
# Objective value Optuna gets for a failed job or one over the flicker limit.
PENALTY = 1e9
# Launchers that call the task function in the sweep's own process.
IN_PROCESS_LAUNCHERS = ("BasicLauncher", "SweepLauncher")
# How long a resumed sweep waits for a job of the same sweep that is still running (an earlier sweep's job whose
# parent was killed: it dies within a second of its parent, by its parent-death signal), before it refuses.
LIVE_JOB_WAIT_S = 20.0
PR_SET_PDEATHSIG = 1  # prctl(2)


def launcher_isolates_jobs() -> bool:
    """True when the Hydra launcher already gives each job its own process (submitit and the like)."""
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    return not target.endswith(IN_PROCESS_LAUNCHERS)


def sweep_job(cfg: RunConfig, run_dir: Path, overrides: list[str], sweep: str) -> tuple[float, float]:
    """One job of a multirun: skipped if already complete, else run in its own process (or here)."""
    from svdbench.runner import run

    if read_marker(run_dir) is None:  # a launcher that gives each job its own process made this directory
        mark(run_dir, "run", job_purpose(sweep))
    digest = config_hash(cfg)
    previous, why = previous_result(run_dir, digest)
    if previous is not None and not cfg.sweep.redo:
        log.info("Skipping %s: complete results (%s) of the same config exist.", run_dir, previous.status)
        return objectives(previous, cfg.sweep.flicker_limit)
    wait_for_live_job(run_dir)
    set_aside(run_dir, "sweep.redo=true" if previous is not None else why)
    verdict = budget.before_job(cfg, sweep)  # sweep.budget_s: a job that does not fit is recorded as skipped
    if verdict.skipped is not None:
        verdict.skipped.save(run_dir)
        return objectives(verdict.skipped, cfg.sweep.flicker_limit)
    started = time.monotonic()
    if cfg.sweep.isolate and not launcher_isolates_jobs():
        result = run_in_child(run_dir, overrides, sweep)
    else:
        measurement = run(cfg)
        if not cfg.sweep.isolate:
            measurement.result.notes.append("Ran inside the sweep's process after earlier jobs (sweep.isolate=false).")
        result = write_record(cfg, run_dir, measurement, overrides, sweep)
    budget.after_job(cfg, sweep, verdict, time.monotonic() - started, result.status)
    if result.status == "interrupted":  # Ctrl-C or SIGTERM reached the job (its process or ours): stop the sweep
        raise KeyboardInterrupt
    return objectives(result, cfg.sweep.flicker_limit)


def previous_result(run_dir: Path, digest: str) -> tuple[RunResult | None, str]:
    """The job's earlier results if they are complete and of the same configuration; else None and why not."""
    try:
        previous = RunResult.load(run_dir)
    except ResultsError as exc:
        if (Path(run_dir) / RESULTS_FILE).exists():
            log.warning("Redoing %s: %s", run_dir, exc)
            return None, "its results.json could not be read"
        return None, "no results"
    if previous.config_hash is None:  # a record written for a job that never ran (invalid settings, no start)
        return None, f"status {previous.status}, written before the job ran (no configuration recorded): redone"
    if previous.config_hash != digest:
        log.warning(
            "Redoing %s: its results were made by another configuration (config hash %s, now %s); they are kept "
            "aside in the job's directory.",
            run_dir,
            previous.config_hash,
            digest,
        )
        return None, f"made by another configuration (config hash {previous.config_hash}, now {digest})"
    if previous.status not in COMPLETE:
        return None, f"status {previous.status}: redone"
    return previous, ""


def wait_for_live_job(run_dir: Path, wait_s: float = LIVE_JOB_WAIT_S) -> None:
    """Return once no process writes `run_dir` (its lock is free); a job still running after `wait_s` (of another
    invocation of this sweep) stops this one with one paragraph naming its pid (exit status 2): two jobs at
    once would contaminate each other's timings."""
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            DirectoryLock(run_dir).acquire().release()
            return
        except DirectoryBusy:
            if time.monotonic() >= deadline:
                try:
                    holder = (Path(run_dir) / LOCK_FILE).read_text(errors="replace").strip()[:300]
                except OSError:
                    holder = ""
                pid = holder.split(",")[0].removeprefix("pid ").strip() if holder.startswith("pid ") else "PID"
                print(
                    f"error: {run_dir}, a job of this sweep, is still being run by another svdbench process "
                    f"({holder or 'its pid unknown'}). This sweep stopped rather than run a job beside it (both "
                    f"timings would be wrong): wait for that process to end, or end it (kill {pid}), then run this "
                    "command again.",
                    file=sys.stderr,
                )
                sys.exit(2)
            if not announced:
                log.warning("Waiting up to %.0f s for a running job in %s to end.", wait_s, run_dir)
                announced = True
            time.sleep(0.5)


def _die_with_parent(parent: int) -> None:
    """preexec_fn of a job's process: the kernel kills it (SIGKILL) when the sweep's process ends, however that
    ends, so a job never runs on alone beside a resumed sweep (prctl PR_SET_PDEATHSIG; Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the job's process group still gets the sweep's Ctrl-C
        return
    if os.getppid() != parent:  # the parent ended before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def oom_kills() -> dict[str, int]:
    """The kernel's OOM-kill counters this process can see: its cgroup's (cgroup v2 memory.events oom_kill) and
    the whole machine's (/proc/vmstat oom_kill). A job killed by SIGKILL was killed by the OOM killer only if
    one of them went up meanwhile."""
    counters: dict[str, int] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                events = Path("/sys/fs/cgroup") / line.split("::", 1)[1].strip().lstrip("/") / "memory.events"
                for entry in events.read_text().splitlines():
                    name, _, value = entry.partition(" ")
                    if name == "oom_kill":
                        counters["cgroup"] = int(value)
    except (OSError, ValueError):
        pass
    try:
        for entry in Path("/proc/vmstat").read_text().splitlines():
            name, _, value = entry.partition(" ")
            if name == "oom_kill":
                counters["kernel"] = int(value)
    except (OSError, ValueError):
        pass
    return counters


def killed_reason(before: dict[str, int], after: dict[str, int]) -> tuple[str, str]:
    """(status, reason) of a job whose process was killed by SIGKILL, from the OOM counters around it."""
    grew = [name for name in after if name in before and after[name] > before[name]]
    if grew:
        where = " and ".join({"cgroup": "its cgroup's", "kernel": "the kernel's"}[name] for name in grew)
        return "oom", f"The job's process was killed by the kernel's OOM killer ({where} OOM-kill counter went up)."
    seen = " and ".join({"cgroup": "its cgroup's", "kernel": "the kernel's"}[n] for n in before) or "no"
    return "error", (
        f"The job's process was killed by SIGKILL, not by the OOM killer ({seen} OOM-kill counter did not change): "
        "by a user, another program or a scheduler's time limit."
    )


def run_in_child(run_dir: Path, overrides: list[str], sweep: str) -> RunResult:
    """Run one job in a fresh `python -m svdbench` process and return its results.

    A crash becomes a result, not an exception: if the child wrote no results, a failure record is written.
    The child dies with this process (`_die_with_parent`).
    """
    command = [sys.executable, "-m", "svdbench", *overrides, f"hydra.run.dir={run_dir}", "hydra.mode=RUN"]
    before = oom_kills()
    parent = os.getpid()
    child = subprocess.Popen(
        command, env=dict(os.environ, **{SWEEP_ENV: sweep}), preexec_fn=lambda: _die_with_parent(parent)
    )
    try:
        code = child.wait()
    except KeyboardInterrupt:  # let the child record its interruption, then stop the sweep
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        if not (run_dir / RESULTS_FILE).exists():
            RunResult(status="interrupted", reason="Interrupted before the job finished.").save(run_dir)
        raise
    try:
        return RunResult.load(run_dir)
    except ResultsError:
        pass
    if code < 0 and -code == signal.SIGKILL:
        status, reason = killed_reason(before, oom_kills())
    elif code < 0:
        status, reason = "error", f"The job's process died from signal {signal.Signals(-code).name}."
    else:
        status, reason = "error", f"The job's process exited with code {code} without writing {RESULTS_FILE}."
    result = RunResult(status=status, reason=reason + " Its log is in this directory.", finished_at=now_iso())
    try:
        result.save(run_dir)
    except OSError as exc:
        log.error("Could not record the failure of %s (%s): %s", run_dir, exc, reason)
    return result


def objectives(result: RunResult | None, flicker_limit: float | None) -> tuple[float, float]:
    """(latency s, peak memory GiB) for multi-objective search; PENALTY for failed or too-flickery jobs."""
    if result is None or not result.ok or result.median_s is None or result.peak_memory_gib is None:
        return PENALTY, PENALTY
    warp = (result.metrics or {}).get("warp_error")
    if flicker_limit is not None and (warp is None or warp > flicker_limit):
        return PENALTY, PENALTY
    return result.median_s, result.peak_memory_gib


def sweep_statuses(sweep_dir: Path) -> Counter:
    statuses: Counter = Counter()
    for path in find_records(Path(sweep_dir), RESULTS_FILE):  # earlier attempts (previous-N/) left out
        if not is_job_of(path.parent, Path(sweep_dir)):
            continue  # not a directory this sweep made
        try:
            statuses[RunResult.load(path).status] += 1
        except ResultsError:
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
            from svdbench.compare.command import compare

            comparison = compare(sweep_dir)
            log.info("Comparison: %s", ", ".join(str(p) for p in comparison.files.values()))
            if config.get("logger", {}).get("name") == "wandb":
                from svdbench.record.tracking import log_comparison

                log_comparison(config.logger, sweep_dir, comparison.table, comparison.files)
        except Exception as exc:  # the table is a convenience; the jobs' records are what matters
            log.warning("Could not write the comparison table: %s", exc)
        if any(status != "ok" for status in statuses):
            sys.exit(1)
