"""torch.compile's caches kept under svdbench's cache directory, and what the cold call got from them.

Inductor's FX graph cache, its autotuning cache and the AOT autograd cache live in TORCHINDUCTOR_CACHE_DIR
(Triton's kernels in TRITON_CACHE_DIR): by default a directory under /tmp, which a reboot or a fresh container
empties. A run that compiles points both at `<SVDBENCH_CACHE_DIR>/torch-compile/` (default
~/.cache/svdbench/torch-compile) unless the user set them, and turns the three caches on, before its first call
compiles anything: a second run of the same compiled configuration, or a resumed sweep, loads the compiled
graphs instead of compiling them again. Results record whether the cold call's graphs came from the caches
(`startup.compile_cache`: hit, miss, off) and the share of the cold call that compiling took
(`startup.compile_share`, from dynamo's own compile-time metrics).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from svdbench.files.cache import cache_dir

SUBDIR = "torch-compile"
# dynamo's metric of the time spent compiling a frame (tracing, AOT autograd, Inductor, cache loads included).
COMPILE_METRIC = "_compile.compile_inner"
HIT_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("aot_autograd", "autograd_cache_hit"))
MISS_COUNTERS = (
    ("inductor", "fxgraph_cache_miss"),
    ("inductor", "fxgraph_cache_bypass"),
    ("aot_autograd", "autograd_cache_miss"),
    ("aot_autograd", "autograd_cache_bypass"),
)


def persist(root: Path | None = None) -> Path:
    """Point torch.compile's caches at `root` (default: svdbench's cache directory) unless the environment
    already does, and turn them on. Call before anything compiles; returns Inductor's cache directory."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    from torch._inductor.utils import clear_caches

    root = (root or cache_dir()) / SUBDIR
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # Inductor writes its /tmp default into the variable the first time anything asks for its directory (an
    # import can): that is not the user's choice.
    if given is None or os.path.abspath(given) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
        clear_caches()  # paths Inductor may have memoized under the old directory
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    functorch_config.enable_autograd_cache = True
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def _snapshot() -> tuple[int, int, float]:
    from torch._dynamo.utils import compilation_time_metrics, counters

    hits = sum(counters[group][name] for group, name in HIT_COUNTERS)
    misses = sum(counters[group][name] for group, name in MISS_COUNTERS)
    return hits, misses, sum(compilation_time_metrics.get(COMPILE_METRIC, []))


def verdict(hits: int, misses: int) -> str:
    """hit: every graph compiled during the call came from the caches; miss: at least one was compiled."""
    return "hit" if hits > 0 and misses == 0 else "miss"


@contextmanager
def watch(opt: Any, startup: Any) -> Iterator[None]:
    """Around the cold call: persistent caches on, then `startup.compile_cache` and `startup.compile_share`
    (compile seconds during the call over the call's seconds); "off" and no share when nothing is compiled."""
    if not (opt.compile.unet or opt.compile.vae):
        startup.compile_cache = "off"
        yield
        return
    persist()
    hits, misses, compiled = _snapshot()
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        hits_after, misses_after, compiled_after = _snapshot()
        startup.compile_cache = verdict(hits_after - hits, misses_after - misses)
        startup.compile_share = min(1.0, (compiled_after - compiled) / elapsed) if elapsed > 0 else None
