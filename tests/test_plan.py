"""The memory planner (svdbench.plan) against the real thing.

On the CPU: the predicted peak must match the peak of live tensor bytes (weights included) measured while the
real pipeline runs on real tensors, counted by the same kind of dispatch-mode tracker. On the GPU: the H100
measurements of docs/benchmarks.md. On the command line: the same validation and messages as a run.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from svdbench.pipeline.call import call_inputs, enable_forward_chunking
from svdbench.pipeline.models import build_random_pipeline
from svdbench.plan import CannotPredict, predict
from svdbench.plan import planner as plan_predict
from svdbench.plan.fit import CARD_SIZES_GB, efficiency
from svdbench.plan.tracker import LiveBytes, cuda_block_bytes

from .conftest import offline_env, run_cli, typed_config

GIB = 2**30
CPU_TOLERANCE = 0.03
H100_TOLERANCE = 0.05


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Every test simulates afresh: a cache left by an older planner must not answer for this one."""
    monkeypatch.setenv("SVDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    plan_predict.CACHE.forget()
    yield
    plan_predict.CACHE.forget()


def measured_peak_bytes(pipe, cfg) -> int:
    """The peak of live tensor bytes, weights included, during one real call of `pipe` on the CPU."""
    from svdbench.media.image import conditioning_image

    image = conditioning_image(None, cfg.width, cfg.height)
    tracker = LiveBytes()
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        tracker.add([*module.parameters(), *module.buffers()])
    pipe.set_progress_bar_config(disable=True)
    # One thread: the live tensors are the same with any number, and on a busy 2-core machine two threads
    # waiting for each other made the tiny call 15 times slower (14 s against 0.9 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), tracker:
            pipe(**call_inputs(cfg, image), output_type="np")  # the call as the runner makes it
    finally:
        torch.set_num_threads(threads)
    return tracker.peak


def check_cpu(pipe, *overrides: str) -> None:
    # two steps: the peak of step 2 is every later step's (the planner simulates two as well)
    cfg = typed_config("device=cpu", "num_inference_steps=2", *overrides)
    enable_forward_chunking(pipe, cfg.opt)
    try:
        measured = measured_peak_bytes(pipe, cfg)
    finally:  # the pipeline is shared by the module's tests: chunking off again
        for module in pipe.unet.modules():
            if hasattr(module, "set_chunk_feed_forward"):
                module.set_chunk_feed_forward(chunk_size=None, dim=0)
    predicted = predict(cfg).peak_gib * GIB
    error = predicted / measured - 1
    assert abs(error) <= CPU_TOLERANCE, (
        f"{overrides}: predicted {predicted / 2**20:.2f} MiB, measured {measured / 2**20:.2f} MiB ({error:+.2%})"
    )


@pytest.fixture(scope="module")
def tiny_cpu():
    return build_random_pipeline("tiny", torch.float32, "cpu", seed=0)


@pytest.fixture(scope="module")
def small_cpu():
    return build_random_pipeline("small", torch.float32, "cpu", seed=0)


@pytest.mark.parametrize(
    "overrides",
    [
        ("height=128", "width=128", "num_frames=8"),  # the tiny default: guidance on, one decode chunk
        ("height=128", "width=192", "num_frames=6", "opt.decode_chunk_size=4", "max_guidance_scale=1"),
        ("height=64", "width=64", "num_frames=5", "opt.decode_chunk_size=2", "opt=chunking"),
    ],
    ids=["default", "chunked-decode-unguided", "forward-chunking"],
)
def test_cpu_prediction_matches_real_tiny_pipeline(tiny_cpu, overrides):
    check_cpu(tiny_cpu, *overrides)


def test_cpu_prediction_matches_real_small_pipeline(small_cpu):
    check_cpu(small_cpu, "model=small", "height=128", "width=64", "num_frames=3", "opt.decode_chunk_size=2")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        (),  # model=small's own 256x256, 14 frames, all decoded at once
        ("opt.decode_chunk_size=4", "max_guidance_scale=1"),
        ("num_frames=6", "height=192", "width=128", "opt=chunking"),
    ],
    ids=["native", "decode-4-unguided", "chunking-192x128"],
)
def test_cpu_prediction_matches_real_small_pipeline_at_native_sizes(small_cpu, overrides):
    check_cpu(small_cpu, "model=small", *overrides)


