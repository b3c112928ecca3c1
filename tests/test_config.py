"""Config composition: every option of every group composes, overrides mean what the guide means,
and invalid values stop before any model is built, with a message saying what to do."""

from __future__ import annotations

import time

import pytest

from svdbench.config import ConfigError

from .conftest import CONF_DIR, compose_config, run_cli, typed_config

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")


@pytest.mark.parametrize(
    "override",
    [f"{group}={option.stem}" for group in GROUPS for option in sorted((CONF_DIR / group).glob("*.yaml"))],
)
def test_every_option_of_every_group_composes_and_validates(override):
    cfg = typed_config(override)
    group, option = override.split("=")
    if hasattr(getattr(cfg, group, None), "name"):
        assert getattr(cfg, group).name == option


@pytest.mark.parametrize("launcher", sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_composes(launcher):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_


def test_groups_cover_the_documented_options():
    options = {group: {p.stem for p in (CONF_DIR / group).glob("*.yaml")} for group in GROUPS}
    assert {"tiny", "svd", "xt"} <= options["model"]
    assert {"none", "offload", "compile", "chunking", "lowmem"} <= options["opt"]
    assert {"default", "high_motion"} <= options["cond"]


def test_defaults():
    cfg = typed_config()
    assert (cfg.model.name, cfg.opt.name, cfg.cond.name) == ("tiny", "none", "default")
    assert cfg.num_inference_steps == 25 and cfg.seed == 42 and cfg.device == "auto"
    assert (cfg.min_guidance_scale, cfg.max_guidance_scale) == (1.0, 3.0)
    assert (cfg.cond.fps, cfg.cond.motion_bucket_id, cfg.cond.noise_aug_strength) == (7, 127, 0.02)
    assert cfg.opt.decode_chunk_size is None  # all frames in one chunk
    assert cfg.input.path is None  # the embedded test card


def test_model_presets_carry_their_native_shape():
    svd, xt = typed_config("model=svd"), typed_config("model=xt")
    assert (svd.num_frames, svd.height, svd.width) == (14, 576, 1024)
    assert (xt.num_frames, xt.height, xt.width) == (25, 576, 1024)
    assert xt.model.repo_id == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert svd.model.repo_id == "stabilityai/stable-video-diffusion-img2vid"
    assert xt.model.weights == "pretrained" and xt.model.variant == "fp16"


def test_optimization_modes_match_the_guide():
    assert typed_config("opt=offload").opt.offload == "model"
    compiled = typed_config("opt=compile").opt.compile
    assert compiled.unet and compiled.mode == "reduce-overhead" and compiled.fullgraph
    assert typed_config("opt=chunking").opt.forward_chunking
    lowmem = typed_config("opt=lowmem").opt
    assert lowmem.offload == "model" and lowmem.forward_chunking and lowmem.decode_chunk_size == 2


def test_command_line_overrides():
    cfg = typed_config(
        "model=xt",
        "opt=compile",
        "cond=high_motion",
        "opt.decode_chunk_size=2",
        "cond.motion_bucket_id=200",
        "seed=7",
        "height=320",
        "width=512",
        "num_inference_steps=10",
        "opt.compile.mode=max-autotune",
    )
    assert cfg.cond.noise_aug_strength == 0.1 and cfg.cond.motion_bucket_id == 200
    assert cfg.opt.decode_chunk_size == 2 and cfg.opt.compile.mode == "max-autotune"
    assert (cfg.seed, cfg.height, cfg.width, cfg.num_inference_steps, cfg.num_frames) == (7, 320, 512, 10, 25)


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_inference_steps=-1", "num_inference_steps=-1 is invalid"),
        ("num_inference_steps=0", "at least 1 denoising step"),
        ("num_frames=0", "num_frames=0 is invalid"),
        ("height=500", "multiple of 64"),
        ("width=100000", "up to 4096"),
        ("cond.motion_bucket_id=300", "0..255"),
        ("cond.motion_bucket_id=-1", "0..255"),
        ("cond.fps=0", "cond.fps=0 is invalid"),
        ("cond.noise_aug_strength=-0.1", "must be 0 or more"),
        ("dtype=fp8", "choose one of auto, fp32, fp16, bf16"),
        ("model.dtype=half", "model.dtype='half' is not valid"),
        ("device=tpu", "use auto, cpu, cuda or cuda:N"),
        ("opt.decode_chunk_size=0", "at least one frame"),
        ("opt.compile.mode=fastest", "opt.compile.mode='fastest' is not valid"),
        ("bench.repeats=0", "at least one measured call"),
        ("max_guidance_scale=0.5", "1 <= min <= max"),
        ("model.weights=pretrained", "needs model.path"),
        ("model.weights=downloaded", "model.weights='downloaded' is not valid"),
    ],
)
def test_invalid_values_are_rejected_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        typed_config(override)


def test_wrong_types_are_rejected_by_the_schema():
    with pytest.raises(Exception, match="num_inference_steps"):
        compose_config("num_inference_steps=many")


def test_invalid_value_on_the_command_line_fails_fast_without_traceback(tmp_path):
    start = time.monotonic()
    proc = run_cli(tmp_path, "hydra.run.dir=run", "height=500")
    elapsed = time.monotonic() - start
    assert proc.returncode == 1
    assert "height=500 is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Building" not in proc.stderr + proc.stdout  # no model was built
    assert elapsed < 60
    from .conftest import read_json

    result = read_json(tmp_path / "run" / "results.json")
    assert result["status"] == "error" and "multiple of 64" in result["reason"]
