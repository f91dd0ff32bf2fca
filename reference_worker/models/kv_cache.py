"""The `KVCacheAllocator` seam: where a request's keys and values live.

M0 allocates one contiguous cache per request, sized for prompt + max_tokens, through `DeviceMemory`
(category "kv_cache"), so a VRAM budget that cannot hold it raises `VramOOM` and the request fails with
VRAM_OOM while the worker stays up (M0-W-1021). With the prefix cache (M1, `reference_worker.prefix_cache`)
a finished request's cache may be kept, cut to its prompt (`truncate`), for the next prompt: used in place or
copied (`copy_prefix`). The paged allocator (fixed-size blocks and a block
table per request, M1) is the prerequisite of continuous batching; both give identical attention inputs.

A cache holds, per layer, keys and values `[n_head_kv, position, head_dim]`. The model writes the T new
positions of a layer with `update(layer, k, v)`, which returns all positions so far, and calls
`advance(T)` once all layers are written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import torch

from reference_worker.device_memory import DeviceMemory, VramOOM

KV_CATEGORY = "kv_cache"


@dataclass(frozen=True)
class KVLayout:
    n_layer: int
    n_head_kv: int
    head_dim: int
    value_dim: int | None = None  # defaults to head_dim
    dtype: torch.dtype = torch.float32

    @property
    def v_dim(self) -> int:
        return self.head_dim if self.value_dim is None else self.value_dim

    def bytes_per_position(self) -> int:
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return self.n_layer * self.n_head_kv * (self.head_dim + self.v_dim) * itemsize


class KVCache(ABC):
    n_layer: int
    capacity: int
    length: int

    @abstractmethod
    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stores k, v `[n_head_kv, T, d]` at positions `length .. length+T-1`; returns all positions."""

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, n: int) -> None:
        """Keeps positions 0..n-1 only; later writes overwrite the rest (the prefix cache's reuse)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot cut a KV cache of {self.length} positions to {n}")
        self.length = n

    @abstractmethod
    def stored(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `[n_head_kv, n, d]` of positions 0..n-1 of `layer`."""

    def check_room(self, n: int) -> None:
        if self.length + n > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; cannot add {n} after {self.length}")

    @abstractmethod
    def free(self) -> None:
        """Returns the memory; idempotent."""


class KVCacheAllocator(Protocol):
    def new_cache(self, max_tokens: int) -> KVCache: ...


