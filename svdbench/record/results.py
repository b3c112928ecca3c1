"""The results schema: what a run produced, as typed records separate from the config.

`results.json` is written from `RunResult.to_dict()` and read back only through `RunResult.load`, which
returns the same typed objects (older files included) or raises `ResultsError` naming the file and what is
wrong with it. Readers use the derived properties (`median_s`, `peak_memory_gib`, `peak_memory_kind`) rather
than dotted paths into the JSON, so that every reader means the same thing by "latency" and "peak memory".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from svdbench.files.atomic import write_json_atomic
from svdbench.files.plain import plain_json
from svdbench.measure.energy import Cost, Energy
from svdbench.measure.flops import RunFlops, from_schema_3
from svdbench.measure.memory import MemoryPeak
from svdbench.measure.profile import Profile
from svdbench.measure.timing import Latency, Phases, Startup, Steps, Throughput
from svdbench.pipeline.call import video_seeds
from svdbench.pipeline.parallel import RankShare
from svdbench.quality.records import QualitySamples
from svdbench.record.identity import Environment, Provenance, config_hash
from svdbench.settings.config import RunConfig

# skipped: a sweep job not started because its estimated time exceeded what was left of sweep.budget_s.
STATUSES = ("ok", "unsupported", "oom", "nan", "error", "interrupted", "skipped")
RESULTS_FILE = "results.json"
# Version of the results.json layout. 1: files written before the field existed (read the same way).
# 4: `flops` is a typed record (measure.flops.RunFlops: the counts of a whole call, all of its videos, and the
# utilization); before, a flat object whose counts were one video's whatever the batch (`_upgrade` reads it).
SCHEMA_VERSION = 4


class ResultsError(ValueError):
    """A results.json that cannot be read as a run's results; the message names the file and the problem."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class ExtraCall:
    """A call after the measured ones with an input the compiled model has not seen (bench.second_input)."""

    kind: str  # "another image" or "another seed"
    status: str  # "ok" or "error"
    latency_s: float | None = None
    recompilations: int | None = None  # dynamo's frames compiled during the call
    device_memory_growth_gib: float | None = None  # max allocated after it minus before it (None off a GPU)
    reason: str | None = None  # the error, when status is "error"


@dataclass
class CompileCheck:
    """Whether a compiled mode survives real use: calls with another image and another seed after the measured
    calls. A failure is recorded here, not raised: the measured figures stand."""

    calls: list[ExtraCall] = field(default_factory=list)
    method: str = ""


