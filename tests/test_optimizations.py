"""Every optimization mode on the tiny model: its effect is read back from the pipeline, lossless modes
reproduce opt=none's frames, lossy modes report their PSNR against it, and modes this machine cannot run
end `unsupported` with the reason, never with a traceback.

Frames are compared before any encoding: the pipeline is called directly with the seed the runner uses,
`output_type="np"`, so the comparison sees float frames in [0, 1], not the lossy h264 of video.mp4.
Tolerances: LOSSLESS_ATOL is 1e-4 on [0, 1] (1/40 of an 8-bit level), room for a different summation
order inside BLAS when a layer runs on smaller matrices (chunking measured up to 5e-5); code paths that
do the same arithmetic are compared exactly.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from svdbench.media.image import conditioning_image
from svdbench.pipeline.models import build_random_pipeline
from svdbench.pipeline.optimizations import (
    Unsupported,
    apply_optimizations,
    check_supported,
    enable_group_offload,
    inspect_pipeline,
)
from svdbench.settings.arguments import check_command_line
from svdbench.settings.config import ConfigError, GroupOffloadConfig, OptConfig, lookup

from .conftest import CONF_DIR, run_tiny, typed_config

CPU = torch.device("cpu")
STEPS = 2
LOSSLESS_ATOL = 1e-4
IMAGE = conditioning_image(None, 128, 128)


def opt_config(*overrides: str) -> OptConfig:
    return typed_config(*overrides).opt


def make_pipe(opt: OptConfig, dtype: torch.dtype = torch.float32):
    pipe = build_random_pipeline("tiny", dtype, CPU, seed=0)
    pipe.set_progress_bar_config(disable=True)
    return apply_optimizations(pipe, opt, CPU)


def generate(pipe, decode_chunk_size: int | None = None, max_guidance_scale: float = 3.0) -> np.ndarray:
    """Float frames (T, H, W, 3) in [0, 1], from the same seeded call the runner makes."""
    frames = pipe(
        IMAGE,
        height=128,
        width=128,
        num_frames=8,
        num_inference_steps=STEPS,
        max_guidance_scale=max_guidance_scale,
        decode_chunk_size=decode_chunk_size,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).frames[0]
    return np.asarray(frames, dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of frames in [0, 1] (a test helper; svdbench.metrics has the library's own)."""
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def report_psnr(record_property, what: str, value: float) -> None:
    """Shown with `pytest -s -k psnr`, and kept as the test's `psnr_db` property in --junitxml."""
    record_property("psnr_db", value)
    print(f"\nPSNR vs opt=none, {what}: {value:.1f} dB")


@pytest.fixture(scope="module")
def baseline() -> np.ndarray:
    return generate(make_pipe(opt_config()))


# ---------------------------------------------------------------------------------------------- presets


NEW_MODES = {
    "seq_offload",
    "group_offload",
    "fp8_storage",
    "deepcache",
    "compile_default",
    "compile_max_autotune",
    "compile_vae",
}


