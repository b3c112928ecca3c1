"""Fault injection: bad input, faults and interruptions end in a clear message and a complete record,
never a traceback or a lost result. Every fault here is real (a real memory limit, real signals, a
damaged file); nothing is mocked."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from svdbench.files.atomic import write_json_atomic
from svdbench.pipeline.models import WeightsNotFound, build_random_pipeline, resolve_pretrained_dir
from svdbench.record.rundir import OutputLocationError, check_output_location
from svdbench.settings.config import ModelConfig

from .conftest import FAST, offline_env, read_json, run_cli, start_cli, wait_for

QUIET = [*FAST, "logger=none"]
MEMORY_LIMIT = int(2.5 * 2**30)  # address space: enough for the tiny model at 128x128, not at 2048x128


def no_traceback(proc: subprocess.CompletedProcess) -> bool:
    return "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model=xtt", "Available options in 'model'"),
        ("opt=compil", "Available options in 'opt'"),
        ("cond.motion=3", "Did you mean `cond.motion_bucket_id`?"),
        ("bench.repeat=5", "Did you mean `bench.repeats`?"),
        ("stepz=5", "Settings at the top level:"),
        ("num_inference_steps=0", "at least 1 denoising step"),
        ("height=100", "multiple of 64"),
        ("bench.repeats=0", "at least one measured call"),
    ],
)
def test_bad_config_values_end_in_one_clear_message(tmp_path, override, expected):
    proc = run_cli(tmp_path, "hydra.run.dir=run", override, "logger=none")
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert no_traceback(proc)


def test_missing_input_image_is_a_recorded_error(tmp_path):
    proc = run_cli(tmp_path, "hydra.run.dir=run", "input.path=nowhere/photo.png", *QUIET)
    result = read_json(tmp_path / "run" / "results.json")
    assert proc.returncode == 1 and no_traceback(proc)
    assert result["status"] == "error" and "input.path=nowhere/photo.png does not exist" in result["reason"]


def test_missing_pretrained_weights_fail_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ModelConfig(name="xt", weights="pretrained", repo_id="stabilityai/stable-video-diffusion-img2vid-xt")
    start = time.monotonic()
    with pytest.raises(WeightsNotFound) as info:
        resolve_pretrained_dir(model)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "hf download" in message and "model.path=" in message and "model.weights=random" in message


@pytest.mark.parametrize("damaged", ["vae/config.json", "unet/diffusion_pytorch_model.safetensors"])
def test_damaged_checkpoint_component_is_named(tmp_path, damaged):
    build_random_pipeline("tiny", torch.float32, "cpu", seed=0).save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])  # cut short, as by a failed download
    with pytest.raises(WeightsNotFound) as info:
        resolve_pretrained_dir(ModelConfig(name="tiny", weights="pretrained", path=str(tmp_path / "ckpt")))
    assert damaged in str(info.value) and "damaged" in str(info.value)


@pytest.mark.slow
def test_fp16_on_cpu_works_and_says_it_is_slow(tmp_path):
    proc = run_cli(tmp_path, "hydra.run.dir=run", "dtype=fp16", "device=cpu", *QUIET)
    result = read_json(tmp_path / "run" / "results.json")
    assert proc.returncode == 0 and result["status"] == "ok" and result["dtype"] == "fp16"
    assert any("fp16 on a CPU" in note for note in result["notes"])
    # Also on the console, before the first call (not only in the record read after the run).
    warned, first_call = proc.stderr.find("fp16 on a CPU"), proc.stderr.find("cold call")
    assert -1 < warned < first_call, proc.stderr[-2000:]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI under a real address-space limit, as on a machine too small for the job."""
    return subprocess.run(
        [sys.executable, "-m", "svdbench", *args],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_memory,
    )


