"""The machine's state around a measurement: GPU clocks, power limit, temperature, throttling, other
processes on the GPU, the CPU governor and load. A number is only comparable with another taken on a
machine in the same state, so the state is recorded with the result and anything that makes it
unrepresentative (a busy host, another process on the GPU, thermal slowdown) becomes a warning.

    watch = MachineWatch(device)      # start snapshot; take it before the run loads the machine
    ...  watch.during_call()          # after each measured call, outside its timed region
    state = watch.finish()            # end snapshot and warnings -> MachineState

Nothing here raises for a missing source: a field that cannot be read is None, and `GpuState.error` says
why the GPU could not be queried at all (the handle comes from svdbench/measure/nvml.py).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from svdbench.measure.memory import GIB
from svdbench.measure.nvml import GpuUnavailable, nvml_device

# Other processes using more than this fraction of all cores just before the run make a warning.
BUSY_LOAD_FRACTION = 0.5
# How long the CPU use of other processes is sampled before a run (busy_percent_start).
BUSY_SAMPLE_S = 0.1
# Clock-event (throttle) reason bits of NVML (nvml.h, nvmlClocksEventReason*), by the names recorded.
CLOCK_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Not a limit imposed on the work: the GPU waiting between kernels, or clocks someone set on purpose.
BENIGN_REASONS = frozenset({"gpu_idle", "applications_clocks_setting"})
# Recorded without a warning: a saturated GPU runs at its power limit, which is its normal state under load.
WARN_REASONS = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"})


@dataclass
class GpuProcess:
    """A process NVML lists on the GPU (compute or graphics)."""

    pid: int
    name: str | None = None  # None where the pid is not in this process's PID namespace (a container)
    used_memory_gib: float | None = None


@dataclass
class GpuState:
    """The GPU of the run as NVML sees it; None where a query is not supported or failed."""

    index: int | None = None  # NVML's (physical) index, not the CUDA index under CUDA_VISIBLE_DEVICES
    uuid: str | None = None
    name: str | None = None
    sm_clock_mhz: int | None = None  # at the start, usually the idle clock
    sm_clock_max_mhz: int | None = None
    mem_clock_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    sm_clock_mhz_at_calls: list[int] = field(default_factory=list)  # read right after each measured call
    power_limit_w: float | None = None  # enforced limit
    persistence_mode: bool | None = None
    temperature_c_start: int | None = None
    temperature_c_end: int | None = None
    throttle_reasons: list[str] = field(default_factory=list)  # non-benign, seen after any measured call
    other_processes: list[GpuProcess] = field(default_factory=list)
    error: str | None = None  # why nothing could be read


@dataclass
class CpuState:
    governor: str | None = None  # scaling_governor of all CPUs ("a, b" if they differ); None where not exposed
    load_avg_1m_start: float | None = None  # information: it still counts work that ended up to minutes ago
    logical_cores: int | None = None
    # Percent of all cores' time other processes used in the BUSY_SAMPLE_S before the run: what competes now.
    busy_percent_start: float | None = None


@dataclass
class MachineState:
    gpu: GpuState | None = None  # None for a CPU run
    cpu: CpuState = field(default_factory=CpuState)
    warnings: list[str] = field(default_factory=list)


def decode_clock_reasons(mask: int) -> list[str]:
    """The names of the bits set in an NVML clocks-event (throttle) reason mask, unknown bits as hex."""
    names = [name for bit, name in CLOCK_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_REASONS)
    return names + ([f"unknown_{unknown:#x}"] if unknown else [])


def busy_warning(busy_percent: float | None, logical_cores: int | None) -> str | None:
    """A warning when other processes kept more than BUSY_LOAD_FRACTION of all cores busy just before the run
    (docs/energy.md says why that fraction). Measured over BUSY_SAMPLE_S rather than from the load average,
    which still counts a sweep's previous job for a minute after it ended."""
    if busy_percent is None or not logical_cores:
        return None
    if busy_percent <= BUSY_LOAD_FRACTION * 100:
        return None
    return (
        f"busy machine: other processes used {busy_percent:.0f} percent of the {logical_cores} logical cores just "
        f"before the run, more than {BUSY_LOAD_FRACTION * 100:.0f} percent; they competed for the CPU, so latency "
        "and energy may be worse than on an idle machine."
    )


def other_cpu_percent(seconds: float = BUSY_SAMPLE_S) -> float | None:
    """Percent of all cores' time that processes other than this one used during `seconds` (system-wide
    utilisation less this process's own CPU time); None where psutil cannot tell."""
    try:
        import psutil

        me = psutil.Process()
        mine_before = sum(me.cpu_times()[:2])
        psutil.cpu_percent(None)  # starts the system-wide interval
        start = time.perf_counter()
        time.sleep(seconds)
        total = psutil.cpu_percent(None)
        elapsed = time.perf_counter() - start
        mine = (sum(me.cpu_times()[:2]) - mine_before) / (elapsed * (os.cpu_count() or 1)) * 100
        return max(0.0, total - mine)
    except Exception:  # psutil without /proc access, or an unsupported platform
        return None


def _query(fn: Any, *args: Any) -> Any:
    """One NVML query; None where it is not supported or fails (the state is a record, never a failure)."""
    try:
        value = fn(*args)
    except Exception:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _clock_reasons_mask(pynvml: Any, handle: Any) -> int | None:
    getter = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    return _query(getter, handle) if getter else None


def _gpu_processes(pynvml: Any, handle: Any) -> list[GpuProcess]:
    import psutil

    seen: dict[int, GpuProcess] = {}
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in _query(getattr(pynvml, getter, None), handle) or []:
            used = getattr(proc, "usedGpuMemory", None)
            try:
                name: str | None = psutil.Process(proc.pid).name()
            except Exception:
                name = None
            seen.setdefault(proc.pid, GpuProcess(proc.pid, name, used / GIB if used is not None else None))
    return list(seen.values())


