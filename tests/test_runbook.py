"""The GPU runbook as a ready-made experiment (`experiment=runbook`), and the diffusers guide's claims that
the comparison checks. On this CPU the runbook's flow runs for real with model=tiny."""

from __future__ import annotations

import re

import pytest
import yaml

from svdbench.compare.claims import check_claims
from svdbench.compare.jobs import Job, assign_baselines
from svdbench.measure.memory import MemoryPeak
from svdbench.measure.timing import Stats
from svdbench.record.results import Latency, RunResult
from svdbench.settings.saved import from_values

from .conftest import CONF_DIR, FAST, read_json, run_cli, typed_config

TINY = ["model=tiny", "device=cpu", "dtype=fp32", "height=128", "width=128", "num_frames=8", *FAST]


def test_runbook_composes_the_h100_settings_and_every_mode():
    cfg = typed_config("experiment=runbook")
    assert (cfg.model.name, cfg.model.weights, cfg.device, cfg.dtype) == ("xt", "random", "cuda", "fp16")
    assert (cfg.height, cfg.width, cfg.num_frames, cfg.num_inference_steps) == (576, 1024, 25, 25)
    params = yaml.safe_load((CONF_DIR / "experiment" / "runbook.yaml").read_text())["hydra"]["sweeper"]["params"]
    modes = params["opt"].split(",")
    # Every opt preset but the compile variants (one compile mode is enough for the runbook), each once.
    variants = {"compile_default", "compile_max_autotune", "compile_vae"}
    assert sorted(modes) == sorted({p.stem for p in (CONF_DIR / "opt").glob("*.yaml")} - variants), modes
    assert len(modes) == len(set(modes)) == 12
    for mode in modes:  # each job of the runbook composes and validates, and runs the mode it names
        job = typed_config("experiment=runbook", f"opt={mode}")
        assert job.opt.name == mode and (job.model.name, job.device, job.dtype) == ("xt", "cuda", "fp16")


@pytest.mark.slow  # a two-job sweep; CI runs it with -m slow
def test_runbook_dry_run_on_the_cpu_makes_a_comparison_with_the_claims(tmp_path):
    proc = run_cli(tmp_path, "experiment=runbook", *TINY, "opt=none,lowmem", "hydra.sweep.dir=rb")
    assert proc.returncode == 1, proc.stderr[-3000:]  # lowmem offloads: unsupported on a CPU
    assert "Sweep finished: 2 jobs: 1 ok, 1 unsupported" in proc.stderr
    assert read_json(tmp_path / "rb" / "0" / "results.json")["status"] == "ok"
    comparison = (tmp_path / "rb" / "comparison.md").read_text()
    # "1 ⚠" where the machine was busy while the test ran (a real warning of the job's recorded state)
    assert re.search(r"\| 1( \u26a0)? \| lowmem \| unsupported \|", comparison), comparison
    assert "## Claims of the diffusers guide" in comparison
    assert "runs in under 8 GB: not checked (needs an ok opt=lowmem run on a GPU)" in comparison
    assert "compile is" not in comparison  # no compile job, no compile claim


def _job(name: str, opt: str, latency: float, reserved_gib: float | None = None) -> Job:
    memory = MemoryPeak(0.5, 1.0, "test", device_max_allocated_gib=reserved_gib, device_max_reserved_gib=reserved_gib)
    result = RunResult(latency=Latency(calls_s=[latency], stats=Stats.of([latency])), memory=memory)
    config = from_values({"opt.name": opt, "seed": 1})
    return Job(directory=None, name=name, overrides={}, config=config, result=result)  # type: ignore[arg-type]


def test_claims_are_checked_against_the_measured_jobs():
    jobs = [_job("0", "none", 10.0), _job("1", "compile", 7.8), _job("2", "lowmem", 30.0, reserved_gib=7.0)]
    assign_baselines(jobs, "opt.name=none")
    compile_claim, lowmem_claim = check_claims(jobs)
    assert compile_claim == "- compile is 20%-25% faster than none: measured 22.0% (7.80 s vs 10.00 s, job 1): holds."
    assert "peak reserved 7.52 GB" in lowmem_claim and lowmem_claim.endswith("holds.")  # 7 GiB = 7.52 GB
    over = check_claims([_job("2", "lowmem", 30.0, reserved_gib=7.5)])[0]  # 7.5 GiB = 8.05 GB
    assert "peak reserved 8.05 GB" in over and over.endswith("does not hold.")
    faster = [_job("0", "none", 10.0), _job("1", "compile", 5.0)]
    assign_baselines(faster, "opt.name=none")
    assert check_claims(faster)[0].endswith("(5.00 s vs 10.00 s, job 1): faster than claimed.")
    assert check_claims([_job("0", "none", 10.0)]) == []
