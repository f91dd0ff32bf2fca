"""Prefill on tensor cores (CUDA): packed weights decoded into a bounded float16 scratch, then cuBLAS.

A prompt of T > `MAX_ROWS` tokens multiplies every weight with T activation rows: enough reuse for the
matrix units, which the decode GEMV (one pass over the packed bytes per row) cannot use. Each call
decodes at most `SCRATCH_ELEMENTS` weights at a time (a slice of rows, or a few selected experts) with
the GEMV's own decoders (`kernels.triton_gemv.dequantize_into`), into a float16 buffer that lives only
for the call, and multiplies it with `torch.mm` in float16 with float32 accumulation.

Numerics. A decoded weight is rounded once to float16 (every M0 type's values fit its range; an
exponent that does not becomes inf, as in llama.cpp's own float16 cuBLAS path). Activations are
divided per row by their largest magnitude before the float16 rounding, and the product is scaled
back in float32: no activation overflows float16 whatever its size (the division adds one float32
rounding, far below float16's). Against the float32 reference path the error is that of two
float16 roundings per product (measured and bounded in `tests/kernels/test_triton_prefill.py`).

Memory. The weights stay packed; the scratch is at most `SCRATCH_ELEMENTS` float16 values (128 MiB)
per call plus the activations' float16 copy, allocated from PyTorch's caching allocator and freed when
the call returns.
"""

from __future__ import annotations

import torch

from kernels import triton_gemv, triton_moe, triton_qgemm
from kernels.formats import GGMLType
from kernels.qmatmul import ExpertsFastPath, FastPath
from kernels.qtensor import GGML, QTensor

SCRATCH_ELEMENTS = 64 << 20  # float16 weights decoded at a time: 128 MiB


def _scaled_half(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` (rows, in) as float16 rows divided by their largest magnitude, and that divisor (rows, 1): the
    prefill GEMM's one-launch scaling (`kernels.triton_qgemm.scaled_half`, PyTorch's bits)."""
    x16, scale = triton_qgemm.scaled_half(x)
    return x16, scale[:, None]


def _unscaled(y: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """float32 `y * scale (+ bias)` from the float16 product, in one launch."""
    return y * scale if bias is None else torch.addcmul(bias.float(), y, scale)


def supports(x: torch.Tensor, w: QTensor) -> bool:
    return (
        len(w.shape) == 2
        and x.is_floating_point()
        and x.numel() > triton_gemv.MAX_ROWS * w.shape[1]
        and w.qtype != GGMLType.F32  # cuBLAS on the float32 weight in place: no float16 rounding of it
        # The scratch is filled a row range at a time, which a regrouped matrix (its scales after all
        # of its rows' codes) does not give the GEMV's dequantizer: the reference path's tiles serve it.
        and w.layout == GGML
        and triton_gemv.supports_layout(w)
    )


def matmul(x: torch.Tensor, w: QTensor, bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """`kernels.qmatmul.qmatmul`'s contract for many activation rows."""
    out_features, in_features = w.shape
    x16, scale = _scaled_half(x.reshape(-1, in_features))
    y = torch.empty(x16.shape[0], out_features, dtype=torch.float16, device=x.device)
    step = max(1, SCRATCH_ELEMENTS // in_features)
    scratch = torch.empty(min(step, out_features) * in_features, dtype=torch.float16, device=x.device)
    for r0 in range(0, out_features, step):
        r1 = min(r0 + step, out_features)
        tile = scratch[: (r1 - r0) * in_features].view(r1 - r0, in_features)
        triton_gemv.dequantize_into(w, tile, rows=(r0, r1))
        if r1 - r0 == out_features:
            torch.mm(x16, tile.t(), out=y)
        else:
            y[:, r0:r1] = x16 @ tile.t()
    return _unscaled(y, scale, bias).reshape(*x.shape[:-1], out_features).to(out_dtype)


def supports_experts(x: torch.Tensor, w: QTensor, expert_ids: torch.Tensor) -> bool:
    return (
        len(w.shape) == 3
        and x.is_floating_point()
        and expert_ids.numel() > triton_moe.MAX_PAIRS
        and expert_ids.device == x.device
        and w.qtype != GGMLType.F32
        and triton_gemv.supports_layout(w)
    )


def matmul_experts(
    x: torch.Tensor, w: QTensor, expert_ids: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """`kernels.qmatmul.qmatmul_experts`'s contract for many (token, expert) pairs.

    The pairs are sorted by expert on the device; one host read of the per-expert counts follows (the
    prefill is not a captured graph). Only selected experts are decoded, a few per scratch fill, and each
    multiplies its own contiguous run of sorted pairs."""
    n_expert, out_features, in_features = w.shape
    n_tokens, k = expert_ids.shape
    flat = expert_ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_expert)
    selected = counts.nonzero().flatten()
    x16, scale = _scaled_half(x)
    token_of = order // k  # pair p = t * k + j belongs to token row t of x
    xs = x16[token_of]
    ys = torch.empty(flat.numel(), out_features, dtype=torch.float16, device=x.device)
    per_fill = max(1, SCRATCH_ELEMENTS // (out_features * in_features))
    scratch = torch.empty(
        min(per_fill, n_expert) * out_features * in_features, dtype=torch.float16, device=x.device
    )
    counts_host = counts[selected].tolist()
    starts, start = [], 0
    for c in counts_host:
        starts.append(start)
        start += c
    for f0 in range(0, len(counts_host), per_fill):
        f1 = min(f0 + per_fill, len(counts_host))
        tiles = scratch[: (f1 - f0) * out_features * in_features].view(f1 - f0, out_features, in_features)
        triton_gemv.dequantize_into(w, tiles, experts=selected[f0:f1])
        for slot, i in enumerate(range(f0, f1)):
            s, c = starts[i], counts_host[i]
            torch.mm(xs[s : s + c], tiles[slot].t(), out=ys[s : s + c])
    out_sorted = _unscaled(ys, scale[token_of], None if bias is None else bias[flat[order]])
    out = torch.empty_like(out_sorted)
    out[order] = out_sorted
    return out.view(n_tokens, k, out_features).to(out_dtype)


FAST_PATH = FastPath(name="triton-prefill", devices=("cuda",), supports=supports, qmatmul=matmul)
EXPERTS_FAST_PATH = ExpertsFastPath(
    name="triton-prefill-experts",
    devices=("cuda",),
    supports=supports_experts,
    qmatmul_experts=matmul_experts,
)
