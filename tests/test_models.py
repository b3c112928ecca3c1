"""The three weight sources: exact architecture sizes, seeded random weights, pretrained loading."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from svdbench.pipeline.models import (
    WeightsNotFound,
    _read,
    architecture_dir,
    build_random_pipeline,
    count_parameters,
    meta_module,
    resolve_pretrained_dir,
)
from svdbench.settings.config import ModelConfig

from .conftest import read_json, run_cli, run_tiny

PUBLISHED = {"unet": 1_524_623_082, "vae": 97_742_847, "image_encoder": 632_076_800}


@pytest.mark.parametrize("architecture", ["svd", "svd_xt"])
def test_random_architecture_has_the_published_parameter_counts(architecture):
    directory = architecture_dir(architecture)
    unet = meta_module(lambda: UNetSpatioTemporalConditionModel.from_config(_read(directory, "unet/config.json")))
    vae = meta_module(lambda: AutoencoderKLTemporalDecoder.from_config(_read(directory, "vae/config.json")))
    encoder = meta_module(
        lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**_read(directory, "image_encoder/config.json")))
    )
    counts = {"unet": count_parameters(unet), "vae": count_parameters(vae), "image_encoder": count_parameters(encoder)}
    assert counts == PUBLISHED
    assert unet.config.num_frames == (14 if architecture == "svd" else 25)


def test_random_weights_are_deterministic_from_the_seed_and_honour_the_dtype():
    a = build_random_pipeline("tiny", torch.float32, "cpu", seed=1)
    b = build_random_pipeline("tiny", torch.float32, "cpu", seed=1)
    c = build_random_pipeline("tiny", torch.float32, "cpu", seed=2)
    for name in ("unet", "vae", "image_encoder"):
        sa, sb, sc = (getattr(p, name).state_dict() for p in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert not all(torch.equal(sa[k], sc[k]) for k in sa), name
    half = build_random_pipeline("tiny", torch.bfloat16, "cpu", seed=1)
    for name in ("unet", "vae", "image_encoder"):
        assert {p.dtype for p in getattr(half, name).parameters()} == {torch.bfloat16}, name
    # No parameter is left uninitialised (empty memory would show up as NaN/huge values or zeros).
    for p in a.unet.parameters():
        assert torch.isfinite(p).all() and p.abs().max() < 10


# Two whole runs (about 40 s on 2 cores): in the slow set; loading a checkpoint from disk stays in the default
# suite through tests/test_batch_and_startup.py's time-to-first-video test.
@pytest.mark.slow
def test_pretrained_loader_reads_a_saved_pipeline_back(tmp_path):
    """save_pretrained a tiny random pipeline, load it through model.path: the same frames come out."""
    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=42)
    pipe.save_pretrained(tmp_path / "tiny-pretrained")
    random_run = run_tiny(tmp_path / "random", "seed=42")
    loaded_run = run_tiny(
        tmp_path / "loaded", "model.weights=pretrained", f"model.path={tmp_path / 'tiny-pretrained'}", "seed=42"
    )
    assert random_run.status == "ok" and loaded_run.status == "ok", loaded_run.reason
    assert loaded_run.weights == "pretrained"
    from svdbench.media.video import read_video

    frames_random, _ = read_video(tmp_path / "random" / "video.mp4")
    frames_loaded, _ = read_video(tmp_path / "loaded" / "video.mp4")
    np.testing.assert_array_equal(frames_random, frames_loaded)


def test_missing_pretrained_weights_fail_fast_naming_the_ways_forward(tmp_path):
    proc = run_cli(tmp_path, "hydra.run.dir=run", "model=xt")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    # Fails fast: before any pipeline call (no cold call, no measured call; how fast is tests/benchmarks' business).
    assert "cold call" not in output and "measured" not in output
    assert "stabilityai/stable-video-diffusion-img2vid-xt" in output
    assert "hf download" in output and "model.path=" in output and "model.weights=random" in output
    assert "Traceback" not in output
    result = read_json(tmp_path / "run" / "results.json")
    assert result["status"] == "error" and "not in the Hugging Face cache" in result["reason"]
    assert result["latency"]["calls_s"] == [] and result["latency"].get("cold_s") is None


def test_incomplete_checkpoint_directory_names_the_missing_component(tmp_path):
    pipe = build_random_pipeline("tiny", torch.float32, "cpu", seed=0)
    pipe.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "ckpt" / "vae")
    (tmp_path / "ckpt" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    model = ModelConfig(name="tiny", weights="pretrained", path=str(tmp_path / "ckpt"))
    with pytest.raises(WeightsNotFound) as info:
        resolve_pretrained_dir(model)
    message = str(info.value)
    assert "vae/config.json" in message and "unet/diffusion_pytorch_model" in message
    assert "image_encoder" not in message


def test_pretrained_path_that_is_not_a_directory(tmp_path):
    model = ModelConfig(name="svd", weights="pretrained", path=str(tmp_path / "nowhere"))
    with pytest.raises(WeightsNotFound, match="is not a directory"):
        resolve_pretrained_dir(model)
