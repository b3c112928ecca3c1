"""svdbench's sweeper and launcher: Hydra's basic ones, except that a job whose settings are invalid becomes that
job's `error` result (with the reason) and the sweep goes on, instead of one bad value stopping the whole sweep.

`python -m svdbench` calls `register_plugins` before Hydra's main.
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict

from svdbench.files.atomic import describe_os_error, write_text_atomic
from svdbench.files.ownership import DirectoryTaken, check_free, job_purpose, mark
from svdbench.record.results import RunResult, now_iso
from svdbench.record.rundir import record_unrun_job, set_aside
from svdbench.settings.hydra_api import (
    BasicSweeper,
    JobReturn,
    JobStatus,
    Plugins,
    configure_log,
    filter_overrides,
    replace_save_config,
    run_job,
    setup_globals,
)
from svdbench.sweep.jobs import PENALTY

log = logging.getLogger("svdbench.sweep.jobs")
PLUGIN_MODULE = "hydra_plugins.svdbench"  # the name Hydra instantiates them by (conf/hydra/*/basic.yaml)


class SweepSweeper(BasicSweeper):
    """Hydra's basic sweeper, without composing every job up front: a job whose settings are invalid
    becomes that job's `error` result (see SweepLauncher) instead of stopping the whole sweep."""

    def __init__(self, max_batch_size: int | None, params: dict[str, str] | None = None) -> None:
        # BasicSweeper.__init__, less its `super(BasicSweeper, self)`: Hydra's plugin scan re-executes the module
        # that defines BasicSweeper, after which that name is a new class that this one does not derive from.
        self.overrides = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context = None
        self.config = None
        self.launcher = None

    def validate_batch_is_legal(self, batch: Any) -> None:
        return None


class SweepLauncher(Launcher):
    """Hydra's basic launcher (jobs one after the other), except that a job whose config cannot be composed
    or validated gets an `error` record with the reason, and the sweep goes on."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.task_function: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        """BasicLauncher.launch, with each job's settings checked before it is composed."""
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs locally", len(job_overrides))
        runs: list[JobReturn] = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            problem = _job_problem(list(overrides))
            if problem is not None:
                runs.append(self._failed_job(idx, list(overrides), problem))
                continue
            job_dir = self._job_dir(idx)
            try:  # the job's directory is the sweep's own (its marker) or empty, before Hydra writes into it
                if not check_free(job_dir, "run", self._purpose(), _HOW):
                    mark(job_dir, "run", self._purpose())
            except DirectoryTaken as exc:
                log.error("Job #%d not run: %s", idx, exc.strerror)
                runs.append(_job_return(list(overrides), job_dir))
                continue
            except OSError as exc:
                runs.append(self._could_not_start(idx, list(overrides), job_dir, exc))
                continue
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            _LAUNCHING[:] = [True]
            try:
                runs.append(
                    run_job(
                        hydra_context=self.hydra_context,
                        task_function=self.task_function,
                        config=sweep_config,
                        job_dir_key="hydra.sweep.dir",
                        job_subdir_key="hydra.sweep.subdir",
                    )
                )
            except JobCouldNotStart as exc:  # Hydra could not save the job's settings (a full disk, ulimit -f)
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                runs.append(self._could_not_start(idx, list(overrides), job_dir, exc))
                continue
            finally:
                _LAUNCHING.clear()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs

    def _purpose(self) -> str:
        assert self.config is not None
        return job_purpose(str(self.config.hydra.sweep.dir))

    def _job_dir(self, idx: int) -> Path:
        assert self.config is not None
        config = copy.deepcopy(self.config)
        with open_dict(config):
            config.hydra.job.num = idx
            config.hydra.job.id = idx
        try:
            subdir = str(config.hydra.sweep.subdir)
        except Exception:  # a subdir that needs the job's own (uncomposable) config
            subdir = str(idx)
        return Path(str(self.config.hydra.sweep.dir)) / subdir

    def _failed_job(self, idx: int, overrides: list[str], problem: str) -> JobReturn:
        job_dir = self._job_dir(idx)
        log.error("Job #%d (%s) has invalid settings: %s", idx, " ".join(overrides), problem)
        try:
            if not check_free(job_dir, "run", self._purpose(), _HOW):
                mark(job_dir, "run", self._purpose())
            set_aside(job_dir, "replaced by a job with invalid settings")
            record_unrun_job(job_dir, overrides, RunResult(status="error", reason=problem, finished_at=now_iso()))
        except DirectoryTaken as exc:
            log.error("Job #%d not recorded: %s", idx, exc.strerror)
        except OSError as exc:
            return self._could_not_start(idx, overrides, job_dir, exc)
        return _job_return(overrides, job_dir)

    def _could_not_start(self, idx: int, overrides: list[str], job_dir: Path, exc: OSError) -> JobReturn:
        """A job whose directory or settings could not be written: an `error` record and the sweep goes on;
        when even that record cannot be written, the sweep stops here with one paragraph (exit status 1)."""
        assert self.config is not None
        why = describe_os_error(exc) if not isinstance(exc, JobCouldNotStart) else str(exc.strerror)
        reason = (
            f"The job could not start: its directory {job_dir} could not be written ({why}). Free some space (or "
            "raise ulimit -f) and re-run the same command with hydra.sweep.dir=... to run it."
        )
        log.error("Job #%d (%s): %s", idx, " ".join(overrides), reason)
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            RunResult(status="error", reason=reason, finished_at=now_iso()).save(job_dir)
        except OSError as again:
            sweep_dir = self.config.hydra.sweep.dir
            print(
                f"error: the sweep stopped at job #{idx}: nothing can be written in {job_dir} "
                f"({describe_os_error(again)}), not even the record of the failure. The jobs before it keep their "
                f"records. Free some space and re-run the same command with hydra.sweep.dir={sweep_dir} to resume: "
                "complete jobs are skipped.",
                file=sys.stderr,
            )
            sys.exit(1)
        return _job_return(overrides, job_dir)


