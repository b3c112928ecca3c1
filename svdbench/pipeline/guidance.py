"""opt.guidance_until_step=k: classifier-free guidance for the first k denoising steps only, then the UNet runs at
half batch (T-GATE's observation, that guidance matters early, applied to SVD's per-frame guidance).

diffusers' StableVideoDiffusionPipeline decides guidance once per call: when max_guidance_scale > 1 it doubles
the image embeddings, image latents and time ids (unconditional half first) before the denoising loop, and
every step feeds the UNet the doubled batch, then mixes uncond + scale * (cond - uncond). Those doubled tensors
are locals of the call, out of reach of its step callback (which may return only `latents`). So the UNet
itself is hooked: from step k on (the scheduler's step_index), a forward pre-hook passes it the conditional
half of every batched input, and a forward hook returns that half's prediction twice. The pipeline's mix then
gives exactly the conditional prediction, uncond + scale * (cond - uncond) with uncond = cond, which is what
a step without guidance computes. Lossy by design: judge it with svdbench.compare.
"""

from __future__ import annotations

from typing import Any

import torch

# The UNet's batched inputs besides `sample`: halved with it.
BATCHED = ("encoder_hidden_states", "added_time_ids")
ATTR = "_svdbench_guidance_until_step"


def limit_guidance(pipe: Any, until_step: int) -> None:
    """Hook pipe.unet so that guidance stops after `until_step` steps of every call (see the module docstring)."""
    unet = pipe.unet
    halved = {"now": False}

    def before(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        step = pipe.scheduler.step_index  # set by scale_model_input just before the UNet's call
        halved["now"] = bool(pipe.do_classifier_free_guidance) and step is not None and step >= until_step
        if not halved["now"]:
            return None
        sample = args[0] if args else kwargs["sample"]
        half = sample.shape[0] // 2
        if args:
            args = (sample[half:], *args[1:])
        else:
            kwargs = {**kwargs, "sample": sample[half:]}
        kwargs = {k: (v[half:] if k in BATCHED and isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        return args, kwargs

    def after(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if not halved["now"]:
            return None
        halved["now"] = False
        if isinstance(output, tuple):
            return (torch.cat([output[0], output[0]]), *output[1:])
        output.sample = torch.cat([output.sample, output.sample])
        return output

    unet.register_forward_pre_hook(before, with_kwargs=True)
    unet.register_forward_hook(after, with_kwargs=True)
    setattr(pipe, ATTR, until_step)


def guidance_until(pipe: Any) -> int | None:
    """The k of limit_guidance on this pipeline (None: guidance at every step), for inspect_pipeline."""
    return getattr(pipe, ATTR, None)
