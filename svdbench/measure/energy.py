"""Energy of the measured pipeline calls: GPU (NVML's total-energy counter), CPU package and DRAM (RAPL),
per video and per phase, and what a video costs at given prices. Only counters are read: nothing is
estimated from a TDP or a power reading, and a source that cannot be read is null with the reason.

    meter = EnergyMeter(device, source="auto")       # one of ENERGY_SOURCES
    with meter.call():                                # around each measured call, outside its timed region
        out, timing = probe.measure(...)
    meter.energy_between(t0, t1)                      # GPU joules between two time.perf_counter() times
    energy = meter.summary(CallShape(videos_per_call, frames_per_video), phases={"denoising": [(t0, t1), ...]})
    cost(seconds_per_video, energy.total_j, usd_per_hour, usd_per_kwh) -> Cost

Sources: "nvml" reads nvmlDeviceGetTotalEnergyConsumption (Volta and newer) for the GPU and
/sys/class/powercap/intel-rapl:*/energy_uj for the CPU package and its DRAM zone; "zeus" takes the call's
totals from Zeus's ZeusMonitor (the same counters; Zeus is optional, not a dependency: docs/energy.md says
why); "auto" is Zeus where it imports and starts, else "nvml"; "none" measures nothing.

`call()` synchronizes CUDA and reads every counter before and after the block, and while it runs a thread
samples the counters every SAMPLE_INTERVAL_S (RAPL_INTERVAL_S without a GPU counter): the GPU samples give
the energy of any interval of a call
(`energy_between`, linear between samples), which is how phases are measured without reading anything
inside the timed region; the RAPL samples catch the counter wrapping around.
"""

from __future__ import annotations

import bisect
import importlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from svdbench.measure.nvml import GpuUnavailable, nvml_device
from svdbench.pipeline.call import CallShape
from svdbench.settings.config import ENERGY_SOURCES  # the setting energy.source is validated against the same tuple

KINDS = ("gpu", "cpu", "dram")
# GPU counter sampling for phases: 20 ms cost 1.4 % of a GIL-bound tiny CPU call on a 2-core VM, 10 ms 2.9 %
# (docs/energy.md); without a GPU counter only RAPL wraps need catching, which take minutes: once a second.
SAMPLE_INTERVAL_S = 0.02
RAPL_INTERVAL_S = 1.0
J_PER_KWH = 3.6e6
RAPL_ROOT = Path("/sys/class/powercap")


@dataclass
class CallEnergy:
    """Joules of one measured call (all its videos), None where the source is missing."""

    seconds: float
    gpu_j: float | None = None
    cpu_j: float | None = None
    dram_j: float | None = None

    @property
    def total_j(self) -> float | None:
        measured = [j for j in (self.gpu_j, self.cpu_j, self.dram_j) if j is not None]
        return sum(measured) if measured else None


@dataclass
class Energy:
    """Per video: medians over the measured calls divided by the videos per call (results.json's section)."""

    gpu_j: float | None = None
    cpu_j: float | None = None  # RAPL package (cores, caches, uncore); DRAM is separate
    dram_j: float | None = None
    total_j: float | None = None  # of the measured sources only (`sources` lists them)
    j_per_frame: float | None = None
    avg_w: float | None = None  # total power during the calls (not divided by the batch)
    videos_per_kwh: float | None = None
    phases_j: dict[str, float] = field(default_factory=dict)  # GPU only: denoising, decode
    calls_j: list[float] = field(default_factory=list)  # total per measured call (all its videos)
    sources: dict[str, str] = field(default_factory=dict)  # gpu/cpu/dram -> what measured it
    missing: dict[str, str] = field(default_factory=dict)  # gpu/cpu/dram/phases -> why not measured
    gpu_counter_step_s: float | None = None  # median time between changes of the GPU counter's value
    method: str = ""


