"""Peak memory of a measured call: device (CUDA allocator, NVML) and host (resident set).

Host peak: the kernel's resident high-water mark (VmHWM) after resetting it through
/proc/self/clear_refs, which is exact and costs nothing during the call; where the reset is not
allowed, a thread samples the resident set at 200 Hz. Units: GiB = 2**30 bytes.
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil
import torch

from svdbench.measure.nvml import nvml_device

GIB = 2**30


def _read_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def release_freed_memory() -> None:
    """Hand memory that was freed earlier (model construction, a previous job) back to the OS; glibc
    keeps it resident otherwise, and the host baseline and peak would depend on what ran before.

    Called before a run's cold call and before its first measured call, not before every call:
    re-faulting the returned pages costs a few percent of a small call (3-4 % on the tiny model),
    and repeated calls of one workload reusing their freed memory is the steady state an
    application sees."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _read_hwm_bytes() is not None
    except OSError:
        return False


@dataclass
class MemoryPeak:
    """Peaks over the tracked block, in GiB; None where the quantity does not exist on this device."""

    host_before_gib: float
    host_peak_gib: float
    host_method: str
    device_max_allocated_gib: float | None = None
    device_max_reserved_gib: float | None = None
    device_nvml_process_gib: float | None = None
    device_method: str | None = None
    # The peak that limits the run (RunResult.peak_memory_gib's kind) of every measured call, in order.
    calls_gib: list[float] = field(default_factory=list)
    # The planner's prediction of the device peak allocated of one call (svdbench.plan), and how it was made.
    predicted_gib: float | None = None
    predicted_method: str | None = None

    @property
    def limiting_gib(self) -> float:
        """Device max allocated where there is a device, else host resident peak."""
        return self.device_max_allocated_gib if self.device_max_allocated_gib is not None else self.host_peak_gib

    def merge(self, other: MemoryPeak) -> MemoryPeak:
        """The worse of two peaks (several measured calls report their maximum); the baseline of the
        first (`self`), since later calls start with memory the allocator kept from the previous one."""

        def worst(a, b):
            return b if a is None else a if b is None else max(a, b)

        return MemoryPeak(
            host_before_gib=self.host_before_gib,  # the first call's, taken after a trim
            host_peak_gib=max(self.host_peak_gib, other.host_peak_gib),
            host_method=self.host_method,
            device_max_allocated_gib=worst(self.device_max_allocated_gib, other.device_max_allocated_gib),
            device_max_reserved_gib=worst(self.device_max_reserved_gib, other.device_max_reserved_gib),
            device_nvml_process_gib=worst(self.device_nvml_process_gib, other.device_nvml_process_gib),
            device_method=self.device_method,
            calls_gib=[*self.calls_gib, *other.calls_gib],
            predicted_gib=self.predicted_gib,
            predicted_method=self.predicted_method,
        )


class _Sampler(threading.Thread):
    def __init__(self, interval_s: float = 0.005):
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, self.process.memory_info().rss)


def _nvml_process_bytes(device: torch.device) -> int | None:
    """This process's memory on the GPU as the driver sees it (includes the CUDA context)."""
    try:
        handle = nvml_device(device)  # matched by UUID, as the machine state and the energy meter match it
        import pynvml

        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
    except Exception:  # GpuUnavailable, NVMLError: an optional figure, None says it is missing
        return None
    return None


class MemoryTracker:
    def __init__(self, device: torch.device, force_sampling: bool = False):
        self.device = device
        self.use_hwm = not force_sampling and _reset_hwm()
        self.host_method = "kernel VmHWM after reset" if self.use_hwm else "RSS sampled at 200 Hz"
        self.last: MemoryPeak | None = None

    @contextmanager
    def track(self):
        """Measure the peaks of the block; the result is in `self.last` afterwards."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        before = psutil.Process().memory_info().rss
        sampler = None
        if self.use_hwm:
            _reset_hwm()
        else:
            sampler = _Sampler()
            sampler.start()
        try:
            yield self
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            host_peak = sampler.stop() if sampler else max(_read_hwm_bytes() or 0, before)
            self.last = MemoryPeak(
                host_before_gib=before / GIB, host_peak_gib=host_peak / GIB, host_method=self.host_method
            )
            if cuda:
                nvml = _nvml_process_bytes(self.device)
                self.last.device_max_allocated_gib = torch.cuda.max_memory_allocated(self.device) / GIB
                self.last.device_max_reserved_gib = torch.cuda.max_memory_reserved(self.device) / GIB
                self.last.device_nvml_process_gib = nvml / GIB if nvml is not None else None
                self.last.device_method = "torch.cuda.max_memory_allocated/reserved after reset_peak_memory_stats" + (
                    "; NVML process memory at the end of the call" if nvml is not None else "; NVML not installed"
                )
            self.last.calls_gib = [self.last.limiting_gib]  # one call; MemoryPeak.merge collects the calls
