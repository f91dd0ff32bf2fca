"""Fused kernels for the one-token decode step on CUDA (Triton): fewer, larger launches per layer.

Each replaces a chain of small PyTorch ops of the reference models (`reference_worker/models`), computes
the same function in float32, and is tested against that chain (`tests/kernels/test_triton_decode.py`):
- `rms_norm`: x / sqrt(mean(x^2) + eps) * w, one program per row (5 launches -> 1).
- `rope_store`: RoPE of q and k at the device position (neox or adjacent pairs, partial rotary), k and v
  written into the KV cache at that position, rotated q returned (about 25 launches -> 1).
- `decode_attention`: one query position against cache positions 0..pos (or the sliding window), grouped
  heads, optional per-head sink logit, online softmax in one pass (about 12 launches -> 1). The position
  is read on the device, so the launch is the same every step (CUDA graphs).
- `rope_attention`: `rope_store` and `decode_attention` in one launch (one program per KV head rotates its
  query heads and key, stores key and value, and attends), for the step's one launch per layer.
- `silu_mul` and `swiglu_oai`: the feed-forward activations (2 and 7 launches -> 1), reading gate and up
  in place from the one buffer of a multi-weight GEMV (row strides, no copy).
- `moe_route`: a MoE router's top-k and the softmax over the selected logits (top-k, softmax -> 1);
  `moe_router`: the router's float32 product and `moe_route` in one launch (2 -> 1, off until timed);
  `moe_combine`: the residual plus the routing-weighted sum of the expert outputs (3 launches -> 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels import cluster_launch, dependent_launch, triton_cluster
from kernels.formats import GGMLType
from kernels.qmatmul import RMSNormed
from kernels.qtensor import GGML, QTensor
from kernels.triton_cluster import (
    cluster_array,
    cluster_handed_over,
    cluster_started,
    shared_f32,
    store_to_rank0,
)
from kernels.triton_common import await_previous_grid, rms_over, routed_sum
from kernels.triton_gemv import SplitCounters

# ---------------------------------------------------------------------------------------------------
# RMSNorm


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, y_ptr, n, eps, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    await_previous_grid(PDL)
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32)
    ms = tl.sum(x * x, axis=0) / n
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    tl.store(y_ptr + row * n + cols, x * (1.0 / tl.sqrt(ms + eps)) * w, mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """float32 `[T, n]` -> `[T, n]`, as `reference_worker.models.llama.rms_norm`."""
    x = x.contiguous()
    n = x.shape[-1]
    y = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    rows = x.numel() // n
    _rms_norm_kernel[(rows,)](
        x, weight, y, n, eps, BLOCK=triton.next_power_of_2(n), num_warps=4, **dependent_launch.launch_kwargs()
    )
    return y


# ---------------------------------------------------------------------------------------------------
# RoPE + KV store


@triton.jit
def _rope_pairs(d, ROPE_HALF: tl.constexpr, NEOX: tl.constexpr):
    """For element `d` of a head: the partner in its rotation pair, the pair's angle index, whether `d` is
    the pair's first element, and whether `d` is rotated at all (partial rotary leaves the tail)."""
    if NEOX:  # pairs (i, i + half)
        pair = tl.where(d < ROPE_HALF, d + ROPE_HALF, d - ROPE_HALF)
        idx = tl.where(d < ROPE_HALF, d, d - ROPE_HALF)
        first = d < ROPE_HALF
    else:  # pairs (2i, 2i + 1)
        pair = d ^ 1
        idx = d // 2
        first = (d % 2) == 0
    return pair, idx, first, d < 2 * ROPE_HALF


@triton.jit
def _rotate(x, partner, c, s, first, rotated):
    """(x1, x2) -> (x1 c - x2 s, x1 s + x2 c): the first of a pair takes -partner*s, the second +partner*s."""
    return tl.where(rotated, tl.where(first, x * c - partner * s, partner * s + x * c), x)


@triton.jit
def _rope_store_kernel(
    q_ptr,  # [n_head * d] float32 (one position)
    k_ptr,  # [n_kv * d]
    v_ptr,  # [n_kv * d]
    q_out_ptr,  # [n_head * d]
    keys_ptr,  # [n_kv, capacity, d] of this layer
    values_ptr,
    cos_ptr,  # [max_positions, rope_dim / 2]
    sin_ptr,
    pos_ptr,  # [1] long
    n_head,
    capacity,
    D: tl.constexpr,
    ROPE_HALF: tl.constexpr,
    NEOX: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PDL: tl.constexpr = False,
):
    await_previous_grid(PDL)
    head = tl.program_id(0)  # 0..n_head-1: query heads; n_head..: kv heads
    pos = tl.load(pos_ptr).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    in_head = d < D
    is_q = head < n_head
    kv = head - n_head
    # A query head reads q, a kv head reads k: two masked loads, one of them empty.
    q_src = q_ptr + head * D
    k_src = k_ptr + kv * D
    x = tl.load(q_src + d, mask=in_head & is_q, other=0.0) + tl.load(
        k_src + d, mask=in_head & ~is_q, other=0.0
    )
    pair, idx, first, rotated = _rope_pairs(d, ROPE_HALF, NEOX)
    partner = tl.load(q_src + pair, mask=in_head & rotated & is_q, other=0.0) + tl.load(
        k_src + pair, mask=in_head & rotated & ~is_q, other=0.0
    )
    c = tl.load(cos_ptr + pos * ROPE_HALF + idx, mask=rotated, other=1.0)
    s = tl.load(sin_ptr + pos * ROPE_HALF + idx, mask=rotated, other=0.0)
    out = _rotate(x, partner, c, s, first, rotated)
    if is_q:
        tl.store(q_out_ptr + head * D + d, out, mask=in_head)
    else:
        slot = (kv * capacity + pos) * D
        tl.store(keys_ptr + slot + d, out, mask=in_head)
        v = tl.load(v_ptr + kv * D + d, mask=in_head, other=0.0)
        tl.store(values_ptr + slot + d, v, mask=in_head)


