"""DeepCache on the SVD pipeline, through the `deepcache` package's plug-in helper.

DeepCache (Ma et al. 2023) reuses the output of the UNet's deeper blocks between denoising steps: every
`cache_interval` steps the whole UNet runs and its deep features are cached; on the steps in between only
the shallow branch `cache_branch_id` runs and the cached features stand in for the rest. It is lossy by
design. The package's `DeepCacheSDHelper` replaces the `forward` of the UNet and of its blocks with
wrappers; it works with the SVD UNet of diffusers 0.42 (its wrappers only need `down_blocks`, `mid_block`,
`up_blocks` and the scheduler's timesteps). We count the wrapped blocks' calls and skips, so the report
shows that caching really happened rather than assuming it from the config.
"""

from __future__ import annotations

from svdbench.pipeline.models import unwrap
from svdbench.settings.config import DeepCacheConfig

ATTRIBUTE = "_svdbench_deepcache"  # where the helper lives on the pipeline
INSTALL = 'pip install "deepcache>=0.1.1"'


class DeepCacheUnavailable(RuntimeError):
    """DeepCache cannot be applied: the package is missing or the branch does not exist in this UNet."""


def import_helper():
    try:
        from DeepCache import DeepCacheSDHelper
    except ImportError as exc:
        raise DeepCacheUnavailable(
            f"opt.deepcache.enabled=true needs the `deepcache` package, which is not installed ({exc}). "
            f"Install it with `{INSTALL}` (it is pure Python), or pick another mode."
        ) from exc
    return DeepCacheSDHelper


def check_branch(unet, cfg: DeepCacheConfig) -> None:
    """The helper maps branch id b to down block b // 3 (layer b % 3); a block past the end would never cache."""
    blocks = len(unet.down_blocks)
    if cfg.cache_branch_id // 3 >= blocks:
        raise DeepCacheUnavailable(
            f"opt.deepcache.cache_branch_id={cfg.cache_branch_id} names down block {cfg.cache_branch_id // 3}, but "
            f"this UNet has {blocks} down blocks: use a branch id below {3 * blocks} (0, the shallowest, is the "
            "usual choice and always exists)."
        )


def enable_deepcache(pipe, cfg: DeepCacheConfig) -> None:
    helper_class = import_helper()
    check_branch(pipe.unet, cfg)
    helper = helper_class(pipe=pipe)
    helper.set_params(cache_interval=cfg.cache_interval, cache_branch_id=cfg.cache_branch_id)
    helper.enable()
    counts = {"block_calls": 0, "skipped_block_calls": 0}
    decide = helper.is_skip_step

    def counting_is_skip_step(block_i, layer_i, blocktype="down"):
        skip = decide(block_i, layer_i, blocktype)
        counts["block_calls"] += 1
        counts["skipped_block_calls"] += int(skip)
        return skip

    helper.is_skip_step = counting_is_skip_step  # the wrappers look it up on the helper at every call
    helper.svdbench_counts = counts
    setattr(pipe, ATTRIBUTE, helper)


def inspect_deepcache(pipe) -> dict | None:
    """Read back from the modules whether DeepCache's wrappers are installed, and what they did so far."""
    helper = getattr(pipe, ATTRIBUTE, None)
    unet = unwrap(pipe.unet)
    wrapped = [
        name
        for name, module in unet.named_modules()
        if "DeepCacheSDHelper" in getattr(module.__dict__.get("forward"), "__qualname__", "")
    ]
    if helper is None and not wrapped:
        return None
    return {
        "unet_forward_wrapped": "" in wrapped,
        "wrapped_blocks": len([name for name in wrapped if name]),
        "cache_interval": helper.params["cache_interval"] if helper else None,
        "cache_branch_id": (helper.params["cache_block_id"] * 3 + helper.params["cache_layer_id"] if helper else None),
        **(helper.svdbench_counts if helper else {}),
    }
