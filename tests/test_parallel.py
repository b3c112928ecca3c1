"""One run over torchrun's processes: parallel=cfg (the UNet's guidance batch split over 2 ranks) and parallel=data
(a batch's videos split over the ranks), on the CPU with the gloo backend: real torchrun, real tiny pipelines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from svdbench.measure.energy import Energy
from svdbench.record.ranks import merge
from svdbench.record.results import Latency, RunResult, Throughput
from svdbench.settings.arguments import check_command_line
from tests.conftest import FAST, offline_env, read_json, typed_config

SETTINGS = [*FAST, "device=cpu", "logger=none", "metrics.enabled=false"]


def torchrun(cwd: Path, *args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    return subprocess.run(
        [*command, "-m", "svdbench", *args], cwd=cwd, env=offline_env(cwd), capture_output=True, text=True, timeout=900
    )


def single(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svdbench", *args], cwd=cwd, env=offline_env(cwd), capture_output=True, text=True
    )


def frames(run_dir: Path) -> np.ndarray:
    with np.load(run_dir / "frames.npz") as data:
        return data["frames"].astype(np.int16)


@pytest.mark.slow
def test_cfg_over_two_ranks_gives_the_single_process_frames(tmp_path):
    par = torchrun(tmp_path, "parallel=cfg", *SETTINGS, "hydra.run.dir=cfg")
    assert par.returncode == 0, par.stderr[-3000:]
    one = single(tmp_path, *SETTINGS, "hydra.run.dir=one")
    assert one.returncode == 0, one.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg", "one"]  # rank 1 wrote nothing
    a, b = frames(tmp_path / "cfg"), frames(tmp_path / "one")
    assert a.shape == b.shape and np.abs(a - b).max() <= 1
    record = read_json(tmp_path / "cfg" / "results.json")
    assert record["status"] == "ok"
    assert [r["rank"] for r in record["ranks"]] == [0, 1]
    assert all(r["s_per_call"] > 0 and r["peak_memory_gib"] > 0 for r in record["ranks"])
    assert record["memory"]["host_peak_gib"] == max(r["peak_memory_gib"] for r in record["ranks"])
    assert record["ranks"][0]["seeds"] == record["ranks"][1]["seeds"] == [42]
    assert any("parallel=cfg over 2 ranks" in note for note in record["notes"])


@pytest.mark.slow
def test_data_over_two_ranks_gives_the_single_process_batch(tmp_path):
    par = torchrun(tmp_path, "parallel=data", "batch_size=2", *SETTINGS, "hydra.run.dir=data")
    assert par.returncode == 0, par.stderr[-3000:]
    one = single(tmp_path, "batch_size=2", *SETTINGS, "hydra.run.dir=one")
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = frames(tmp_path / "data"), frames(tmp_path / "one")
    assert a.shape == b.shape == (2, 8, 128, 128, 3)
    assert np.abs(a - b).max() <= 1
    record = read_json(tmp_path / "data" / "results.json")
    assert record["batch_size"] == 2 and record["seeds"] == [42, 43]
    assert [r["seeds"] for r in record["ranks"]] == [[42], [43]]
    rates = [r["videos_per_hour"] for r in record["ranks"]]
    assert record["throughput"]["videos_per_hour"] == pytest.approx(sum(rates))


def _split_worker(rank: int, init: str, inputs: dict, out: str) -> None:
    from svdbench.pipeline.models import build_random_pipeline
    from svdbench.pipeline.parallel import GuidanceSplit

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    unet = build_random_pipeline("tiny", torch.float32, "cpu", seed=0).unet
    GuidanceSplit(rank, 2).install(unet)
    with torch.no_grad():
        output = unet(inputs["sample"], inputs["t"], **inputs["kwargs"], return_dict=False)[0]
    if rank == 0:
        torch.save(output, out)
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch and diffusers: over a minute on the 2-core VM
def test_guidance_split_over_two_processes_is_exact(tmp_path, tiny_pipeline):
    """Two gloo ranks each run half of a batch of 2 through the tiny UNet; the gathered output is the whole
    batch's output of the unsplit UNet."""
    unet = tiny_pipeline.unet
    generator = torch.Generator().manual_seed(0)
    config = unet.config
    sample = torch.randn(2, 3, config.in_channels, 16, 16, generator=generator)
    kwargs = {
        "encoder_hidden_states": torch.randn(2, 1, config.cross_attention_dim, generator=generator),
        "added_time_ids": torch.randn(2, 3, generator=generator),
    }
    inputs = {"sample": sample, "t": torch.tensor(10.0), "kwargs": kwargs}
    with torch.no_grad():
        whole = unet(sample, inputs["t"], **kwargs, return_dict=False)[0]
    out = tmp_path / "out.pt"
    mp.spawn(_split_worker, args=(f"file://{tmp_path / 'rendezvous'}", inputs, str(out)), nprocs=2)
    gathered = torch.load(out)
    assert gathered.shape == whole.shape
    torch.testing.assert_close(gathered, whole, rtol=1e-4, atol=1e-5)
    # each half alone differs from the other: a gather that returned one rank's half twice would fail above
    assert not torch.allclose(whole[0], whole[1])


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["parallel=cfg"], {}, "torchrun --nproc_per_node=2"),
        (["parallel=cfg"], {"WORLD_SIZE": "3"}, "exactly 2 ranks"),
        (["parallel=cfg", "max_guidance_scale=1"], {"WORLD_SIZE": "2"}, "guidance on"),
        (["parallel=data", "batch_size=3"], {"WORLD_SIZE": "2"}, "not a multiple of 2"),
        (["parallel=tensor"], {"WORLD_SIZE": "2"}, "choose one of none, cfg, data"),
    ],
)
def test_bad_parallel_settings_are_refused(monkeypatch, args, env, expected):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    problem = check_command_line(args)
    assert problem is not None and expected in problem