@dataclass
class Cost:
    """What a video costs at the given prices; None where a price or its input is missing."""

    usd_per_video_rental: float | None = None  # seconds per video x usd_per_hour / 3600
    usd_per_video_energy: float | None = None  # joules per video / 3.6e6 x usd_per_kwh
    usd_per_video: float | None = None  # sum of those available
    usd_per_1000_videos: float | None = None
    method: str = ""


@dataclass
class _Counter:
    """A cumulative energy counter: `read()` in joules; `wrap_j` where it wraps around (RAPL)."""

    kind: str
    read: Callable[[], float]
    wrap_j: float | None = None


def _rapl_reader(path: Path) -> Callable[[], float]:
    return lambda: float(path.read_text()) / 1e6


def _rapl_counters() -> tuple[list[_Counter], dict[str, str]]:
    """Every readable RAPL package zone (cpu) and its DRAM subzone (dram); reasons for those missing."""
    first = RAPL_ROOT / "intel-rapl:0" / "energy_uj"
    if not first.exists():
        reason = f"RAPL not readable: {first} does not exist (VMs and containers rarely expose RAPL)"
        return [], {"cpu": reason, "dram": reason}
    counters: list[_Counter] = []
    missing: dict[str, str] = {}
    for zone in sorted(RAPL_ROOT.glob("intel-rapl:[0-9]*")):
        if zone.name.count(":") != 1:
            continue
        for path, kind in [(zone, "cpu")] + [(sub, "dram") for sub in sorted(zone.glob(f"{zone.name}:*"))]:
            try:
                if kind == "dram" and (path / "name").read_text().strip() != "dram":
                    continue
                energy_uj = path / "energy_uj"
                float(energy_uj.read_text())
                wrap_j = float((path / "max_energy_range_uj").read_text()) / 1e6
            except PermissionError:
                missing[kind] = (
                    f"RAPL not readable: {path / 'energy_uj'}: permission denied (root-only since Linux 5.10, "
                    "CVE-2020-8694; run as root or make it readable)"
                )
                continue
            except (OSError, ValueError) as err:
                missing[kind] = f"RAPL not readable: {path / 'energy_uj'}: {err}"
                continue
            counters.append(_Counter(kind, _rapl_reader(energy_uj), wrap_j))
    for kind in ("cpu", "dram"):
        if not any(c.kind == kind for c in counters) and kind not in missing:
            missing[kind] = f"no RAPL {'DRAM ' if kind == 'dram' else ''}zone under {RAPL_ROOT} on this CPU"
        elif any(c.kind == kind for c in counters):
            missing.pop(kind, None)  # one package unreadable, another readable: report the readable ones
    return counters, missing


def _nvml_counter(device: torch.device) -> _Counter:
    handle = nvml_device(device)  # raises GpuUnavailable with the reason
    import pynvml

    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as err:
        raise GpuUnavailable(
            f"nvmlDeviceGetTotalEnergyConsumption failed ({err}): the counter exists on Volta and newer GPUs; "
            "no estimate from power readings is made"
        ) from err
    return _Counter("gpu", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0)


class _Sampler:
    """Samples of all counters with their time.perf_counter() times: the first and last taken in the
    caller's thread around the block, the rest by a thread every `interval_s`."""

    def __init__(self, counters: list[_Counter], interval_s: float):
        self.counters = counters
        self.interval_s = interval_s
        self.times: list[float] = []
        self.values: list[list[float | None]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True) if counters else None

    def sample(self) -> None:
        t = time.perf_counter()
        row: list[float | None] = []
        for counter in self.counters:
            try:
                row.append(counter.read())
            except Exception:  # a failed read makes this counter's call energy None, not the run fail
                row.append(None)
        self.times.append(t)
        self.values.append(row)

    def _loop(self) -> None:
        while not self.done.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        if self.thread:
            self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread:
            self.thread.join()
        self.sample()

    def series(self, i: int) -> list[float] | None:
        """Counter i's joules since the first sample, unwrapped; None if any read failed."""
        raw = [row[i] for row in self.values]
        if any(v is None for v in raw):
            return None
        wrap = self.counters[i].wrap_j
        out, total = [0.0], 0.0
        for a, b in zip(raw, raw[1:]):
            step = b - a  # type: ignore[operator]  # None excluded above
            if step < 0 and wrap:
                step += wrap
            total += step
            out.append(total)
        return out