def test_every_new_mode_has_a_preset_and_composes():
    assert NEW_MODES <= {p.stem for p in (CONF_DIR / "opt").glob("*.yaml")}
    assert typed_config("opt=seq_offload").opt.offload == "sequential"
    group = typed_config("opt=group_offload").opt
    assert group.offload == "group" and group.group_offload.offload_type == "leaf_level"
    assert group.group_offload.use_stream
    assert typed_config("opt=fp8_storage").opt.storage_dtype == "fp8_e4m3"
    deepcache = typed_config("opt=deepcache").opt.deepcache
    assert deepcache.enabled and deepcache.cache_interval == 3 and deepcache.cache_branch_id == 0
    assert typed_config("opt=compile_default").opt.compile.mode == "default"
    assert typed_config("opt=compile_max_autotune").opt.compile.mode == "max-autotune"
    both = typed_config("opt=compile_vae").opt.compile
    assert both.unet and both.vae and both.fullgraph
    assert typed_config("model=small").model.architecture == "small"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["opt=deepcache", "opt.compile.unet=true"], "cannot be combined with opt.compile.unet"),
        (["opt=group_offload", "opt.group_offload.offload_type=block_level"], "needs opt.group_offload.num_blocks"),
        (["opt.group_offload.use_stream=false", "opt.group_offload.record_stream=true"], "needs opt.group_offload.use"),
        (["opt.storage_dtype=fp16"], "opt.storage_dtype='fp16' is not valid"),
        (["opt.deepcache.cache_interval=0"], "at least 1"),
        (["opt.deepcache.cache_branch_id=-1"], "must be 0 or more"),
        (["opt.offload=disk"], "opt.offload='disk' is not valid"),
    ],
)
def test_forbidden_combinations_are_rejected_at_compose_time(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        typed_config(*overrides)


def test_model_offload_and_group_offload_cannot_be_asked_for_together():
    """diffusers refuses model/sequential offload on a group-offloaded pipeline; opt.offload is one choice,
    so the combination cannot be written: a list is refused by the schema, and a second mode given on top of
    a preset replaces the preset's (one mode, the last given), whichever way round."""
    problem = check_command_line(["opt.offload=[model,group]"])
    assert problem is not None
    assert problem.startswith(
        "opt.offload=[model,group] is not valid: opt.offload takes one of none, model, sequential"
    )
    assert check_command_line(["opt=group_offload", "opt.offload=model"]) is None
    on_top = typed_config("opt=group_offload", "opt.offload=model").opt
    assert (
        on_top.offload == "model"
        and on_top.needs_accelerator == "opt.offload=model moves weights between host and accelerator memory"
    )
    assert typed_config("opt=offload", "opt.offload=group").opt.offload == "group"
    assert lookup("opt.offload").meta["choices"] == ("none", "model", "sequential", "group")  # no combined value


# -------------------------------------------------------------------- what needs which device (real runs)


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("offload", "opt.offload=model moves weights"),
        ("seq_offload", "opt.offload=sequential moves weights"),
        ("group_offload", "opt.offload=group moves groups of layers"),
        ("lowmem", "opt.offload=model moves weights"),
    ],
)
def test_accelerator_modes_are_unsupported_on_cpu_with_the_reason(tmp_path, mode, reason):
    result = run_tiny(tmp_path, f"opt={mode}", "device=cpu")
    assert result.status == "unsupported"
    assert f"opt={mode} is unsupported on device cpu" in result.reason and reason in result.reason
    assert "no CUDA device" in result.reason
    assert not (tmp_path / "error.txt").exists()  # no traceback: a refusal, not a crash


def test_group_offload_reason_names_cuda_streams():
    with pytest.raises(Unsupported, match="CUDA streams"):
        check_supported(opt_config("opt=group_offload"), CPU)


@pytest.mark.parametrize(
    "overrides, check",
    [
        (
            ["opt=deepcache", "opt.forward_chunking=true", "opt.decode_chunk_size=2"],
            lambda a: a["deepcache"]["unet_forward_wrapped"] and a["forward_chunking_blocks"] > 0,
        ),
        (
            ["opt=fp8_storage", "opt.forward_chunking=true", "opt.decode_chunk_size=1"],
            lambda a: a["layerwise_casting"]["unet"]["hooks"] > 0 and a["forward_chunking_blocks"] > 0,
        ),
        # bf16 has no fast kernels on this CPU (about 90 s through the runner on 2 cores): in the slow set; the
        # dtype itself is checked on the pipeline by test_lower_precision_reports_psnr.
        pytest.param(
            ["opt=chunking", "dtype=bf16"],
            lambda a: set(a["unet_parameter_dtypes"]) == {"bfloat16"},
            marks=pytest.mark.slow,
        ),
        (["max_guidance_scale=1"], None),  # the halved UNet batch is checked below, on the pipeline
    ],
)
def test_cpu_modes_run_through_the_runner(tmp_path, overrides, check):
    """Composites through the real runner: each mode with forward chunking and decode chunks, the dtype axis,
    guidance off. (Each mode alone is checked on the pipeline below.)"""
    result = run_tiny(tmp_path, *overrides)
    assert result.status == "ok", result.reason
    assert check is None or check(result.applied), result.applied
    assert (tmp_path / "video.mp4").is_file()


