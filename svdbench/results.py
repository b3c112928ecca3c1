"""What a run produced, as typed records separate from the config, serialized to results.json."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from svdbench.memory import MemoryPeak
from svdbench.timing import Stats

STATUSES = ("ok", "unsupported", "oom", "nan", "error", "interrupted")
RESULTS_FILE = "results.json"
STEPS_FILE = "steps.csv"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Latency:
    """Whole-call seconds. `cold_s` is the first call (compilation, lazy init); `stats` the measured calls."""

    cold_s: float | None = None
    warmup_s: list[float] = field(default_factory=list)
    calls_s: list[float] = field(default_factory=list)
    stats: Stats | None = None
    compile_overhead_s: float | None = None  # cold minus the median measured call, when compiling


@dataclass
class Phases:
    """Median seconds per phase over the measured calls; `coverage` = phases' sum / total."""

    conditioning_s: float
    denoising_s: float
    decode_s: float
    other_s: float
    coverage: float


@dataclass
class Steps:
    """Denoising steps of every measured call (all N, the first included)."""

    per_call_s: list[list[float]]
    s_per_step: float  # median over all steps of all measured calls
    it_per_s: float
    stats: Stats


@dataclass
class Throughput:
    frames_per_s: float
    s_per_video: float


@dataclass
class Gpu:
    name: str
    memory_gib: float
    capability: str  # CUDA compute capability, e.g. "9.0"


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


@dataclass
class RunResult:
    status: str = "ok"
    reason: str | None = None
    config_hash: str | None = None
    frames_hash: str | None = None
    model: str = ""
    weights: str = ""
    opt: str = ""
    cond: str = ""
    device: str = ""
    dtype: str = ""
    num_frames: int = 0
    height: int = 0
    width: int = 0
    num_inference_steps: int = 0
    seed: int = 0
    latency: Latency = field(default_factory=Latency)
    phases: Phases | None = None
    steps: Steps | None = None
    throughput: Throughput | None = None
    memory: MemoryPeak | None = None
    flops: dict[str, Any] | None = None
    applied: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    timing_method: str = ""
    notes: list[str] = field(default_factory=list)
    environment: Environment | None = None
    provenance: Provenance | None = None
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None

    def fail(self, status: str, reason: str) -> None:
        assert status in STATUSES, status
        self.status, self.reason = status, reason

    def to_dict(self) -> dict[str, Any]:
        return _finite(dataclasses.asdict(self))


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity; such numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def flatten(data: dict[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level: {"opt": {"name": "none"}} -> {"opt.name": "none"} with sep=".". Lists stay."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, sep, name))
        else:
            flat[name] = value
    return flat


def lookup(record: dict[str, Any], dotted: str) -> Any:
    """A nested value by its dotted path ("latency.stats.median"); None where the path does not exist."""
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory and rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a record is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(run_dir: Path, result: RunResult) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    write_json_atomic(path, result.to_dict())
    return path


def write_steps_csv(run_dir: Path, result: RunResult) -> Path | None:
    """Every denoising step of every measured call, one row each, for plotting outside svdbench."""
    if result.steps is None:
        return None
    lines = ["call,step,seconds"]
    for call, steps in enumerate(result.steps.per_call_s):
        lines += [f"{call},{step},{seconds!r}" for step, seconds in enumerate(steps)]
    path = Path(run_dir) / STEPS_FILE
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text())