@dataclass
class _Call:
    energy: CallEnergy
    times: list[float]
    gpu: list[float] | None  # cumulative GPU joules at `times`


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class EnergyMeter:
    """Energy of each measured call (see the module docstring); never raises for a missing source."""

    def __init__(self, device: torch.device, source: str = "auto", interval_s: float = SAMPLE_INTERVAL_S):
        if source not in ENERGY_SOURCES:
            raise ValueError(
                f"energy.source={source!r} is not a known energy source; choose one of {', '.join(ENERGY_SOURCES)}: "
                "auto (Zeus if installed, else NVML and RAPL directly), zeus, nvml or none (no energy)."
            )
        self.device = device
        self.source = source
        self.interval_s = interval_s
        self.sources: dict[str, str] = {}
        self.missing: dict[str, str] = {}
        self.calls: list[_Call] = []
        self._counters: list[_Counter] = []
        self._zeus: Any = None
        self._notes: list[str] = []
        if source == "none":
            self.missing = {kind: "energy.source=none" for kind in KINDS}
            return
        try:
            self._counters.append(_nvml_counter(device))
            self.sources["gpu"] = "NVML nvmlDeviceGetTotalEnergyConsumption"
        except GpuUnavailable as err:
            self.missing["gpu"] = str(err)
        rapl, rapl_missing = _rapl_counters()
        self._counters += rapl
        self.missing.update(rapl_missing)
        for kind in ("cpu", "dram"):
            if kind not in rapl_missing:
                self.sources[kind] = f"RAPL {RAPL_ROOT}/intel-rapl:*/energy_uj ({kind})"
        if source in ("auto", "zeus"):
            self._start_zeus()

    def _start_zeus(self) -> None:
        try:
            # Imported by name: an optional package, without type information where it is installed.
            zeus = importlib.import_module("zeus")
            gpus = [self.device.index or 0] if "gpu" in self.sources else []
            self._zeus = importlib.import_module("zeus.monitor").ZeusMonitor(gpu_indices=gpus)
            version = getattr(zeus, "__version__", "?")
        except Exception as err:
            if self.source == "auto":
                self._notes.append(f"Zeus not used ({type(err).__name__}: {err}); NVML and RAPL read directly")
                return
            reason = f"energy.source=zeus but Zeus cannot be used: {type(err).__name__}: {err} (pip install zeus)"
            self.missing = {kind: reason for kind in KINDS}
            self.sources, self._counters = {}, []
            return
        for kind in KINDS:
            if kind in self.sources:
                self.sources[kind] = f"Zeus {version} ZeusMonitor ({self.sources[kind]})"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            try:
                torch.cuda.synchronize(self.device)
            except Exception:  # the call failed on the device; its error is the caller's to report
                pass

    @contextmanager
    def call(self) -> Iterator[None]:
        """Wrap one measured call, outside its timed region; appends its CallEnergy to `self.calls`.
        Costs two CUDA synchronizations (the GPU is idle by then) and one read of each counter at
        each end; the sampling thread wakes every `interval_s` for a few microseconds of reads."""
        measuring = self.source != "none" and bool(self._counters or self._zeus)
        self._sync()
        gpu = any(c.kind == "gpu" for c in self._counters)
        sampler = _Sampler(self._counters if measuring else [], self.interval_s if gpu else RAPL_INTERVAL_S)
        sampler.start()
        zeus_ok = self._zeus_window("begin") if measuring else False
        try:
            yield
        except BaseException:
            sampler.stop()
            if zeus_ok:
                self._zeus_window("cancel")
            raise
        self._sync()
        sampler.stop()
        zeus_m = self._zeus_window("end") if zeus_ok else None
        self.calls.append(self._record(sampler, zeus_m))

    def _zeus_window(self, what: str) -> Any:
        if self._zeus is None:
            return False
        try:
            if what == "begin":
                self._zeus.begin_window("svdbench-call", sync_execution=False, restart=True)
                return True
            return self._zeus.end_window("svdbench-call", sync_execution=False, cancel=what == "cancel")
        except Exception as err:
            self._notes.append(f"Zeus window failed ({type(err).__name__}: {err}); that call's figures are null")
            return None

    def _record(self, sampler: _Sampler, zeus_m: Any) -> _Call:
        seconds = sampler.times[-1] - sampler.times[0]
        joules: dict[str, float | None] = {}
        gpu_series = None
        for i, counter in enumerate(sampler.counters):
            series = sampler.series(i)
            if counter.kind == "gpu":
                gpu_series = series
            previous = joules.get(counter.kind, 0.0)
            joules[counter.kind] = None if series is None or previous is None else previous + series[-1]
        if self._zeus is not None:  # Zeus's totals replace the direct reads (the same counters)
            joules = {kind: None for kind in KINDS}
            if zeus_m:
                joules["gpu"] = sum(zeus_m.gpu_energy.values()) if zeus_m.gpu_energy else None
                joules["cpu"] = sum(zeus_m.cpu_energy.values()) if zeus_m.cpu_energy else None
                joules["dram"] = sum(zeus_m.dram_energy.values()) if zeus_m.dram_energy else None
        energy = CallEnergy(seconds, *(joules.get(kind) if kind in self.sources else None for kind in KINDS))
        return _Call(energy, sampler.times, gpu_series)

    def energy_between(self, t0: float, t1: float) -> float | None:
        """GPU joules between two time.perf_counter() times inside one recorded call, interpolated
        linearly between the counter's samples; None where no GPU counter was sampled or the times are
        not inside one call (a tolerance of one sampling interval at either end)."""
        if t1 < t0:
            return None
        for call in self.calls:
            times, gpu = call.times, call.gpu
            if gpu is None or not (times[0] - self.interval_s <= t0 and t1 <= times[-1] + self.interval_s):
                continue
            return _interpolate(times, gpu, t1) - _interpolate(times, gpu, t0)
        return None

    def _counter_step_s(self) -> float | None:
        steps = []
        for call in self.calls:
            if call.gpu is None:
                continue
            changes = [t for t, a, b in zip(call.times[1:], call.gpu, call.gpu[1:]) if b != a]
            steps += [b - a for a, b in zip(changes, changes[1:])]
        return _median(steps)

    def summary(self, shape: CallShape, phases: dict[str, list[tuple[float, float]]] | None = None) -> Energy:
        """Per video figures: the median over the recorded calls of each quantity, shared out over the call's
        videos (`shape.per_video`). `phases` maps a phase name to its (start, end) perf_counter times, one pair per
        recorded call; a phase is left out (and said in `missing["phases"]`) where any window is unmeasured."""
        energy = Energy(sources=dict(self.sources), missing=dict(self.missing))
        calls = [c.energy for c in self.calls]
        b = shape.videos

        def per_video(values: list[float | None]) -> float | None:
            measured = [v for v in values if v is not None]
            if not measured or len(measured) < len(values):  # a call without it: no median of the others
                return None
            return shape.per_video(statistics.median(measured))

        energy.gpu_j = per_video([c.gpu_j for c in calls]) if "gpu" in self.sources else None
        energy.cpu_j = per_video([c.cpu_j for c in calls]) if "cpu" in self.sources else None
        energy.dram_j = per_video([c.dram_j for c in calls]) if "dram" in self.sources else None
        totals = [c.total_j for c in calls]
        if calls and all(t is not None for t in totals):
            energy.calls_j = [t for t in totals if t is not None]
            energy.total_j = shape.per_video(statistics.median(energy.calls_j))
            energy.j_per_frame = energy.total_j / shape.frames_per_video if shape.frames_per_video else None
            watts = [t / c.seconds for t, c in zip(energy.calls_j, calls) if c.seconds > 0]
            energy.avg_w = _median(watts)
            energy.videos_per_kwh = J_PER_KWH / energy.total_j if energy.total_j > 0 else None
        for name, windows in (phases or {}).items():
            values = [self.energy_between(t0, t1) for t0, t1 in windows]
            if values and all(v is not None for v in values):
                energy.phases_j[name] = shape.per_video(statistics.median([v for v in values if v is not None]))
            else:
                why = self.missing.get("gpu", "its windows are not inside the recorded calls")
                energy.missing["phases"] = f"{name}: {why}"
        energy.gpu_counter_step_s = self._counter_step_s()
        energy.method = self._method(len(calls), b)
        return energy

    def _method(self, n_calls: int, b: int) -> str:
        if self.source == "none":
            return "energy.source=none: not measured"
        synced = " after torch.cuda.synchronize" if self.device.type == "cuda" else ""
        parts = [
            f"per video = median over {n_calls} measured calls / {b} videos per call; counters read{synced} "
            "before and after each call, outside its timed region"
        ]
        if self._zeus is not None:
            parts.append("call totals from Zeus ZeusMonitor windows (Zeus's own synchronization off)")
        if "gpu" in self.sources:
            parts.append(
                f"GPU phases: NVML counter sampled every {self.interval_s * 1000:.0f} ms by a thread, linear "
                "between samples; the driver updates the counter in steps (gpu_counter_step_s), so phases "
                "shorter than a few steps are approximate"
            )
        return "; ".join(parts + self._notes)


