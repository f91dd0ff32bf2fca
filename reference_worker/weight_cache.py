"""The CPU weight cache (`kernels.cpu_dense`), built at load and accounted in its own memory category.

The native GEMV over the stored blocks (`kernels.cpu_native`, nothing held beyond the weights) is compiled
or found in its cache here too, so the first request does not wait for it.

Built only on CPU and only with `kernels="fast"` (the default; `--kernels reference` keeps the reference
path and holds nothing extra). Its bytes are allocated from `DeviceMemory` as `weight_cache`, so /health's
`vram_bytes_used` and `vram_bytes_by_category` include them. When a device-memory budget
(`--vram-budget-mb`) cannot hold the whole cache next to the weights, none is built and the worker runs
on the reference path (the native GEMV, which holds nothing, still takes one-row products of its types):
the budget is for the model, not for a speed-up.
"""

from __future__ import annotations

import time

import torch

from kernels import cpu_dense, cpu_native
from kernels.backend import KernelConfig
from kernels.qtensor import QTensor

from .device_memory import DeviceMemory, MemoryCategory
from .logs import EventLog

# Matrices of one layer that multiply the same input, in the order the models ask for their products
# (`KernelSet.qmatmuls`): copied one after another, each group is one product per decode step.
SHARED_INPUT_GROUPS = (("attn_q", "attn_k", "attn_v"), ("ffn_gate", "ffn_up"))


def shared_input_groups(weights: dict[str, QTensor]) -> list[tuple[QTensor, ...]]:
    """Each layer's `SHARED_INPUT_GROUPS` present in `weights` (GGUF names `blk.N.<name>.weight`)."""
    groups = []
    layers = sorted({name.split(".")[1] for name in weights if name.startswith("blk.")})
    for layer in layers:
        for names in SHARED_INPUT_GROUPS:
            members = [weights.get(f"blk.{layer}.{n}.weight") for n in names]
            if all(m is not None for m in members):
                groups.append(tuple(members))
    return groups


def build_weight_cache(
    weights: dict[str, QTensor], memory: DeviceMemory, log: EventLog, kernels: KernelConfig
) -> int:
    """Builds the cache for `weights` when `kernels` will use it; returns the bytes it holds (0 when not
    built)."""
    if memory.device.type != "cpu" or kernels.kernels == "reference":
        return 0
    candidates = [w for w in weights.values() if cpu_dense.cacheable(w)]
    needed = sum(cpu_dense.cache_nbytes(w) for w in candidates)
    if not candidates:
        return 0
    budget = memory.budget_bytes
    if budget is not None and memory.used_bytes + needed > budget:
        log.event(
            "weight_cache_skipped",
            "CPU weight cache not built: the device-memory budget has no room for it",
            level="warning",
            cache_bytes=needed,
            used_bytes=memory.used_bytes,
            budget_bytes=budget,
        )
        return 0
    # The native GEMV (`kernels.cpu_native`) is built here, at load, not in the first request.
    log.event(
        "cpu_native_gemv",
        "native CPU GEMV over stored blocks" + (" ready" if cpu_native.available() else " not available"),
        available=cpu_native.available(),
        reason=cpu_native.unavailable_reason() or None,
    )
    log.event(
        "weight_cache_start",
        "building the CPU weight cache",
        cache_bytes=needed,
        tensors=len(candidates),
    )
    started = time.monotonic()

    def allocate(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return memory.allocate(MemoryCategory.WEIGHT_CACHE, dtype=dtype, shape=shape)

    def release(tensor: torch.Tensor) -> None:
        memory.release(MemoryCategory.WEIGHT_CACHE, tensor)

    cache = cpu_dense.build(candidates, allocate, release=release, groups=shared_input_groups(weights))
    log.event(
        "weight_cache_built",
        "CPU weight cache built",
        cache_bytes=cache.nbytes,
        tensors=len(cache.tensors),
        skipped=sorted(cache.skipped),
        seconds=round(time.monotonic() - started, 3),
    )
    return cache.nbytes
