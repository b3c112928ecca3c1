"""hydra/launcher=ray: a sweep's jobs as Ray tasks, each with a GPU of its own. On this CPU machine Ray is started
for real with logical GPUs declared (++hydra.launcher.ray.init.num_gpus=2), so Ray schedules two jobs at a time
and gives each its CUDA_VISIBLE_DEVICES, as it does on a GPU node."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR, FAST, read_json, run_cli, start_cli, wait_for

pytest.importorskip("ray")

QUICK = [*FAST, "logger=none", "metrics.enabled=false", "device=cpu"]
RAY = [
    "hydra/launcher=ray",
    "++hydra.launcher.ray.init.num_gpus=2",
    "++hydra.launcher.ray.init.num_cpus=2",
    "++hydra.launcher.ray.remote.num_gpus=1",
]


def records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in sorted(sweep.glob("*/results.json"))}


def test_launcher_keys_compose_with_and_without_plus_plus():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        config = compose(
            config_name="config",
            overrides=[
                *RAY[:1],
                "++hydra.launcher.ray.init.num_gpus=2",  # a key of the defaults
                "++hydra.launcher.ray.init.object_store_memory=100000000",  # a key that is not
                "++hydra.launcher.ray.remote.memory=1000",
                "hydra.launcher.ray.remote.num_gpus=1",  # plain form, for keys of the defaults
            ],
            return_hydra_config=True,
        )
    launcher = config.hydra.launcher
    assert launcher._target_ == "hydra_plugins.svdbench.RaySweepLauncher"
    assert launcher.ray.init.num_gpus == 2 and launcher.ray.init.object_store_memory == 100000000
    assert (
        launcher.ray.remote.num_gpus == 1
        and launcher.ray.remote.memory == 1000
        and launcher.ray.remote.max_retries == 0
    )


@pytest.mark.slow
def test_four_jobs_run_two_at_a_time_each_on_its_own_gpu(tmp_path):
    proc = run_cli(tmp_path, "-m", "seed=1,2,3,4", *RAY, *QUICK, "hydra.sweep.dir=sweep", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = records(tmp_path / "sweep")
    assert sorted(found) == ["0", "1", "2", "3"]
    assert [r["status"] for r in found.values()] == ["ok"] * 4
    assert sorted(r["seed"] for r in found.values()) == [1, 2, 3, 4]
    devices = {r["environment"]["cuda_visible_devices"] for r in found.values()}
    assert devices == {"0", "1"}, devices  # Ray gave every job one of the two declared GPUs
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in found.values()
    )
    overlapping = sum(1 for (_, end), (start, _) in zip(spans, spans[1:]) if start < end)
    assert overlapping >= 1, spans  # two jobs ran at the same time


@pytest.mark.slow
def test_failures_are_results_and_a_rerun_resumes(tmp_path):
    """ok, a job that fails at run time (no CUDA here: unsupported) and one with invalid settings: every one is
    its job's record and the sweep finishes; the same command again skips the complete jobs."""
    args = ["-m", "device=cpu,cuda,cuda:x", *RAY, *[a for a in QUICK if a != "device=cpu"], "hydra.sweep.dir=sweep"]
    first = run_cli(tmp_path, *args, timeout=900)
    assert first.returncode == 1, first.stderr[-3000:]  # a sweep with failed jobs
    found = records(tmp_path / "sweep")
    assert [found[k]["status"] for k in ("0", "1", "2")] == ["ok", "unsupported", "error"]
    assert "no usable CUDA device" in found["1"]["reason"]
    assert "cuda:x" in found["2"]["reason"]
    ok_started = found["0"]["started_at"]

    again = run_cli(tmp_path, *args, timeout=900)
    assert again.returncode == 1, again.stderr[-3000:]
    resumed = records(tmp_path / "sweep")
    assert resumed["0"]["started_at"] == ok_started  # complete: skipped
    assert resumed["1"]["started_at"] == found["1"]["started_at"]  # unsupported is complete too
    assert (tmp_path / "sweep" / "2" / "previous-1" / "results.json").exists()  # the invalid job was redone
    assert "Skipping" in again.stderr


@pytest.mark.slow
def test_jobs_asking_for_more_gpus_than_ray_has_are_refused(tmp_path):
    proc = run_cli(
        tmp_path,
        "-m",
        "seed=1,2",
        "hydra/launcher=ray",
        "++hydra.launcher.ray.init.num_gpus=0",
        *QUICK,
        "hydra.sweep.dir=sweep",
        timeout=300,
    )
    assert proc.returncode == 2
    assert "remote.num_gpus=1" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "sweep").glob("*/results.json"))


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_running_jobs_record_it(tmp_path):
    """SIGTERM to the sweep while its first two jobs run: both record `interrupted`, the two not started get an
    `interrupted` record too, the sweep exits 130 without a traceback, and no job process is left behind."""
    proc = start_cli(tmp_path, "-m", "seed=1,2,3,4", *RAY, *QUICK, "num_inference_steps=400", "hydra.sweep.dir=sweep")
    try:
        wait_for(lambda: len(list((tmp_path / "sweep").glob("*/__main__.log"))) >= 2, timeout=600)
        time.sleep(5)  # the jobs are past their start
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    found = records(tmp_path / "sweep")
    assert sorted(found) == ["0", "1", "2", "3"]
    assert {r["status"] for r in found.values()} == {"interrupted"}, {k: r["status"] for k, r in found.items()}
    assert any("before the job started" in (r["reason"] or "") for r in found.values())  # jobs 2 and 3
    leftover = subprocess.run(["pgrep", "-f", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
