"""Issue 16's keys on the tiny model, for real on the CPU: opt.fuse_qkv, opt.attention_backend, opt.tf32,
opt.quantize (torchao), opt.quantize_vae, and the fast/fastest/int8 presets. Each key runs (and its effect is
read back) or ends `unsupported` with a specific reason. Lossy modes report their PSNR against opt=none
(`pytest tests/test_fast_modes.py -s -k psnr` prints it).

Mocks: only a CUDA device's compute capability (this machine has no GPU); each such test says so.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svdbench.measure.timing import Clock
from svdbench.media.image import conditioning_image
from svdbench.media.video import to_uint8
from svdbench.metrics.fidelity import psnr
from svdbench.pipeline.models import build_random_pipeline
from svdbench.pipeline.optimizations import (
    Unsupported,
    applied_call_settings,
    apply_optimizations,
    call_context,
    check_supported,
    current_call_settings,
    inspect_pipeline,
)
from svdbench.settings.config import ConfigError, OptConfig

from .conftest import run_tiny, typed_config

CPU = torch.device("cpu")
IMAGE = conditioning_image(None, 128, 128)


def opt_config(*overrides: str) -> OptConfig:
    return typed_config(*overrides).opt


def make_pipe(opt: OptConfig, timings: dict | None = None):
    pipe = build_random_pipeline("tiny", torch.float32, CPU, seed=0)
    pipe.set_progress_bar_config(disable=True)
    clock = Clock(CPU)
    timed = None if timings is None else (lambda key: clock.section(timings, key))
    return apply_optimizations(pipe, opt, CPU, timed=timed)


def generate(pipe, opt: OptConfig) -> np.ndarray:
    """Float frames (T, H, W, 3) in [0, 1]: the runner's seeded call, 2 steps, inside the mode's call context."""
    with call_context(opt, CPU):
        frames = pipe(
            IMAGE,
            height=128,
            width=128,
            num_frames=8,
            num_inference_steps=2,
            generator=torch.Generator("cpu").manual_seed(42),
            output_type="np",
        ).frames[0]
    return np.asarray(frames, dtype=np.float64)


def report_psnr(record_property, what: str, frames: np.ndarray, baseline: np.ndarray) -> float:
    value = psnr(to_uint8(frames), to_uint8(baseline))  # svdbench's PSNR, on the 8-bit frames a video holds
    record_property("psnr_db", value)
    print(f"\nPSNR vs opt=none, {what}: {value:.1f} dB")
    return value


@pytest.fixture(scope="module")
def baseline() -> np.ndarray:
    return generate(make_pipe(opt_config()), opt_config())


# --- refused before anything is built -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["efficient", "cudnn"])
def test_attention_backends_the_cpu_lacks_are_unsupported_with_the_reason(backend):
    with pytest.raises(Unsupported, match=rf"attention_backend={backend} is unsupported on device cpu") as info:
        check_supported(opt_config(f"opt.attention_backend={backend}"), CPU, torch.float32)
    assert f"has no {backend} attention kernel" in str(info.value)
    assert "or one this device has (flash, math)" in str(info.value)  # tried for real: CPU flash kernel and math


@pytest.mark.parametrize("backend", ["flash", "math"])
def test_attention_backends_the_cpu_has_are_supported(backend):
    check_supported(opt_config(f"opt.attention_backend={backend}"), CPU, torch.float32)
    check_supported(opt_config(f"opt.attention_backend={backend}"), CPU)  # dtype is optional (old callers)


def test_tf32_and_float8_are_unsupported_on_the_cpu_with_the_reason():
    with pytest.raises(Unsupported, match="TF32 is a format of NVIDIA tensor cores"):
        check_supported(opt_config("opt.tf32=true"), CPU)
    with pytest.raises(Unsupported, match=r"fp8 tensor cores \(CUDA compute capability 8\.9"):
        check_supported(opt_config("opt.quantize=float8_dynamic"), CPU)
    check_supported(opt_config("opt.quantize=int8_dynamic"), CPU)
    check_supported(opt_config("opt.quantize=int8_weight_only", "opt.quantize_vae=true"), CPU)


def test_quantize_without_torchao_is_unsupported_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # a real failing import, as on a machine without it
    with pytest.raises(Unsupported, match=r'needs torchao, which cannot be imported here.*pip install "torchao'):
        check_supported(opt_config("opt.quantize=int8_weight_only"), CPU)


@pytest.mark.parametrize(
    "overrides, capability, refused",
    [
        (["opt.tf32=true"], (7, 5), "TF32 tensor cores need compute capability 8.0"),
        (["opt.tf32=true"], (8, 0), None),
        (["opt.quantize=float8_dynamic"], (8, 6), "float8_dynamic needs fp8 tensor cores"),
        (["opt.quantize=float8_dynamic"], (9, 0), None),
    ],
)
def test_gpu_capability_decides_tf32_and_float8(monkeypatch, overrides, capability, refused):
    # MOCK: this machine has no GPU; only the CUDA capability query and the device name are faked.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    if refused:
        with pytest.raises(Unsupported, match=refused):
            check_supported(opt_config(*overrides), torch.device("cuda"))
    else:
        check_supported(opt_config(*overrides), torch.device("cuda"))


def test_quantize_with_fp8_storage_is_refused_at_compose_time():
    with pytest.raises(ConfigError, match="cannot be combined with opt.storage_dtype=fp8_e4m3"):
        typed_config("opt.quantize=int8_dynamic", "opt=fp8_storage")


def test_presets_compose_and_say_why_they_cannot_run_on_the_cpu():
    fast, fastest, int8 = (opt_config(f"opt={name}") for name in ("fast", "fastest", "int8"))
    assert fast.compile.unet and fast.compile.vae and fast.fuse_qkv and fast.tf32 and fast.quantize is None
    assert fastest.deepcache.enabled and fastest.compile.vae and not fastest.compile.unet
    assert (fastest.fuse_qkv, fastest.tf32, fastest.quantize) == (True, True, "float8_dynamic")
    assert int8.quantize == "int8_dynamic"
    with pytest.raises(Unsupported, match="TF32") as info:
        check_supported(fast, CPU, torch.float32)
    assert "Also:" not in str(info.value)
    with pytest.raises(Unsupported, match="TF32") as info:  # every GPU-only piece is named, not only the first
        check_supported(fastest, CPU, torch.float32)
    assert "Also: opt=fastest with opt.quantize=float8_dynamic is unsupported" in str(info.value)
    check_supported(int8, CPU, torch.float32)


# --- around each call ------------------------------------------------------------------------------------------


def test_call_context_sets_tf32_for_the_call_and_restores_it():
    # The flags are real torch flags; on a CPU they change no arithmetic (the runner refuses tf32 there).
    before = current_call_settings()
    with call_context(opt_config("opt.tf32=true"), CPU):
        inside = current_call_settings()
    assert inside["tf32_matmul"] and inside["tf32_cudnn"] and inside["float32_matmul_precision"] == "high"
    assert current_call_settings() == before
    applied = applied_call_settings(opt_config("opt.tf32=true"), CPU)
    assert applied["tf32_matmul"] is True and applied["attention_backend_forced"] is False


def test_call_context_forces_the_attention_kernel_and_restores_it():
    before = current_call_settings()["sdpa_backends_enabled"]
    with call_context(opt_config("opt.attention_backend=math"), CPU):
        assert current_call_settings()["sdpa_backends_enabled"] == ["math"]
    assert current_call_settings()["sdpa_backends_enabled"] == before
    assert applied_call_settings(opt_config("opt.attention_backend=flash"), CPU)["sdpa_backends_enabled"] == ["flash"]


def test_inputs_the_forced_kernel_cannot_take_end_unsupported_with_torchs_reason():
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(Unsupported, match="opt.attention_backend=flash is unsupported for this run") as info:
        with call_context(opt_config("opt.attention_backend=flash"), CPU):
            F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)  # CPU's flash kernel takes no dropout
    assert "do not support non-zero dropout" in str(info.value)
    with pytest.raises(RuntimeError, match="not an attention problem") as other:  # anything else passes through
        with call_context(opt_config("opt.attention_backend=flash"), CPU):
            raise RuntimeError("not an attention problem")
    assert not isinstance(other.value, Unsupported)


def test_other_warnings_inside_a_forced_kernel_call_still_reach_the_user():
    opt = opt_config("opt.attention_backend=math")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with call_context(opt, CPU):
            warnings.warn("a warning of the pipeline's own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of the pipeline's own"]


# --- applied to the pipeline, frames compared ------------------------------------------------------------------


def test_fuse_qkv_fuses_every_attention_and_keeps_the_frames(baseline):
    """diffusers' own fuse_qkv_projections() is a no-op on SVD (legacy Attention modules); svdbench fuses them."""
    timings: dict[str, float] = {}
    opt = opt_config("opt.fuse_qkv=true")
    pipe = make_pipe(opt, timings)
    fused = inspect_pipeline(pipe)["fused_projections"]
    assert fused["unet"]["fused"] == fused["unet"]["attention_modules"] == 16
    assert (fused["unet"]["qkv"], fused["unet"]["kv"]) == (8, 8)  # self-attention: q,k,v; cross-attention: k,v
    assert fused["unet"]["processors"] == {"FusedAttnProcessor2_0": 16}
    assert fused["vae"]["fused"] == 2
    assert set(timings) == {"placement_s", "optimize_s"} and all(v >= 0 for v in timings.values())
    np.testing.assert_allclose(generate(pipe, opt), baseline, rtol=0, atol=1e-6)  # measured: identical


