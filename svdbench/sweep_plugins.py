"""svdbench's sweeper and launcher: Hydra's basic ones, except that a job whose settings are invalid becomes that
job's `error` result (with the reason) and the sweep goes on, instead of one bad value stopping the whole sweep.

Imported only by `svdbench.sweep.register_plugins`, after Hydra's plugin scan (see there why).
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

from svdbench.results import RunResult, now_iso
from svdbench.rundir import OVERRIDES_FILE, set_aside
from svdbench.sweep import PENALTY

log = logging.getLogger("svdbench.sweep")
PLUGIN_MODULE = "hydra_plugins.svdbench"  # the name Hydra instantiates them by (conf/hydra/*/basic.yaml)


class SweepSweeper(BasicSweeper):
    """Hydra's basic sweeper, without composing every job up front: a job whose settings are invalid
    becomes that job's `error` result (see SweepLauncher) instead of stopping the whole sweep."""

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
    from svdbench.arguments import job_problem

    return job_problem(overrides)


SweepSweeper.__module__ = SweepLauncher.__module__ = PLUGIN_MODULE
