"""Mixture-of-experts GEMV for decode on CUDA: token-expert pairs against a 3-D packed expert tensor.

One launch of the fused dequant-GEMV (`kernels.triton_gemv`) computes, for every (token, selected
expert) pair, that token's activation row against that expert's matrix only: each program reads its
pair's expert id and offsets its weight rows by it, so unselected experts are never read and nothing
is gathered or copied first. It serves `kernels.qmatmul.qmatmul_experts` through
`kernels.qmatmul.ExpertsFastPath` for the few-token calls of decode, and `qmatmuls_experts` (a MoE's gate
and up, the same expert ids) in one launch over both tensors' rows (`launch_segments`); larger batches
(prefill) go to the grouped prefill GEMM (`kernels.triton_qgemm`; `kernels.triton_prefill` with
`KernelConfig.fused_prefill` off), which reads each selected expert's tiles for blocks of its tokens.
"""

from __future__ import annotations

import torch

from kernels.qmatmul import ExpertsFastPath, RMSNormed
from kernels.qtensor import QTensor
from kernels.triton_gemv import (
    MAX_SEGMENTS,
    RoutedSum,
    launch,
    launch_segments,
    normed_rows_served,
    supports_layout,
)

MAX_PAIRS = 32  # token-expert pairs per call served here (decode: one token x k experts, k <= 32)


def supports(x: torch.Tensor, w: QTensor, expert_ids: torch.Tensor) -> bool:
    return (
        len(w.shape) == 3
        and x.is_floating_point()
        and expert_ids.numel() <= MAX_PAIRS
        and expert_ids.device == x.device
        and supports_layout(w)
    )