_HOW = "move it away, or give this sweep a directory of its own (hydra.sweep.dir=...)"
# Set while the launcher runs a job through Hydra's run_job: a failed save of the job's settings is then that
# job's failure (JobCouldNotStart), not the end of the sweep.
_LAUNCHING: list[bool] = []


class JobCouldNotStart(OSError):
    """Hydra could not save a job's settings into its directory."""


def _job_return(overrides: list[str], job_dir: Path) -> JobReturn:
    ret = JobReturn(overrides=overrides, working_dir=str(job_dir), hydra_cfg=None)
    ret.status = JobStatus.COMPLETED
    ret.return_value = (PENALTY, PENALTY)
    return ret


def save_config_atomically(cfg: Any, filename: str, output_dir: Path) -> None:
    """Hydra's `_save_config` (its .hydra/config.yaml, hydra.yaml, overrides.yaml), written through a temporary
    name so that a full disk or a file-size limit leaves no half-written file; the failure is one paragraph and
    exit status 2 for a run, the job's `error` record for a sweep's job (SweepLauncher)."""
    from omegaconf import OmegaConf

    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(output_dir) / filename, OmegaConf.to_yaml(cfg))
    except OSError as exc:
        message = (
            f"cannot save the run's settings into {Path(output_dir) / filename}: {describe_os_error(exc)}. Free some "
            "space, raise the file-size limit (ulimit -f), or choose another directory (hydra.run.dir=...)."
        )
        if _LAUNCHING:
            raise JobCouldNotStart(exc.errno or 0, message) from None
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _job_problem(overrides: list[str]) -> str | None:
    from svdbench.settings.arguments import job_problem

    return job_problem(overrides)


SweepSweeper.__module__ = SweepLauncher.__module__ = PLUGIN_MODULE


# conf/hydra/{launcher,sweeper}/basic.yaml put these classes in place of Hydra's under the same name, so that
# experiments which choose another sweeper (experiment=tradeoff: Optuna) still can. Hydra warns that matching a
# YAML file to a schema by its name is deprecated; harmless here, and filtered
# (svdbench.settings.hydra_api.SCHEMA_MATCH).


def register_plugins() -> None:
    """Make svdbench's sweeper and launcher instantiable by Hydra; call before Hydra's main.

    Hydra instantiates sweepers and launchers only from modules under `hydra_plugins.`, and its plugin scan
    re-executes its own core plugin modules (SweepSweeper.__init__ says why that matters); so this module is
    made importable as `hydra_plugins.svdbench` and its classes are registered with Plugins.register, Hydra's
    documented way to add a plugin by hand. (svdbench keeps its layout: no top-level hydra_plugins/ folder.)"""
    import importlib
    import sys
    import types

    replace_save_config(save_config_atomically)
    plugins = Plugins.instance()
    if "hydra_plugins" not in sys.modules:
        try:
            importlib.import_module("hydra_plugins")  # where plugins such as submitit's are installed
        except ImportError:
            sys.modules["hydra_plugins"] = types.ModuleType("hydra_plugins")
    sys.modules[PLUGIN_MODULE] = sys.modules[__name__]
    plugins.register(SweepSweeper)
    plugins.register(SweepLauncher)