def test_deepcache_without_the_package_is_unsupported_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "DeepCache", None)  # what `import DeepCache` sees when it is not installed
    with pytest.raises(Unsupported, match=r"pip install \"deepcache"):
        check_supported(opt_config("opt=deepcache"), CPU)


def test_deepcache_branch_beyond_the_unet_is_unsupported(tmp_path):
    result = run_tiny(tmp_path, "opt=deepcache", "opt.deepcache.cache_branch_id=6")  # tiny has 2 down blocks
    assert result.status == "unsupported"
    assert "names down block 2, but this UNet has 2 down blocks" in result.reason


# ------------------------------------------------------------------------- lossless modes: same frames


def test_forward_chunking_is_applied_and_lossless(baseline):
    pipe = make_pipe(opt_config("opt=chunking"))
    assert inspect_pipeline(pipe)["forward_chunking_blocks"] > 0
    frames = generate(pipe)
    np.testing.assert_allclose(frames, baseline, rtol=0, atol=LOSSLESS_ATOL)


def test_deepcache_with_interval_1_wraps_the_unet_and_changes_nothing(baseline):
    """Every step refreshes the cache: the wrappers run, nothing is skipped, the frames are identical."""
    pipe = make_pipe(opt_config("opt=deepcache", "opt.deepcache.cache_interval=1"))
    frames = generate(pipe)
    applied = inspect_pipeline(pipe)["deepcache"]
    assert applied["unet_forward_wrapped"] and applied["wrapped_blocks"] > 0
    assert applied["block_calls"] > 0 and applied["skipped_block_calls"] == 0
    np.testing.assert_array_equal(frames, baseline)


def test_group_offload_hooks_are_installed_and_leave_the_frames_alone(baseline):
    """Group offloading with onload and offload device both the CPU: nothing moves, so this checks the wiring
    (hooks on every component, read back) and that the hooks do not change the computation, not the cost of
    offloading, which needs a GPU (and streams need CUDA)."""
    pipe = build_random_pipeline("tiny", torch.float32, CPU, seed=0)
    pipe.set_progress_bar_config(disable=True)
    enable_group_offload(pipe, GroupOffloadConfig(use_stream=False), onload_device=CPU)
    applied = inspect_pipeline(pipe)["group_offload"]
    assert set(applied) == {"unet", "vae", "image_encoder"}
    assert all(info["hooks"] > 0 and info["offload_type"] == ["leaf_level"] for info in applied.values())
    assert not any(info["streams"] for info in applied.values())
    np.testing.assert_array_equal(generate(pipe), baseline)


def test_compile_presets_wrap_the_modules_they_name():
    """torch.compile is lazy: wrapping is checked here, the compiled run itself in the slow tests."""
    for preset, unet, vae in [("compile", True, False), ("compile_default", True, False), ("compile_vae", True, True)]:
        applied = inspect_pipeline(make_pipe(opt_config(f"opt={preset}")))
        assert (applied["unet_compiled"], applied["vae_decoder_compiled"]) == (unet, vae), preset
    assert inspect_pipeline(make_pipe(opt_config()))["unet_compiled"] is False


@pytest.mark.slow
def test_compile_at_the_same_dtype_reproduces_the_frames(baseline):
    """Inductor fuses and reorders float operations, so equality is within 1e-3 on [0, 1] (1/4 of a level)."""
    pipe = make_pipe(opt_config("opt=compile_vae", "opt.compile.mode=default"))
    frames = generate(pipe)
    assert inspect_pipeline(pipe)["unet_compiled"]
    np.testing.assert_allclose(frames, baseline, rtol=0, atol=1e-3)


# ------------------------------------------------------------------------ lossy modes: PSNR vs opt=none