@dataclass
class RunResult:
    schema_version: int = SCHEMA_VERSION
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
    batch_size: int = 1
    seeds: list[int] = field(default_factory=list)  # every video's seed: video k of a batch uses seed + k
    latency: Latency = field(default_factory=Latency)
    startup: Startup = field(default_factory=Startup)
    phases: Phases | None = None
    steps: Steps | None = None
    throughput: Throughput | None = None
    memory: MemoryPeak | None = None
    flops: RunFlops | None = None  # of one call, all of its videos (svdbench.measure.flops)
    applied: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    profile: Profile | None = None
    compile_check: CompileCheck | None = None
    quality: QualitySamples | None = None  # quality.images x quality.seeds samples (svdbench.quality)
    energy: Energy | None = None  # per video (svdbench.measure.energy, docs/energy.md)
    cost: Cost | None = None  # per video at cost.usd_per_hour / cost.usd_per_kwh; None without prices
    files: dict[str, str] = field(default_factory=dict)
    # Files of the run that could not be written (name -> why); the measurement above is complete without them.
    file_errors: dict[str, str] = field(default_factory=dict)
    timing_method: str = ""
    notes: list[str] = field(default_factory=list)
    # A run over torchrun's ranks (parallel=cfg|data): every rank's part (svdbench.record.ranks); empty otherwise.
    ranks: list[RankShare] = field(default_factory=list)
    environment: Environment | None = None
    provenance: Provenance | None = None
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None

    @classmethod
    def of(cls, cfg: RunConfig, **fields: Any) -> RunResult:
        """The result of a run of `cfg` before anything is measured: what it is (config hash, model, mode,
        shape, seeds), the rest as `fields` give it."""
        return cls(
            config_hash=config_hash(cfg),
            model=cfg.model.name,
            weights=cfg.model.weights,
            opt=cfg.opt.name,
            cond=cfg.cond.name,
            num_frames=cfg.num_frames,
            height=cfg.height,
            width=cfg.width,
            num_inference_steps=cfg.num_inference_steps,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            seeds=video_seeds(cfg),
            **fields,
        )

    def fail(self, status: str, reason: str) -> None:
        assert status in STATUSES, status
        self.status, self.reason = status, reason

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def median_s(self) -> float | None:
        """Seconds per call: the median of the measured calls (None when none were measured)."""
        return self.latency.stats.median if self.latency.stats is not None else None

    @property
    def peak_memory_gib(self) -> float | None:
        """The peak that limits the run: device max allocated where there is a device, else host resident."""
        return self.memory.limiting_gib if self.memory is not None else None

    @property
    def peak_memory_kind(self) -> str | None:
        """What `peak_memory_gib` is: "device allocated" or "host resident" (None without memory figures)."""
        if self.memory is None:
            return None
        return "device allocated" if self.memory.device_max_allocated_gib is not None else "host resident"

    def to_dict(self) -> dict[str, Any]:
        return plain_json(dataclasses.asdict(self))

    def save(self, run_dir: Path) -> Path:
        """Write results.json atomically: a reader sees the previous complete file or this one."""
        path = Path(run_dir) / RESULTS_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = RESULTS_FILE) -> RunResult:
        """Typed results from a parsed results.json; ResultsError when it is not a run's results."""
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            found = f"a JSON {type(data).__name__}" if not isinstance(data, dict) else f"status {data.get('status')!r}"
            raise ResultsError(
                f"{source} is not an svdbench results file: it needs an object with a status (one of "
                f"{', '.join(STATUSES)}), and has {found}. It may come from another tool, or have been edited; "
                "move it out of the way or re-run that job."
            )
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ResultsError(
                f"{source} has results schema version {version!r}; this svdbench reads versions 1 to "
                f"{SCHEMA_VERSION}. Read it with the svdbench that wrote it (provenance.svdbench_version), or "
                "upgrade svdbench."
            )
        return _typed(cls, _upgrade({**data, "schema_version": version}), source)

    @classmethod
    def load(cls, path: Path) -> RunResult:
        """results.json of a run directory (or the file itself), typed; ResultsError if unreadable."""
        from svdbench.files.read import RESULTS_MAX_BYTES, UnreadableFile, read_text

        path = Path(path)
        if path.name != RESULTS_FILE and path.is_dir():
            path = path / RESULTS_FILE
        if not os.path.lexists(path):
            raise ResultsError(f"{path} does not exist: the directory holds no run's results.")
        try:  # only a regular file, at most RESULTS_MAX_BYTES: a FIFO or a link to /dev/zero is a reason, not a hang
            data = json.loads(read_text(path, RESULTS_MAX_BYTES))
        except UnreadableFile as exc:
            raise ResultsError(f"{exc}.") from None
        except json.JSONDecodeError as exc:
            raise ResultsError(
                f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); it is probably "
                "truncated or was edited by hand. svdbench writes results atomically, so it was not left like "
                "this by a run; restore it or re-run that job."
            ) from None
        return cls.from_dict(data, str(path))


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A results.json of an older schema in today's layout (the version it says stays as it was)."""
    flops = data.get("flops")
    if data["schema_version"] < 4 and isinstance(flops, dict) and "call" not in flops:
        batch = data.get("batch_size", 1)
        data["flops"] = from_schema_3(flops, batch if isinstance(batch, int) and batch >= 1 else 1)
    return data


def _typed(kind: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as an instance of the annotation `kind`: dataclasses field by field (unknown keys
    are ignored, so newer files load; missing ones take their defaults, so older files load), Optional,
    lists and dicts element-wise. A value of the wrong type raises ResultsError naming its path."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _typed(options[0], value, where)
        for option in options:
            try:
                return _typed(option, value, where)
            except ResultsError:
                continue
        raise ResultsError(f"{where}: {value!r} is none of {kind}.")
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ResultsError(f"{where}: expected an object, found {type(value).__name__}.")
        hints = typing.get_type_hints(kind)
        values = {}
        for f in dataclasses.fields(kind):
            if f.name in value:
                values[f.name] = _typed(hints[f.name], value[f.name], f"{where}: {f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if value.get(f.name) is None and type(None) in typing.get_args(hints[f.name]):
                    values[f.name] = None
                else:
                    raise ResultsError(f"{where}: the required field {f.name!r} is missing.")
        return kind(**values)  # type: ignore[operator]  # a dataclass type; is_dataclass narrows to "or instance"
    if origin is list:
        if not isinstance(value, list):
            raise ResultsError(f"{where}: expected a list, found {type(value).__name__}.")
        return [_typed(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ResultsError(f"{where}: expected an object, found {type(value).__name__}.")
        return {k: _typed(args[1] if args else Any, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        if value is None:  # written for NaN or Infinity
            return math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind in (int, str, bool) and type(value) is kind:
        return value
    raise ResultsError(f"{where}: expected {getattr(kind, '__name__', kind)}, found {value!r}.")
