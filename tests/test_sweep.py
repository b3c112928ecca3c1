"""Sweeps: isolated jobs, failures as results, resumption, summary, comparison, launchers, Optuna."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from svdbench.compare.jobs import pareto_front

from .conftest import FAST, REPO, offline_env, read_json, run_cli

QUIET = [*FAST, "logger=none"]


def sweep_results(sweep_dir):
    return {p.parent.name: read_json(p) for p in sorted(sweep_dir.glob("*/results.json"))}


@pytest.mark.slow  # a four-job sweep; CI runs it with -m slow
def test_failures_are_results_and_the_sweep_goes_on(tmp_path):
    """An unsupported mode, NaN frames and a good job in one sweep: three records, a summary, exit 1."""
    proc = run_cli(
        tmp_path,
        "-m",
        "hydra.sweep.dir=sweep",
        "opt=offload,none",
        "cond.noise_aug_strength=0.02,1e39",  # 1e39 overflows float32: the frames come out NaN
        *QUIET,
    )
    results = sweep_results(tmp_path / "sweep")
    statuses = sorted(r["status"] for r in results.values())
    assert statuses == ["nan", "ok", "unsupported", "unsupported"]
    assert proc.returncode == 1
    assert "Sweep finished: 4 jobs: 2 unsupported, 1 nan, 1 ok" in proc.stderr
    nan = next(r for r in results.values() if r["status"] == "nan")
    assert "NaN" in nan["reason"] and nan["latency"]["stats"]["median"] > 0  # timings kept all the same
    # Every job ran in a process of its own.
    assert all("hydra.mode=RUN" in r["provenance"]["argv"] for r in results.values())


@pytest.mark.slow
def test_jobs_do_not_inherit_memory_from_earlier_jobs(tmp_path):
    """A big job first, then a small one: the small job's peak is what it is when run alone."""
    sweep = run_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "height=512,128", "width=512,128", *QUIET)
    alone = run_cli(tmp_path, "hydra.run.dir=alone", "height=128", "width=128", *QUIET)
    assert sweep.returncode == 0 and alone.returncode == 0, sweep.stderr[-2000:]
    small = next(r for r in sweep_results(tmp_path / "sweep").values() if (r["height"], r["width"]) == (128, 128))
    big = next(r for r in sweep_results(tmp_path / "sweep").values() if (r["height"], r["width"]) == (512, 512))
    single = read_json(tmp_path / "alone" / "results.json")
    assert big["memory"]["host_peak_gib"] > 1.5 * single["memory"]["host_peak_gib"]
    # Resident memory varies a little between processes; a job run after the big one in the same process
    # would start from the big one's footprint instead.
    assert small["memory"]["host_before_gib"] < 0.8 * big["memory"]["host_peak_gib"]
    assert small["memory"]["host_peak_gib"] == pytest.approx(single["memory"]["host_peak_gib"], rel=0.3)


@pytest.mark.slow  # three sweeps in a row; CI runs it with -m slow
def test_rerunning_a_sweep_skips_complete_jobs_and_redoes_the_rest(tmp_path):
    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=60,180", *QUIET]
    assert run_cli(tmp_path, *args).returncode == 0
    first = sweep_results(tmp_path / "sweep")
    # Job 1 was interrupted: its record says so.
    interrupted = dict(first["1"], status="interrupted")
    (tmp_path / "sweep" / "1" / "results.json").write_text(json.dumps(interrupted))
    again = run_cli(tmp_path, *args)
    assert again.returncode == 0
    assert again.stderr.count("Skipping") == 1
    second = sweep_results(tmp_path / "sweep")
    assert second["0"]["started_at"] == first["0"]["started_at"]  # kept
    assert second["1"]["status"] == "ok" and second["1"]["started_at"] != first["1"]["started_at"]  # redone
    assert read_json(tmp_path / "sweep" / "1" / "previous-1" / "results.json")["status"] == "interrupted"  # kept
    redo = run_cli(tmp_path, *args, "sweep.redo=true")
    assert redo.returncode == 0 and "Skipping" not in redo.stderr


@pytest.fixture(scope="module")
def compared_sweep(tmp_path_factory):
    """One real 4-job sweep (forward chunking on/off x decode in one chunk or two frames at a time)."""
    tmp_path = tmp_path_factory.mktemp("compared")
    proc = run_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "opt=none,chunking", "opt.decode_chunk_size=null,2", *QUIET)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp_path


@pytest.mark.slow  # the four-job sweep of compared_sweep; CI runs it with -m slow
def test_sweep_writes_a_comparison_against_the_baseline(compared_sweep):
    sweep = compared_sweep / "sweep"
    for name in ("comparison.md", "comparison.csv", "pareto.png"):
        assert (sweep / name).is_file(), name
    rows = {(r["opt"], r["opt.decode_chunk_size"]): r for r in csv.DictReader(open(sweep / "comparison.csv"))}
    baseline = rows[("none", "null")]
    assert float(baseline["speedup"]) == pytest.approx(1.0)
    assert baseline["psnr_vs_baseline_db"] == ""  # not compared with itself
    # Forward chunking is lossless: the same frames as the baseline (PSNR capped or very high).
    assert float(rows[("chunking", "null")]["psnr_vs_baseline_db"]) > 60
    assert rows[("chunking", "2")]["baseline"] == baseline["job"]
    assert "| job |" in (sweep / "comparison.md").read_text()


