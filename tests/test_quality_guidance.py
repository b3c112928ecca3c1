"""opt.guidance_until_step on a real tiny pipeline: the same call when k covers every step, and the UNet at half
batch after k steps (its batch sizes counted with a forward pre-hook)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from svdbench.compare import gate
from svdbench.pipeline.guidance import limit_guidance
from svdbench.pipeline.models import build_random_pipeline
from svdbench.settings.config import OptConfig

STEPS = 3


def fresh_pipeline():
    """Its own pipeline: the hooks stay on it (the session's shared tiny pipeline must stay plain)."""
    return build_random_pipeline("tiny", torch.float32, "cpu", seed=0)


def unet_batches(pipe) -> list[int]:
    """The batch size of every UNet call, as the UNet's forward receives it (hooks run in order: this one last)."""
    seen: list[int] = []

    def count(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        seen.append(int(sample.shape[0]))

    pipe.unet.register_forward_pre_hook(count, with_kwargs=True)
    return seen


def generate(pipe) -> np.ndarray:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return pipe(
        image,
        height=64,
        width=64,
        num_frames=4,
        num_inference_steps=STEPS,
        decode_chunk_size=4,
        generator=torch.Generator("cpu").manual_seed(1),
        output_type="np",
    ).frames[0]


@pytest.fixture(scope="module")
def plain():
    pipe = fresh_pipeline()
    batches = unet_batches(pipe)
    return generate(pipe), batches


def test_guidance_for_every_step_is_the_normal_call(plain):
    frames, batches = plain
    pipe = fresh_pipeline()
    limit_guidance(pipe, STEPS)  # k >= steps: guidance throughout
    seen = unet_batches(pipe)
    assert np.array_equal(generate(pipe), frames)
    assert seen == batches == [2] * STEPS


def test_half_batch_after_k_steps(plain):
    frames, _ = plain
    pipe = fresh_pipeline()
    limit_guidance(pipe, 1)
    seen = unet_batches(pipe)
    limited = generate(pipe)
    assert seen == [2, 1, 1]
    assert limited.shape == frames.shape and not np.array_equal(limited, frames)  # lossy: the later steps change
    seen.clear()
    generate(pipe)  # a second call starts with guidance again (the scheduler's step index is reset per call)
    assert seen == [2, 1, 1]


def test_no_guidance_at_all_from_step_zero():
    pipe = fresh_pipeline()
    limit_guidance(pipe, 0)
    seen = unet_batches(pipe)
    generate(pipe)
    assert seen == [1] * STEPS


def test_the_gate_expects_it_lossy():
    verdict, reasons = gate.expectation(OptConfig(guidance_until_step=5))
    assert verdict == gate.LOSSY and any("guidance" in r for r in reasons)
