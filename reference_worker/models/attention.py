"""The `AttentionKernel` seam: causal attention over the cached keys and values of one sequence.

M0 runs the plain kernel (M0-W-1430, "naive attention for prefill and decode"); a FlashAttention kernel
plugs in behind the same call in M1. Every kernel takes:
  q `[n_head, T, d]` for the T new positions `start_pos .. start_pos+T-1`,
  k, v `[n_head_kv, S, d]` for all cached positions `0 .. S-1` (S = start_pos + T),
and returns `[n_head, T, d]`. Grouped-query attention maps query head h to KV head
`h // (n_head // n_head_kv)` (M0 §6: the mapping the llama.cpp comparison fixed).
Options used by gpt-oss: `sliding_window` W (a query sees itself and the W-1 positions before it) and
per-head `sinks` (an extra logit per head that takes softmax mass but contributes no value).
The one-token decode step of a CUDA graph passes `positions` (the queries' absolute positions as a device
tensor) and the whole cache (S = its capacity): keys after a query's position are masked, so the result is
that of the S = start_pos + T call, and no shape depends on the position. Those later positions hold
whatever the cache's memory held (nothing wrote them yet: NaN or Inf in a reused allocator block), and a
zero probability times NaN is NaN (and an additive -inf mask plus NaN is NaN), so what the attention reads
of them is replaced by zeros first (`unseen_zeroed`), never only their scores masked.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class AttentionKernel(Protocol):
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        start_pos: int,
        scale: float,
        sliding_window: int | None = None,
        sinks: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def attention_mask(
    n_query: int,
    n_key: int,
    start_pos: int,
    sliding_window: int | None,
    device: torch.device,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """bool `[T, S]`: True where query i (absolute position `positions[i]`, by default start_pos + i) may
    attend key j."""
    if positions is None:
        positions = torch.arange(start_pos, start_pos + n_query, device=device)
    qpos = positions[:, None]
    kpos = torch.arange(n_key, device=device)[None, :]
    allowed = kpos <= qpos
    if sliding_window is not None:
        allowed &= kpos > qpos - sliding_window
    return allowed


def unseen_zeroed(cached: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Keys or values `[n_head_kv, S, d]` with the positions no query may attend (mask `allowed [T, S]`
    false in every row) set to 0: the step form's positions past the current one, not written yet."""
    return cached.masked_fill(~allowed.any(0)[None, :, None], 0.0)


class ReferenceAttention:
    """softmax(Q K^T * scale + mask) V, written out in float32: the spec every other kernel is tested against."""

    def __call__(self, q, k, v, *, start_pos, scale, sliding_window=None, sinks=None, positions=None):
        n_head, n_query, _ = q.shape
        group = n_head // k.shape[0]
        k = k.float().repeat_interleave(group, dim=0)
        v = v.float().repeat_interleave(group, dim=0)
        scores = (q.float() @ k.transpose(-1, -2)) * scale  # [n_head, T, S]
        mask = attention_mask(n_query, k.shape[1], start_pos, sliding_window, q.device, positions)
        scores = scores.masked_fill(~mask, float("-inf"))
        if positions is not None:
            v = unseen_zeroed(v, mask)  # the scores of unseen keys are masked above
        if sinks is not None:
            sink_col = sinks.float().view(n_head, 1, 1).expand(n_head, n_query, 1)
            scores = torch.cat([scores, sink_col], dim=-1)
        probs = torch.softmax(scores, dim=-1)  # subtracts the row max first: no overflow
        if sinks is not None:
            probs = probs[..., :-1]
        return probs @ v


class SdpaAttention:
    """`torch.nn.functional.scaled_dot_product_attention` (fused kernels on CUDA).

    Sinks ride along as one extra all-zero key/value column whose additive mask entry is the sink:
    its logit is exactly the sink and its value adds nothing, as in the reference.
    """

    def __call__(self, q, k, v, *, start_pos, scale, sliding_window=None, sinks=None, positions=None):
        n_head, n_query, _ = q.shape
        allowed = attention_mask(n_query, k.shape[1], start_pos, sliding_window, q.device, positions)
        if positions is not None:
            k, v = unseen_zeroed(k, allowed), unseen_zeroed(v, allowed)
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        if sinks is not None:
            k = torch.cat([k, k.new_zeros(k.shape[0], 1, k.shape[2])], dim=1)
            v = torch.cat([v, v.new_zeros(v.shape[0], 1, v.shape[2])], dim=1)
            bias = bias.expand(n_head, n_query, -1)
            bias = torch.cat([bias, sinks.to(q.dtype).view(n_head, 1, 1).expand(n_head, n_query, 1)], dim=-1)
        return F.scaled_dot_product_attention(
            q, k.to(q.dtype), v.to(q.dtype), attn_mask=bias, scale=scale, enable_gqa=k.shape[0] != n_head
        )


ATTENTION_KERNELS: dict[str, type] = {"reference": ReferenceAttention, "sdpa": SdpaAttention}


def attention_kernel(name: str) -> AttentionKernel:
    try:
        return ATTENTION_KERNELS[name]()
    except KeyError:
        raise ValueError(
            f"unknown attention kernel {name!r} (known: {', '.join(ATTENTION_KERNELS)})"
        ) from None
