"""The NVML handle of the GPU behind a torch CUDA device, matched by UUID so that CUDA_VISIBLE_DEVICES
and CUDA_DEVICE_ORDER cannot point it at another GPU. Used by the machine state, the energy meter and
the memory tracker; pynvml (nvidia-ml-py) is optional.
"""

from __future__ import annotations

import os
from typing import Any

import torch


class GpuUnavailable(Exception):
    """NVML cannot query the device; the message says why, in words fit for a results file."""


def cuda_uuid(device: torch.device) -> str | None:
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return "GPU-" + str(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # CPU build, no driver, an old torch without .uuid: fall back to the index
        return None


def nvml_device(device: torch.device) -> Any:
    """The NVML handle of the GPU behind a torch CUDA device; raises GpuUnavailable saying why not."""
    if device.type != "cuda":
        raise GpuUnavailable(f"the run's device is {device.type}: no NVIDIA GPU in use")
    try:
        import pynvml
    except ImportError as err:
        raise GpuUnavailable(f"nvidia-ml-py (pynvml) is not installed: {err}") from err
    try:
        pynvml.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        raise GpuUnavailable(f"no NVIDIA GPU visible to NVML: {err}") from err
    try:
        uuid = cuda_uuid(device)
        if uuid is not None:
            return pynvml.nvmlDeviceGetHandleByUUID(uuid)
        # CUDA index -> the NVML index or UUID that CUDA_VISIBLE_DEVICES names at that position.
        cuda_index = device.index or 0
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        entry = visible[cuda_index] if cuda_index < len(visible) else str(cuda_index)
        if entry.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    except Exception as err:
        raise GpuUnavailable(f"NVML has no handle for {device}: {err}") from err
