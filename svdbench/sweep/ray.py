"""`hydra/launcher=ray`: a sweep's jobs as Ray tasks, as many at once as the Ray cluster has GPUs for.

Keys as hydra-ray-launcher's: `hydra.launcher.ray.init.*` go to `ray.init` (`address` joins an existing
cluster; without it Ray starts one on this machine, where `num_gpus`/`num_cpus` declare what it has), and
`hydra.launcher.ray.remote.*` to each task's resources (`num_gpus: 1`: a GPU of its own; Ray sets the task's
CUDA_VISIBLE_DEVICES, which every results.json records as environment.cuda_visible_devices).

svdbench's sweep semantics are kept, job for job, as with its default launcher (svdbench.sweep.plugins): a job
with invalid settings gets its `error` record and the sweep goes on; a job already complete with the same
configuration is skipped (resume); every other job runs in a fresh `python -m svdbench` process
(`svdbench.sweep.jobs.run_in_child`, here inside the Ray task), and a crash is that job's result. Ctrl-C or
SIGTERM cancels the tasks not yet started and lets the running ones record `interrupted`, then stops the sweep.

Why not hydra-ray-launcher (1.2.2 installs with Ray 2.x): it composes every job in the launcher, so one invalid
value stops the whole sweep; the first failed task's exception ends the sweep (ray.get in order); and it runs
the task function inside Ray's long-lived worker processes, where one job's memory and compiled graphs would
stay for the next. It also pulls boto3, ray[default] and cloudpickle<3 into the environment.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from svdbench.record.identity import config_hash
from svdbench.record.results import ResultsError, RunResult, now_iso
from svdbench.record.rundir import record_unrun_job, set_aside
from svdbench.settings.config import to_run_config
from svdbench.settings.hydra_api import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from svdbench.sweep.jobs import objectives, previous_result, run_in_child
from svdbench.sweep.plugins import SweepLauncher, _job_problem

log = logging.getLogger("svdbench.sweep.jobs")
# Seconds a running job gets to record its interruption after Ctrl-C before the sweep stops without it.
INTERRUPT_GRACE_S = 90.0


def _run_job(run_dir: str, overrides: list[str], sweep: str, cwd: str) -> RunResult:
    """The Ray task: one job in a fresh process, as the default launcher runs it (relative paths in the
    overrides are the sweep's working directory's, where this node has it)."""
    if Path(cwd).is_dir():
        os.chdir(cwd)
    return run_in_child(Path(run_dir), overrides, sweep)


class RaySweepLauncher(SweepLauncher):
    """svdbench's launcher with the jobs as Ray tasks (the module docstring says what it keeps)."""

    def __init__(self, ray: DictConfig | dict | None = None) -> None:
        super().__init__()
        settings = OmegaConf.to_container(ray, resolve=True) if isinstance(ray, DictConfig) else dict(ray or {})
        assert isinstance(settings, dict)
        self.init: dict[str, Any] = dict(settings.get("init") or {})
        self.remote: dict[str, Any] = dict(settings.get("remote") or {})

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import ray

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        started_here = not ray.is_initialized()
        if started_here:
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            ray.init(**{k: v for k, v in self.init.items() if v is not None})
            for sig, handler in handlers.items():  # Ray's own SIGTERM handler aborts the process: keep svdbench's
                signal.signal(sig, handler)
        try:
            self._check_resources(ray)
            task = ray.remote(**{k: v for k, v in self.remote.items() if v is not None})(_run_job)
            log.info("Launching %d jobs on Ray (%s)", len(job_overrides), _resources(ray))
            runs: dict[int, JobReturn] = {}
            pending: dict[Any, tuple[int, list[str], Path, Any]] = {}
            for offset, overrides in enumerate(job_overrides):
                idx = initial_job_idx + offset
                overrides = list(overrides)
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
                problem = _job_problem(overrides)
                if problem is not None:
                    runs[idx] = self._failed_job(idx, overrides, problem)
                    continue
                config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                with open_dict(config):
                    config.hydra.job.id = config.hydra.job.num = idx
                run_dir = sweep_dir / str(config.hydra.sweep.subdir)
                cfg = to_run_config(_task_config(config))
                previous, why = previous_result(run_dir, config_hash(cfg))
                if previous is not None and not cfg.sweep.redo:
                    log.info("Skipping %s: complete results (%s) of the same config exist.", run_dir, previous.status)
                    runs[idx] = _returned(idx, overrides, run_dir, previous, cfg.sweep.flicker_limit)
                    continue
                set_aside(run_dir, "sweep.redo=true" if previous is not None else why)
                ref = task.remote(str(run_dir), overrides, str(sweep_dir), os.getcwd())
                pending[ref] = (idx, overrides, run_dir, cfg.sweep.flicker_limit)
            self._wait(ray, pending, runs)
        finally:
            if started_here:
                ray.shutdown()
        return [runs[i] for i in sorted(runs)]

    def _wait(self, ray: Any, pending: dict, runs: dict[int, JobReturn]) -> None:
        """Collect the tasks as they finish; on an interruption (here, or a job recorded as interrupted) cancel
        the rest, give the running ones time to record theirs, and stop the sweep."""
        try:
            while pending:
                # a short timeout: Python runs the SIGINT/SIGTERM handler between waits, not inside one
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    idx, overrides, run_dir, limit = pending.pop(ref)
                    result = _outcome(ray, ref, run_dir)
                    runs[idx] = _returned(idx, overrides, run_dir, result, limit)
                    log.info("Job #%d: %s (%s)", idx, result.status, run_dir)
                    if result.status == "interrupted":
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            for ref in pending:  # a running task gets KeyboardInterrupt: run_in_child lets its job record it
                ray.cancel(ref)
            if pending:
                ray.wait(list(pending), num_returns=len(pending), timeout=INTERRUPT_GRACE_S)
            for idx, overrides, run_dir, _ in pending.values():
                try:
                    RunResult.load(run_dir)
                except ResultsError:  # a job that never started: its directory says what it was and why it is empty
                    interrupted = RunResult(status="interrupted", reason="Interrupted before the job started.")
                    record_unrun_job(run_dir, overrides, interrupted)
                log.info("Job #%d interrupted (%s)", idx, run_dir)
            raise

    def _check_resources(self, ray: Any) -> None:
        """A task asking for more GPUs (or CPUs) than the whole cluster has would wait forever: refuse it."""
        have = ray.cluster_resources()
        for key, name in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
            want = self.remote.get(key) or 0
            if want > have.get(name, 0):
                print(
                    f"error: hydra.launcher.ray.remote.{key}={want}, but the Ray cluster has {have.get(name, 0):g} "
                    f"{name}(s) in all, so no job could ever start. On a machine without GPUs use "
                    "++hydra.launcher.ray.remote.num_gpus=0 (or declare logical ones with "
                    "++hydra.launcher.ray.init.num_gpus=N); on a cluster, join the one with GPUs "
                    "(++hydra.launcher.ray.init.address=HOST:PORT).",
                    file=sys.stderr,
                )
                sys.exit(2)


