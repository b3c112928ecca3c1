"""sweep.budget_s: jobs checked against what is left before they start, estimates corrected on the way; a job
that does not fit is a `skipped` result and the sweep goes on. The budget's clock is a fake one in the unit
test (the jobs are stand-ins: their times are the test's numbers); the command-line tests run real sweeps."""

from __future__ import annotations

import pytest

from svdbench.plan.cost import JobEstimate
from svdbench.record.results import RunResult
from svdbench.sweep import budget
from tests.conftest import FAST, run_cli, typed_config

TINY = ["model=tiny", "device=cpu", "dtype=fp32", "height=64", "width=64", "num_frames=4", *FAST, "logger=none"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_jobs_that_fit_run_those_that_do_not_are_skipped_and_estimates_learn(monkeypatch):
    clock = FakeClock()
    monkeypatch.setitem(budget._SWEEPS, "sweep-a", budget.Spending(100.0, clock=clock))
    cfg = typed_config(*TINY, "sweep.budget_s=100")
    ran = []

    def job(name: str, estimate_s: float, actual_s: float | None) -> RunResult | None:
        verdict = budget.before_job(cfg, "sweep-a", estimator=lambda _: JobEstimate(estimate_s, device="this CPU"))
        if verdict.skipped is not None:
            assert actual_s is None, f"{name} should have run"
            return verdict.skipped
        assert actual_s is not None, f"{name} should have been skipped"
        clock.now += actual_s
        budget.after_job(cfg, "sweep-a", verdict, actual_s, "ok")
        ran.append(name)
        return None

    assert job("a", 30, 60) is None  # fits 100 s; takes twice its estimate: later estimates are doubled
    assert job("b", 15, 30) is None  # 15 x 2 = 30 <= 40 left
    skipped = job("c", 10, None)  # 10 x 2 = 20 > 10 left
    assert skipped is not None and skipped.status == "skipped"
    assert "sweep.budget_s=100 s had 10 s left" in skipped.reason and "estimate is 20 s" in skipped.reason
    assert "x 2.00" in skipped.reason and skipped.config_hash
    assert job("d", 4, 4) is None  # a later job that fits still runs: 8 <= 10
    assert ran == ["a", "b", "d"]


def test_a_job_that_cannot_be_priced_is_skipped_under_a_budget(monkeypatch):
    monkeypatch.setitem(budget._SWEEPS, "sweep-b", budget.Spending(100.0, clock=FakeClock()))
    cfg = typed_config(*TINY, "sweep.budget_s=100")
    verdict = budget.before_job(cfg, "sweep-b", estimator=lambda _: JobEstimate(None, reason="no stand-in"))
    assert verdict.skipped is not None and "cannot be priced (no stand-in)" in verdict.skipped.reason


def test_no_budget_starts_every_job():
    verdict = budget.before_job(typed_config(*TINY), "sweep-c", estimator=lambda _: JobEstimate(1e9))
    assert verdict.skipped is None and "sweep-c" not in budget._SWEEPS


def test_the_estimate_on_this_cpu_is_priced():
    estimate = budget.machine_estimate(typed_config(*TINY))
    assert estimate.seconds is not None and estimate.seconds > 0 and estimate.device == "this CPU"


def test_a_budget_too_small_skips_every_job_without_a_traceback(tmp_path):
    proc = run_cli(tmp_path, "-m", *TINY, "opt=none,chunking", "sweep.budget_s=1", "hydra.sweep.dir=sw", timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    results = [RunResult.load(path) for path in sorted((tmp_path / "sw").rglob("results.json"))]
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert all("sweep.budget_s=1 s" in r.reason and "estimate is" in r.reason for r in results)
    assert proc.returncode == 1  # not every job is ok


@pytest.mark.slow
def test_the_same_sweep_without_the_budget_runs_the_skipped_jobs(tmp_path):
    args = ["-m", *TINY, "opt=none,chunking", "hydra.sweep.dir=sw"]
    run_cli(tmp_path, *args, "sweep.budget_s=1", timeout=300)
    proc = run_cli(tmp_path, *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [RunResult.load(path) for path in sorted((tmp_path / "sw").glob("*/results.json"))]
    assert [r.status for r in results] == ["ok", "ok"]
    assert len(list((tmp_path / "sw").rglob("previous-*/results.json"))) == 2  # the skipped records, kept aside
