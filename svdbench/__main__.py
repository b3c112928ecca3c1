"""`python -m svdbench [overrides]`: compose the config, run one measurement, write the record, log to W&B.

In a multirun each job runs in a child process of its own (see svdbench/sweep.py); jobs whose
directory already holds complete results of the same config are skipped.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from svdbench.config import ConfigError, RunConfig, register_configs, to_run_config
from svdbench.preflight import unknown_setting
from svdbench.record import config_hash, environment, provenance
from svdbench.results import STEPS_FILE, RunResult, now_iso, read_results, write_results, write_steps_csv
from svdbench.runner import run
from svdbench.sweep import launcher_isolates_jobs, objectives, previous_result, run_in_child

log = logging.getLogger("svdbench")
register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(composed: DictConfig) -> tuple[float, float]:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # A sweep's child process runs in RUN mode; the parent tells it which sweep it belongs to.
    sweep = str(hydra_cfg.sweep.dir) if multirun else os.environ.get("SVDBENCH_SWEEP")
    try:
        cfg = to_run_config(composed)
    except ConfigError as exc:
        result = record(None, run_dir, RunResult(status="error", reason=str(exc), finished_at=now_iso()), overrides)
    else:
        if multirun:
            return sweep_job(cfg, run_dir, overrides, sweep)
        result = record(cfg, run_dir, run(cfg, run_dir), overrides, sweep)
    if result.status == "interrupted":
        raise KeyboardInterrupt  # the record is written; stop here, and stop a sweep too
    if result.status != "ok" and not multirun:
        sys.exit(1)
    return objectives(result.to_dict(), None)


def record(cfg: RunConfig | None, run_dir: Path, result: RunResult, overrides: list[str], sweep=None) -> RunResult:
    """Write the run's record, then (outside every measured interval) the optional W&B copy."""
    result.environment = environment()
    result.provenance = provenance(overrides)
    if write_steps_csv(run_dir, result):
        result.files["steps"] = STEPS_FILE
    path = write_results(run_dir, result)
    if result.status == "ok":
        log.info(
            "ok: %.3f s per video (median of %d), %.2f frames/s, peak host memory %.2f GiB -> %s",
            result.latency.stats.median,
            result.latency.stats.n,
            result.throughput.frames_per_s,
            result.memory.host_peak_gib,
            path,
        )
    else:
        log.error("%s: %s\nRecorded in %s", result.status, result.reason, path)
    if cfg is not None and cfg.logger.name == "wandb" and result.status != "interrupted":
        from svdbench.tracking import log_run

        log_run(cfg, run_dir, result, overrides, sweep)
    return result


def sweep_job(cfg: RunConfig, run_dir: Path, overrides: list[str], sweep: str) -> tuple[float, float]:
    """One job of a multirun: skipped if already complete, else run in its own process (or here)."""
    previous = None if cfg.sweep.redo else previous_result(run_dir, config_hash(cfg))
    if previous is not None:
        log.info("Skipping %s: complete results (%s) of the same config exist.", run_dir, previous["status"])
        return objectives(previous, cfg.sweep.flicker_limit)
    if cfg.sweep.isolate and not launcher_isolates_jobs():
        os.environ["SVDBENCH_SWEEP"] = sweep
        run_in_child(run_dir, overrides)
        return objectives(read_results(run_dir), cfg.sweep.flicker_limit)
    result = run(cfg, run_dir)
    if not cfg.sweep.isolate:
        result.notes.append("Ran inside the sweep's process after earlier jobs (sweep.isolate=false).")
    result = record(cfg, run_dir, result, overrides, sweep)
    if result.status == "interrupted":
        raise KeyboardInterrupt
    return objectives(result.to_dict(), cfg.sweep.flicker_limit)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM. A subclass, because CPython 3.11 remembers a plain KeyboardInterrupt that
    passes through an `exec` of a string (scipy's array-API shim runs one while importing) and then
    ends the process by SIGINT at exit, whatever exit status the program chose."""


def _interrupt(signum, frame) -> None:
    raise Interrupted(f"signal {signum}")


def cli() -> None:
    """Entry point: SIGTERM is handled like Ctrl-C (the run is recorded as interrupted), and an
    interruption ends with a one-line message and exit status 130, not a traceback."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    problem = unknown_setting(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt:
        print(
            "Interrupted. Finished runs keep their results; the interrupted one is marked 'interrupted'. "
            "Re-run the same command (with hydra.sweep.dir=<the sweep's directory> for -m) to redo only the "
            "unfinished jobs.",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    cli()
