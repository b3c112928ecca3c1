"""A run's identity: which configuration produced it and what it produced (hashes), on which machine and
software (environment), from which code and command (provenance). The values go into results.json.

The collectors never raise: a record with a field set to None is worth more than no record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import numpy as np
import psutil
import torch

import svdbench
from svdbench.measure.machine import MachineState, cpu_model
from svdbench.measure.memory import GIB
from svdbench.measure.nvml import cuda_uuid
from svdbench.settings.config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class Gpu:
    name: str
    memory_gib: float
    capability: str  # CUDA compute capability, e.g. "9.0"
    uuid: str | None = None  # "GPU-...", as nvidia-smi -L shows it: which physical GPU, whatever the CUDA index


@dataclass
class Environment:
    """The machine and software a run measured; None where this machine cannot say (no GPU, no /proc)."""

    python: str
    platform: str
    packages: dict[str, str | None]  # installed versions; None = not installed
    torch_threads: int  # intra-op threads: CPU timings depend on it
    cpu_model: str | None
    cpu_cores_logical: int | None
    cpu_cores_physical: int | None
    ram_gib: float | None
    cuda: str | None  # the CUDA version torch was built with
    cudnn: str | None
    gpu_driver: str | None
    gpus: list[Gpu] = field(default_factory=list)
    # CUDA_VISIBLE_DEVICES as the run's process saw it (Ray, SLURM or the user set it; None when unset): which
    # of the machine's GPUs the run could use.
    cuda_visible_devices: str | None = None
    # The machine's state during the run (clocks, temperatures, throttling, other processes, load): filled by
    # the run (svdbench.measure.machine), None where no run measured it. `state.warnings` flag a noisy or shared
    # machine.
    state: MachineState | None = None


@dataclass
class Provenance:
    """What code ran and how it was started, so the run can be repeated (`python -m svdbench.replay`)."""

    svdbench_version: str
    git_commit: str | None  # None when svdbench does not run from a git checkout or git is absent
    git_dirty: bool | None  # uncommitted changes in that checkout: the commit alone does not describe the code
    argv: list[str]
    executable: str
    cwd: str  # relative paths in the overrides (input.path=...) are relative to this directory
    overrides: list[str]  # the Hydra overrides of this run, as in .hydra/overrides.yaml


T = TypeVar("T")
PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "hydra-core", "wandb", "numpy")

# Settings (and groups of settings) that change how a run is shown or scheduled, not what it measures or
# generates: left out of the config hash, of comparisons between jobs and of run names.
PRESENTATION_KEYS = ("bench.progress", "gate", "logger", "save_frames", "sweep")


def is_presentation(key: str) -> bool:
    """Whether a dotted setting (`logger.mode`) or group (`logger`) is presentation only."""
    return any(key == p or key.startswith(p + ".") for p in PRESENTATION_KEYS)


def config_hash(cfg: RunConfig) -> str:
    """Stable hash of every setting that determines the run's output and measurements."""
    data = dataclasses.asdict(cfg)
    for key in PRESENTATION_KEYS:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def frames_hash(frames: np.ndarray) -> str:
    """Hash of uint8 frames and their shape: equal hashes mean bit-identical videos."""
    frames = np.ascontiguousarray(frames)
    digest = hashlib.sha256(str((frames.shape, str(frames.dtype))).encode())
    digest.update(frames.tobytes())
    return digest.hexdigest()[:16]


def environment() -> Environment:
    """The machine and the versions that matter for a measurement, read without touching the GPU's state."""
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    cuda = torch.cuda.is_available()
    gpus = []
    if cuda:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            memory = round(props.total_memory / GIB, 2)
            uuid = cuda_uuid(torch.device("cuda", index))
            gpus.append(Gpu(props.name, memory, f"{props.major}.{props.minor}", uuid))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    ram = _try(lambda: psutil.virtual_memory().total / GIB)
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        packages=packages,
        torch_threads=torch.get_num_threads(),
        cpu_model=cpu_model(),
        cpu_cores_logical=os.cpu_count(),
        cpu_cores_physical=_try(lambda: psutil.cpu_count(logical=False)),
        ram_gib=round(ram, 2) if ram else None,
        cuda=torch.version.cuda,
        cudnn=str(cudnn) if cudnn else None,
        gpu_driver=_gpu_driver() if cuda else None,
        gpus=gpus,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def provenance(overrides: list[str]) -> Provenance:
    commit, dirty = _git_state(Path(svdbench.__file__).resolve().parent.parent)
    return Provenance(
        svdbench_version=svdbench.__version__,
        git_commit=commit,
        git_dirty=dirty,
        argv=list(sys.argv),
        executable=sys.executable,
        cwd=os.getcwd(),
        overrides=list(overrides),
    )


def _try(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except Exception as exc:  # a missing /proc entry or sensor is a None in the record, not a lost run
        log.debug("Could not read an environment value: %s", exc)
        return None


def _gpu_driver() -> str | None:
    """The NVIDIA driver version: NVML when pynvml is installed, else the kernel module's version file."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # pynvml absent or NVML unusable: try the file the driver itself writes
        pass

    def from_proc() -> str | None:
        text = Path("/proc/driver/nvidia/version").read_text()
        words = text.split("Kernel Module", 1)[1].split() if "Kernel Module" in text else []
        return words[0] if words else None

    return _try(from_proc)


def _git_state(root: Path) -> tuple[str | None, bool | None]:
    """Commit and dirty flag of the checkout svdbench runs from; (None, None) if it is not one or git is absent."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        # An installed svdbench can sit inside some other repository (a venv in a project): not our commit.
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None, None
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None, None