@pytest.mark.slow  # the four-job sweep of compared_sweep; CI runs it with -m slow
def test_compare_command_line(compared_sweep):
    proc = run_cli(compared_sweep, "sweep", "--out", "report", module="svdbench.compare")
    assert proc.returncode == 0, proc.stderr
    assert "| job |" in proc.stdout and (compared_sweep / "report" / "pareto.png").is_file()
    script = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare.py"), "sweep", "--out", "script-report"],
        cwd=compared_sweep,
        env=offline_env(),
        capture_output=True,
        text=True,
    )
    assert script.returncode == 0 and script.stdout == proc.stdout
    missing = run_cli(compared_sweep, "nowhere", module="svdbench.compare")
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def test_baseline_is_the_plainest_job_with_otherwise_equal_settings(tmp_path):
    from svdbench.compare.jobs import Job, assign_baselines
    from svdbench.settings.saved import from_values

    def job(name, **config):
        base = {"opt.name": "none", "opt.decode_chunk_size": None, "max_guidance_scale": 3.0, "seed": 42}
        config = from_values({**base, **config})
        return Job(directory=tmp_path / name, name=name, overrides={}, config=config, result={})

    none, chunk2 = job("none"), job("chunk2", **{"opt.decode_chunk_size": 2})
    compiled = job("compile", **{"opt.name": "compile", "opt.compile.unet": True})
    no_cfg, other_seed = job("no_cfg", max_guidance_scale=1.0), job("seed0", seed=0)
    jobs = [chunk2, no_cfg, none, compiled, other_seed]
    assign_baselines(jobs, "opt.name=none", ignored=("max_guidance_scale",))
    assert [j.baseline.name if j.baseline else None for j in jobs] == ["none", "none", "none", "none", "seed0"]


def test_pareto_front():
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.5, 3.0)]
    assert pareto_front(points) == [0, 1, 3]


@pytest.mark.parametrize("experiment", ["guide", "decode_chunks", "tradeoff"])
def test_experiments_compose_as_multiruns(tmp_path, experiment):
    proc = run_cli(tmp_path, f"experiment={experiment}", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr
    hydra = yaml.safe_load(proc.stdout)["hydra"]
    assert hydra["mode"] == "MULTIRUN" and hydra["sweeper"]["params"]


@pytest.mark.slow
def test_decode_chunks_experiment_runs_for_real(tmp_path):
    proc = run_cli(tmp_path, "experiment=decode_chunks", "hydra.sweep.dir=sweep", *QUIET)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "comparison.csv")))
    assert len(rows) == 5
    baseline = next(r for r in rows if r["opt.decode_chunk_size"] == "null")
    assert all(r["baseline"] == baseline["job"] for r in rows)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_real_multirun(tmp_path):
    proc = run_cli(
        tmp_path,
        "-m",
        "hydra/launcher=local",
        "hydra.sweeper.max_batch_size=1",
        "hydra.sweep.dir=sweep",
        "cond.motion_bucket_id=60,180",
        *QUIET,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sweep_results(tmp_path / "sweep")
    assert len(results) == 2 and {r["status"] for r in results.values()} == {"ok"}
    assert (tmp_path / "sweep" / ".submitit").is_dir()


@pytest.mark.slow
def test_optuna_tradeoff_search_with_a_few_tiny_trials(tmp_path):
    proc = run_cli(
        tmp_path,
        "experiment=tradeoff",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.population_size=2",
        "hydra.sweeper.params.dtype=fp32",  # bf16 on a CPU takes ~30 s a call; the search is what is tested here
        "hydra.sweep.dir=sweep",
        "sweep.flicker_limit=null",
        *QUIET,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sweep_results(tmp_path / "sweep")
    assert len(results) == 3 and {r["status"] for r in results.values()} == {"ok"}
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["solutions"]  # the Pareto-optimal trials Optuna found


def test_a_job_with_an_invalid_value_is_a_failed_job_and_the_sweep_goes_on(tmp_path):
    """A wrong type and an out-of-range value among a sweep's values: those jobs get an `error` record with the
    message, the good job runs, and the comparison lists all three."""
    proc = run_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=100,abc,300", *QUIET)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    results = sweep_results(tmp_path / "sweep")
    assert [results[j]["status"] for j in "012"] == ["ok", "error", "error"]
    assert results["1"]["reason"].startswith("cond.motion_bucket_id=abc is not valid")
    assert "from 0 up to 255" in results["1"]["reason"] and "from 0 up to 255" in results["2"]["reason"]
    overrides = yaml.safe_load((tmp_path / "sweep" / "1" / ".hydra" / "overrides.yaml").read_text())
    assert "cond.motion_bucket_id=abc" in overrides
    assert "Sweep finished: 3 jobs: 2 error, 1 ok" in proc.stderr
    assert "| 1 | abc | error |" in (tmp_path / "sweep" / "comparison.md").read_text()
