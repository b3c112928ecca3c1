"""Shared test helpers: real Hydra composition, real tiny pipelines, real subprocess runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from svdbench.record.results import RunResult
from svdbench.record.rundir import write_record
from svdbench.runner import run
from svdbench.settings.config import RunConfig, register_configs, to_run_config
from svdbench.settings.hydra_api import VERSION_BASE

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
# A run small enough for a unit test: two denoising steps, one measured call, no warm-up.
FAST = ["num_inference_steps=2", "bench.warmup=0", "bench.repeats=1", "bench.progress=false"]

register_configs()

# Under xdist (addopts: -n 2, one worker per core of the 2-core machine) each worker and the runs it starts use one
# torch thread: two workers of two threads each, plus their subprocesses, would fight over two cores. `-m benchmark`
# runs in one process and keeps torch's default.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`-m benchmark` runs in one process: pytest-benchmark measures nothing under xdist (addopts has -n 2)."""
    import re

    if re.search(r"(?<!not )\bbenchmark\b", config.option.markexpr or "") and hasattr(config.option, "numprocesses"):
        config.option.numprocesses = 0
        config.option.dist = "no"


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
        return compose(config_name="config", overrides=list(overrides))


def typed_config(*overrides: str) -> RunConfig:
    return to_run_config(compose_config(*overrides))


def run_tiny(run_dir: Path, *overrides: str) -> RunResult:
    """One real measurement of the tiny model in this process, its record written to `run_dir` (no W&B)."""
    overrides = (*FAST, *overrides, "logger=none")
    return write_record(typed_config(*overrides), run_dir, run(typed_config(*overrides)), list(overrides))


def offline_env(tmp_path: Path | None = None) -> dict[str, str]:
    """The environment of a machine without network: no Hub, W&B offline."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    # The svdbench of this checkout, whatever an editable install elsewhere points to.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if tmp_path is not None:
        env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: nothing was ever downloaded
    return env


def run_cli(
    tmp_path: Path, *args: str, timeout: float = 300, module: str = "svdbench", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m svdbench ARGS` (or another module) in a subprocess, run from `tmp_path` like a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tmp_path,
        env=offline_env(tmp_path) if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(cwd: Path, *args: str) -> subprocess.Popen:
    """`python -m svdbench ARGS` started in the background in its own process group (so that a signal can reach
    all of it, like Ctrl-C in a terminal); stdout and stderr are captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "svdbench", *args],
        cwd=cwd,
        env=offline_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def returns_quickly(call, fifo, seconds: float = 10.0):
    """`call()` in a thread, its value returned; if it is still blocked after `seconds` (opening the FIFO waits
    for a writer), open the FIFO for writing to release it, then fail."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", call()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
        pytest.fail(f"blocked on the named pipe {fifo} for {seconds} s")
    return result["value"]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def tiny_pipeline():
    """A tiny random pipeline on the CPU, built once per session (read-only use)."""
    import torch

    from svdbench.pipeline.models import build_random_pipeline

    return build_random_pipeline("tiny", torch.float32, "cpu", seed=0)


# One experiment recorded once per session and read by the W&B and record tests: two measured calls of two
# steps, non-default values that must arrive in W&B and in the record.
EXPERIMENT = [*FAST, "bench.repeats=2", "opt=chunking", "cond.motion_bucket_id=100"]


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A real CLI run with W&B offline (the default logger): (run directory, finished process). Read only. Run
    once for the whole session: under xdist the first worker to need it runs it while the other waits on a lock,
    and the process's output is kept beside the run for the other."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is popen-gwN inside the session's own directory, shared by the workers.
    cwd = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "recorded"
    cwd.mkdir(exist_ok=True)
    with FileLock(str(cwd / "lock")):
        kept = cwd / "process.json"
        if not kept.exists():
            args = ("hydra.run.dir=run", *EXPERIMENT, "logger.tags=[test,tiny]", "logger.notes='from the tests'")
            proc = run_cli(cwd, *args)
            assert proc.returncode == 0, proc.stderr[-3000:]
            kept.write_text(json.dumps([proc.args, proc.returncode, proc.stdout, proc.stderr]))
    return cwd / "run", subprocess.CompletedProcess(*json.loads(kept.read_text()))