def test_parallel_cfg_outside_torchrun_exits_2_and_writes_nothing(tmp_path):
    proc = single(tmp_path, "parallel=cfg", "hydra.run.dir=run")
    assert proc.returncode == 2
    assert "torchrun" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def _rank_result(seeds: list[int], call_s: float, gpu_j: float | None, cpu_j: float | None) -> RunResult:
    result = RunResult(device="cuda:0", seed=seeds[0], batch_size=len(seeds), seeds=seeds, num_frames=8)
    result.latency = Latency(calls_s=[call_s, call_s])
    result.throughput = Throughput(
        frames_per_s=len(seeds) * 8 / call_s,
        s_per_video=call_s / len(seeds),
        s_per_call=call_s,
        videos_per_hour=3600 * len(seeds) / call_s,
    )
    result.energy = Energy(gpu_j=gpu_j, cpu_j=cpu_j, total_j=(gpu_j or 0) + (cpu_j or 0))
    return result


def test_data_merge_sums_rates_and_counts_each_hosts_cpu_once(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = typed_config("parallel=data", "batch_size=4")
    gathered = [
        (_rank_result([42, 43], 2.0, 100.0, 10.0), np.zeros((2, 1)), "a", "0"),
        (_rank_result([44, 45], 4.0, 200.0, 10.0), np.ones((2, 1)), "a", "1"),
    ]
    result, videos = merge(cfg, gathered)
    assert videos is not None and videos[:, 0].tolist() == [0, 0, 1, 1]
    assert result.seeds == [42, 43, 44, 45] and result.batch_size == 4
    assert result.throughput is not None
    assert result.throughput.videos_per_hour == pytest.approx(3600 * 2 / 2.0 + 3600 * 2 / 4.0)
    assert result.latency.calls_s == [4.0, 4.0]  # a call of the whole batch waits for the slowest rank
    assert result.energy is not None
    assert result.energy.gpu_j == pytest.approx((100.0 * 2 + 200.0 * 2) / 4)  # summed over the GPUs
    assert result.energy.cpu_j == pytest.approx(10.0 * 2 / 4)  # one host: its RAPL counted once
    assert [r.cuda_visible_devices for r in result.ranks] == ["0", "1"]


def test_a_failed_rank_fails_the_record(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = typed_config("parallel=data", "batch_size=2")
    bad = _rank_result([43], 2.0, None, None)
    bad.fail("oom", "Out of memory")
    result, videos = merge(
        cfg, [(_rank_result([42], 2.0, None, None), np.zeros((1, 1)), "a", None), (bad, None, "a", None)]
    )
    assert result.status == "oom" and result.reason == "rank 1: Out of memory" and videos is None


@pytest.mark.slow  # the meta simulation of model=small: about 40 s on the 2-core VM
def test_planner_sees_one_ranks_half_of_the_guidance_batch(monkeypatch):
    from svdbench.plan.planner import predict

    monkeypatch.setenv("WORLD_SIZE", "2")
    common = ["model=small", "model.weights=random", "num_inference_steps=2", "opt.decode_chunk_size=1"]
    whole = predict(typed_config(*common), "cuda", "fp16").phases_gib["denoising"]
    half = predict(typed_config(*common, "parallel=cfg"), "cuda", "fp16").phases_gib["denoising"]
    assert half < whole
