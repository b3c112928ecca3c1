"""Random weights built in the target dtype on the target device, each tensor filled once, and seeded:
the same weights_seed gives the same weights, whatever the thread count."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from svdbench.pipeline.models import build_random_pipeline


def weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value
        for name in ("unet", "vae", "image_encoder")
        for key, value in getattr(pipe, name).state_dict().items()
    }


def test_the_same_seed_gives_the_same_weights_and_another_seed_others():
    first, again = (weights(build_random_pipeline("tiny", torch.float32, "cpu", 7)) for _ in range(2))
    other = weights(build_random_pipeline("tiny", torch.float32, "cpu", 8))
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    drawn = [key for key, value in first.items() if value.is_floating_point() and value.numel() > 1 and value.std() > 0]
    assert drawn and all(not torch.equal(first[key], other[key]) for key in drawn)


def test_the_thread_count_does_not_change_the_weights():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = weights(build_random_pipeline("tiny", torch.float32, "cpu", 3))
        torch.set_num_threads(max(2, threads))
        many = weights(build_random_pipeline("tiny", torch.float32, "cpu", 3))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one[key], many[key]) for key in one)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weights_are_in_the_target_dtype_at_the_default_inits_scale(dtype):
    pipe = build_random_pipeline("tiny", dtype, "cpu", 0)
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        assert {p.dtype for p in module.parameters()} == {dtype}
        assert not any(p.requires_grad for p in module.parameters())
        for sub in module.modules():
            if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)):
                w = sub.weight.float()
                bound = 1 / math.sqrt(w.shape[1] * math.prod(w.shape[2:]))
                assert w.abs().max() <= bound * 1.01  # fp16's rounding
                if w.numel() > 1000:  # a uniform draw: its spread is that of U(-bound, bound)
                    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
            elif isinstance(sub, (nn.LayerNorm, nn.GroupNorm)) and sub.weight is not None:
                assert torch.all(sub.weight == 1) and torch.all(sub.bias == 0)