def _task_config(config: DictConfig) -> DictConfig:
    """The job's settings as its task function gets them: without Hydra's own node (as hydra.core.utils.run_job)."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _outcome(ray: Any, ref: Any, run_dir: Path) -> RunResult:
    """The job's record; a task that died without one (its Ray worker or node lost) becomes an `error` record."""
    try:
        ray.get(ref)
    except Exception as exc:  # the task itself failed: the job's record says why, if the job wrote one
        reason = f"The Ray task running this job failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})."
    else:
        reason = ""
    try:
        return RunResult.load(run_dir)
    except ResultsError:
        result = RunResult(status="error", reason=reason or "The job wrote no results.", finished_at=now_iso())
        result.save(run_dir)
        return result


def _returned(idx: int, overrides: list[str], run_dir: Path, result: RunResult, limit: float | None) -> JobReturn:
    ret = JobReturn(overrides=overrides, working_dir=str(run_dir), hydra_cfg=None)
    ret.status = JobStatus.COMPLETED
    ret.return_value = objectives(result, limit)
    return ret


def _resources(ray: Any) -> str:
    have = ray.cluster_resources()
    return ", ".join(f"{have.get(name, 0):g} {name}" for name in ("GPU", "CPU"))


def register() -> None:
    """Make RaySweepLauncher instantiable by Hydra as hydra_plugins.svdbench.RaySweepLauncher (conf/hydra/launcher/
    ray.yaml), beside the sweeper and launcher `register_plugins` registers; call after it."""
    from svdbench.settings.hydra_api import Plugins
    from svdbench.sweep.plugins import PLUGIN_MODULE

    RaySweepLauncher.__module__ = PLUGIN_MODULE
    setattr(sys.modules[PLUGIN_MODULE], RaySweepLauncher.__name__, RaySweepLauncher)
    Plugins.instance().register(RaySweepLauncher)
