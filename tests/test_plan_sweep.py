"""A sweep priced before it runs: `python -m svdbench.plan -m ...` and experiments in MULTIRUN mode."""

from __future__ import annotations

import json

import pytest

from svdbench.plan.cost import (
    GPU_UNET_COMPILE_S,
    corrected,
    estimate,
    stand_in,
)
from svdbench.plan.sweep_plan import plan_sweep, sweep_jobs
from svdbench.settings.arguments import run_config
from tests.conftest import offline_env, run_cli

TINY_CPU = ("device=cpu", "num_frames=4", "height=64", "width=64", "num_inference_steps=2")


def test_jobs_are_expanded_as_hydras_basic_sweeper_does():
    assert sweep_jobs(["opt=none"], multirun=False) is None  # a single run
    jobs = sweep_jobs(["opt=none,compile", "seed=1,2", "device=cpu"], multirun=True)
    assert jobs == [
        ["opt=none", "seed=1", "device=cpu"],
        ["opt=none", "seed=2", "device=cpu"],
        ["opt=compile", "seed=1", "device=cpu"],
        ["opt=compile", "seed=2", "device=cpu"],
    ]


def test_an_experiment_in_multirun_mode_is_a_sweep_and_the_command_line_wins():
    runbook = sweep_jobs(["experiment=runbook"], multirun=False)
    assert runbook is not None and [job[0] for job in runbook][:3] == ["opt=none", "opt=fast", "opt=compile"]
    assert len(runbook) == 12
    two = sweep_jobs(["experiment=runbook", "opt=none,lowmem"], multirun=False)
    assert two == [["opt=none", "experiment=runbook"], ["opt=lowmem", "experiment=runbook"]]


def test_a_cpu_sweep_is_priced_job_by_job_and_totalled(tmp_path, monkeypatch):
    monkeypatch.setenv("SVDBENCH_CACHE_DIR", str(tmp_path))
    jobs = sweep_jobs(["opt=none,compile_vae", "bench.repeats=2,4", *TINY_CPU], multirun=True)
    report = plan_sweep(jobs)
    priced = {" ".join(job["overrides"][:2]): job for job in report["jobs"]}
    assert report["total_gpu_s"] == pytest.approx(sum(job["gpu_s"] for job in report["jobs"]))
    none2, none4 = priced["opt=none bench.repeats=2"], priced["opt=none bench.repeats=4"]
    compiled = priced["opt=compile_vae bench.repeats=2"]
    call = none2["estimate"]["call_s"]
    assert none4["gpu_s"] - none2["gpu_s"] == pytest.approx(2 * call)  # two more measured calls
    assert compiled["estimate"]["parts"]["compile_s"] > 0 == none2["estimate"]["parts"]["compile_s"]
    assert compiled["gpu_s"] > none2["gpu_s"]
    assert all(job["peak_gib"] > 0 and job["device"] == "cpu" for job in report["jobs"])


def test_gpu_modes_without_a_measurement_say_what_prices_them():
    def xt(opt: str):
        return run_config(["experiment=runbook", f"opt={opt}"])

    assert stand_in(xt("none")) == ("none", None)
    name, note = stand_in(xt("fast"))
    assert name == "compile" and "fused QKV" in note
    assert stand_in(xt("seq_offload"))[0] is None
    fast = estimate(xt("fast"), device="cuda", dtype="fp16", peak_tflops=989.4, name="H100")
    compiled = estimate(xt("compile"), device="cuda", dtype="fp16", peak_tflops=989.4, name="H100")
    assert compiled.parts["compile_s"] == GPU_UNET_COMPILE_S
    assert fast.parts["compile_s"] > compiled.parts["compile_s"]  # the VAE too
    assert any("not measured" in text for text in fast.assumptions)
    # the measured call of the H100 table comes back: none at 19.37 s per call
    none = estimate(xt("none"), device="cuda", dtype="fp16", peak_tflops=989.4, name="H100")
    assert none.call_s == pytest.approx(19.37, rel=0.01)
    unpriced = estimate(xt("seq_offload"), device="cuda", dtype="fp16", peak_tflops=989.4, name="H100")
    assert unpriced.seconds is None and "sequential offload" in unpriced.reason


def test_estimates_are_corrected_by_what_finished_jobs_took():
    assert corrected(10.0, []) == (10.0, 1.0)
    assert corrected(10.0, [(5.0, 10.0), (5.0, 20.0)]) == (30.0, 3.0)


def test_a_search_sweep_cannot_be_priced(tmp_path):
    proc = run_cli(tmp_path, "experiment=tradeoff", module="svdbench.plan", env=offline_env(tmp_path), timeout=120)
    assert proc.returncode == 2 and "cannot be listed or priced" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_runbook_is_priced_on_an_h100(tmp_path):
    env = dict(offline_env(tmp_path), SVDBENCH_CACHE_DIR=str(tmp_path / "cache"))
    proc = run_cli(tmp_path, "experiment=runbook", "--gpu", "h100", "--json", module="svdbench.plan", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    jobs = {job["overrides"][0]: job for job in report["jobs"]}
    assert len(jobs) == 12 and report["total_gpu_s"] > 0
    assert jobs["opt=seq_offload"]["gpu_s"] is None and jobs["opt=seq_offload"]["reason"]
    assert report["total_gpu_s"] == pytest.approx(sum(j["gpu_s"] for j in report["jobs"] if j["gpu_s"] is not None))
    assert jobs["opt=lowmem"]["fit"] is True and jobs["opt=none"]["peak_gib"] == pytest.approx(32.4, abs=0.2)
    text = run_cli(tmp_path, "experiment=runbook", "--gpu", "h100", module="svdbench.plan", env=env)
    assert "| 0 | opt=none experiment=runbook | H100 |" in text.stdout and "**Total:" in text.stdout
