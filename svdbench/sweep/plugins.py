"""svdbench's sweeper and launcher: Hydra's basic ones, except that a job whose settings are invalid becomes that
job's `error` result (with the reason) and the sweep goes on, instead of one bad value stopping the whole sweep.

`python -m svdbench` calls `register_plugins` before Hydra's main.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict

from svdbench.record.results import RunResult, now_iso
from svdbench.record.rundir import OVERRIDES_FILE, set_aside
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
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            runs.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs

    def _failed_job(self, idx: int, overrides: list[str], problem: str) -> JobReturn:
        assert self.config is not None
        config = copy.deepcopy(self.config)
        with open_dict(config):
            config.hydra.job.num = idx
            config.hydra.job.id = idx
        try:
            subdir = str(config.hydra.sweep.subdir)
        except Exception:  # a subdir that needs the job's own (uncomposable) config
            subdir = str(idx)
        job_dir = Path(str(self.config.hydra.sweep.dir)) / subdir
        log.error("Job #%d (%s) has invalid settings: %s", idx, " ".join(overrides), problem)
        set_aside(job_dir, "replaced by a job with invalid settings")
        (job_dir / OVERRIDES_FILE).parent.mkdir(parents=True, exist_ok=True)
        (job_dir / OVERRIDES_FILE).write_text(yaml.safe_dump(overrides))
        RunResult(status="error", reason=problem, finished_at=now_iso()).save(job_dir)
        ret = JobReturn(overrides=overrides, working_dir=str(job_dir), hydra_cfg=None)
        ret.status = JobStatus.COMPLETED
        ret.return_value = (PENALTY, PENALTY)
        return ret


def _job_problem(overrides: list[str]) -> str | None:
    from svdbench.settings.arguments import job_problem

    return job_problem(overrides)


SweepSweeper.__module__ = SweepLauncher.__module__ = PLUGIN_MODULE


# conf/hydra/{launcher,sweeper}/basic.yaml put these classes in place of Hydra's under the same name, so that
# experiments which choose another sweeper (experiment=tradeoff: Optuna) still can. Hydra warns that matching a
# YAML file to a schema by its name is deprecated; harmless here, and filtered
# (svdbench.settings.arguments.SCHEMA_MATCH).


def register_plugins() -> None:
    """Make svdbench's sweeper and launcher instantiable by Hydra; call before Hydra's main.

    Hydra instantiates sweepers and launchers only from modules under `hydra_plugins.`, and its plugin scan
    re-executes its own core plugin modules (SweepSweeper.__init__ says why that matters); so this module is
    made importable as `hydra_plugins.svdbench` and its classes are registered with Plugins.register, Hydra's
    documented way to add a plugin by hand. (svdbench keeps its layout: no top-level hydra_plugins/ folder.)"""
    import importlib
    import sys
    import types

    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    if "hydra_plugins" not in sys.modules:
        try:
            importlib.import_module("hydra_plugins")  # where plugins such as submitit's are installed
        except ImportError:
            sys.modules["hydra_plugins"] = types.ModuleType("hydra_plugins")
    sys.modules[PLUGIN_MODULE] = sys.modules[__name__]
    plugins.register(SweepSweeper)
    plugins.register(SweepLauncher)