@pytest.mark.slow  # a sweep under a real memory limit; CI runs it with -m slow
def test_out_of_memory_is_a_result_and_the_sweep_goes_on(tmp_path):
    proc = run_limited(tmp_path, "-m", "hydra.sweep.dir=sweep", "height=2048,128", "width=128", *QUIET)
    assert proc.returncode == 1 and no_traceback(proc)
    oom, ok = (read_json(tmp_path / "sweep" / job / "results.json") for job in ("0", "1"))
    assert oom["status"] == "oom" and ok["status"] == "ok"
    assert "2048x128" in oom["reason"] and "Peak reached: host" in oom["reason"]
    assert oom["memory"]["host_peak_gib"] > 0
    assert "Sweep finished: 2 jobs: 1 ok, 1 oom" in proc.stderr


def test_sigterm_mid_run_leaves_a_complete_record_marked_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_cli(tmp_path, "hydra.run.dir=run", "num_inference_steps=500", "logger=none")
    wait_for(lambda: (run_dir / "__main__.log").exists() and "Building" in (run_dir / "__main__.log").read_text())
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr and "Interrupted" in stderr
    result = json.loads((run_dir / "results.json").read_text())
    assert result["status"] == "interrupted" and result["finished_at"]
    assert not list(run_dir.glob(".results.*"))  # no temporary file left behind


@pytest.mark.slow
def test_interrupted_sweep_redoes_only_the_unfinished_jobs(tmp_path):
    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=10,20,30", *QUIET]
    proc = start_cli(tmp_path, *args, "num_inference_steps=40")
    sweep = tmp_path / "sweep"
    wait_for(lambda: (sweep / "0" / "results.json").exists() and (sweep / "1" / ".hydra").exists())
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert read_json(sweep / "0" / "results.json")["status"] == "ok"
    assert read_json(sweep / "1" / "results.json")["status"] == "interrupted"
    assert not (sweep / "2").exists()
    again = run_cli(tmp_path, *args, "num_inference_steps=40")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("Skipping") == 1
    assert {read_json(sweep / job / "results.json")["status"] for job in "012"} == {"ok"}


@pytest.mark.slow
def test_a_job_interrupted_on_its_own_stops_the_sweep(tmp_path):
    """SIGTERM to the running job's process only, not the sweep's (a scheduler or a user killing one job): the
    job records its interruption and the sweep stops there, as it does for Ctrl-C, instead of going on."""
    import psutil

    args = ["-m", "hydra.sweep.dir=sweep", "cond.motion_bucket_id=10,20", *QUIET, "num_inference_steps=300"]
    proc = start_cli(tmp_path, *args)
    log = tmp_path / "sweep" / "0" / "__main__.log"
    wait_for(lambda: log.exists() and "Building" in log.read_text())
    time.sleep(2)
    jobs = [c for c in psutil.Process(proc.pid).children() if "svdbench" in " ".join(c.cmdline())]
    assert len(jobs) == 1, jobs
    jobs[0].send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert read_json(tmp_path / "sweep" / "0" / "results.json")["status"] == "interrupted"
    assert not (tmp_path / "sweep" / "1").exists()


def test_unwritable_output_location_fails_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("")
    proc = run_cli(tmp_path, "hydra.run.dir=a-file/run", "logger=none")
    assert proc.returncode == 2 and no_traceback(proc)
    assert "a-file is a file, not a directory" in proc.stderr


def test_full_disk_is_detected_before_any_work(tmp_path):
    # Outputs of 100,000 frames at 4096x4096 would need petabytes: more than any disk has free.
    proc = run_cli(tmp_path, "hydra.run.dir=run", "num_frames=100000", "height=4096", "width=4096", "logger=none")
    assert proc.returncode == 2 and no_traceback(proc)
    assert "Not enough disk space" in proc.stderr and not (tmp_path / "run").exists()
    with pytest.raises(OutputLocationError, match=rf"MiB free, about {2**42:.1f} MiB needed \(video {2**42:.1f} MiB\)"):
        check_output_location(tmp_path / "x", {"video": 2**62})


def test_a_failed_write_never_leaves_half_a_results_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "ok", "latency": 1.0})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"status": "ok", "unserializable": object()})  # fails halfway through
    assert json.loads(path.read_text()) == {"status": "ok", "latency": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
