"""svdbench/measure/energy.py: the meter on this machine for real (no GPU, no RAPL: null figures with reasons), the
arithmetic of per-video figures, phases and prices, and the GPU and RAPL paths on fake counters (no NVML
counter or RAPL zone exists on the CPU machines these tests run on)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
import torch

from svdbench.measure import energy as energy_module
from svdbench.measure.energy import ENERGY_SOURCES, CallEnergy, EnergyMeter, _Call, cost
from svdbench.pipeline.call import CallShape

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)
RAPL_FILE = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
POWER_W = 250.0


def _nvml_works() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
        return True
    except pynvml.NVMLError:
        return False


def test_auto_on_this_machine_gives_null_figures_and_names_what_is_missing():
    meter = EnergyMeter(CPU, "auto")
    with meter.call():
        time.sleep(0.02)
    energy = meter.summary(CallShape(1, 8))
    assert energy.gpu_j is None and energy.total_j is None and energy.videos_per_kwh is None
    assert energy.missing["gpu"] == "the run's device is cpu: no NVIDIA GPU in use"
    assert len(meter.calls) == 1 and meter.calls[0].energy.seconds >= 0.02
    if not RAPL_FILE.exists():  # VMs, containers, non-Linux: the reason names the file that is not there
        assert energy.missing["cpu"] == (
            f"RAPL not readable: {RAPL_FILE} does not exist (VMs and containers rarely expose RAPL)"
        )
        assert energy.missing["dram"] == energy.missing["cpu"]
        assert energy.cpu_j is None and energy.sources == {} and energy.calls_j == []
    else:  # bare metal: measured, or a reason saying why not
        assert energy.cpu_j is not None or "RAPL not readable" in energy.missing["cpu"]


@pytest.mark.skipif(_nvml_works(), reason="NVML works here: the missing-GPU reason cannot be produced")
def test_a_cuda_device_without_nvml_says_so_and_does_not_raise():
    meter = EnergyMeter(CUDA, "nvml")
    with meter.call():
        pass
    energy = meter.summary(CallShape(1, 8), phases={"decode": [(0.0, 1.0)]})
    assert energy.missing["gpu"].startswith("no NVIDIA GPU visible to NVML: ")
    assert energy.gpu_j is None and energy.phases_j == {}
    assert energy.missing["phases"].startswith("decode: no NVIDIA GPU visible to NVML")


def test_source_none_measures_nothing_and_says_so():
    meter = EnergyMeter(CPU, "none")
    with meter.call():
        pass
    energy = meter.summary(CallShape(2, 8))
    assert energy.missing == {"gpu": "energy.source=none", "cpu": "energy.source=none", "dram": "energy.source=none"}
    assert (energy.gpu_j, energy.cpu_j, energy.dram_j, energy.total_j, energy.avg_w) == (None,) * 5
    assert energy.method == "energy.source=none: not measured"


def test_an_unknown_source_is_refused_naming_the_choices():
    with pytest.raises(ValueError) as err:
        EnergyMeter(CPU, "rapl")
    assert "'rapl'" in str(err.value)
    assert all(choice in str(err.value) for choice in ENERGY_SOURCES)


def test_zeus_requested_but_not_installed_gives_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "zeus", None)  # importing it raises ImportError, installed or not
    energy = EnergyMeter(CPU, "zeus").summary(CallShape(1, 8))
    assert energy.missing["gpu"].startswith("energy.source=zeus but Zeus cannot be used: ModuleNotFoundError")
    assert energy.sources == {}
    auto = EnergyMeter(CPU, "auto").summary(CallShape(1, 8))
    assert "Zeus not used (ModuleNotFoundError" in auto.method


def test_cost_arithmetic():
    # 90 s per video at 3.60 USD/h = 0.09 USD; 36 kJ per video = 0.01 kWh at 0.30 USD/kWh = 0.003 USD.
    both = cost(seconds_per_video=90.0, joules_per_video=36_000.0, usd_per_hour=3.6, usd_per_kwh=0.3)
    assert both.usd_per_video_rental == pytest.approx(0.09)
    assert both.usd_per_video_energy == pytest.approx(0.003)
    assert both.usd_per_video == pytest.approx(0.093)
    assert both.usd_per_1000_videos == pytest.approx(93.0)
    rental_only = cost(90.0, None, 3.6, 0.3)  # energy not measurable: only the rental part
    assert rental_only.usd_per_video_energy is None and rental_only.usd_per_video == pytest.approx(0.09)
    none = cost(90.0, 36_000.0, None, None)  # no prices: nothing made up
    assert (none.usd_per_video, none.usd_per_1000_videos) == (None, None)
    assert "no prices given" in none.method


def test_energy_between_interpolates_linearly_between_samples():
    meter = EnergyMeter(CPU, "none", interval_s=0.01)
    times, joules = [10.0, 11.0, 12.0, 13.0], [0.0, 10.0, 30.0, 30.0]
    meter.calls.append(_Call(CallEnergy(3.0, 30.0), times, joules))
    assert meter.energy_between(10.5, 11.5) == pytest.approx(20.0 - 5.0)  # 5 J at 10.5 s, 20 J at 11.5 s
    assert meter.energy_between(10.0, 13.0) == pytest.approx(30.0)
    assert meter.energy_between(12.0, 13.0) == pytest.approx(0.0)
    assert meter.energy_between(11.5, 11.0) is None  # backwards
    assert meter.energy_between(9.0, 11.0) is None  # starts before the call
    assert meter.energy_between(20.0, 21.0) is None  # in no recorded call


@pytest.fixture
def fake_nvml(monkeypatch):
    """A GPU whose NVML energy counter grows at POWER_W watts of time.perf_counter(), in whole mJ like the
    real one. A mock only because no NVML counter can exist on this machine; everything else is real."""
    import pynvml

    handle = object()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: handle if index == 0 else None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", lambda uuid: handle)  # where torch sees a GPU
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: round(POWER_W * 1000 * time.perf_counter())
    )
    monkeypatch.setitem(sys.modules, "zeus", None)  # "auto" must take the direct path
    return handle


def test_gpu_energy_per_call_per_video_and_per_phase(fake_nvml):
    meter = EnergyMeter(CUDA, "auto", interval_s=0.005)
    assert meter.sources["gpu"] == "NVML nvmlDeviceGetTotalEnergyConsumption"
    windows = []
    for _ in range(3):
        with meter.call():
            time.sleep(0.03)
            start = time.perf_counter()
            time.sleep(0.05)
            windows.append((start, time.perf_counter()))
    seconds = [c.energy.seconds for c in meter.calls]
    for call in meter.calls:
        assert call.energy.gpu_j == pytest.approx(
            POWER_W * call.energy.seconds, rel=0.02
        )  # the counter and the clock are read a few microseconds apart
        assert len(call.times) >= 5  # the thread sampled during the call, not only at its ends
    energy = meter.summary(CallShape(2, 14), phases={"denoising": windows})
    median_call_j = POWER_W * sorted(seconds)[1]
    assert energy.calls_j == pytest.approx([POWER_W * s for s in seconds], rel=0.02)
    assert energy.gpu_j == pytest.approx(median_call_j / 2, rel=0.02)  # two videos per call
    assert energy.total_j == energy.gpu_j  # no CPU/DRAM source here
    assert energy.j_per_frame == pytest.approx(energy.total_j / 14)
    assert energy.avg_w == pytest.approx(POWER_W, rel=1e-3)  # power is not divided by the batch
    assert energy.videos_per_kwh == pytest.approx(3.6e6 / energy.total_j)
    phase_j = sorted(POWER_W * (b - a) for a, b in windows)[1] / 2
    assert energy.phases_j["denoising"] == pytest.approx(phase_j, rel=0.02)
    assert "phases" not in energy.missing


def test_the_counter_update_interval_is_reported(fake_nvml, monkeypatch):
    import pynvml

    # A counter the driver updates every 50 ms: the sampler sees it change in steps of about 50 ms.
    monkeypatch.setattr(
        pynvml,
        "nvmlDeviceGetTotalEnergyConsumption",
        lambda h: round(POWER_W * 1000 * math.floor(time.perf_counter() / 0.05) * 0.05),
    )
    meter = EnergyMeter(CUDA, "nvml", interval_s=0.005)
    with meter.call():
        time.sleep(0.4)
    step = meter.summary(CallShape(1, 8)).gpu_counter_step_s
    assert step is not None and 0.035 < step < 0.07


def _fake_rapl(root: Path, package_uj: float, dram_uj: float, max_uj: float) -> tuple[Path, Path]:
    package, dram = root / "intel-rapl:0", root / "intel-rapl:0" / "intel-rapl:0:0"
    dram.mkdir(parents=True)
    for zone, name, value in ((package, "package-0", package_uj), (dram, "dram", dram_uj)):
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text(f"{value:.0f}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_uj:.0f}\n")
    return package / "energy_uj", dram / "energy_uj"


def test_rapl_package_and_dram_with_a_wraparound(tmp_path, monkeypatch):
    """A fake powercap tree (no RAPL zone is readable on the VMs these tests run on): the package counter
    wraps around during the call and is still counted right."""
    monkeypatch.setattr(energy_module, "RAPL_ROOT", tmp_path)
    max_uj = 1_000_000_000.0  # 1 kJ range
    package, dram = _fake_rapl(tmp_path, package_uj=max_uj - 2_000_000, dram_uj=5_000_000, max_uj=max_uj)
    meter = EnergyMeter(CPU, "nvml")
    assert set(meter.sources) == {"cpu", "dram"} and "gpu" in meter.missing
    with meter.call():
        time.sleep(0.03)
        package.write_text("3000000\n")  # wrapped: 2 J up to the top, then 3 J
        dram.write_text("6500000\n")
        time.sleep(0.03)
    energy = meter.summary(CallShape(1, 10))
    assert energy.cpu_j == pytest.approx(5.0)
    assert energy.dram_j == pytest.approx(1.5)
    assert energy.total_j == pytest.approx(6.5)


def test_rapl_without_a_dram_zone_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(energy_module, "RAPL_ROOT", tmp_path)
    _fake_rapl(tmp_path, 1.0, 1.0, 1e9)
    (tmp_path / "intel-rapl:0" / "intel-rapl:0:0" / "name").write_text("core\n")
    meter = EnergyMeter(CPU, "nvml")
    assert "cpu" in meter.sources
    assert meter.missing["dram"] == f"no RAPL DRAM zone under {tmp_path} on this CPU"


def test_zeus_backend_when_installed():
    """Runs only where Zeus is installed (an optional package: docs/energy.md)."""
    pytest.importorskip("zeus")
    meter = EnergyMeter(CPU, "zeus")
    with meter.call():
        time.sleep(0.01)
    energy = meter.summary(CallShape(1, 8))
    assert "Zeus ZeusMonitor windows" in energy.method
    assert energy.missing["gpu"] == "the run's device is cpu: no NVIDIA GPU in use"
