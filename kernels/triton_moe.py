"""Mixture-of-experts GEMV for decode on CUDA: token-expert pairs against a 3-D packed expert tensor.

One launch of the fused dequant-GEMV (`kernels.triton_gemv`) computes, for every (token, selected
expert) pair, that token's activation row against that expert's matrix only: each program reads its
pair's expert id and offsets its weight rows by it, so unselected experts are never read and nothing
is gathered or copied first. It serves `kernels.qmatmul.qmatmul_experts` through
`kernels.qmatmul.ExpertsFastPath` for the few-token calls of decode; larger batches (prefill) go to
`kernels.triton_prefill`, which decodes each selected expert once for all of its tokens.
"""

from __future__ import annotations

import torch

from kernels.qmatmul import ExpertsFastPath
from kernels.qtensor import QTensor
from kernels.triton_gemv import launch, supports_layout

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


EXPERTS_FAST_PATH = ExpertsFastPath(
    name="triton-moe-gemv", devices=("cuda",), supports=supports, qmatmul_experts=gemv_experts
)