def test_fused_qkv_and_a_batch_of_videos_on_the_cpu():
    """opt.fuse_qkv adds fused projection layers (the unfused ones stay) and changes the attention inputs'
    layout; a batch is a list of pictures, as the runner passes it."""
    from svdbench.pipeline.optimizations import fuse_qkv_projections

    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    fuse_qkv_projections(pipe)
    check_cpu(pipe, "num_frames=4", "batch_size=2", "opt.fuse_qkv=true", "opt.decode_chunk_size=3")
    fused = predict(typed_config("device=cuda", "num_frames=4", "opt.fuse_qkv=true"))
    plain = predict(typed_config("device=cuda", "num_frames=4"))
    assert fused.resident_gib["decode"] > plain.resident_gib["decode"]  # the fused layers' weights


def test_deepcache_cached_features_are_predicted_on_the_cpu(tiny_cpu):
    """DeepCache keeps the UNet's block outputs alive until the next call: the steady state (a second call
    with the first call's cache alive) is what the planner predicts."""
    from svdbench.pipeline.deepcache import enable_deepcache

    cfg = typed_config("device=cpu", "num_inference_steps=2", "opt=deepcache", "num_frames=3")
    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    enable_deepcache(pipe, cfg.opt.deepcache)
    measured_peak_bytes(pipe, cfg)  # the first call leaves its cache behind
    measured = measured_peak_bytes(pipe, cfg)
    predicted = predict(cfg).peak_gib * GIB
    assert abs(predicted / measured - 1) <= CPU_TOLERANCE, (predicted, measured)
    without = predict(typed_config("device=cpu", "num_inference_steps=2", "num_frames=3")).peak_gib * GIB
    assert predicted > without  # the cache is really counted


# docs/benchmarks.md, "SVD-XT on an NVIDIA H100 (random weights)", column "peak allocated (GiB)": SVD-XT,
# 576x1024, 25 frames, 25 steps, fp16, guidance on, random weights.
H100_PEAK_ALLOCATED_GIB = {
    "none": 32.44,
    "chunking": 32.44,
    "offload": 28.37,
    "lowmem": 7.56,
    "compile": 32.44,
    "group_offload": 28.19,
    "deepcache": 38.37,
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(H100_PEAK_ALLOCATED_GIB))
def test_h100_measurements_of_svd_xt(mode):
    cfg = typed_config(
        "model=xt",
        "model.weights=random",
        "device=cuda",
        "dtype=fp16",
        "height=576",
        "width=1024",
        "num_frames=25",
        f"opt={mode}",
    )
    predicted = predict(cfg).peak_gib
    measured = H100_PEAK_ALLOCATED_GIB[mode]
    assert abs(predicted / measured - 1) <= H100_TOLERANCE, f"{mode}: predicted {predicted:.2f}, measured {measured}"


def test_offload_keeps_only_the_running_model_on_the_device():
    """Model offload: the decode holds the VAE only; without offload every weight is there."""
    base = ("device=cuda", "dtype=fp16", "num_frames=4", "num_inference_steps=2")
    none = predict(typed_config(*base))
    offload = predict(typed_config(*base, "opt=offload"))
    sequential = predict(typed_config(*base, "opt=seq_offload"))
    stats = plan_predict.component_weights(typed_config(*base), plan_predict.Target("cuda", "fp16"))
    vae, everything = stats["vae"]["device"], sum(stats[n]["device"] for n in ("unet", "vae", "image_encoder"))
    assert offload.resident_gib["decode"] * GIB == vae
    assert none.resident_gib["decode"] * GIB == everything
    assert offload.resident_gib["denoising"] * GIB == stats["unet"]["device"] + vae
    assert sequential.resident_gib["denoising"] * GIB == stats["unet"]["largest_leaf"]
    assert offload.host_weights_gib is not None and none.host_weights_gib is None
    # the activations and kept tensors are the same: only the weights differ
    assert none.phases_gib["decode"] - offload.phases_gib["decode"] == pytest.approx((everything - vae) / GIB)


