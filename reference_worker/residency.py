"""VRAM residency (M0-W-1010, M0-W-1012): every weight still lives in device memory of the worker's device.

On CUDA each weight pointer is asked of the CUDA runtime (`cudaPointerGetAttributes`: memory type device,
no host pointer), falling back to torch's own view when libcudart cannot be loaded. On CPU runs the check
is that the tensor is still on the expected device. `ResidencyMonitor` repeats the check on a timer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterable
from functools import cache

import torch

_CUDA_MEMORY_TYPE_DEVICE = 2  # cudaMemoryTypeDevice


class _CudaPointerAttributes(ctypes.Structure):
    # cudaPointerAttributes as of CUDA 11; newer runtimes append fields (CUDA 12.x+: `long reserved[8]`),
    # and the runtime writes the whole struct it knows, so the padding must be at least that large.
    _fields_ = [
        ("type", ctypes.c_int),
        ("device", ctypes.c_int),
        ("devicePointer", ctypes.c_void_p),
        ("hostPointer", ctypes.c_void_p),
        ("_reserved", ctypes.c_long * 32),
    ]


@cache
def _cudart() -> ctypes.CDLL | None:
    names = ["libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0"]
    found = ctypes.util.find_library("cudart")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudaPointerGetAttributes.argtypes = [ctypes.POINTER(_CudaPointerAttributes), ctypes.c_void_p]
        lib.cudaPointerGetAttributes.restype = ctypes.c_int
        return lib
    return None


def tensor_is_resident(tensor: torch.Tensor, device: torch.device) -> bool:
    if tensor.device.type != device.type:
        return False
    if device.type != "cuda":
        return True
    if device.index is not None and tensor.device.index != device.index:
        return False
    lib = _cudart()
    if lib is None:
        return True  # torch reports a CUDA tensor: its storage comes from cudaMalloc, i.e. device memory
    attrs = _CudaPointerAttributes()
    if lib.cudaPointerGetAttributes(ctypes.byref(attrs), ctypes.c_void_p(tensor.data_ptr())) != 0:
        return False
    return attrs.type == _CUDA_MEMORY_TYPE_DEVICE and not attrs.hostPointer


def all_resident(tensors: Iterable[torch.Tensor], device: torch.device) -> bool:
    return all(tensor_is_resident(t, device) for t in tensors)


class ResidencyMonitor:
    """Runs `check` every `interval_sec` on a daemon thread; calls `on_failure` once when it fails."""

    def __init__(
        self, check: Callable[[], bool], interval_sec: float, on_failure: Callable[[], None]
    ) -> None:
        self._check = check
        self._interval = interval_sec
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="residency-check", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._check():
                self._on_failure()
                return
