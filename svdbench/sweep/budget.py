"""A sweep that spends a budget (`sweep.budget_s`): before each job, its estimate is checked against what is left.

The estimate is svdbench.plan.cost's time model on this machine (its GPU's data-sheet peak, or this CPU's
measured GEMM peak), times the ratio of actual to estimated seconds of the sweep's jobs that finished `ok` so
far (1 before the first): a model that is 30 percent low on the first jobs is 30 percent low on the rest.
What is left is the budget minus the wall-clock time since the sweep's first job was due (the estimates and
the jobs' own time, skipped jobs cost nothing). A job whose corrected estimate exceeds what is left is not
started: it is recorded with status `skipped` and a reason naming the budget and the estimate, and the sweep
goes on with the next job, which may fit. Running the same sweep again runs the skipped jobs (a `skipped`
result is not complete), with a fresh budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from svdbench.plan.cost import JobEstimate, corrected, on_this_machine
from svdbench.record.results import RunResult, now_iso
from svdbench.settings.config import RunConfig

log = logging.getLogger("svdbench.sweep.jobs")


@dataclass
class Spending:
    """One sweep's budget: when its first job was due, and (estimated, actual) seconds of its finished jobs."""

    budget_s: float
    clock: Callable[[], float] = time.monotonic
    finished: list[tuple[float, float]] = field(default_factory=list)
    started: float = -1.0

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    @property
    def spent_s(self) -> float:
        return self.clock() - self.started

    @property
    def left_s(self) -> float:
        return self.budget_s - self.spent_s


_SWEEPS: dict[str, Spending] = {}


@dataclass
class Verdict:
    """Whether a job may start: the skipped result if not; the raw estimate to set against its actual time."""

    skipped: RunResult | None
    estimate_s: float | None


def machine_estimate(cfg: RunConfig) -> JobEstimate:
    """The job's estimate on this machine, as the runner would pick its device and dtype."""
    import torch

    from svdbench.pipeline.models import dtype_name
    from svdbench.runner import select_device, select_dtype

    try:
        device = select_device(cfg.device)
    except Exception:  # a device this machine lacks: the job will fail fast, price it as a CPU job
        device = torch.device("cpu")
    dtype = dtype_name(select_dtype(cfg.dtype, cfg.model.dtype, device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return on_this_machine(cfg, device.type, dtype, name)


def before_job(cfg: RunConfig, sweep: str, estimator=machine_estimate) -> Verdict:
    """Check the job against what is left of the sweep's budget (no budget: every job starts)."""
    budget = cfg.sweep.budget_s
    if budget is None:
        return Verdict(None, None)
    spending = _SWEEPS.get(sweep)
    if spending is None:
        spending = _SWEEPS[sweep] = Spending(budget)
        announce(sweep, budget, estimator)
    spending.budget_s = budget
    try:
        estimate = estimator(cfg)
    except Exception as exc:  # pricing must not cost the sweep its job
        estimate = JobEstimate(seconds=None, reason=f"the estimate failed: {type(exc).__name__}: {exc}")
    left = spending.left_s
    if estimate.seconds is None:
        reason = (
            f"Skipped: sweep.budget_s={budget:g} s is set and this job cannot be priced ({estimate.reason}), so it "
            f"cannot be known to fit the {max(left, 0):.0f} s left. Run it without sweep.budget_s."
        )
        return Verdict(skipped_result(cfg, reason), None)
    seconds, ratio = corrected(estimate.seconds, spending.finished)
    log.info(
        "Budget: %.0f s of sweep.budget_s=%g s left; this job is estimated at %.0f s on %s (%.0f s x %.2f).",
        max(left, 0.0),
        budget,
        seconds,
        estimate.device,
        estimate.seconds,
        ratio,
    )
    if seconds > left:
        reason = (
            f"Skipped: sweep.budget_s={budget:g} s had {max(left, 0):.0f} s left when this job was due, and its "
            f"estimate is {seconds:.0f} s on {estimate.device} ({estimate.seconds:.0f} s by the time model of "
            f"svdbench.plan.cost x {ratio:.2f}, the actual over estimated time of this sweep's finished jobs). Run "
            "the same command again to run it (complete jobs are kept), or raise sweep.budget_s."
        )
        log.warning("%s", reason)
        return Verdict(skipped_result(cfg, reason), estimate.seconds)
    return Verdict(None, estimate.seconds)


def announce(sweep: str, budget: float, estimator=machine_estimate) -> float | None:
    """Before the first job: the estimate of every job of the sweep (from the sweep's multirun.yaml, which
    Hydra writes before the first job starts) and their total, in the log; the total, or None if the sweep's
    jobs cannot be read back."""
    from omegaconf import OmegaConf

    from svdbench.plan.sweep_plan import sweep_jobs
    from svdbench.settings.arguments import run_config

    try:
        saved = OmegaConf.load(Path(sweep) / "multirun.yaml")
        jobs = sweep_jobs([str(o) for o in saved.hydra.overrides.task], multirun=True) or []
        estimates = [estimator(run_config(job)) for job in jobs]
    except Exception as exc:  # the announcement is a courtesy: the budget is checked job by job regardless
        log.warning("Budget: the sweep's total estimate could not be made (%s: %s).", type(exc).__name__, exc)
        return None
    for job, estimate in zip(jobs, estimates):
        shown = f"{estimate.seconds:.0f} s" if estimate.seconds is not None else f"not priced ({estimate.reason})"
        log.info("Budget: estimate of %s: %s", " ".join(job), shown)
    total = sum(e.seconds for e in estimates if e.seconds is not None)
    log.info(
        "Budget: %d jobs estimated at %.0f s in all on %s, against sweep.budget_s=%g s%s.",
        len(jobs),
        total,
        estimates[0].device if estimates else "this machine",
        budget,
        "" if total <= budget else "; the jobs that do not fit when they are due will be skipped (run again for them)",
    )
    return total


def after_job(cfg: RunConfig, sweep: str, verdict: Verdict, actual_s: float, status: str) -> None:
    """A finished job's actual seconds correct the estimates of the jobs after it (`ok` jobs only: a job that
    failed early says nothing about the model)."""
    spending = _SWEEPS.get(sweep)
    if spending is None or verdict.estimate_s is None or status != "ok":
        return
    spending.finished.append((verdict.estimate_s, actual_s))


def skipped_result(cfg: RunConfig, reason: str) -> RunResult:
    return RunResult.of(cfg, status="skipped", reason=reason, finished_at=now_iso())