def test_auto_device_and_dtype_are_planned_as_a_gpu_with_the_model_dtype():
    xt = plan_predict.resolve_target(typed_config("model=xt", "model.weights=random"))
    assert (xt.device, xt.dtype) == ("cuda", "fp16")
    assert xt.assumption and "device=auto" in xt.assumption and "fp16" in xt.assumption
    cpu = plan_predict.resolve_target(typed_config("model=xt", "model.weights=random", "device=cpu"))
    assert (cpu.device, cpu.dtype) == ("cpu", "fp32")
    prediction = predict(typed_config())
    assert (prediction.device, prediction.dtype) == ("cuda", "fp32")  # the tiny model's dtype is fp32
    assert any("device=auto" in text for text in prediction.assumptions)
    assert "fused" in prediction.attention


def test_cuda_allocator_rounding():
    assert cuda_block_bytes(1) == 512
    assert cuda_block_bytes(513) == 1024
    assert cuda_block_bytes(3 * 2**20 + 1) == 3 * 2**20 + 512  # split from a 20 MiB segment
    assert cuda_block_bytes(21 * 2**20 + 1) == 22 * 2**20  # its own segment: padding up to 1 MiB is kept
    assert cuda_block_bytes(20 * 2**20 + 1) == 20 * 2**20 + 512  # padding over 1 MiB is split off


def test_unmodelled_settings_raise_cannot_predict():
    cfg = typed_config("device=cuda")
    cfg.opt.quantize = "int8_weight_only"  # type: ignore[attr-defined]  # a key another change adds to OptConfig
    with pytest.raises(CannotPredict, match="quantize"):
        predict(cfg)
    assert isinstance(plan_predict.try_predict(cfg), str)
    with pytest.raises(CannotPredict, match="offload"):
        predict(typed_config("device=cpu", "opt=offload"))


def test_prediction_is_fast_after_the_first_call():
    cfg = typed_config("device=cpu")
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    first = predict(cfg)  # simulated: it must leave the global RNG as it found it (the runner seeds first)
    assert torch.equal(torch.rand(3), expected_draw)
    started = time.perf_counter()
    again = predict(cfg)
    assert time.perf_counter() - started < 0.2
    plan_predict.CACHE.forget()  # as in a new process: only the file under ~/.cache/svdbench is left
    started = time.perf_counter()
    from_disk = predict(cfg)
    assert time.perf_counter() - started < 0.5
    assert first.peak_gib == again.peak_gib == from_disk.peak_gib


@pytest.mark.parametrize(
    "bad",
    [
        ["opt.decode_chunk=2"],  # not a setting
        ["height=100"],  # not a multiple of 64
    ],
)
def test_bad_overrides_get_exactly_the_message_of_a_run(tmp_path, bad):
    planned = run_cli(tmp_path, *bad, module="svdbench.plan", timeout=120)
    ran = run_cli(tmp_path, *bad, timeout=120)
    assert planned.returncode == ran.returncode == 2
    assert planned.stderr.strip() == ran.stderr.strip()
    assert planned.stderr.startswith("error: ") and planned.stdout == ""