def _interpolate(times: list[float], values: list[float], t: float) -> float:
    """values at time t, linear between samples, held constant beyond the first and last."""
    i = bisect.bisect_right(times, t)
    if i == 0:
        return values[0]
    if i == len(times):
        return values[-1]
    t_a, t_b = times[i - 1], times[i]
    share = (t - t_a) / (t_b - t_a) if t_b > t_a else 1.0
    return values[i - 1] + share * (values[i] - values[i - 1])


def cost(
    seconds_per_video: float | None,
    joules_per_video: float | None,
    usd_per_hour: float | None,
    usd_per_kwh: float | None,
) -> Cost:
    """Dollars per video: machine rental (seconds x hourly price) and energy (joules x price per kWh); no
    price is assumed, so each part is None unless its price and its input are given."""
    rental = None
    if seconds_per_video is not None and usd_per_hour is not None:
        rental = seconds_per_video * usd_per_hour / 3600.0
    power = None
    if joules_per_video is not None and usd_per_kwh is not None:
        power = joules_per_video / J_PER_KWH * usd_per_kwh
    parts = [p for p in (rental, power) if p is not None]
    total = sum(parts) if parts else None
    notes = []
    if rental is not None:
        notes.append(f"rental: {seconds_per_video} s/video x {usd_per_hour} USD/h / 3600")
    if power is not None:
        notes.append(f"energy: {joules_per_video} J/video / 3.6e6 J/kWh x {usd_per_kwh} USD/kWh")
    elif usd_per_kwh is not None:
        notes.append(
            f"energy: not included although usd_per_kwh={usd_per_kwh} is given, because this machine could not "
            "measure the energy (energy.missing says why)"
        )
    elif seconds_per_video is not None and usd_per_hour is not None:
        notes.append("energy: not included (no usd_per_kwh)")
    return Cost(
        usd_per_video_rental=rental,
        usd_per_video_energy=power,
        usd_per_video=total,
        usd_per_1000_videos=total * 1000 if total is not None else None,
        method="; ".join(notes) or "no prices given (usd_per_hour, usd_per_kwh are null by default)",
    )
