"""svdbench/measure/machine.py: the CPU state of this machine for real, the busy-machine threshold on given loads, and
the GPU path on a fake NVML (no NVML device exists on the CPU machines these tests run on)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import psutil
import pytest
import torch

from svdbench.measure import machine
from svdbench.measure.machine import GIB, MachineWatch, busy_warning, cpu_state, decode_clock_reasons

CUDA = torch.device("cuda", 0)


def test_cpu_state_of_this_machine():
    state = cpu_state()
    assert state.logical_cores == os.cpu_count()
    assert state.load_avg_1m_start is not None and state.load_avg_1m_start >= 0
    assert state.busy_percent_start is not None and 0 <= state.busy_percent_start <= 100
    assert state.governor is None or state.governor.strip() != ""


def test_a_cpu_run_has_no_gpu_state_and_no_warning_on_an_idle_machine(monkeypatch):
    # This machine may be busy while the tests run: a given measurement of the other processes' CPU use.
    monkeypatch.setattr(machine, "other_cpu_percent", lambda: 3.0)
    state = MachineWatch(torch.device("cpu")).finish()
    assert state.gpu is None
    assert state.cpu.busy_percent_start == 3.0
    assert state.warnings == []


def test_a_busy_machine_is_warned_about(monkeypatch):
    monkeypatch.setattr(machine, "other_cpu_percent", lambda: 75.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    state = MachineWatch(torch.device("cpu")).finish()
    assert state.warnings == [busy_warning(75.0, 8)]
    assert (
        "busy machine: other processes used 75 percent of the 8 logical cores just before the run"
        in (state.warnings[0])
    )


def test_other_processes_cpu_use_is_measured_for_real():
    """A child process spinning on one core shows up in the figure: at least the share of all cores that the
    child itself used meanwhile (read from its own CPU times), however busy the rest of the machine is. A
    structural check: on a loaded machine both figures shrink or the total saturates, and the bound still holds."""
    import subprocess
    import sys

    import psutil

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        child = psutil.Process(spinner.pid)
        before, start = sum(child.cpu_times()[:2]), time.perf_counter()
        busy = machine.other_cpu_percent(0.5)
        used = sum(child.cpu_times()[:2]) - before
        elapsed = time.perf_counter() - start
    finally:
        spinner.kill()
        spinner.wait()
    cores = os.cpu_count() or 1
    share = used / (elapsed * cores) * 100  # the spinner's own share of all cores over the same interval
    assert busy is not None and 0.0 <= busy <= 100.0 + 1e-6
    assert share > 0, "the spinner got no CPU time at all"
    # psutil's system-wide interval and the child's times are read a few microseconds apart: a small margin.
    assert busy >= 0.8 * share - 5, (busy, share)


def test_busy_threshold_is_half_of_all_cores():
    assert busy_warning(50.0, 8) is None  # at the threshold: not above it
    assert busy_warning(50.1, 8) is not None
    assert busy_warning(None, 8) is None and busy_warning(80.0, None) is None


def test_clock_event_reasons_are_decoded():
    assert decode_clock_reasons(0) == []
    assert decode_clock_reasons(0x1 | 0x4 | 0x20) == ["gpu_idle", "sw_power_cap", "sw_thermal_slowdown"]
    assert decode_clock_reasons(0x8 | 0x40 | 0x80) == ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"]
    assert decode_clock_reasons(0x4 | 0x10000) == ["sw_power_cap", "unknown_0x10000"]


def test_without_nvml_the_gpu_state_says_why():
    import pynvml

    try:
        pynvml.nvmlInit()
        pytest.skip("NVML works here: the missing-GPU reason cannot be produced")
    except pynvml.NVMLError:
        pass
    gpu = MachineWatch(CUDA).finish().gpu
    assert gpu is not None and gpu.error is not None
    assert gpu.error.startswith("no NVIDIA GPU visible to NVML: ")
    assert gpu.sm_clock_mhz is None and gpu.other_processes == []


@pytest.fixture
def fake_gpu(monkeypatch):
    """An H100 as NVML would describe it, with this process and its parent on it, hot and power-capped.
    A mock only because no NVML device exists on this machine; the decoding and warnings are real."""
    import pynvml

    handle = object()
    temperatures = iter([41, 67])
    procs = [
        SimpleNamespace(pid=os.getpid(), usedGpuMemory=20 * GIB),
        SimpleNamespace(pid=os.getppid(), usedGpuMemory=3 * GIB),
    ]
    state = SimpleNamespace(procs=procs, reasons=0x1 | 0x4 | 0x20)
    clocks = {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name, fn in {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetHandleByIndex": lambda index: handle,
        "nvmlDeviceGetHandleByUUID": lambda uuid: handle,  # where torch sees a GPU
        "nvmlDeviceGetIndex": lambda h: 3,
        "nvmlDeviceGetUUID": lambda h: "GPU-5e1f0c1a-0000-4000-8000-000000000003",
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",  # older bindings return bytes
        "nvmlDeviceGetClockInfo": lambda h, kind: clocks[kind] - 600,
        "nvmlDeviceGetMaxClockInfo": lambda h, kind: clocks[kind],
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
        "nvmlDeviceGetPersistenceMode": lambda h: pynvml.NVML_FEATURE_ENABLED,
        "nvmlDeviceGetTemperature": lambda h, sensor: next(temperatures),
        "nvmlDeviceGetComputeRunningProcesses": lambda h: state.procs,
        "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [],
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: state.reasons,
    }.items():
        monkeypatch.setattr(pynvml, name, fn)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(machine, "other_cpu_percent", lambda: 3.0)  # the GPU's warnings alone, whatever else runs here
    return state


def test_gpu_state_clocks_throttling_and_other_processes(fake_gpu):
    watch = MachineWatch(CUDA)
    watch.during_call()
    fake_gpu.reasons = 0x1  # idle after the second call: nothing new
    watch.during_call()
    state = watch.finish()
    gpu = state.gpu
    assert gpu is not None and gpu.error is None
    assert (gpu.index, gpu.uuid, gpu.name) == (3, "GPU-5e1f0c1a-0000-4000-8000-000000000003", "NVIDIA H100 80GB HBM3")
    assert (gpu.sm_clock_mhz, gpu.sm_clock_max_mhz, gpu.mem_clock_mhz, gpu.mem_clock_max_mhz) == (
        1380,
        1980,
        2019,
        2619,
    )
    assert gpu.sm_clock_mhz_at_calls == [1380, 1380]
    assert gpu.power_limit_w == 700.0 and gpu.persistence_mode is True
    assert (gpu.temperature_c_start, gpu.temperature_c_end) == (41, 67)
    assert gpu.throttle_reasons == ["sw_power_cap", "sw_thermal_slowdown"]  # gpu_idle is benign
    parent = os.getppid()
    assert [(p.pid, p.name, p.used_memory_gib) for p in gpu.other_processes] == [
        (parent, psutil.Process(parent).name(), 3.0)
    ]
    assert len(state.warnings) == 2
    assert state.warnings[0].startswith("GPU clocks were held down during the measured calls (sw_thermal_slowdown)")
    assert state.warnings[1].startswith(f"not isolated: other processes used the GPU during the run: {parent} (")


def test_alone_on_the_gpu_and_only_power_capped_gives_no_warning(fake_gpu):
    fake_gpu.procs = fake_gpu.procs[:1]
    fake_gpu.reasons = 0x4
    watch = MachineWatch(CUDA)
    watch.during_call()
    state = watch.finish()
    assert state.gpu is not None and state.gpu.throttle_reasons == ["sw_power_cap"]
    assert state.gpu.other_processes == [] and state.warnings == []


def test_pids_of_another_namespace_warn_only_when_more_than_one(fake_gpu, monkeypatch):
    """In a container NVML lists host pids: ours cannot be recognised, so one process is taken to be this run."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    fake_gpu.reasons = 0
    fake_gpu.procs = [SimpleNamespace(pid=999_999_001, usedGpuMemory=None)]
    assert MachineWatch(CUDA).finish().warnings == []
    fake_gpu.procs = [SimpleNamespace(pid=999_999_001, usedGpuMemory=None), SimpleNamespace(pid=999_999_002)]
    state = MachineWatch(CUDA).finish()
    assert state.warnings == [
        "possibly not isolated: NVML lists 2 processes on the GPU with pids outside this container's PID "
        "namespace; one is this run, the others share the GPU."
    ]
    assert state.gpu is not None and [p.name for p in state.gpu.other_processes] == [None, None]


