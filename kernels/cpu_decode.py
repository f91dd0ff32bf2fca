"""The one-token decode step's non-matmul work on CPU, in as few PyTorch ops as the math allows.

Same functions and contract as `kernels.triton_decode` (the `decode` entry of a `DeviceKernels`), so the
models' step form (`forward(..., positions=)`) runs unchanged on either device. On CPU a decode step of a
small model is dominated by per-op overhead (about 1-3 us per PyTorch call, measured), not arithmetic:
the reference chains spend most of a tiny model's step building masks, repeating KV heads and slicing.
These functions compute the same float32 function with fewer calls:
- `rms_norm`: PyTorch's `rms_norm` (one call for five).
- `rope_store`: q and k rotated together in one buffer, k and v written at the position (about 25 -> 9).
- `decode_attention`: grouped heads as a batch (no repeated KV heads), only the cache positions the query
  sees (the position is read on the host: free on CPU), no mask (about 12 -> 4).
- `silu_mul`, `swiglu_oai`: the activations with in-place ops.
- `moe_route`, `moe_combine`: a MoE router's top-k and softmax; the weighted sum of the experts plus the
  residual in one batched product. (`moe_router`, the router's product and top-k in one call, is
  CUDA's alone: here it declines.)
Tested against the reference chains in `tests/kernels/test_cpu_decode.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.qmatmul import RMSNormed


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """float32 `[T, n]` -> `[T, n]`, as `reference_worker.models.llama.rms_norm`."""
    return F.rms_norm(x.float(), (x.shape[-1],), weight, eps)


def rope_store(
    q: Tensor, k: Tensor, v: Tensor, keys: Tensor, values: Tensor, cos: Tensor, sin: Tensor, position: Tensor,
    neox: bool,
) -> Tensor:  # fmt: skip
    """One position: q `[n_head*d]`, k, v `[n_kv*d]` (float32) -> rotated q `[n_head, d]`; rotated k and v
    are stored at `position` in `keys`/`values` `[n_kv, capacity, d]`. As `apply_rope` on q and k followed
    by `ContiguousKVCache.write_at` (the same products and sums, so the same values)."""
    n_kv, _, d = keys.shape
    half = cos.shape[-1]
    pos = int(position)
    qk = torch.cat((q.view(-1, d), k.view(-1, d)))  # a fresh buffer, rotated in place
    c, s = cos[pos], sin[pos]
    if neox:
        x1, x2 = qk[:, :half], qk[:, half : 2 * half]
    else:
        pairs = qk[:, : 2 * half].unflatten(-1, (half, 2))
        x1, x2 = pairs[..., 0], pairs[..., 1]
    o1 = x1 * c - x2 * s
    x2.mul_(c).add_(x1 * s)  # x2 * c + x1 * s, from the unrotated x1
    x1.copy_(o1)
    n_head = qk.shape[0] - n_kv
    keys[:, pos] = qk[n_head:]
    values[:, pos] = v.view(n_kv, d)
    return qk[:n_head]


def decode_attention(
    q: Tensor, keys: Tensor, values: Tensor, position: Tensor, scale: float,
    sliding_window: int | None = None, sinks: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """q `[n_head, d]` at `position` against cache positions 0..position (the last `sliding_window` of
    them) of `keys`/`values` `[n_kv, capacity, d]` -> `[n_head * d]` float32. Head h reads KV head
    h // (n_head // n_kv); `sinks[h]` is an extra logit of head h that carries no value."""
    n_head, d = q.shape
    n_kv = keys.shape[0]
    pos = int(position)
    first = 0 if sliding_window is None else max(0, pos + 1 - sliding_window)
    k, v = keys[:, first : pos + 1], values[:, first : pos + 1]
    scores = torch.bmm(q.view(n_kv, n_head // n_kv, d), k.transpose(1, 2)).mul_(scale)  # [n_kv, group, S]
    if sinks is None:
        return torch.bmm(torch.softmax(scores, dim=-1), v).view(n_head * d)
    scores = torch.cat((scores, sinks.float().view(n_kv, n_head // n_kv, 1)), dim=-1)
    probs = torch.softmax(scores, dim=-1)[..., :-1]
    return torch.bmm(probs, v).view(n_head * d)


def rope_attention(
    q: Tensor, k: Tensor, v: Tensor, keys: Tensor, values: Tensor, cos: Tensor, sin: Tensor, position: Tensor,
    neox: bool, scale: float, sliding_window: int | None = None, sinks: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """`rope_store` then `decode_attention` (one launch on CUDA; the same two functions here)."""
    q = rope_store(q, k, v, keys, values, cos, sin, position, neox)
    return decode_attention(q, keys, values, position, scale, sliding_window, sinks)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up (SwiGLU), float32."""
    return F.silu(gate).mul_(up)


def swiglu_oai(gate: torch.Tensor, linear: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """gpt-oss's clamped SwiGLU, as `reference_worker.models.gpt_oss.swiglu`: gate clamped from above,
    the linear half on both sides and shifted by +1."""
    gate = gate.clamp(max=limit)
    return gate * torch.sigmoid(alpha * gate) * linear.clamp(min=-limit, max=limit).add_(1)


def moe_router(h, weight, bias, k: int) -> None:
    """The router's product and its top-k in one call (`KernelConfig.fused_router`) are not fused on the
    CPU: None, so the caller's product and `moe_route` serve."""
    return None


def moe_route(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token (largest first) and a softmax over the k selected logits, as
    `reference_worker.models.gpt_oss.route`."""
    top, ids = torch.topk(router_logits, k, dim=-1, sorted=True)
    return ids, torch.softmax(top, dim=-1)


def moe_combine(
    x: torch.Tensor,
    down: torch.Tensor,
    weights: torch.Tensor,
    *,
    then_norm: tuple[torch.Tensor, float] | None = None,
) -> torch.Tensor | RMSNormed:
    """`x + (down * weights[..., None]).sum(1)`: x `[T, n]`, down `[T, k, n]`, weights `[T, k]`; with
    `then_norm=(weight, eps)` that sum as the next rms_norm's `RMSNormed` (as `triton_decode.moe_combine`)."""
    y = torch.baddbmm(x.unsqueeze(1), weights.unsqueeze(1), down).squeeze(1)
    return y if then_norm is None else RMSNormed(y, y * then_norm[0], then_norm[1])