@pytest.mark.parametrize(
    "flag, words",
    [
        ("--gpu=nonsense", "Known GPUs"),
        ("--gpu-memory-gib=-3", "positive number"),
        ("--gpu-tflops=0", "dense peak TFLOP/s in the run's dtype as a positive number"),
        ("--gpu-tflops", "needs a value"),
        ("--frobnicate", "--json"),
    ],
)
def test_bad_planner_flags_get_one_paragraph_and_exit_2(tmp_path, flag, words):
    proc = run_cli(tmp_path, flag, module="svdbench.plan", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_cannot_predict_exits_3_without_a_number(tmp_path):
    proc = run_cli(tmp_path, "device=cpu", "opt=offload", module="svdbench.plan", timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stderr.startswith("cannot predict: opt.offload=model")
    assert "GiB" not in proc.stdout


@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory):
    """One cache for the CLI tests of the same configuration: the second reads what the first simulated."""
    return tmp_path_factory.mktemp("cli-cache")


CLI_CONFIG = ("device=cuda", "num_frames=4", "num_inference_steps=2")


@pytest.mark.slow  # several real runs or CLI calls; CI runs it with -m slow
def test_cli_json_fit_table_and_presets_that_fit(tmp_path, cli_cache):
    env = dict(offline_env(tmp_path), SVDBENCH_CACHE_DIR=str(cli_cache))
    args = (*CLI_CONFIG, "--json", "--gpu-memory-gib=1.2")
    proc = run_cli(tmp_path, *args, module="svdbench.plan", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    expected = predict(typed_config(*CLI_CONFIG))  # simulated again here, in a fresh cache
    assert report["peak_gib"] == pytest.approx(expected.peak_gib)
    assert report["peak_phase"] == expected.peak_phase in ("conditioning", "denoising", "decode")
    rows = {row["opt"]: row for row in report["fit"]}
    from svdbench.settings.arguments import groups

    assert sorted(rows) == groups()["opt"]
    for name, row in rows.items():
        if typed_config(f"opt={name}").opt.quantize:  # torchao quantization: not modelled
            assert row["status"] == "not modelled" and "quantize" in row["reason"] and row["peak_gib"] is None
            continue
        assert row["status"] == "modelled", row
        assert sorted(row["cards"], key=int) == [str(size) for size in CARD_SIZES_GB]
        assert all(card["fits"] == (card["margin_gib"] >= 0) for card in row["cards"].values())
    assert rows["none"]["peak_gib"] == pytest.approx(expected.peak_gib)
    assert rows["offload"]["peak_gib"] < rows["none"]["peak_gib"]
    # 1.2 GiB less the 1.1 GiB context: the tiny model fits with every preset; fastest (measured) first
    chosen = report["fits_in"]["presets"]
    measured = [name for name in chosen if efficiency(name) is not None]
    assert measured == sorted(measured, key=lambda name: -(efficiency(name) or 0))
    modelled = [name for name, row in rows.items() if row["status"] == "modelled"]
    assert chosen[: len(measured)] == measured and sorted(chosen) == sorted(modelled)


def test_cli_markdown_names_the_peak_and_the_table(tmp_path, cli_cache):
    env = dict(offline_env(tmp_path), SVDBENCH_CACHE_DIR=str(cli_cache))
    proc = run_cli(tmp_path, *CLI_CONFIG, "--no-fit", "--gpu=h100", module="svdbench.plan", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Predicted peak allocated device memory of one call:" in proc.stdout
    assert "| decode" in proc.stdout and "fused SDPA" in proc.stdout
    assert "Time estimate on H100:" in proc.stdout and "## Fit table" not in proc.stdout


def test_a_gpu_outside_the_table_gets_its_time_from_the_peak_given(cli_cache, monkeypatch):
    from svdbench.plan.__main__ import parse, plan

    monkeypatch.setenv("SVDBENCH_CACHE_DIR", str(cli_cache))
    given = plan(parse([*CLI_CONFIG, "--no-fit", "--gpu=my-gpu", "--gpu-tflops", "400"]))["time_estimate"]
    listed = plan(parse([*CLI_CONFIG, "--no-fit", "--gpu=h100"]))["time_estimate"]
    assert given["gpu"] == "my-gpu" and given["peak_tflops"] == 400 and "the given dense peak" in given["note"]
    assert listed["gpu"] == "H100" and "the data-sheet dense peak" in listed["note"]
    # the same FLOPs and efficiency: the time scales with the peak alone
    assert given["efficiency"] == listed["efficiency"] == efficiency("none")
    assert given["seconds"] == pytest.approx(listed["seconds"] * listed["peak_tflops"] / 400)


@pytest.mark.slow
def test_xt_plan_takes_under_a_minute_from_a_cold_cache(tmp_path):
    env = dict(offline_env(tmp_path), SVDBENCH_CACHE_DIR=str(tmp_path / "cold"))
    started = time.perf_counter()
    proc = run_cli(tmp_path, "model=xt", module="svdbench.plan", env=env, timeout=300)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Fit table" in proc.stdout and "| lowmem |" in proc.stdout
    assert elapsed < 60, f"{elapsed:.1f} s"