@pytest.mark.parametrize("mode, min_db", [("int8_weight_only", 35.0), ("int8_dynamic", 30.0)])
def test_int8_quantization_runs_and_reports_psnr(baseline, record_property, mode, min_db):
    opt = opt_config(f"opt.quantize={mode}")
    pipe = make_pipe(opt)
    quantized = inspect_pipeline(pipe)["quantized"]["unet"]
    assert quantized["quantized_layers"] == quantized["linear_layers"] > 0
    assert quantized["weight_types"] == {"Int8Tensor": quantized["linear_layers"]}
    assert quantized["stored_dtypes"] == {"int8": quantized["linear_layers"]}
    assert quantized["activations_quantized"] == (quantized["linear_layers"] if mode == "int8_dynamic" else 0)
    value = report_psnr(record_property, f"opt.quantize={mode}", generate(pipe, opt), baseline)
    assert np.isfinite(value) and min_db < value < 200  # changed (lossy), not broken


def test_quantize_vae_quantizes_the_decoders_linear_layers():
    pipe = make_pipe(opt_config("opt=int8", "opt.quantize_vae=true"))
    decoder = inspect_pipeline(pipe)["quantized"]["vae_decoder"]
    # The decoder's only linear layers are its mid-block attention's q, k, v and out projections. In the tiny
    # model that attention never runs (MidBlockTemporalDecoder pairs attentions with resnets[1:], and
    # layers_per_block=1 leaves none), so its frames cannot show the effect; SVD's decoder runs it once.
    assert decoder["quantized_layers"] == decoder["linear_layers"] == 4