def test_older_bindings_use_the_throttle_reasons_call(fake_gpu, monkeypatch):
    import pynvml

    monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: 0x8, raising=False)
    watch = MachineWatch(CUDA)
    watch.during_call()
    state = watch.finish()
    assert state.gpu is not None and state.gpu.throttle_reasons == ["hw_slowdown"]
    assert "hw_slowdown" in machine.WARN_REASONS and state.warnings[0].startswith("GPU clocks were held down")


def test_the_memory_trackers_nvml_figure_is_this_process_on_the_gpu_cuda_visible_devices_names(fake_gpu, monkeypatch):
    # One NVML handle for the machine state, the energy meter and the memory tracker: with
    # CUDA_VISIBLE_DEVICES naming a UUID, CUDA device 0 is that GPU, not NVML's GPU 0.
    import pynvml

    from svdbench.measure.memory import _nvml_process_bytes

    asked = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-feed-0001")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", lambda uuid: asked.append(uuid) or object())
    assert _nvml_process_bytes(CUDA) == 20 * GIB  # this process's entry, not its parent's 3 GiB
    assert asked == ["GPU-feed-0001"]
    fake_gpu.procs = fake_gpu.procs[1:]  # only the parent on the GPU
    assert _nvml_process_bytes(CUDA) is None
    assert _nvml_process_bytes(torch.device("cpu")) is None
