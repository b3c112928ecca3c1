"""The record a run leaves on disk, and repeating a run from it (`python -m svdbench.replay`)."""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import shutil
import subprocess

import psutil
import pytest
import torch
import yaml

import svdbench
from svdbench import replay
from svdbench.measure.machine import cpu_model
from svdbench.measure.timing import Stats
from svdbench.record.identity import _git_state, config_hash
from svdbench.record.results import Latency, RunResult

from .conftest import FAST, REPO, read_json, run_cli, typed_config


@pytest.fixture(scope="module")
def replayed(recorded_run, tmp_path_factory):
    """The recorded run repeated through `python -m svdbench.replay`, with logger=none: a second, separate CLI
    run of the same config and seed."""
    run_dir, _ = recorded_run
    out = tmp_path_factory.mktemp("replay") / "run"
    proc = run_cli(out.parent, str(run_dir), "--out", str(out), "logger=none", module="svdbench.replay")
    return out, proc


def test_results_record_environment_and_provenance(recorded_run):
    run_dir, _ = recorded_run
    result = read_json(run_dir / "results.json")
    assert result["status"] == "ok" and result["reason"] is None and result["seed"] == 42
    assert re.fullmatch(r"[0-9a-f]{16}", result["config_hash"]) and re.fullmatch(r"[0-9a-f]{16}", result["frames_hash"])
    assert result["started_at"] < result["finished_at"]

    env = result["environment"]
    for package in ("torch", "diffusers", "transformers", "accelerate"):
        assert env["packages"][package], package
    # The recorded machine is this one (the run was a child process of this test, on the same machine).
    assert env["python"] == platform.python_version() and env["cpu_cores_logical"] == os.cpu_count()
    assert env["ram_gib"] == pytest.approx(psutil.virtual_memory().total / 2**30, abs=0.01)
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu_model"] == cpu_model()
    assert env["cuda"] == torch.version.cuda  # the CUDA version torch was built with (None for a CPU build)
    assert len(env["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if result["device"] == "cpu" and env["cuda"] is None:
        assert env["gpus"] == [] and env["gpu_driver"] is None and env["cudnn"] is None

    prov = result["provenance"]
    assert prov["svdbench_version"] == svdbench.__version__
    assert prov["overrides"] == yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert prov["argv"][1:] == ["hydra.run.dir=run", *prov["overrides"]]
    assert prov["cwd"] == str(run_dir.parent)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if shutil.which("git") and head.returncode == 0:
        assert prov["git_commit"] == head.stdout.strip() and isinstance(prov["git_dirty"], bool)
    else:
        assert prov["git_commit"] is None and prov["git_dirty"] is None


def test_git_state_is_null_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    assert _git_state(tmp_path) == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere
    assert _git_state(REPO) == (None, None)


def test_steps_csv_has_every_step_of_every_measured_call(recorded_run):
    run_dir, _ = recorded_run
    result = read_json(run_dir / "results.json")
    with open(run_dir / "steps.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert result["files"]["steps"] == "steps.csv"
    assert len(rows) == 2 * 2  # bench.repeats x num_inference_steps
    assert [(int(r["call"]), int(r["step"])) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [float(r["seconds"]) for r in rows] == [s for call in result["steps"]["per_call_s"] for s in call]


def test_same_config_and_seed_give_bit_identical_frames(recorded_run, replayed):
    first = read_json(recorded_run[0] / "results.json")
    second = read_json(replayed[0] / "results.json")
    assert second["provenance"]["overrides"] == [*first["provenance"]["overrides"], "logger=none"]
    assert second["config_hash"] == first["config_hash"]  # the logger does not change the experiment
    assert second["frames_hash"] == first["frames_hash"]


def test_logger_none_writes_no_wandb_dir(replayed):
    out, _ = replayed
    assert (out / "results.json").is_file() and not (out / "wandb").exists()


def test_replay_reports_a_match(recorded_run, replayed):
    out, proc = replayed
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "REPRODUCED" in proc.stdout and "frames:  same" in proc.stdout and "median latency x" in proc.stdout
    report = read_json(out / "replay.json")
    assert report["reproduced"] and report["differs"] == []
    assert report["run_dir"] == str(recorded_run[0]) and report["latency_median_ratio"] > 0


def test_replay_fails_when_the_frames_differ(tmp_path):
    """A record whose frames hash is not what its experiment produces (offload on a CPU: no frames at all)."""
    overrides = ["opt=offload", "device=cpu", *FAST]
    record = tmp_path / "record"
    (record / ".hydra").mkdir(parents=True)
    (record / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (record / "results.json").write_text(
        json.dumps({"status": "unsupported", "config_hash": config_hash(typed_config(*overrides)), "frames_hash": "0"})
    )
    proc = run_cli(tmp_path, str(record), "--out", str(tmp_path / "again"), "logger=none", module="svdbench.replay")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "config:  same" in proc.stdout and "NOT REPRODUCED: frames_hash differ" in proc.stdout


def test_replay_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert replay.main([str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "is not an svdbench run directory" in message and "results.json" in message


def _result(median_s: float, warp_error: float) -> RunResult:
    """Results shaped as the runner makes them: compute_suite's flat metrics, measured calls' statistics."""
    return RunResult(
        config_hash="a",
        frames_hash="f",
        latency=Latency(calls_s=[median_s], stats=Stats.of([median_s])),
        metrics={"warp_error": warp_error, "static": False, "luma_per_frame": [1.0, 2.0]},
    )


def test_compare_tolerates_float_noise_in_metrics_but_not_changes():
    old, new = _result(1.0, 0.25), _result(2.0, 0.25 + 1e-12)
    assert replay.compare(old, new)["reproduced"]
    changed = replay.compare(old, _result(2.0, 0.3))
    assert changed["differs"] == ["metrics"] and changed["metrics_differing"] == {"warp_error": [0.25, 0.3]}
    assert replay.compare(old, new)["latency_median_ratio"] == 2.0


def test_plain_json_is_what_results_and_metrics_write():
    """One helper for both (svdbench.files.plain): JSON has no NaN or infinity, and json cannot write numpy."""
    import json

    import numpy as np

    from svdbench.files.plain import plain_json

    value = {"a": [np.float32(1.5), float("nan"), np.int64(3), np.bool_(True), -float("inf"), (1, 2)], "b": "x"}
    assert plain_json(value) == {"a": [1.5, None, 3, True, None, [1, 2]], "b": "x"}
    assert json.loads(json.dumps(plain_json(value), allow_nan=False)) == plain_json(value)