def _governor() -> str | None:
    values = set()
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            values.add(path.read_text().strip())
        except OSError:
            continue
    return ", ".join(sorted(values)) if values else None


def cpu_state() -> CpuState:
    try:
        load: float | None = os.getloadavg()[0]
    except OSError:  # not on this platform
        load = None
    return CpuState(
        governor=_governor(),
        load_avg_1m_start=load,
        logical_cores=os.cpu_count(),
        busy_percent_start=other_cpu_percent(),
    )


class MachineWatch:
    """Snapshots of the machine at the start (constructor), after each measured call and at the end."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = cpu_state()  # first: the load average before this run adds to it
        self.gpu: GpuState | None = None
        self._pynvml: Any = None
        self._handle: Any = None
        self._reasons: set[str] = set()
        self._processes: dict[int, GpuProcess] = {}
        if device.type != "cuda":
            return
        try:
            self._handle = nvml_device(device)
        except GpuUnavailable as err:
            self.gpu = GpuState(error=str(err))
            return
        import pynvml

        p, h = pynvml, self._handle
        self._pynvml = p
        limit_mw = _query(p.nvmlDeviceGetEnforcedPowerLimit, h)
        persistence = _query(p.nvmlDeviceGetPersistenceMode, h)
        self.gpu = GpuState(
            index=_query(p.nvmlDeviceGetIndex, h),
            uuid=_query(p.nvmlDeviceGetUUID, h),
            name=_query(p.nvmlDeviceGetName, h),
            sm_clock_mhz=_query(p.nvmlDeviceGetClockInfo, h, p.NVML_CLOCK_SM),
            sm_clock_max_mhz=_query(p.nvmlDeviceGetMaxClockInfo, h, p.NVML_CLOCK_SM),
            mem_clock_mhz=_query(p.nvmlDeviceGetClockInfo, h, p.NVML_CLOCK_MEM),
            mem_clock_max_mhz=_query(p.nvmlDeviceGetMaxClockInfo, h, p.NVML_CLOCK_MEM),
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            persistence_mode=bool(persistence == p.NVML_FEATURE_ENABLED) if persistence is not None else None,
            temperature_c_start=_query(p.nvmlDeviceGetTemperature, h, p.NVML_TEMPERATURE_GPU),
        )
        self._processes = {proc.pid: proc for proc in _gpu_processes(p, h)}

    def during_call(self) -> None:
        """Throttle reasons and SM clock right after a measured call (two NVML reads, tens of microseconds);
        call it outside the call's timed region."""
        if self._handle is None or self.gpu is None:
            return
        mask = _clock_reasons_mask(self._pynvml, self._handle)
        if mask is not None:
            self._reasons.update(r for r in decode_clock_reasons(mask) if r not in BENIGN_REASONS)
        clock = _query(self._pynvml.nvmlDeviceGetClockInfo, self._handle, self._pynvml.NVML_CLOCK_SM)
        if clock is not None:
            self.gpu.sm_clock_mhz_at_calls.append(clock)

    def finish(self) -> MachineState:
        """The end snapshot and the warnings; the state to record with the result."""
        warnings = [w for w in [busy_warning(self.cpu.busy_percent_start, self.cpu.logical_cores)] if w]
        gpu = self.gpu
        if gpu is not None and self._handle is not None:
            p, h = self._pynvml, self._handle
            gpu.temperature_c_end = _query(p.nvmlDeviceGetTemperature, h, p.NVML_TEMPERATURE_GPU)
            for proc in _gpu_processes(p, h):  # those present at the start or at the end
                self._processes.setdefault(proc.pid, proc)
            gpu.throttle_reasons = sorted(self._reasons)
            warnings += self._gpu_warnings(gpu, list(self._processes.values()))
        return MachineState(gpu=gpu, cpu=self.cpu, warnings=warnings)

    def _gpu_warnings(self, gpu: GpuState, processes: list[GpuProcess]) -> list[str]:
        warnings = []
        slowdowns = [r for r in gpu.throttle_reasons if r in WARN_REASONS]
        if slowdowns:
            warnings.append(
                f"GPU clocks were held down during the measured calls ({', '.join(slowdowns)}): thermal or "
                "hardware slowdown, so the latency and energy are not those of a healthy, cool GPU."
            )
        pid = os.getpid()
        if any(proc.pid == pid for proc in processes) or not torch.cuda.is_initialized():
            gpu.other_processes = [proc for proc in processes if proc.pid != pid]
            if gpu.other_processes:
                listed = ", ".join(f"{proc.pid} ({proc.name or 'unknown'})" for proc in gpu.other_processes)
                warnings.append(
                    f"not isolated: other processes used the GPU during the run: {listed}; they share its "
                    "compute, memory bandwidth and power, so latency and energy are not this workload's alone."
                )
        else:
            # This process holds a CUDA context but NVML does not list its pid: NVML reports pids of another
            # PID namespace (a container), so ours cannot be told apart; more than one process means another.
            gpu.other_processes = processes
            if len(processes) > 1:
                warnings.append(
                    f"possibly not isolated: NVML lists {len(processes)} processes on the GPU with pids outside "
                    "this container's PID namespace; one is this run, the others share the GPU."
                )
        return warnings


def cpu_model() -> str | None:
    """The CPU's model name, e.g. "AMD EPYC 7B13"; None where the system does not say."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # no /proc: the platform module's answer, if any
        pass
    return platform.processor() or None
