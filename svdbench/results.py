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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write through a temporary file in the same directory and rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
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


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text())
