"""torch.compile's caches under svdbench's cache directory, and startup.compile_cache / compile_share."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from svdbench.measure import compile_cache
from svdbench.record.results import RunResult
from tests.conftest import FAST, offline_env, run_cli

TINY = ["model=tiny", "device=cpu", "num_frames=2", "height=64", "width=64", *FAST, "metrics.enabled=false"]


def test_the_caches_go_under_svdbenchs_cache_directory(tmp_path, monkeypatch):
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setattr(functorch_config, "enable_autograd_cache", False)
    where = compile_cache.persist(tmp_path)
    assert where == tmp_path / "torch-compile" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(where)
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "torch-compile" / "triton")
    assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache


def test_inductors_own_default_is_not_taken_for_the_users_choice(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    cache_dir()  # what an import of torch._inductor can do: it writes its /tmp default into the variable
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == os.path.abspath(default_cache_dir())
    assert compile_cache.persist(tmp_path) == tmp_path / "torch-compile" / "inductor"


def test_a_directory_the_user_set_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine-triton"))
    assert compile_cache.persist(tmp_path / "svdbench") == tmp_path / "mine"


def test_the_verdict_and_a_run_that_compiles_nothing():
    assert compile_cache.verdict(3, 0) == "hit"
    assert compile_cache.verdict(3, 1) == compile_cache.verdict(0, 0) == "miss"
    startup = SimpleNamespace(compile_cache=None, compile_share=None)
    off = SimpleNamespace(compile=SimpleNamespace(unet=False, vae=False))
    with compile_cache.watch(off, startup):
        pass
    assert startup.compile_cache == "off" and startup.compile_share is None


def cold_runs(tmp_path) -> tuple[RunResult, RunResult]:
    """Two runs of opt=compile_vae in fresh processes, sharing one empty svdbench cache directory."""
    env = dict(offline_env(tmp_path), SVDBENCH_CACHE_DIR=str(tmp_path / "cache"))
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(name, None)
    results = []
    for n in (1, 2):
        proc = run_cli(
            tmp_path, *TINY, "opt=compile_vae", "logger=none", f"hydra.run.dir=run{n}", env=env, timeout=1800
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(RunResult.load(tmp_path / f"run{n}"))
    return results[0], results[1]


@pytest.mark.slow  # two compiled runs: minutes on the 2-core VM
def test_a_second_run_of_a_compiled_mode_hits_the_cache(tmp_path):
    first, second = cold_runs(tmp_path)
    assert first.startup.compile_cache == "miss" and second.startup.compile_cache == "hit"
    assert 0 < second.startup.compile_share < first.startup.compile_share <= 1
    assert (tmp_path / "cache" / "torch-compile" / "inductor").is_dir()
