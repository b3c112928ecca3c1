"""Live tensor bytes, counted op by op: the measure the planner predicts and the tests compare against.

`LiveBytes` is a `TorchDispatchMode`: after every aten op it registers the storages of the op's inputs and
outputs it has not seen yet, and a weakref finalizer subtracts a storage's bytes when the storage dies. That
is exactly "bytes held by live tensors", the quantity `torch.cuda.max_memory_allocated` reports on a GPU
(minus allocator rounding, which `round_bytes` adds back for a CUDA target). It works the same on real CPU
tensors (the accuracy tests) and on meta tensors (the planner's simulation), because both keep one Python
storage object per storage for as long as any tensor uses it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MIB = 2**20
# The CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp) rounds every request up to a multiple of
# 512 bytes (kMinBlockSize). Requests up to 1 MiB (kSmallSize) are split from 2 MiB segments, those below
# 10 MiB (kMinLargeAlloc) from 20 MiB segments, and both count only their rounded size. A larger request gets
# a segment of its size rounded up to 2 MiB (kRoundLarge), and the block is split only if more than 1 MiB
# would remain, so it counts the whole segment when the padding is 1 MiB or less.
CUDA_MIN_BLOCK = 512
CUDA_SMALL_SIZE = MIB
CUDA_MIN_LARGE_ALLOC = 10 * MIB
CUDA_ROUND_LARGE = 2 * MIB


def cuda_block_bytes(nbytes: int) -> int:
    """Bytes the CUDA caching allocator counts as allocated for a request of `nbytes`."""
    if nbytes <= 0:
        return 0
    rounded = -(-nbytes // CUDA_MIN_BLOCK) * CUDA_MIN_BLOCK
    if rounded < CUDA_MIN_LARGE_ALLOC:
        return rounded
    segment = -(-rounded // CUDA_ROUND_LARGE) * CUDA_ROUND_LARGE
    return segment if segment - rounded <= CUDA_SMALL_SIZE else rounded


def exact_bytes(nbytes: int) -> int:
    return nbytes


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages, their peak, and the peak per named phase.

    `round_bytes` maps a storage's size to what the device's allocator counts (identity on a CPU).
    `phase(name)` starts a phase: its peak is tracked from there until the next phase starts.
    Storages created before the mode (weights) are added with `add`; only they and what ops touch count.
    count_parameters=False leaves `nn.Parameter`s out (the planner adds weights itself); `devices` limits the
    count to storages on those device types (None: all); count_inputs=False registers only what ops return
    (enough where every counted tensor is made by an op, and cheaper).
    """

    def __init__(
        self,
        round_bytes: Callable[[int], int] = exact_bytes,
        *,
        count_parameters: bool = True,
        devices: tuple[str, ...] | None = None,
        count_inputs: bool = True,
    ):
        super().__init__()
        self.count_inputs = count_inputs
        self.round_bytes = round_bytes
        self.count_parameters = count_parameters
        self.devices = devices
        self._paused = False
        self.live = 0
        self.peak = 0
        self.phase_name = ""
        self.phase_peaks: dict[str, int] = {}
        self._tracked: dict[int, int] = {}  # id(storage) -> counted bytes

    def add(self, tensors: Iterable[torch.Tensor]) -> None:
        for tensor in tensors:
            self._register(tensor)
        self._update()

    def ignore(self, tensors: Iterable[torch.Tensor]) -> None:
        """Never count these tensors' storages (buffers of the simulated modules)."""
        for tensor in tensors:
            self._register(tensor, counted=False)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Ops inside the block register nothing (weight casts the planner accounts for itself)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def _register(self, tensor: torch.Tensor, counted: bool = True) -> None:
        if self.devices is not None and tensor.device.type not in self.devices:
            return
        if not self.count_parameters and isinstance(tensor, nn.Parameter):
            counted = False  # its storage, and every view of it, is a weight: never counted
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._tracked:
            return
        nbytes = self.round_bytes(storage.nbytes()) if counted else 0
        self._tracked[key] = nbytes
        self.live += nbytes
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.live -= self._tracked.pop(key, 0)

    def _update(self) -> None:
        self.peak = max(self.peak, self.live)
        if self.phase_name:
            self.phase_peaks[self.phase_name] = max(self.phase_peaks.get(self.phase_name, 0), self.live)

    def phase(self, name: str) -> None:
        self.phase_name = name
        self._update()

    def reset_peak(self) -> None:
        self.peak = self.live
        self.phase_peaks = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self._paused:
            return out
        for leaf in tree_leaves((args, kwargs, out) if self.count_inputs else out):
            if isinstance(leaf, torch.Tensor) and not leaf.is_sparse:
                self._register(leaf)
        self._update()
        return out