def rope_store(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position: torch.Tensor,
    neox: bool,
) -> torch.Tensor:
    """One position: q `[n_head*d]`, k, v `[n_kv*d]` (float32) -> rotated q `[n_head, d]`; rotated k and v
    are stored at `position` in `keys`/`values` `[n_kv, capacity, d]` (float32). As `apply_rope` on q and k
    followed by `ContiguousKVCache.write_at`."""
    n_kv, capacity, d = keys.shape
    n_head = q.numel() // d
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    q_out = torch.empty(n_head, d, dtype=torch.float32, device=q.device)
    _rope_store_kernel[(n_head + n_kv,)](
        q, k, v, q_out, keys, values, cos, sin, position, n_head, capacity,
        D=d, ROPE_HALF=cos.shape[-1], NEOX=neox, BLOCK_D=triton.next_power_of_2(d), num_warps=1,
        **dependent_launch.launch_kwargs(),
    )  # fmt: skip
    return q_out


# ---------------------------------------------------------------------------------------------------
# Decode attention


@triton.jit
def _decode_attention_kernel(
    q_ptr,  # [n_head, D] float32
    keys_ptr,  # [n_kv, capacity, D]
    values_ptr,
    sinks_ptr,  # [n_head] or a dummy
    out_ptr,  # [n_head, D]
    pos_ptr,
    capacity,
    scale,
    window,  # keys pos-window+1..pos are seen
    GROUP: tl.constexpr,
    BLOCK_G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    HAS_SINKS: tl.constexpr,
    WHOLE_CACHE: tl.constexpr,  # loop bound: the capacity (host-known) instead of the device position
    CAPACITY: tl.constexpr,  # only with WHOLE_CACHE (else 0, so the compiled kernel is shared)
    PDL: tl.constexpr = False,
):
    await_previous_grid(PDL)
    kv = tl.program_id(0)
    pos = tl.load(pos_ptr).to(tl.int32)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    g_ok = g < GROUP
    d_ok = d < D
    heads = kv * GROUP + g
    q = tl.load(q_ptr + heads[:, None] * D + d[None, :], mask=g_ok[:, None] & d_ok[None, :], other=0.0)
    q = q * scale
    if HAS_SINKS:
        m = tl.load(sinks_ptr + heads, mask=g_ok, other=0.0)  # the sink is one more logit: exp(0) = 1
        l_sum = tl.full([BLOCK_G], 1.0, tl.float32)
    else:
        m = tl.full([BLOCK_G], -1e30, tl.float32)  # finite: a fully masked block then adds exp(-inf) = 0
        l_sum = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    lo = pos - window + 1  # no window: the host passes one longer than the cache
    base = kv.to(tl.int64) * capacity * D
    # All blocks up to pos; those before the window are masked (a window start rounded down to a block
    # would skip them, the next step for long contexts together with a split over the positions).
    if WHOLE_CACHE:
        end = CAPACITY
    else:
        end = pos + 1
    for s0 in range(0, end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        s_ok = (s <= pos) & (s >= lo)
        kv_off = base + s[:, None].to(tl.int64) * D + d[None, :]
        kv_mask = s_ok[:, None] & d_ok[None, :]
        k = tl.load(keys_ptr + kv_off, mask=kv_mask, other=0.0)  # [S, D]
        scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # [G, S]
        scores = tl.where(s_ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        v = tl.load(values_ptr + kv_off, mask=kv_mask, other=0.0)  # [S, D]
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m = m_new
    out = acc / l_sum[:, None]
    tl.store(out_ptr + heads[:, None] * D + d[None, :], out, mask=g_ok[:, None] & d_ok[None, :])


def decode_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    position: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    sinks: torch.Tensor | None = None,
    *,
    whole_cache: bool = False,
) -> torch.Tensor:
    """q `[n_head, d]` at `position` against cache positions 0..position (the last `sliding_window` of
    them) of `keys`/`values` `[n_kv, capacity, d]` -> `[n_head * d]` float32. Head h reads KV head
    h // (n_head // n_kv); `sinks[h]` is an extra logit of head h that carries no value. `whole_cache`
    loops over every cache block (masked past the position): same result, for Triton's CPU interpreter,
    which cannot take a loop bound read from memory."""
    n_head, d = q.shape
    n_kv, capacity, _ = keys.shape
    group = n_head // n_kv
    out = torch.empty(n_head, d, dtype=torch.float32, device=q.device)
    block_g = max(triton.next_power_of_2(group), 1)
    block_s = max(16, min(64, 4096 // (block_g * triton.next_power_of_2(d)) * 4))
    _decode_attention_kernel[(n_kv,)](
        q.contiguous(), keys, values, sinks if sinks is not None else q, out, position, capacity, scale,
        sliding_window or capacity + 1, GROUP=group, BLOCK_G=block_g, D=d, BLOCK_D=triton.next_power_of_2(d),
        BLOCK_S=block_s, HAS_SINKS=sinks is not None, WHOLE_CACHE=whole_cache,
        CAPACITY=capacity if whole_cache else 0, num_warps=4, **dependent_launch.launch_kwargs(),
    )  # fmt: skip
    return out.view(-1)


# ---------------------------------------------------------------------------------------------------
# RoPE + KV store + decode attention in one launch


@triton.jit
def _position_span(pos, lo, split, n_split, BLOCK_S: tl.constexpr):
    """[start, end): the cached positions split `split` of `n_split` reads in the step at `pos` when the
    splits share the positions the step reads (`rope_attention(by_position=True)`): those of the window,
    [max(lo, 0), pos), from the block boundary at or below its first, in runs of whole blocks of BLOCK_S
    as equal as blocks allow; the splits past the last run read none (end <= start). Read from the
    position on the device, so a captured graph's fixed grid follows the context as it grows."""
    first = tl.maximum(lo, 0) // BLOCK_S * BLOCK_S
    run = tl.cdiv(tl.cdiv(pos - first, n_split), BLOCK_S) * BLOCK_S
    start = first + split * run
    return start, tl.minimum(start + run, pos)


@triton.jit
def _rope_attention_kernel(
    q_ptr,  # [n_head * D] float32, unrotated
    k_ptr,  # [n_kv * D], unrotated
    v_ptr,  # [n_kv * D]
    keys_ptr,  # [n_kv, capacity, D]
    values_ptr,
    cos_ptr,  # [max_positions, ROPE_HALF]
    sin_ptr,
    sinks_ptr,  # [n_head] or a dummy
    out_ptr,  # [n_head, D]
    pos_ptr,
    capacity,
    scale,
    window,
    chunk,  # cache positions each split reads (a multiple of BLOCK_S; the capacity without a split)
    part_ptr,  # SPLIT: [n_kv, n_split, BLOCK_G, BLOCK_D] each split's unnormalised output
    stat_ptr,  # SPLIT: [n_kv, n_split, 2, BLOCK_G] each split's running max and denominator
    count_ptr,  # SPLIT: one arrival counter per KV head, zero between launches
    GROUP: tl.constexpr,
    BLOCK_G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    ROPE_HALF: tl.constexpr,
    NEOX: tl.constexpr,
    HAS_SINKS: tl.constexpr,
    WHOLE_CACHE: tl.constexpr,
    CAPACITY: tl.constexpr,
    SPLIT: tl.constexpr = False,
    PDL: tl.constexpr = False,
    DOT: tl.constexpr = False,  # the block's scores and values as dot products (`AttentionTile.dot`)
    BY_POSITION: tl.constexpr = False,  # the splits share the positions the step reads (`_position_span`)
    UNROLLED_SPLITS: tl.constexpr = 0,  # > 0: the merge's loops unrolled over this many splits (the grid's)
    HEAD_SPLIT: tl.constexpr = 1,  # programs sharing a KV head's query heads, BLOCK_G each (axis 2)
    CLUSTER: tl.constexpr = 0,  # > 0: a KV head's CLUSTER splits as one thread-block cluster (axis 0)
):
    await_previous_grid(PDL)
    # One program per KV head and split of the cache positions: rotate its query heads and its key at
    # the position (the same products as `_rope_store_kernel`); split 0 stores the key and value into
    # the cache and takes the new position's score (and the sinks) from registers; every split runs the
    # `_decode_attention_kernel` loop over its own positions before the new one. No loop reads the slot
    # split 0 writes, so no barrier is needed between them. With SPLIT, each split stores its softmax
    # state and the last to arrive merges them in split order (deterministic, as the GEMV's split-K).
    # With HEAD_SPLIT > 1, program axis 2 takes the KV head's query heads BLOCK_G at a time: each such
    # program runs the whole step for its heads (its own split states and arrival counter); the first
    # stores the key and value. With CLUSTER (`kernels.cluster_launch`), a KV head's splits are one cluster
    # of consecutive programs along axis 0 that hand their states to split 0's shared memory, which merges
    # them in split order (the same sums: the counters' bits) without the states' round trips through L2.
    if CLUSTER:
        kv = tl.program_id(0) // CLUSTER
        split = tl.program_id(0) % CLUSTER
        n_split = CLUSTER
        states_at = cluster_array(CLUSTER * (BLOCK_G * BLOCK_D + 2 * BLOCK_G))
    else:
        kv = tl.program_id(0)
        split = tl.program_id(1)
        n_split = tl.num_programs(1)
    head_group = tl.program_id(2) if HEAD_SPLIT > 1 else 0
    pos = tl.load(pos_ptr).to(tl.int32)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    in_group = head_group * BLOCK_G + g
    g_ok = in_group < GROUP
    d_ok = d < D
    heads = kv * GROUP + in_group
    pair, idx, first, rotated = _rope_pairs(d, ROPE_HALF, NEOX)
    c = tl.load(cos_ptr + pos.to(tl.int64) * ROPE_HALF + idx, mask=rotated, other=1.0)
    s = tl.load(sin_ptr + pos.to(tl.int64) * ROPE_HALF + idx, mask=rotated, other=0.0)
    q_mask = g_ok[:, None] & d_ok[None, :]
    q_rows = q_ptr + heads[:, None] * D
    qx = tl.load(q_rows + d[None, :], mask=q_mask, other=0.0)
    qp = tl.load(q_rows + pair[None, :], mask=q_mask & rotated[None, :], other=0.0)
    q = _rotate(qx, qp, c[None, :], s[None, :], first[None, :], rotated[None, :])
    kx = tl.load(k_ptr + kv * D + d, mask=d_ok, other=0.0)
    kp = tl.load(k_ptr + kv * D + pair, mask=d_ok & rotated, other=0.0)
    k_new = _rotate(kx, kp, c, s, first, rotated)
    v_new = tl.load(v_ptr + kv * D + d, mask=d_ok, other=0.0)
    base = kv.to(tl.int64) * capacity * D
    if split == 0 and head_group == 0:
        tl.store(keys_ptr + base + pos.to(tl.int64) * D + d, k_new, mask=d_ok)
        tl.store(values_ptr + base + pos.to(tl.int64) * D + d, v_new, mask=d_ok)
    q = q * scale
    # Split 0: the new position first (always inside the window) and the sinks; every split then its
    # cached positions in blocks. Other splits start empty (a finite max: exp(-1e30 - m) is 0).
    score = tl.sum(q * k_new[None, :], axis=1)  # [G]
    if HAS_SINKS:
        sink = tl.load(sinks_ptr + heads, mask=g_ok, other=0.0)
        m = tl.maximum(sink, score)
        l_sum = tl.exp(sink - m)
    else:
        m = score
        l_sum = tl.zeros([BLOCK_G], tl.float32)
    p_new = tl.exp(score - m)
    l_sum += p_new
    acc = p_new[:, None] * v_new[None, :]
    if split != 0:
        m = tl.full([BLOCK_G], -1e30, tl.float32)
        l_sum = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    lo = pos - window + 1
    if BY_POSITION:
        start, end = _position_span(pos, lo, split, n_split, BLOCK_S)
    else:
        start = split * chunk
        if WHOLE_CACHE:
            end = tl.minimum(start + chunk, CAPACITY)
        else:
            end = tl.minimum(start + chunk, pos)
    for s0 in range(start, end, BLOCK_S):
        sp = s0 + tl.arange(0, BLOCK_S)
        s_ok = (sp < pos) & (sp >= lo)
        kv_off = base + sp[:, None].to(tl.int64) * D + d[None, :]
        kv_mask = s_ok[:, None] & d_ok[None, :]
        k = tl.load(keys_ptr + kv_off, mask=kv_mask, other=0.0)
        if DOT:  # [BLOCK_G >= 16, D] x [D, BLOCK_S]: outer-product FMAs in float32, no cross-thread sums
            scores = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2)
        scores = tl.where(s_ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        v = tl.load(values_ptr + kv_off, mask=kv_mask, other=0.0)
        if DOT:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m = m_new
    if not SPLIT:
        tl.store(out_ptr + heads[:, None] * D + d[None, :], acc / l_sum[:, None], mask=q_mask)
        return
    if CLUSTER:
        _merge_in_cluster(
            states_at, split, acc, m, l_sum, out_ptr + heads[:, None] * D + d[None, :], q_mask, g, d,
            BLOCK_G, BLOCK_D, CLUSTER,
        )  # fmt: skip
        return
    # Store this split's state; the last split to arrive merges all of them in split order, then
    # resets the counter for the next launch (`.cg` loads skip L1, which may hold stale lines).
    states = kv * HEAD_SPLIT + head_group  # this program's heads' split states and arrival counter
    slot = (states * n_split + split).to(tl.int64)
    tl.store(part_ptr + (slot * BLOCK_G + g[:, None]) * BLOCK_D + d[None, :], acc)
    tl.store(stat_ptr + slot * 2 * BLOCK_G + g, m)
    tl.store(stat_ptr + slot * 2 * BLOCK_G + BLOCK_G + g, l_sum)
    tl.debug_barrier()
    arrived = tl.atomic_add(count_ptr + states, 1, sem="acq_rel")
    if arrived == n_split - 1:
        first_slot = (states * n_split).to(tl.int64)
        if UNROLLED_SPLITS:
            # The same sums in the same order, the loops unrolled: no load waits on the previous split's.
            l_all, acc_all = _merge_unrolled(
                part_ptr, stat_ptr, first_slot, g, d, BLOCK_G, BLOCK_D, UNROLLED_SPLITS
            )
        else:
            m_all = tl.full([BLOCK_G], -1e30, tl.float32)
            for i in range(0, n_split):
                m_all = tl.maximum(m_all, _split_max(stat_ptr, first_slot + i, g, BLOCK_G))
            l_all = tl.zeros([BLOCK_G], tl.float32)
            acc_all = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
            for i in range(0, n_split):
                w, l_i, part = _split_state(part_ptr, stat_ptr, first_slot + i, m_all, g, d, BLOCK_G, BLOCK_D)
                l_all += l_i * w
                acc_all += part * w[:, None]
        tl.store(out_ptr + heads[:, None] * D + d[None, :], acc_all / l_all[:, None], mask=q_mask)
        # relaxed: only a later launch reads the counter again, after this one (the kernel
        # boundary or dependent launch's wait orders it); acq_rel fenced the last program's tail.
        tl.atomic_xchg(count_ptr + states, 0, sem="relaxed")


@triton.jit
def _merge_in_cluster(
    states_at, split, acc, m, l_sum, out, q_mask, g, d, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
    N: tl.constexpr,
):  # fmt: skip
    """The CLUSTER form's merge: splits 1.. store their state (unnormalised output, running max,
    denominator) into split 0's shared array (`kernels.triton_cluster`), slot s at STATE words a slot; split 0
    merges its own (in registers) and theirs in split order, as `_merge_unrolled` does from L2: the same
    values, the same sums, the same bits."""
    STATE: tl.constexpr = BLOCK_G * BLOCK_D + 2 * BLOCK_G
    slot = states_at + split * (STATE * 4)
    cluster_started()
    if split != 0:
        store_to_rank0(slot + (g[:, None] * BLOCK_D + d[None, :]) * 4, acc)
        store_to_rank0(slot + (BLOCK_G * BLOCK_D + g) * 4, m)
        store_to_rank0(slot + (BLOCK_G * BLOCK_D + BLOCK_G + g) * 4, l_sum)
    cluster_handed_over()
    if split == 0:
        m_all = tl.maximum(tl.full([BLOCK_G], -1e30, tl.float32), m)
        for i in tl.static_range(1, N):
            m_all = tl.maximum(m_all, shared_f32(states_at + (i * STATE + BLOCK_G * BLOCK_D + g) * 4))
        w = tl.exp(m - m_all)
        l_all = tl.zeros([BLOCK_G], tl.float32)
        acc_all = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        l_all += l_sum * w
        acc_all += acc * w[:, None]
        for i in tl.static_range(1, N):
            at = states_at + i * (STATE * 4)
            w = tl.exp(shared_f32(at + (BLOCK_G * BLOCK_D + g) * 4) - m_all)
            l_i = shared_f32(at + (BLOCK_G * BLOCK_D + BLOCK_G + g) * 4)
            part = shared_f32(at + (g[:, None] * BLOCK_D + d[None, :]) * 4)
            l_all += l_i * w
            acc_all += part * w[:, None]
        tl.store(out, acc_all / l_all[:, None], mask=q_mask)


@triton.jit
def _split_max(stat_ptr, slot, g, BLOCK_G: tl.constexpr):
    """A split's running max at `slot` (`.cg` loads skip L1, which may hold stale lines)."""
    return tl.load(stat_ptr + slot * 2 * BLOCK_G + g, cache_modifier=".cg")


@triton.jit
def _split_state(part_ptr, stat_ptr, slot, m_all, g, d, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr):
    """A split's share of the merge at `slot`: its weight exp(m - m_all), its denominator and its
    unnormalised output."""
    stats = stat_ptr + slot * 2 * BLOCK_G
    w = tl.exp(tl.load(stats + g, cache_modifier=".cg") - m_all)
    l_i = tl.load(stats + BLOCK_G + g, cache_modifier=".cg")
    part = tl.load(part_ptr + (slot * BLOCK_G + g[:, None]) * BLOCK_D + d[None, :], cache_modifier=".cg")
    return w, l_i, part


@triton.jit
def _merge_unrolled(
    part_ptr, stat_ptr, first_slot, g, d, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, N: tl.constexpr
):
    """The merge of N split states from `first_slot` (denominator, unnormalised output): the runtime loops'
    sums in the same order, bit for bit, unrolled so the splits' loads can be in flight together instead
    of one L2 round trip a split."""
    m_all = tl.full([BLOCK_G], -1e30, tl.float32)
    for i in tl.static_range(N):
        m_all = tl.maximum(m_all, _split_max(stat_ptr, first_slot + i, g, BLOCK_G))
    l_all = tl.zeros([BLOCK_G], tl.float32)
    acc_all = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for i in tl.static_range(N):
        w, l_i, part = _split_state(part_ptr, stat_ptr, first_slot + i, m_all, g, d, BLOCK_G, BLOCK_D)
        l_all += l_i * w
        acc_all += part * w[:, None]
    return l_all, acc_all


# Programs per KV head reading a decode step's cache positions (`rope_attention`): enough that a long
# context is spread over the SMs (Qwen2.5 has 2 KV heads), few enough that merging stays one short loop.
MAX_ATTENTION_SPLITS = 16


@dataclass(frozen=True)
class AttentionTile:
    """How `rope_attention`'s programs walk the cache: query heads of a KV head padded to `block_g`,
    `block_s` positions a step, and `dot`: the step's scores and weighted values as `tl.dot` products
    (query heads padded to 16 rows, float32 FMAs in Triton's outer-product layout) instead of broadcast
    products summed across threads."""

    block_g: int
    block_s: int
    dot: bool = False
    head_split: int = 1  # programs sharing a KV head's query heads (`attention_tile(heads_apart=True)`)


def attention_tile(
    group: int, block_d: int, *, retiled: bool = False, heads_apart: bool = False
) -> AttentionTile:
    """The tile for `group` query heads per KV head and head dims padded to `block_d`.

    Default: the broadcast products, up to 64 positions a step. `retiled` (off: timed slower in GPT-OSS's step): grouped
    heads (2 or more per KV head; Qwen2.5 7, GPT-OSS 8) take the dot products at 32 positions: a third of
    the broadcast loop's instructions at 7-8 heads and none of its 692 shuffles a step, at 2 heads as
    many instructions but 3 barriers instead of 18 (sm_90, `benchmarks/results/
    2026-12-05-gemv-loop-round-trips.md`); one head per KV head (Phi-3) keeps the broadcast products,
    which pad nothing, at 32 positions, where 64 spilled registers at 128 head dims.
    `heads_apart` (`chosen_tile` takes it from `HEADS_APART_MIN_GROUP` heads a KV head): grouped heads two a
    program (`head_split` programs a KV head, each reading the KV head's positions for its two, as many a
    step as the default tile), so a program's loop step is about a third of the broadcast one's at 7-8 heads,
    in four times the programs."""
    if heads_apart and group >= 4:  # the default tile's positions a step: the same splits
        block_s = attention_tile(group, block_d).block_s
        return AttentionTile(2, block_s, head_split=triton.cdiv(group, 2))
    block_g = max(triton.next_power_of_2(group), 1)
    if retiled and group >= 2:
        return AttentionTile(max(16, block_g), 32, dot=True)
    block_s = max(16, min(64, 4096 // (block_g * block_d) * 4))
    if retiled:
        block_s = min(block_s, 32)
    return AttentionTile(block_g, block_s)


# `rope_attention`'s tiles by query heads a KV head (its defaults), as timed in the decode step on an H200
# (2026-12-07, `benchmarks.step_ab`): one head a KV head re-tiled (Phi-3 +2.2 %); grouped heads two a
# program from 7 a KV head (GPT-OSS's 8 +3.4 %; Qwen2.5's 7 +8.6 % on an H100). Groups of 2 to 6 were not
# timed, so they keep the broadcast tile.
RETILED_GROUPS = (1,)
HEADS_APART_MIN_GROUP = 7


def chosen_tile(
    group: int, block_d: int, *, retiled: bool | None = None, heads_apart: bool | None = None
) -> AttentionTile:
    """`rope_attention`'s tile: `attention_tile`'s with `retiled` and `heads_apart` as asked, each None taken
    by the group (`RETILED_GROUPS`, `HEADS_APART_MIN_GROUP`)."""
    if retiled is None:
        retiled = group in RETILED_GROUPS and not heads_apart
    if heads_apart is None:
        heads_apart = group >= HEADS_APART_MIN_GROUP and not retiled
    if heads_apart and retiled:
        raise ValueError("rope_attention: heads_apart is a broadcast tile; retiled is the dot one")
    return attention_tile(group, block_d, retiled=retiled, heads_apart=heads_apart)


def attention_splits(capacity: int, block_s: int, max_splits: int) -> tuple[int, int]:
    """(positions per split, splits) for a cache of `capacity`: whole blocks of `block_s`, at most
    `max_splits` splits. Fixed by the capacity, not the position, so a captured graph keeps its grid."""
    chunk = max(block_s, triton.next_power_of_2(triton.cdiv(capacity, max(1, max_splits))))
    return chunk, triton.cdiv(capacity, chunk)


def rope_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position: torch.Tensor,
    neox: bool,
    scale: float,
    sliding_window: int | None = None,
    sinks: torch.Tensor | None = None,
    *,
    whole_cache: bool = False,
    max_splits: int = MAX_ATTENTION_SPLITS,
    retiled: bool | None = None,
    by_position: bool = False,
    unrolled_merge: bool = True,
    dot_stages: int = 3,
    heads_apart: bool | None = None,
    step_positions: int | None = None,
    clustered: bool = False,
) -> torch.Tensor:
    """`rope_store` then `decode_attention` in one launch: q `[n_head*d]`, k, v `[n_kv*d]` (float32,
    unrotated) -> `[n_head * d]` float32; rotated k and v are stored at `position` in `keys`/`values`
    `[n_kv, capacity, d]`. `whole_cache`: as in `decode_attention`. The cache positions are split
    among up to `max_splits` programs per KV head (`attention_splits`), whose softmax states the last
    of them merges: a long context is read by many SMs, a short one in one block step per program.
    `retiled`: `attention_tile`'s other tiles; None: for one query head a KV head (`RETILED_GROUPS`: Phi-3's
    32 positions a step, +2.2 % in its step on an H200, 2026-12-07), not for grouped heads (their dot
    products: alone 1.2-1.9 µs a layer faster at tg128's cache, but GPT-OSS's step −8.7 % with them on an
    H100 and −2.6 % unpipelined on an H200, `benchmarks/results/2026-12-06-h100-int8-codes-and-attention.md`).
    `by_position` (off: timed slower at tg128; alone 3-4.7x faster reading a long cache at a short context): the
    same programs share the positions this step reads (`_position_span`: the window's, in runs of whole
    blocks) instead of a fixed share of the capacity each, so a short context is not walked by split 0
    alone, nor a sliding window's masked blocks by the splits before it. `unrolled_merge` (the default
    since it was timed: Qwen2.5 +4.6 %, GPT-OSS +2.1 %, Phi-3 +0.5 % a token, the same tokens, H100): the
    last split's merge unrolled over the grid's splits, the same sums in the same order, so the splits'
    states are loaded together instead of one L2 round trip a split; False: the runtime loops.
    `dot_stages`: with the re-tiled dot products, the loop's software-pipelining depth (Triton's num_stages;
    3, its default, keeps 39 KB of cp.async buffers a program on sm_90 for grouped heads where the broadcast
    loop keeps 4 KB; 1 keeps 14 KB and loads in registers). The broadcast loop is not pipelined.
    `heads_apart`: `attention_tile`'s grouped heads two a program; None: where a KV head has at least
    `HEADS_APART_MIN_GROUP` query heads (GPT-OSS's 8: +3.4 % in its step on an H200; Qwen2.5's 7: +8.6 % on
    an H100; 2026-12-07). `step_positions`:
    the tile's positions a step instead of `attention_tile`'s (a power of two, at least 16; fewer
    positions a step also means more splits of a short cache), for `benchmarks.kernels_attention`.
    `clustered` (sm_90+, off until timed): a KV head's 2-8 splits as one thread-block cluster, handing their
    states to split 0's shared memory (`kernels.triton_cluster`), which merges them (the same sums in the
    same order as `unrolled_merge`) instead of an arrival counter and the states' round trips through L2;
    elsewhere, or with more splits or states than one CTA's static array holds, the counters."""
    if by_position and whole_cache:
        raise ValueError("rope_attention: by_position reads the position's span, whole_cache the capacity")
    n_kv, capacity, d = keys.shape
    n_head = q.numel() // d
    group = n_head // n_kv
    out = torch.empty(n_head, d, dtype=torch.float32, device=q.device)
    block_d = triton.next_power_of_2(d)
    tile = chosen_tile(group, block_d, retiled=retiled, heads_apart=heads_apart)
    if step_positions is not None:
        if step_positions < 16 or step_positions & (step_positions - 1):
            raise ValueError(f"rope_attention: step_positions {step_positions} is not a power of two >= 16")
        tile = dataclasses.replace(tile, block_s=step_positions)
    block_g, block_s, head_split = tile.block_g, tile.block_s, tile.head_split
    chunk, n_split = attention_splits(capacity, block_s, max_splits)
    cluster = n_split if clustered and _clusters_hold(n_split, block_g, block_d, q.device) else 0
    counters = SplitCounters.get(q.device, n_kv * head_split) if n_split > 1 and not cluster else None
    if counters is None and not cluster:
        chunk, n_split = capacity, 1
    merged_in_l2 = n_split > 1 and not cluster  # each split's state stored for the last to arrive
    part = out.new_empty(n_kv * head_split, n_split, block_g, block_d) if merged_in_l2 else out
    stat = out.new_empty(n_kv * head_split, n_split, 2, block_g) if merged_in_l2 else out
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    args = (
        q, k, v, keys, values, cos, sin, sinks if sinks is not None else q, out, position, capacity, scale,
        sliding_window or capacity + 1, chunk, part, stat, counters if counters is not None else out,
    )  # fmt: skip
    constants = dict(
        GROUP=group, BLOCK_G=block_g, D=d, BLOCK_D=block_d, BLOCK_S=block_s, ROPE_HALF=cos.shape[-1],
        NEOX=neox, HAS_SINKS=sinks is not None, WHOLE_CACHE=whole_cache,
        CAPACITY=capacity if whole_cache else 0, SPLIT=n_split > 1, DOT=tile.dot, BY_POSITION=by_position,
        UNROLLED_SPLITS=n_split if unrolled_merge and n_split > 1 and not cluster else 0,
        HEAD_SPLIT=head_split, num_warps=4, **({"num_stages": dot_stages} if tile.dot else {}),
    )  # fmt: skip
    if cluster:  # grid x: the KV heads, each a cluster of its splits (`cluster_launch` multiplies it)
        cluster_launch.launch(
            _rope_attention_kernel, (n_kv, 1, head_split), cluster, *args, CLUSTER=cluster, **constants,
            **dependent_launch.launch_kwargs(),
        )  # fmt: skip
    else:
        _rope_attention_kernel[(n_kv, n_split, head_split)](
            *args, **constants, **dependent_launch.launch_kwargs()
        )
    return out.view(-1)


def _clusters_hold(n_split: int, block_g: int, block_d: int, device: torch.device) -> bool:
    """Whether a KV head's `n_split` splits can merge as one cluster (`rope_attention(clustered=True)`): 2 to
    `cluster_launch.MAX_PORTABLE_SIZE` of them, their states within one CTA's static shared array, on a
    device whose launches Triton clusters."""
    words = triton_cluster.cluster_words(n_split, block_g * block_d + 2 * block_g)
    return (
        1 < n_split <= cluster_launch.MAX_PORTABLE_SIZE
        and words <= triton_cluster.MAX_STATIC_WORDS
        and cluster_launch.supported(device)
    )


# ---------------------------------------------------------------------------------------------------
# Feed-forward activations


@triton.jit
def _glu_kernel(
    gate_ptr, up_ptr, y_ptr, n, gate_stride, up_stride, alpha, limit, OAI: tl.constexpr, BLOCK: tl.constexpr,
    PDL: tl.constexpr = False,
):  # fmt: skip
    await_previous_grid(PDL)
    row = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    g = tl.load(gate_ptr + row * gate_stride + i, mask=mask, other=0.0)
    u = tl.load(up_ptr + row * up_stride + i, mask=mask, other=0.0)
    if OAI:
        g = tl.minimum(g, limit)
        u = tl.minimum(tl.maximum(u, -limit), limit)
        y = g * tl.sigmoid(alpha * g) * (u + 1.0)
    else:
        y = g * tl.sigmoid(g) * u
    tl.store(y_ptr + row * n + i, y, mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """`t` as `[rows, n]` with unit column stride, a view where the strides allow (the column views of one
    multi-weight GEMV output: gate and up side by side), else a copy."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _glu(gate: torch.Tensor, up: torch.Tensor, oai: bool, alpha: float, limit: float) -> torch.Tensor:
    g2, u2 = _rows(gate), _rows(up)
    y = torch.empty(gate.shape, dtype=torch.float32, device=gate.device)
    rows, n = g2.shape
    block = min(1024, triton.next_power_of_2(n))
    _glu_kernel[(rows, triton.cdiv(n, block))](
        g2, u2, y, n, g2.stride(0), u2.stride(0), alpha, limit, OAI=oai, BLOCK=block, num_warps=4,
        **dependent_launch.launch_kwargs(),
    )  # fmt: skip
    return y


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up (SwiGLU), float32."""
    return _glu(gate, up, False, 1.0, 0.0)


def swiglu_oai(gate: torch.Tensor, linear: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """gpt-oss's clamped SwiGLU, as `reference_worker.models.gpt_oss.swiglu`."""
    return _glu(gate, linear, True, alpha, limit)


# ---------------------------------------------------------------------------------------------------
# Mixture-of-experts routing and combination


@triton.jit
def _top_k_softmax(x, e, K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr):
    """The k largest of the logits `x` (at expert ids `e`; -inf past the experts) -> (their ids, largest
    first, ties to the lowest id; the softmax over them), `[BLOCK_K]` each, lanes past K unused."""
    j = tl.arange(0, BLOCK_K)
    top = tl.full([BLOCK_K], float("-inf"), tl.float32)
    ids = tl.zeros([BLOCK_K], tl.int64)
    # k rounds of arg-max, largest logit first (ties: the lowest expert id), each winner then masked.
    for r in tl.static_range(K):
        best = tl.max(x, axis=0)
        winner = tl.min(tl.where(x == best, e, BLOCK_E), axis=0)
        top = tl.where(j == r, best, top)
        ids = tl.where(j == r, winner.to(tl.int64), ids)
        x = tl.where(e == winner, float("-inf"), x)
    p = tl.exp(top - tl.max(top, axis=0))  # the unused lanes hold -inf: exp gives 0
    return ids, p / tl.sum(p, axis=0)


@triton.jit
def _moe_route_kernel(
    logits_ptr, ids_ptr, weights_ptr, n_expert, K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr = False,
):  # fmt: skip
    await_previous_grid(PDL)
    t = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    x = tl.load(logits_ptr + t * n_expert + e, mask=e < n_expert, other=float("-inf")).to(tl.float32)
    ids, weights = _top_k_softmax(x, e, K, BLOCK_E, BLOCK_K)
    j = tl.arange(0, BLOCK_K)
    tl.store(ids_ptr + t * K + j, ids, mask=j < K)
    tl.store(weights_ptr + t * K + j, weights, mask=j < K)


def moe_route(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`[T, n_expert]` -> expert ids `[T, k]` (long, largest logit first) and their weights `[T, k]`
    (float32 softmax over the k selected logits), one launch; as `reference_worker.models.gpt_oss.route`.
    The ids stay on the device, where the expert GEMVs read them."""
    logits = router_logits.contiguous()
    n_tokens, n_expert = logits.shape
    ids = torch.empty(n_tokens, k, dtype=torch.long, device=logits.device)
    weights = torch.empty(n_tokens, k, dtype=torch.float32, device=logits.device)
    _moe_route_kernel[(n_tokens,)](
        logits, ids, weights, n_expert, K=k, BLOCK_E=triton.next_power_of_2(n_expert),
        BLOCK_K=triton.next_power_of_2(k), num_warps=1, **dependent_launch.launch_kwargs(),
    )  # fmt: skip
    return ids, weights


@triton.jit
def _moe_router_kernel(
    x_ptr, xw_ptr, w_ptr, b_ptr, logits_ptr, ids_ptr, weights_ptr, count_ptr, n, n_expert, eps,
    K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK: tl.constexpr,
    PDL: tl.constexpr = False, ROW_EARLY: tl.constexpr = False,
):  # fmt: skip
    # One program per expert: its logit, the router's row of float32 weights times the normed input
    # (`xw` scaled by 1 / rms of `x`, as a GEMV fed an `RMSNormed` scales it) plus its bias; the last
    # program to arrive takes the top-k and its softmax of all of them (as `_moe_route_kernel`) and
    # resets the counter for the next launch (`.cg` loads skip L1, which may hold stale lines).
    # ROW_EARLY: the row's first BLOCK weights are loaded before the wait for the previous grid (no kernel
    # of a step writes weights), so with dependent launch their DRAM round trip runs under its tail.
    expert = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    w_row = w_ptr + expert.to(tl.int64) * n
    if ROW_EARLY:
        first = tl.load(w_row + cols, mask=cols < n, other=0.0)
    await_previous_grid(PDL)
    if not ROW_EARLY:
        first = tl.load(w_row + cols, mask=cols < n, other=0.0)
    # The first step peeled off the loop: the same products summed in the same order.
    acc = tl.zeros([BLOCK], tl.float32)
    acc += first * tl.load(xw_ptr + cols, mask=cols < n, other=0.0)
    for start in range(BLOCK, n, BLOCK):
        c = start + cols
        ok = c < n
        row = tl.load(w_row + c, mask=ok, other=0.0)
        acc += row * tl.load(xw_ptr + c, mask=ok, other=0.0)
    logit = tl.sum(acc, axis=0) / rms_over(x_ptr, n, eps, cols) + tl.load(b_ptr + expert)
    tl.store(logits_ptr + expert, logit)
    tl.debug_barrier()
    arrived = tl.atomic_add(count_ptr, 1, sem="acq_rel")
    if arrived == n_expert - 1:
        e = tl.arange(0, BLOCK_E)
        x = tl.load(logits_ptr + e, mask=e < n_expert, other=float("-inf"), cache_modifier=".cg")
        ids, weights = _top_k_softmax(x, e, K, BLOCK_E, BLOCK_K)
        j = tl.arange(0, BLOCK_K)
        tl.store(ids_ptr + j, ids, mask=j < K)
        tl.store(weights_ptr + j, weights, mask=j < K)
        # relaxed: only a later launch reads the counter again, after this one (the kernel
        # boundary or dependent launch's wait orders it); acq_rel fenced the last program's tail.
        tl.atomic_xchg(count_ptr, 0, sem="relaxed")


# `moe_router(one_pass=True)`: the row and the input read in one load step of up to this many values (GPT-OSS's
# 2,880 in one step of 4,096) by 8 warps, instead of steps of 1,024 by 4 warps.
ROUTER_ONE_PASS_MAX = 4096


def moe_router(
    h: RMSNormed | torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None,
    k: int,
    *,
    one_pass: bool = True,
    row_early: bool = True,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A decode step's router product and its routing in one launch (`KernelConfig.fused_router`, the default
    since it was timed: GPT-OSS +1.0 %; `benchmarks.step_ab`'s "router and top-k apart" times the two
    launches): the ffn norm's unformed rows `h` (one token) times the router's
    F32 `[n_expert, n]` weight plus `bias`, then `moe_route`'s top-k and softmax -> (expert ids `[1, k]`,
    weights `[1, k]`). None where it does not serve (a formed or longer input, a quantized router or none
    of its bias, no arrival counter: the first launch inside a capture): the caller's two launches do it.
    `one_pass` (on): each program issues all of its row's and the input's loads at once (rows of up to
    `ROUTER_ONE_PASS_MAX`, 8 warps) instead of three dependent steps of 1,024 for GPT-OSS's 2,880: 32
    programs, each one DRAM round trip instead of three; the dot products summed in another order.
    `row_early` (on): with dependent launch, each program loads its row's first step of weights (with
    `one_pass`, the whole row) before waiting for the previous grid, so that DRAM round trip overlaps the
    previous kernel's tail; the same bits. Both together timed in GPT-OSS's step on an H200 (2026-12-07,
    `step_ab`): **+1.6 %** (491.2 -> 498.9 tokens/s), the same tokens; `row_early` alone +0.2 %, `one_pass`
    alone +0.5 % (H100, 2026-12-06). `step_ab`'s "router in three steps after the wait" times the form
    before."""
    served = (
        isinstance(h, RMSNormed)
        and h.x.shape[0] == 1
        and weight.qtype == GGMLType.F32
        and weight.layout == GGML
    )
    if not served or bias is None or len(weight.shape) != 2:
        return None
    n_expert, n = weight.shape
    counters = SplitCounters.get(h.x.device, 1)
    if counters is None:
        return None
    logits = torch.empty(n_expert, dtype=torch.float32, device=h.x.device)
    ids = torch.empty(1, k, dtype=torch.long, device=h.x.device)
    weights = torch.empty(1, k, dtype=torch.float32, device=h.x.device)
    if one_pass and n <= ROUTER_ONE_PASS_MAX:
        block, warps = triton.next_power_of_2(n), 8
    else:
        block, warps = min(1024, triton.next_power_of_2(n)), 4
    _moe_router_kernel[(n_expert,)](
        h.x.contiguous(), h.xw.contiguous(), weight.data.view(torch.float32), bias.contiguous(), logits, ids, weights,
        counters, n, n_expert, h.eps, K=k, BLOCK_E=triton.next_power_of_2(n_expert),
        BLOCK_K=triton.next_power_of_2(k), BLOCK=block, num_warps=warps, ROW_EARLY=row_early,
        **dependent_launch.launch_kwargs(),
    )  # fmt: skip
    return ids, weights


@triton.jit
def _moe_combine_kernel(
    x_ptr, down_ptr, w_ptr, y_ptr, n, K: tl.constexpr, BLOCK: tl.constexpr, nw_ptr=None, y2_ptr=None,
    SCALED: tl.constexpr = False, PDL: tl.constexpr = False,
):  # fmt: skip
    await_previous_grid(PDL)
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + t * n + cols, mask=mask, other=0.0)
    y = routed_sum(x, down_ptr + t * K * n, w_ptr + t * K, n, cols, mask, K, "")
    tl.store(y_ptr + t * n + cols, y, mask=mask)
    if SCALED:  # the next rms_norm's rows x weight (`RMSNormed`): its GEMVs scale by 1 / rms of y
        tl.store(y2_ptr + t * n + cols, y * tl.load(nw_ptr + cols, mask=mask, other=0.0), mask=mask)


def moe_combine(
    x: torch.Tensor,
    down: torch.Tensor,
    weights: torch.Tensor,
    *,
    then_norm: tuple[torch.Tensor, float] | None = None,
) -> torch.Tensor | RMSNormed:
    """The residual plus the weighted sum of each token's expert outputs: x `[T, n]`, down `[T, k, n]`,
    weights `[T, k]` (float32) -> `x + (down * weights[..., None]).sum(1)`, one launch instead of three.
    With `then_norm=(weight, eps)`: `RMSNormed(y, y * weight, eps)` from the same launch (the next
    rms_norm, unformed, for GEMVs that take the norm in)."""
    x, down, weights = x.contiguous(), down.contiguous(), weights.contiguous()
    n_tokens, k, n = down.shape
    y = torch.empty(n_tokens, n, dtype=torch.float32, device=x.device)
    y2 = torch.empty_like(y) if then_norm is not None else y
    norm_weight = then_norm[0].contiguous() if then_norm is not None else y
    block = min(1024, triton.next_power_of_2(n))
    _moe_combine_kernel[(n_tokens, triton.cdiv(n, block))](
        x, down, weights, y, n, K=k, BLOCK=block, nw_ptr=norm_weight, y2_ptr=y2, SCALED=then_norm is not None,
        num_warps=4, **dependent_launch.launch_kwargs(),
    )  # fmt: skip
    return y if then_norm is None else RMSNormed(y, y2, then_norm[1])