def gemv_experts(
    x: torch.Tensor,
    w: QTensor,
    expert_ids: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """`qmatmul_experts`'s contract: x (T, in), w (E, out, in), expert_ids (T, k) -> (T, k, out)."""
    n_tokens, k = expert_ids.shape
    pairs = expert_ids.reshape(-1).contiguous()
    bias_arg = bias.contiguous() if bias is not None else None
    y = launch(x, w, bias_arg, n_tokens * k, expert_ids=pairs, x_group=k)
    return y.view(n_tokens, k, w.shape[1]).to(out_dtype)


def gemvs_experts(
    x: torch.Tensor,
    weights: tuple[QTensor, ...],
    expert_ids: torch.Tensor,
    biases: tuple[torch.Tensor | None, ...],
    *,
    rms_of: torch.Tensor | None = None,
    eps: float = 0.0,
) -> tuple[torch.Tensor, ...] | None:
    """`qmatmuls_experts`'s contract (outputs in `x.dtype`): 1-3 expert tensors of one type and shape
    (gate and up) in one launch over their rows together, each (T, k, out) a column view of one buffer.
    None (not served here) for mixed types, shapes or layouts, mixed biases, or a call `supports` refuses.
    `rms_of`, `eps`: see `launch_segments` (the input of `gemvs_experts_normed`)."""
    w = weights[0]
    if (
        not 1 <= len(weights) <= MAX_SEGMENTS
        or any(v.qtype != w.qtype or v.shape != w.shape or v.layout != w.layout for v in weights)
        or not all(supports(x, v, expert_ids) for v in weights)
    ):
        return None
    has_bias = biases[0] is not None
    if any((b is not None) != has_bias or (has_bias and b.dtype != biases[0].dtype) for b in biases):
        return None
    n_tokens, k = expert_ids.shape
    pairs = expert_ids.reshape(-1).contiguous()
    bias_args = tuple(b.contiguous() if b is not None else None for b in biases)
    y = launch_segments(
        x, weights, bias_args, n_tokens * k, expert_ids=pairs, x_group=k, rms_of=rms_of, eps=eps
    )
    y = y.view(n_tokens, k, -1).to(x.dtype)
    out = w.shape[1]
    return tuple(y[..., i * out : (i + 1) * out] for i in range(len(weights)))


def gemvs_experts_normed(
    h: RMSNormed,
    weights: tuple[QTensor, ...],
    expert_ids: torch.Tensor,
    biases: tuple[torch.Tensor | None, ...],
) -> tuple[torch.Tensor, ...] | None:
    """`qmatmuls_experts_normed`'s contract: `gemvs_experts` of `h.xw`, each pair's output row scaled by
    the 1 / rms of its token's row of `h.x` inside the launch (a MoE's gate and up without a norm kernel).
    None where not served."""
    if not normed_rows_served(h):
        return None
    return gemvs_experts(h.xw, weights, expert_ids, biases, rms_of=h.x, eps=h.eps)


def gemv_experts_glu(
    x: torch.Tensor | RMSNormed,
    gate: QTensor,
    up: QTensor,
    expert_ids: torch.Tensor,
    biases: tuple[torch.Tensor | None, torch.Tensor | None],
    activation: tuple[float, float] | None,
) -> torch.Tensor | None:
    """`qmatmul_experts_glu`'s contract: each pair's gate and up rows walked by the same program, the
    biases and the activation in its epilogue (one launch instead of the products' one and the
    activation's); an `RMSNormed` input normed inside it. None where not served."""
    normed = isinstance(x, RMSNormed)
    rows = x.xw if normed else x
    gate_b, up_b = biases
    if (
        (normed and not normed_rows_served(x))
        or gate.qtype != up.qtype
        or gate.shape != up.shape
        or gate.layout != up.layout
        or (gate_b is None) != (up_b is None)
        or not (supports(rows, gate, expert_ids) and supports(rows, up, expert_ids))
    ):
        return None
    n_tokens, k = expert_ids.shape
    y = launch_segments(
        rows,
        (gate, up),
        tuple(b.contiguous() if b is not None else None for b in biases),
        n_tokens * k,
        expert_ids=expert_ids.reshape(-1).contiguous(),
        x_group=k,
        rms_of=x.x if normed else None,
        eps=x.eps if normed else 0.0,
        glu=True,
        glu_oai=activation,
    )
    return y.view(n_tokens, k, -1)


def gemv_experts_routed_sum(
    x: torch.Tensor,
    w: QTensor,
    expert_ids: torch.Tensor,
    bias: torch.Tensor | None,
    route_weights: torch.Tensor,
    residual: torch.Tensor,
    then_norm: tuple[torch.Tensor, float] | None,
) -> torch.Tensor | RMSNormed | None:
    """`qmatmul_experts_routed_sum`'s contract: x (T * k, in) one row a token-expert pair, w (E, out, in),
    expert_ids (T, k), route_weights (T, k), residual (T, out) -> residual + each token's k products
    weighted and summed in expert order (`triton_decode.moe_combine`'s bits), formed by the down GEMV's
    epilogue (one launch instead of two); with `then_norm=(weight, eps)` its `RMSNormed`. None where not
    served."""
    n_tokens, k = expert_ids.shape
    if (
        not supports(x, w, expert_ids)
        or x.shape[0] != n_tokens * k
        or residual.dtype != torch.float32
        or residual.shape != (n_tokens, w.shape[1])
    ):
        return None
    served = launch_segments(
        x,
        (w,),
        (bias.contiguous() if bias is not None else None,),
        n_tokens * k,
        expert_ids=expert_ids.reshape(-1).contiguous(),
        scaled_by=then_norm[0].float().contiguous() if then_norm is not None else None,
        mix=RoutedSum(route_weights.float().contiguous(), residual.contiguous()),
    )
    if served is None or then_norm is None:
        return served
    y, y2 = served
    return RMSNormed(y, y2, then_norm[1])


EXPERTS_FAST_PATH = ExpertsFastPath(
    name="triton-moe-gemv",
    devices=("cuda",),
    supports=supports,
    qmatmul_experts=gemv_experts,
    qmatmuls_experts=gemvs_experts,
    qmatmuls_experts_normed=gemvs_experts_normed,
    qmatmul_experts_glu=gemv_experts_glu,
    qmatmul_experts_routed_sum=gemv_experts_routed_sum,
)
