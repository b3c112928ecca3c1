"""W&B: what a real offline run stored is read back from its binary file and compared with results.json;
a broken W&B costs neither the record nor the exit status."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from svdbench.record.results import RunResult
from svdbench.record.tracking import run_name, wandb_summary

from .conftest import FAST, offline_env, read_json, run_cli

BLOCK = 32 * 1024  # LevelDB log block size
HEADER = 7  # file header, and each record piece's header: checksum (4), length (2, little-endian), type (1)


def read_wandb_file(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a `run-*.wandb` file (wandb 0.31 ships no reader): LevelDB-log framing around protobufs."""
    data, records, pending, pos = path.read_bytes(), [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a piece header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a full record, or the last piece of one
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def read_offline_run(run_dir: Path) -> dict:
    """Run metadata, config, final summary and history rows of the one offline W&B run in `run_dir`."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    out: dict = {"dir": path.parent, "config": {}, "summary": {}, "history": []}

    def items(updates) -> dict:
        return {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in updates}

    for record in read_wandb_file(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update(items(record.run.config.update))
        elif kind == "config":
            out["config"].update(items(record.config.update))
        elif kind == "summary":
            out["summary"].update(items(record.summary.update))
        elif kind == "history":
            out["history"].append(items(record.history.item))
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def test_offline_run_stores_config_summary_steps_and_video(recorded_run):
    run_dir, proc = recorded_run
    result = read_json(run_dir / "results.json")
    wb = read_offline_run(run_dir)

    config = wb["config"]
    assert (config["opt.name"], config["cond.motion_bucket_id"], config["model.name"]) == ("chunking", 100, "tiny")
    assert config["num_inference_steps"] == 2 and config["bench.repeats"] == 2 and config["seed"] == 42
    assert config["config_hash"] == result["config_hash"]
    assert config["env.packages.torch"] == result["environment"]["packages"]["torch"]
    assert not any(key.startswith("logger") for key in config)  # how to log is not part of the experiment

    run = wb["run"]
    assert run.display_name == run_name(result["provenance"]["overrides"])
    assert "opt=chunking" in run.display_name and "logger" not in run.display_name
    assert list(run.tags) == ["test", "tiny"] and run.notes == "from the tests"
    assert run.project == "svdbench" and not run.run_group  # a single run has no group
    assert wb["exit_code"] == 0

    summary = wb["summary"]
    assert summary["status"] == "ok" and summary["frames_hash"] == result["frames_hash"]
    assert summary["latency/stats/median"] == result["latency"]["stats"]["median"]
    assert summary["throughput/frames_per_s"] == result["throughput"]["frames_per_s"]
    assert summary["memory/host_peak_gib"] == result["memory"]["host_peak_gib"]
    assert summary["steps/s_per_step"] == result["steps"]["s_per_step"]

    steps = [row["step_time/seconds"] for row in wb["history"] if "step_time/seconds" in row]
    assert steps == [s for call in result["steps"]["per_call_s"] for s in call]
    assert summary["step_times._type"] == "table-file"
    assert summary["video._type"] == "video-file"
    assert (wb["dir"] / "files" / summary["video.path"]).stat().st_size > 0

    # W&B's files stay in the run directory, and the user is told how to upload them.
    assert not (run_dir.parent / "wandb").exists()
    synced = re.search(r"wandb sync (\S+)", proc.stderr)
    assert synced and Path(synced.group(1)).parent == run_dir / "wandb"


def test_sweep_jobs_are_grouped_and_named_by_their_overrides(tmp_path):
    """Offload is unsupported on a CPU: two quick jobs that still reach W&B with their status."""
    proc = run_cli(tmp_path, "-m", "hydra.sweep.dir=sweep", "opt=offload,lowmem", "device=cpu", *FAST)
    assert proc.returncode == 1, proc.stderr[-3000:]  # a sweep with failed jobs says so
    runs = [read_offline_run(job) for job in sorted((tmp_path / "sweep").glob("[0-9]*"))]
    assert [r["run"].run_group for r in runs] == ["sweep", "sweep"]
    assert [r["config"]["opt.name"] for r in runs] == ["offload", "lowmem"]
    assert ["opt=offload" in r["run"].display_name for r in runs] == [True, False]
    assert [(r["summary"]["status"], r["exit_code"]) for r in runs] == [("unsupported", 1)] * 2
    assert "unsupported on device cpu" in runs[0]["summary"]["reason"]
    # The sweep's comparison table went to W&B as well, as a run of its own in the same group.
    comparison = read_offline_run(tmp_path / "sweep")
    assert comparison["run"].run_group == "sweep" and comparison["run"].job_type == "comparison"
    (logged,) = [row for row in comparison["history"] if "comparison._type" in row]
    assert logged["comparison._type"] == "table-file" and logged["comparison.nrows"] == 2
    table = json.loads((comparison["dir"] / "files" / logged["comparison.path"]).read_text())
    assert "speedup" in table["columns"] and [row[table["columns"].index("status")] for row in table["data"]] == [
        "unsupported",
        "unsupported",
    ]


@pytest.mark.parametrize(
    ("overrides", "status", "returncode"),
    [(["device=cpu"], "ok", 0), (["opt=offload", "device=cpu"], "unsupported", 1)],
    ids=["ok", "unsupported"],
)
def test_broken_wandb_keeps_the_record_and_the_exit_status(tmp_path, overrides, status, returncode):
    """Online with a key W&B cannot check: no server answers, so init times out after logger.init_timeout_s."""
    env = {k: v for k, v in offline_env(tmp_path).items() if not k.startswith("WANDB_")}
    env.update(
        HOME=str(tmp_path / "home"),  # no ~/.netrc: a logged-in developer's account is never touched
        WANDB_API_KEY="x" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",  # the discard port: nothing listens, connections are refused
    )
    proc = run_cli(
        tmp_path, "hydra.run.dir=run", "logger.mode=online", "logger.init_timeout_s=3", *FAST, *overrides, env=env
    )
    assert proc.returncode == returncode, proc.stderr[-3000:]
    result = read_json(tmp_path / "run" / "results.json")
    assert result["status"] == status and result["environment"] and result["provenance"]
    assert result["finished_at"] and (result["frames_hash"] is not None) == (status == "ok")
    warnings = [line for line in proc.stderr.splitlines() if "W&B logging failed" in line]
    assert len(warnings) == 1 and "local record" in warnings[0]
    assert "Traceback" not in proc.stderr


def test_summary_takes_whatever_metrics_and_flops_the_runner_adds():
    from svdbench.measure.flops import CallFlops, RunFlops

    counts = CallFlops(
        unet_per_step_tflop=1.5, denoising_tflop=3, vae_decode_tflop=1, conditioning_tflop=1, total_tflop=5
    )
    result = RunResult(metrics={"warp_error": 0.25, "static": True, "new_metric": 7.0}, flops=RunFlops(call=counts))
    summary = wandb_summary(result)
    assert summary["metrics/warp_error"] == 0.25 and summary["metrics/static"] is True
    assert summary["metrics/new_metric"] == 7.0
    assert summary["flops/call/unet_per_step_tflop"] == 1.5 and summary["status"] == "ok"
    assert "notes" not in summary and "seed" not in summary  # lists and config echoes are not outcomes


def test_run_name_is_the_defining_overrides():
    assert run_name([]) == "default"
    assert run_name(["model=xt", "opt=compile", "logger.mode=online", "bench.progress=false"]) == "model=xt,opt=compile"
