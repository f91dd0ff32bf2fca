"""The one place that knows how much device memory the worker holds, and for what (M0-W-1011, M0-W-1220).

Categories follow M0-W-1011: weights (once, at load), kv_cache (per request), scratch (per step); plus
weight_cache (once, at load, CPU only): the dense copies the CPU fast path multiplies with
(`kernels.cpu_dense`), counted in full so that /health shows every byte the worker holds.
An optional budget (`--vram-budget-mb`) is enforced here, so CPU runs exercise the same `VramOOM` path
as a CUDA device that says no.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from math import prod

import torch

from . import residency

WEIGHT_ALIGNMENT = 256  # M0-W-1220: every weight tensor starts on a 256-byte boundary


class MemoryCategory(StrEnum):
    WEIGHTS = "weights"
    KV_CACHE = "kv_cache"
    SCRATCH = "scratch"
    WEIGHT_CACHE = "weight_cache"  # CPU only: dense copies of quantized weights (kernels.cpu_dense)


class VramOOM(RuntimeError):
    """An allocation the budget or the device refused. The HTTP layer reports it as `VRAM_OOM`."""

    def __init__(self, category: str, requested: int, used: int, budget: int | None, reason: str) -> None:
        self.category = category
        self.requested = requested
        self.used = used
        self.budget = budget
        limit = f" of a {budget}-byte budget" if budget is not None else ""
        super().__init__(
            f"device memory exhausted: {requested} bytes for {category} refused ({used} bytes in use{limit}): "
            f"{reason}"
        )


class DeviceMemory:
    def __init__(
        self,
        device: torch.device | str,
        budget_bytes: int | None = None,
        *,
        kv_cache_limit_bytes: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.budget_bytes = budget_bytes
        self.kv_cache_limit_bytes = kv_cache_limit_bytes  # --kv-cache-size-mb
        self._lock = threading.Lock()
        self._by_category: dict[str, int] = {c.value: 0 for c in MemoryCategory}
        # data_ptr -> (tensor, accounted bytes); weights are kept for residency checks.
        self._live: dict[int, tuple[torch.Tensor, int, str]] = {}

    @property
    def used_bytes(self) -> int:
        return sum(self._by_category.values())

    @property
    def by_category(self) -> dict[str, int]:
        return dict(self._by_category)

    def allocator_bytes(self) -> dict[str, int]:
        """PyTorch's caching allocator on a CUDA device: bytes in tensors ("allocated") and held from the
        driver ("reserved"); empty on CPU. Host-side counters, no device call (M0-W-1604). The accounting
        above is the worker's own; these show that what it releases the allocator releases too."""
        if self.device.type != "cuda":
            return {}
        return {
            "allocated": torch.cuda.memory_allocated(self.device),
            "reserved": torch.cuda.memory_reserved(self.device),
        }

    def allocate(
        self,
        category: MemoryCategory | str,
        nbytes: int | None = None,
        dtype: torch.dtype = torch.uint8,
        shape: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """An uninitialised tensor of `shape` (or `nbytes` bytes, 1-D) of `dtype`, accounted to `category`.

        Weights are placed on a 256-byte boundary (M0-W-1220). Raises VramOOM when the budget or the
        device refuses; nothing is accounted then.
        """
        category = MemoryCategory(category).value
        itemsize = dtype.itemsize
        if shape is None:
            if nbytes is None or nbytes % itemsize:
                raise ValueError(f"allocate needs a shape or a byte count divisible by {itemsize}")
            shape = (nbytes // itemsize,)
        size = prod(shape) * itemsize
        pad = WEIGHT_ALIGNMENT - 1 if category == MemoryCategory.WEIGHTS else 0
        accounted = size + pad
        with self._lock:
            used = self.used_bytes
            if self.budget_bytes is not None and used + accounted > self.budget_bytes:
                raise VramOOM(category, accounted, used, self.budget_bytes, "over the configured budget")
            kv_used = self._by_category[MemoryCategory.KV_CACHE]
            limit = self.kv_cache_limit_bytes
            if category == MemoryCategory.KV_CACHE and limit is not None and kv_used + accounted > limit:
                raise VramOOM(
                    category, accounted, used, self.budget_bytes, f"over the {limit}-byte KV cache limit"
                )
            try:
                raw = torch.empty(accounted, dtype=torch.uint8, device=self.device)
            except torch.OutOfMemoryError as e:
                raise VramOOM(category, accounted, used, self.budget_bytes, str(e).splitlines()[0]) from None
            start = (-raw.data_ptr()) % WEIGHT_ALIGNMENT if pad else 0
            tensor = raw[start : start + size].view(dtype).view(shape)
            self._by_category[category] += accounted
            self._live[tensor.data_ptr()] = (tensor, accounted, category)
        return tensor

    def release(self, category: MemoryCategory | str, tensor: torch.Tensor) -> None:
        """Gives back a tensor from `allocate`; releasing twice or an unknown tensor is a no-op."""
        category = MemoryCategory(category).value
        with self._lock:
            entry = self._live.get(tensor.data_ptr())
            if entry is None or entry[2] != category:
                return
            del self._live[tensor.data_ptr()]
            self._by_category[category] -= entry[1]

    def weights(self) -> list[torch.Tensor]:
        with self._lock:
            return [t for t, _, c in self._live.values() if c == MemoryCategory.WEIGHTS]

    def inject_residency_fault(self) -> None:
        """Conformance hook (`--inject-residency-fault-after-sec`): records one weight as living outside the
        device (a meta-device stand-in for evicted memory), so that the real residency check fails."""
        with self._lock:
            for key, (tensor, accounted, category) in self._live.items():
                if category == MemoryCategory.WEIGHTS:
                    self._live[key] = (tensor.to("meta"), accounted, category)
                    return

    def residency_check(self) -> bool:
        """True when every weight is still in device memory of the expected device (M0-W-1012)."""
        return residency.all_resident(self.weights(), self.device)