class ContiguousKVCache(KVCache):
    def __init__(
        self, keys: torch.Tensor, values: torch.Tensor, memory: DeviceMemory, category: str = KV_CATEGORY
    ) -> None:
        self.keys, self.values = keys, values  # [n_layer, n_head_kv, capacity, d]
        self.n_layer, self.capacity = keys.shape[0], keys.shape[2]
        self.length = 0
        self._memory = memory
        self._category = category

    def update(self, layer, k, v):
        self.check_room(k.shape[1])
        end = self.length + k.shape[1]
        self.keys[layer, :, self.length : end] = k
        self.values[layer, :, self.length : end] = v
        return self.keys[layer, :, :end], self.values[layer, :, :end]

    def stored(self, layer, n):
        return self.keys[layer, :, :n], self.values[layer, :, :n]

    def write_at(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode step's write: k, v `[n_head_kv, T, d]` at device `positions[T]`, no host sync; returns
        the whole capacity (positions past the last written one are masked by the attention)."""
        self.keys[layer].index_copy_(1, positions, k.to(self.keys.dtype))
        self.values[layer].index_copy_(1, positions, v.to(self.values.dtype))
        return self.keys[layer], self.values[layer]

    def free(self) -> None:
        if self.keys is not None:
            self._memory.release(self._category, self.keys)
            self._memory.release(self._category, self.values)
            self.keys = self.values = None


class ContiguousKVCacheAllocator:
    """One cache per request, allocated when the request starts and released when it ends (M0).
    `category`: what `DeviceMemory` accounts the caches to (a request's: "kv_cache"; the prefill graphs'
    own cache, `reference_worker.prefill_graph`: "scratch")."""

    def __init__(self, layout: KVLayout, memory: DeviceMemory, category: str = KV_CATEGORY) -> None:
        self.layout, self.memory, self.category = layout, memory, category

    def new_cache(self, max_tokens: int) -> ContiguousKVCache:
        lay = self.layout
        k_shape = (lay.n_layer, lay.n_head_kv, max_tokens, lay.head_dim)
        v_shape = (lay.n_layer, lay.n_head_kv, max_tokens, lay.v_dim)
        keys = _allocate(self.memory, k_shape, lay.dtype, self.category)
        try:
            values = _allocate(self.memory, v_shape, lay.dtype, self.category)
        except BaseException:
            self.memory.release(self.category, keys)
            raise
        return ContiguousKVCache(keys, values, self.memory, self.category)


class PagedKVCache(KVCache):
    def __init__(self, allocator: PagedKVCacheAllocator, blocks: list[int], capacity: int) -> None:
        self._allocator = allocator
        self.blocks = blocks  # the block table: logical block i lives in physical block blocks[i]
        self.n_layer = allocator.layout.n_layer
        self.capacity = capacity
        self.length = 0
        bs = allocator.block_size
        table = torch.tensor(blocks, dtype=torch.long, device=allocator.keys.device)
        offsets = torch.arange(bs, device=table.device)
        self._slots = (table[:, None] * bs + offsets[None, :]).flatten()[:capacity]  # position -> pool slot

    def update(self, layer, k, v):
        self.check_room(k.shape[1])
        end = self.length + k.shape[1]
        keys, values = self._allocator.keys[layer], self._allocator.values[layer]  # [n_head_kv, slots, d]
        keys[:, self._slots[self.length : end]] = k
        values[:, self._slots[self.length : end]] = v
        used = self._slots[:end]
        return keys[:, used], values[:, used]

    def stored(self, layer, n):
        used = self._slots[:n]
        return self._allocator.keys[layer][:, used], self._allocator.values[layer][:, used]

    def free(self) -> None:
        if self.blocks:
            self._allocator.release(self.blocks)
            self.blocks = []


class PagedKVCacheAllocator:
    """A pool of `num_blocks` blocks of `block_size` positions, allocated once; requests take blocks."""

    def __init__(
        self, layout: KVLayout, memory: DeviceMemory, *, num_blocks: int, block_size: int = 16
    ) -> None:
        self.layout, self.memory, self.block_size = layout, memory, block_size
        slots = num_blocks * block_size
        self.keys = _allocate(
            memory, (layout.n_layer, layout.n_head_kv, slots, layout.head_dim), layout.dtype
        )
        self.values = _allocate(memory, (layout.n_layer, layout.n_head_kv, slots, layout.v_dim), layout.dtype)
        self.num_blocks = num_blocks
        self._free_blocks = list(range(num_blocks))

    @property
    def free_blocks(self) -> int:
        return len(self._free_blocks)

    def new_cache(self, max_tokens: int) -> PagedKVCache:
        needed = -(-max_tokens // self.block_size)
        if needed > len(self._free_blocks):
            block_bytes = self.block_size * self.layout.bytes_per_position()
            in_use = (self.num_blocks - len(self._free_blocks)) * block_bytes
            reason = f"{needed} blocks of {self.block_size} positions needed, {len(self._free_blocks)} free"
            raise VramOOM(KV_CATEGORY, needed * block_bytes, in_use, self.num_blocks * block_bytes, reason)
        blocks, self._free_blocks = self._free_blocks[:needed], self._free_blocks[needed:]
        return PagedKVCache(self, blocks, max_tokens)

    def release(self, blocks: list[int]) -> None:
        self._free_blocks.extend(blocks)


def copy_prefix(source: KVCache, target: KVCache, n_tokens: int) -> None:
    """Positions 0..n_tokens-1 of every layer from `source` into the empty `target`, which then holds them."""
    target.check_room(n_tokens)
    if isinstance(source, ContiguousKVCache) and isinstance(target, ContiguousKVCache):  # all layers at once
        target.keys[:, :, :n_tokens] = source.keys[:, :, :n_tokens]
        target.values[:, :, :n_tokens] = source.values[:, :, :n_tokens]
    else:
        for layer in range(source.n_layer):
            target.update(layer, *source.stored(layer, n_tokens))
    target.advance(n_tokens)


def kv_cache_allocator(
    kind: str, layout: KVLayout, memory: DeviceMemory, *, max_positions: int
) -> KVCacheAllocator:
    """`kind` is "contiguous" (M0) or "paged" (pool sized for one request of `max_positions`)."""
    if kind == "contiguous":
        return ContiguousKVCacheAllocator(layout, memory)
    if kind == "paged":
        block_size = 16
        return PagedKVCacheAllocator(
            layout, memory, num_blocks=-(-max_positions // block_size), block_size=block_size
        )
    raise ValueError(f"unknown KV cache kind {kind!r} (known: contiguous, paged)")


def _allocate(
    memory: DeviceMemory, shape: tuple[int, ...], dtype: torch.dtype, category: str = KV_CATEGORY
) -> torch.Tensor:
    nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    return memory.allocate(category, nbytes, dtype=dtype, shape=shape)