# --- slower: more pipeline calls or whole runs -----------------------------------------------------------------


def test_math_attention_is_close_to_auto(baseline):
    opt = opt_config("opt.attention_backend=math")
    frames = generate(make_pipe(opt), opt)
    # auto picks the CPU flash kernel; math sums in another order (measured: at most 5e-5 on [0, 1])
    np.testing.assert_allclose(frames, baseline, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_int8_preset_runs_through_the_runner(tmp_path):
    # Depends on the runner wiring call_context, timings and the applied read-back (done in svdbench/runner.py).
    result = run_tiny(tmp_path / "int8", "opt=int8", "device=cpu")
    assert result.status == "ok", result.reason
    assert result.applied["quantized"]["unet"]["quantized_layers"] > 0
    assert result.startup.placement_s is not None and result.startup.optimize_s is not None


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (["opt=fast"], "TF32 is a format of NVIDIA tensor cores"),
        (["opt=fastest"], "TF32 is a format of NVIDIA tensor cores"),
        (["opt.quantize=float8_dynamic"], "float8_dynamic computes with fp8 tensor cores"),
        (["opt.attention_backend=efficient"], "has no efficient attention kernel"),
    ],
)
def test_gpu_only_modes_end_unsupported_through_the_runner(tmp_path, overrides, reason):
    result = run_tiny(tmp_path / "run", *overrides, "device=cpu")
    assert result.status == "unsupported" and reason in result.reason, result.reason


@pytest.mark.slow
def test_forced_attention_backend_is_read_back_through_the_runner(tmp_path):
    # Depends on the runner calling every pipeline call inside call_context (done in svdbench/runner.py).
    result = run_tiny(tmp_path / "run", "opt.attention_backend=flash", "opt.fuse_qkv=true", "device=cpu")
    assert result.status == "ok", result.reason
    assert result.applied["call_settings"]["sdpa_backends_enabled"] == ["flash"]
    assert result.applied["fused_projections"]["unet"]["fused"] == 16