# Lower bounds well under what the tiny random model gives (about 30-40 dB), so that a broken mode
# (noise, a wrong dtype, a skipped step) fails while honest run-to-run variation does not.
MIN_PSNR_DB = 20.0


def test_fp8_storage_stores_unet_weights_in_float8_and_reports_psnr(baseline, record_property):
    pipe = make_pipe(opt_config("opt=fp8_storage"))
    applied = inspect_pipeline(pipe)
    cast = applied["layerwise_casting"]["unet"]
    assert cast["hooks"] > 0 and cast["storage_dtype"] == ["float8_e4m3fn"] and cast["compute_dtype"] == ["float32"]
    assert applied["unet_parameter_dtypes"].get("float8_e4m3fn", 0) > 0  # weights really are stored in fp8
    assert set(applied["layerwise_casting"]) == {"unet"}
    value = psnr(generate(pipe), baseline)
    report_psnr(record_property, "fp8_storage (e4m3 weights, fp32 compute)", value)
    assert MIN_PSNR_DB < value < float("inf"), f"fp8 storage PSNR {value:.1f} dB"


def test_deepcache_skips_deep_blocks_and_reports_psnr(baseline, record_property):
    pipe = make_pipe(opt_config("opt=deepcache"))
    frames = generate(pipe)
    applied = inspect_pipeline(pipe)["deepcache"]
    assert applied["cache_interval"] == 3 and applied["skipped_block_calls"] > 0
    value = psnr(frames, baseline)
    report_psnr(record_property, "deepcache (interval 3, branch 0)", value)
    assert MIN_PSNR_DB < value < float("inf"), f"DeepCache PSNR {value:.1f} dB"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lower_precision_builds_every_weight_in_that_dtype(dtype):
    pipe = make_pipe(opt_config(), dtype=dtype)
    applied = inspect_pipeline(pipe)["unet_parameter_dtypes"]
    assert set(applied) == {str(dtype).removeprefix("torch.")}
    for name in ("vae", "image_encoder"):
        assert {p.dtype for p in getattr(pipe, name).parameters()} == {dtype}, name


# bf16 and fp16 matmuls have no fast kernels on this CPU: 45-60 s a generation on 2 cores, so the frames of both
# are checked in the slow set; the build in each dtype is checked above.
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lower_precision_reports_psnr(baseline, record_property, dtype):
    pipe = make_pipe(opt_config(), dtype=dtype)
    assert set(inspect_pipeline(pipe)["unet_parameter_dtypes"]) == {str(dtype).removeprefix("torch.")}
    value = psnr(generate(pipe), baseline)
    report_psnr(record_property, f"dtype={str(dtype).removeprefix('torch.')}", value)
    assert MIN_PSNR_DB < value < float("inf"), f"{dtype} PSNR {value:.1f} dB"


def test_decode_chunks_are_lossy_psnr(baseline, record_property):
    """The VAE's temporal layers see only their chunk: smaller chunks are lossy (seams), the latents are not."""
    pipe = make_pipe(opt_config())
    value = psnr(generate(pipe, decode_chunk_size=2), baseline)
    report_psnr(record_property, "decode_chunk_size=2 of 8 frames", value)
    assert MIN_PSNR_DB < value < float("inf"), f"decode_chunk_size=2 PSNR {value:.1f} dB"
    np.testing.assert_array_equal(generate(pipe, decode_chunk_size=8), baseline)  # 8 frames = one chunk


def test_guidance_off_halves_the_unet_batch_psnr(baseline, record_property):
    """max_guidance_scale=1 (min is 1 by default) turns classifier-free guidance off: one UNet row, not two."""
    pipe = make_pipe(opt_config())
    batches: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    generate(pipe)
    assert batches == [2] * STEPS
    batches.clear()
    frames = generate(pipe, max_guidance_scale=1.0)
    assert batches == [1] * STEPS
    report_psnr(record_property, "max_guidance_scale=1 (a different generation by design)", psnr(frames, baseline))
