"""`python -m svdbench [overrides]`: compose the config, measure, write the run's record.

This file only composes (Hydra), sets the exit status and handles signals. The measurement is
`svdbench.runner.run`, the record on disk `svdbench.record.rundir.write_record`, and a multirun's job logic
(one process per job, resume, failures as results) `svdbench.sweep.jobs`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from pathlib import Path


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C or SIGTERM while Python is still importing (a sweep's job that is interrupted as it starts): exit
    130 without a traceback; nothing was written yet. cli() puts the run's own handler in place."""
    sys.exit(130)


signal.signal(signal.SIGINT, _interrupted_while_starting)
signal.signal(signal.SIGTERM, _interrupted_while_starting)

import hydra  # noqa: E402  (after the handlers above: importing Hydra and the settings takes a second or more)
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from svdbench.settings.config import SWEEP_ENV, ConfigError, register_configs, to_run_config  # noqa: E402
from svdbench.settings.hydra_api import SCHEMA_MATCH, VERSION_BASE, HydraConfig  # noqa: E402

# Only Hydra and the settings are imported up here, so that a bad command line is refused in half a second;
# torch and everything that measures or writes come in once the settings are known to be good.
register_configs()
warnings.filterwarnings("ignore", message=SCHEMA_MATCH, category=UserWarning)


@hydra.main(config_path="../conf", config_name="config", **VERSION_BASE)
def main(composed: DictConfig) -> tuple[float, float] | None:
    from svdbench.record.results import RunResult, now_iso
    from svdbench.record.rundir import write_record
    from svdbench.runner import Measurement, run
    from svdbench.sweep.jobs import objectives, sweep_job

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # A sweep's child process runs in RUN mode; the parent tells it which sweep it belongs to.
    sweep = str(hydra_cfg.sweep.dir) if multirun else os.environ.get(SWEEP_ENV)
    try:
        cfg = to_run_config(composed)
    # Checked before Hydra started (svdbench.settings.arguments); a job of a sweep lands here.
    except ConfigError as exc:
        failed = RunResult(status="error", reason=str(exc), finished_at=now_iso())
        write_record(None, run_dir, Measurement(failed), overrides, sweep)
        if multirun:
            return objectives(None, None)
        sys.exit(2 if sweep is None else 1)
    if multirun:
        return sweep_job(cfg, run_dir, overrides, str(sweep))
    if _rank() != 0:  # torchrun's other ranks (parallel=cfg|data): rank 0's record holds their share
        sys.exit(0 if run(cfg).result.status == "ok" else 1)
    result = write_record(cfg, run_dir, run(cfg), overrides, sweep)
    if result.status == "interrupted":
        raise KeyboardInterrupt  # the record is written; stop here, and stop a sweep too
    if result.status != "ok" or result.file_errors:
        sys.exit(1)
    return None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM. A subclass, because CPython 3.11 remembers a plain KeyboardInterrupt that
    passes through an `exec` of a string (scipy's array-API shim runs one while importing) and then
    ends the process by SIGINT at exit, whatever exit status the program chose."""


def _interrupt(signum, frame) -> None:
    raise Interrupted(f"signal {signum}")


def _rank() -> int:
    """This process's rank under torchrun (RANK), 0 otherwise."""
    return int(os.environ.get("RANK", "0") or 0)


def _scratch_run_dir() -> None:
    """torchrun's ranks other than 0 write nothing: Hydra's directory (its lock, .hydra/, log) is a temporary
    one, removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix="svdbench-rank-")
    atexit.register(shutil.rmtree, scratch, True)
    kept = [arg for arg in sys.argv[1:] if not arg.lstrip("+").startswith("hydra.run.dir=")]
    sys.argv[1:] = [*kept, f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def cli() -> None:
    """Entry point: the command line is checked before Hydra creates anything (exit 2 with one paragraph);
    SIGTERM is handled like Ctrl-C (the run is recorded as interrupted), and an interruption ends with a
    one-line message and exit status 130, not a traceback."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # A log line that cannot be written (a full disk under the log file) is dropped, not printed as a traceback:
    # the record's own writes say what failed.
    logging.raiseExceptions = False
    if not os.environ.get(SWEEP_ENV):  # a sweep checks its jobs' settings before it starts them
        from svdbench.settings.arguments import check_command_line

        problem = check_command_line(sys.argv[1:])
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
    try:  # the imports too: a sweep's job interrupted as it starts is still importing torch
        from svdbench.sweep.plugins import register_plugins
        from svdbench.sweep.ray import register as register_ray_launcher

        register_plugins()
        register_ray_launcher()  # hydra/launcher=ray (Ray itself is imported only when a sweep uses it)
        if _rank() != 0:
            _scratch_run_dir()
        main()
    except KeyboardInterrupt:
        print(f"Interrupted. {_next_step()}", file=sys.stderr)
        sys.exit(130)


def _next_step() -> str:
    """What to run after an interruption: a command that works (a run's directory is never written twice)."""
    if os.environ.get(SWEEP_ENV):
        return "The job is recorded as 'interrupted'; resuming its sweep redoes it."
    rundir = sys.modules.get("svdbench.record.rundir")  # loaded once the output directory was claimed
    hints = list(getattr(rundir, "INTERRUPT_HINT", []))
    return hints[0] if hints else "Nothing was written: run the same command again."


if __name__ == "__main__":
    cli()
