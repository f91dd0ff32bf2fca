"""The prefill of a prompt as a captured CUDA graph, replayed for every later prompt of its length bucket.

A prefill is hundreds of launches (per layer: products, norms, RoPE, the cache write, attention); on a
small model the host issuing them takes longer than the GPU running them (Qwen2.5-0.5B: ~15 ms of kernels
in a 60 ms prefill of 512 tokens, `benchmarks/results/2026-12-03-h200-prefill.md`). `PrefillGraphs`
captures the model's forward over a prompt padded to a bucket length (`PREFILL_BUCKETS`) once per bucket,
into a KV cache of its own, and replays it for every later prompt of that bucket: two host->device
copies, one replay, and a copy of the prompt's positions into the request's cache.

Padding: a prompt of T tokens is padded with its last token to the bucket's B. Attention is causal and
every other op works row by row, so the T real rows never see the B - T padded ones; their values are
those of an unpadded prefill up to the summation order a product of B rows may choose (the GEMM's launch
shape depends on its rows: within the fast path's tolerance, and the same for every prompt of a bucket,
so runs stay reproducible). The logits are those of row T - 1 (the model's `last_row`, a device tensor);
the graph's cache positions T..B-1 are never copied.

What is held: per bucket its static inputs (B token ids, the last row) and logits; one cache per model
with the largest bucket's positions (allocated through `DeviceMemory` as "scratch", not from the
requests' KV cache; taken at the first prefill a graph serves); and one private memory pool that the
model's prefill graphs share (they never run at once). Everything else takes the eager prefill,
unchanged: a prompt longer than the largest bucket within the context, a model whose KV caches are not
contiguous, a request cache not on CUDA, and a graph cache the device cannot hold. With a VRAM budget
or a KV cache limit the worker builds no prefill graphs at all (`reference_worker.config`): a budget
then means what it meant before.

Where it is used: `reference_worker.engine.DecodeSession.start`, when the model's kernel choice says so
(`kernels.backend.KernelConfig.prefill_graphs_on`: CUDA, fast kernels whose prefill products read no
value back to the host).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reference_worker.decode_step import capture_graph
from reference_worker.device_memory import MemoryCategory, VramOOM
from reference_worker.models.kv_cache import (
    ContiguousKVCache,
    ContiguousKVCacheAllocator,
    KVCache,
    copy_prefix,
)

# Prompt lengths are padded up to the first of these; the largest is the engine's prefill chunk.
PREFILL_BUCKETS = (16, 32, 64, 128, 256, 512)


def bucket_for(n_tokens: int, buckets: Sequence[int] = PREFILL_BUCKETS) -> int | None:
    """The bucket a prompt of `n_tokens` is padded to, or None if it is longer than the largest."""
    return next((b for b in buckets if n_tokens <= b), None)


class _CapturedPrefill:
    """One bucket's graph: its token buffer, last-row index and the logits buffer the graph writes."""

    def __init__(self, model: Any, cache: ContiguousKVCache, bucket: int) -> None:
        device = cache.keys.device
        self.model = model
        self.cache = cache
        self.bucket = bucket
        self.tokens = torch.zeros(bucket, dtype=torch.long, device=device)
        self.last_row = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        """The padded prefill at positions 0..B-1 of the graph's cache (whatever it held before)."""
        self.cache.length = 0  # the forward writes from position 0 and advances the length by B
        return self.model.forward(self.tokens, self.cache, last_only=True, last_row=self.last_row)[0]

    def capture(self, pool: Any, side: Any) -> None:
        # Into the pool the model's prefill graphs share, warmed up on one side stream for every bucket
        # (cuBLAS keeps a workspace per stream it has run on). thread_local: the worker's other threads
        # (the residency check's CUDA queries) may run during the capture without invalidating it; this
        # thread's own host reads still fail it.
        self.graph, self.logits = capture_graph(
            self.forward, self.tokens.device, side=side, pool=pool, capture_error_mode="thread_local"
        )


def on_cuda(tensor: torch.Tensor) -> bool:
    """Whether `tensor` lives where graphs are captured (a CUDA device)."""
    return tensor.is_cuda


class PrefillGraphs:
    """The captured prefills of one model, one per bucket, captured at the first prompt of the bucket."""

    def __init__(self, model: Any, buckets: Sequence[int] = PREFILL_BUCKETS) -> None:
        self.model = model
        self.buckets = tuple(sorted(b for b in buckets if b <= model.config.context_length))
        allocator = getattr(model, "kv_allocator", None)
        self._allocator = (
            ContiguousKVCacheAllocator(allocator.layout, allocator.memory, MemoryCategory.SCRATCH.value)
            if isinstance(allocator, ContiguousKVCacheAllocator)
            else None
        )
        self._cache: ContiguousKVCache | None = None
        # No bucket within the context, KV caches that are not contiguous, or a graph cache the device
        # could not hold: every prefill is eager.
        self._unavailable = not self.buckets or self._allocator is None
        self._graphs: dict[int, _CapturedPrefill] = {}
        self._pool: Any = None
        self._side: Any = None  # the stream captures warm up on
        self.captures = 0
        self.failure: str | None = None  # why a capture failed (then every prefill is eager)

    def serves(self, n_tokens: int, cache: KVCache) -> bool:
        """Whether a prompt of `n_tokens` into the empty request cache `cache` is prefilled by a graph."""
        bucket = bucket_for(n_tokens, self.buckets)
        return (
            bucket is not None
            and not self._unavailable
            and isinstance(cache, ContiguousKVCache)
            and on_cuda(cache.keys)
            and cache.length == 0
        )

    def prefill(self, prompt_ids: Sequence[int], cache: KVCache) -> torch.Tensor | None:
        """The logits `[vocab]` after the prompt, its positions written into `cache`; None when no graph
        serves it (`serves`, or the graph cache did not fit): the caller prefills eagerly."""
        n_tokens = len(prompt_ids)
        if not self.serves(n_tokens, cache):
            return None
        vocab = self.model.config.vocab_size
        if min(prompt_ids) < 0 or max(prompt_ids) >= vocab:  # the graph reads the ids unchecked
            raise ValueError(f"token id out of range 0..{vocab - 1} in the prompt")
        graph_cache = self._graph_cache()
        if graph_cache is None:
            return None
        bucket = bucket_for(n_tokens, self.buckets)
        step = self._graphs.get(bucket)
        if step is None:
            step = self._graphs[bucket] = _CapturedPrefill(self.model, graph_cache, bucket)
        padded = list(prompt_ids) + [prompt_ids[-1]] * (bucket - n_tokens)
        step.tokens.copy_(torch.tensor(padded, dtype=torch.long), non_blocking=False)
        step.last_row.fill_(n_tokens - 1)
        if step.graph is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
                self._side = torch.cuda.Stream(device=step.tokens.device)
            try:
                step.capture(self._pool, self._side)
            except RuntimeError as e:  # an op that syncs with the host: this model prefills eagerly
                self.failure = f"{type(e).__name__}: {e}".splitlines()[0]
                self._unavailable = True
                del self._graphs[bucket]
                return None
            self.captures += 1
        step.graph.replay()
        copy_prefix(graph_cache, cache, n_tokens)
        return step.logits.clone()  # the graph's buffer: the next prefill of the bucket overwrites it

    def _graph_cache(self) -> ContiguousKVCache | None:
        if self._cache is None and not self._unavailable:
            try:
                self._cache = self._allocator.new_cache(self.buckets[-1])
            except VramOOM:
                self._unavailable = True
        return self._cache
