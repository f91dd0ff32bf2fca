"""The KV cache and attention seams: every implementation gives the same numbers (M0 clean seams)."""

from __future__ import annotations

import pytest
import torch

from reference_worker.device_memory import DeviceMemory, VramOOM
from reference_worker.models.attention import ReferenceAttention, SdpaAttention
from reference_worker.models.kv_cache import (
    ContiguousKVCacheAllocator,
    KVLayout,
    PagedKVCacheAllocator,
)
from tests.worker.llama_helpers import load_model

LAYOUT = KVLayout(n_layer=2, n_head_kv=2, head_dim=8)


def naive_attention(q, k, v, start_pos, scale, window=None, sinks=None):
    """Float64 loops over heads and queries: the obviously-correct definition."""
    n_head, n_query, _ = q.shape
    group = n_head // k.shape[0]
    out = torch.zeros(n_head, n_query, v.shape[-1], dtype=torch.float64)
    for h in range(n_head):
        for i in range(n_query):
            pos = start_pos + i
            keys = [j for j in range(pos + 1) if window is None or j > pos - window]
            s = torch.stack([(q[h, i].double() @ k[h // group, j].double()) * scale for j in keys])
            if sinks is not None:
                s = torch.cat([s, sinks[h].double().view(1)])
            p = torch.softmax(s, 0)[: len(keys)]
            out[h, i] = sum(p[n] * v[h // group, j].double() for n, j in enumerate(keys))
    return out


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("with_sinks", [False, True])
@pytest.mark.parametrize("start_pos,n_query", [(0, 6), (5, 1), (4, 3)])
def test_attention_kernels_agree(window, with_sinks, start_pos, n_query):
    g = torch.Generator().manual_seed(start_pos * 10 + n_query)
    n_key = start_pos + n_query
    q = torch.randn(4, n_query, 8, generator=g)
    k = torch.randn(2, n_key, 8, generator=g)  # grouped-query: 2 query heads per KV head
    v = torch.randn(2, n_key, 8, generator=g)
    sinks = torch.randn(4, generator=g) if with_sinks else None
    args = dict(start_pos=start_pos, scale=8**-0.5, sliding_window=window, sinks=sinks)
    ref = ReferenceAttention()(q, k, v, **args)
    sdpa = SdpaAttention()(q, k, v, **args)
    expected = naive_attention(q, k, v, start_pos, 8**-0.5, window, sinks)
    torch.testing.assert_close(ref.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(sdpa, ref, atol=1e-5, rtol=0)


def fill(cache, steps: list[int], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Writes `steps` chunks of positions to every layer; returns what layer 1 sees after each chunk."""
    g = torch.Generator().manual_seed(seed)
    seen = []
    for n in steps:
        for layer in range(LAYOUT.n_layer):
            k = torch.randn(LAYOUT.n_head_kv, n, LAYOUT.head_dim, generator=g)
            v = torch.randn(LAYOUT.n_head_kv, n, LAYOUT.head_dim, generator=g)
            keys, values = cache.update(layer, k, v)
        seen.append((keys.clone(), values.clone()))
        cache.advance(n)
    return seen


def test_paged_and_contiguous_caches_hold_the_same_values():
    memory = DeviceMemory("cpu")
    contiguous = ContiguousKVCacheAllocator(LAYOUT, memory).new_cache(40)
    pool = PagedKVCacheAllocator(LAYOUT, memory, num_blocks=8, block_size=4)
    pool.new_cache(4).free()  # the request's blocks then do not start at block 0
    other = pool.new_cache(6)  # a request holding blocks in between
    paged = pool.new_cache(21)
    steps = [7, 1, 1, 5, 1]
    for (k1, v1), (k2, v2) in zip(fill(contiguous, steps), fill(paged, steps), strict=True):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert paged.blocks == [3, 4, 5, 6, 7, 0]  # not contiguous, not in order
    other.free()


def test_cache_refuses_positions_beyond_its_capacity():
    cache = ContiguousKVCacheAllocator(LAYOUT, DeviceMemory("cpu")).new_cache(4)
    fill(cache, [3])
    with pytest.raises(ValueError, match="holds 4 positions"):
        fill(cache, [2])


def test_contiguous_cache_is_accounted_and_released():
    memory = DeviceMemory("cpu")
    cache = ContiguousKVCacheAllocator(LAYOUT, memory).new_cache(10)
    assert memory.by_category["kv_cache"] == 10 * LAYOUT.bytes_per_position()
    cache.free()
    cache.free()
    assert memory.by_category["kv_cache"] == 0


def test_contiguous_cache_over_budget_raises_vram_oom_and_leaks_nothing():
    memory = DeviceMemory("cpu", budget_bytes=15 * LAYOUT.bytes_per_position())
    with pytest.raises(VramOOM):
        ContiguousKVCacheAllocator(LAYOUT, memory).new_cache(16)  # keys fit, values do not
    assert memory.used_bytes == 0
    ContiguousKVCacheAllocator(LAYOUT, memory).new_cache(15).free()


def test_paged_pool_exhaustion_raises_vram_oom_and_blocks_come_back():
    pool = PagedKVCacheAllocator(LAYOUT, DeviceMemory("cpu"), num_blocks=4, block_size=4)
    a = pool.new_cache(9)  # 3 blocks
    with pytest.raises(VramOOM):
        pool.new_cache(5)
    a.free()
    assert pool.free_blocks == 4
    pool.new_cache(16).free()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
def test_model_logits_identical_across_allocators_and_kernels(arch):
    ids = torch.tensor([5, 17, 200, 33, 1, 99, 150, 7, 64, 300])
    results = []
    for attention, kv_cache in [("reference", "contiguous"), ("reference", "paged"), ("sdpa", "paged")]:
        model, _, _ = load_model(f"tiny/{arch}-f32.gguf", attention=attention, kv_cache=kv_cache)
        cache = model.new_cache(12)
        prefill = model.forward(ids[:7], cache)
        steps = [model.forward(ids[i : i + 1], cache) for i in range(7, 10)]
        results.append(torch.cat([prefill, *steps]))
        cache.free()
    torch.testing.assert_close(results[1], results[0], atol=0, rtol=0)
    torch.testing.assert_close(results[2], results[0], atol=1e-5, rtol=1e-5)
