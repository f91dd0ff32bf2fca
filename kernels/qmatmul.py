"""Matmuls against quantized weights without materialising the full-precision weight.

The reference path dequantizes bounded tiles of weight rows (at most `MAX_TILE_BYTES` of float32 at a
time), multiplies each tile into its slice of the output, and computes in float32 whatever the
activation dtype. Fast paths (`FastPath`, `ExpertsFastPath`) passed by the caller take over the calls
they support; `kernels.backend` decides which ones a model gets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from kernels.formats import GGMLType
from kernels.qtensor import QTensor


class QMatmulFn(Protocol):
    def __call__(
        self, x: torch.Tensor, w: QTensor, bias: torch.Tensor | None, out_dtype: torch.dtype
    ) -> torch.Tensor: ...


class QMatmulExpertsFn(Protocol):
    def __call__(
        self,
        x: torch.Tensor,
        w: QTensor,
        expert_ids: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class RMSNormed:
    """`rms_norm(x) * weight` (float32, as the models' `rms_norm`), not yet formed: the rows `x` and
    `xw = x * weight`. A fast GEMV fed this multiplies `xw` and scales each output row by the 1 / rms of
    its row of `x` (`qmatmuls_normed`), so the decode step needs no norm kernel; `value()` forms it for
    any other consumer. Made by `qmatmul_add_normed`, whose sum `x` is also the residual stream."""

    x: torch.Tensor
    xw: torch.Tensor
    eps: float

    def value(self) -> torch.Tensor:
        return self.xw * torch.rsqrt(self.x.pow(2).mean(-1, keepdim=True) + self.eps)


@dataclass(frozen=True)
class FastPath:
    """A kernel for `qmatmul`: serves the calls `supports(x, w)` accepts, same contract as
    `reference_qmatmul`."""

    name: str
    devices: tuple[str, ...]  # torch device types, e.g. ("cuda",)
    supports: Callable[[torch.Tensor, QTensor], bool]
    qmatmul: QMatmulFn
    # Optional: rows of an embedding table, same contract as `qembedding` (asked with the ids as `x`).
    qembedding: Callable[..., torch.Tensor] | None = None
    # Optional: products of one input with several weights in one call, same contract as `qmatmuls`;
    # returns None for the weight tuples it does not serve.
    qmatmuls: Callable[..., tuple[torch.Tensor, ...] | None] | None = None
    # Optional: `qmatmuls_normed` and `qmatmul_add_normed` (an RMSNormed input or output without a norm
    # kernel); return None for the calls they do not serve.
    qmatmuls_normed: Callable[..., tuple[torch.Tensor, ...] | None] | None = None
    qmatmul_add_normed: Callable[..., RMSNormed | None] | None = None
    # Optional: `qmatmul_glu` (gate and up products and the SiLU gate in one call); None where not served.
    qmatmul_glu: Callable[..., torch.Tensor | None] | None = None


@dataclass(frozen=True)
class ExpertsFastPath:
    """A kernel for `qmatmul_experts(x (T, in), w (E, out, in), expert_ids (T, k), bias)`."""

    name: str
    devices: tuple[str, ...]
    supports: Callable[[torch.Tensor, QTensor, torch.Tensor], bool]
    qmatmul_experts: QMatmulExpertsFn
    # Optional: one input through several expert tensors with the same expert ids (gate/up), same
    # contract as `qmatmuls_experts`; returns None for the weight tuples it does not serve.
    qmatmuls_experts: Callable[..., tuple[torch.Tensor, ...] | None] | None = None
    # Optional: the same with an `RMSNormed` input, the norm applied inside the products; None where not
    # served (the caller forms the norm first).
    qmatmuls_experts_normed: Callable[..., tuple[torch.Tensor, ...] | None] | None = None
    # Optional: `qmatmul_experts_glu` (a MoE's gate and up products and its gated activation in one call,
    # the input plain or `RMSNormed`); None where not served.
    qmatmul_experts_glu: Callable[..., torch.Tensor | None] | None = None
    # Optional: `qmatmul_experts_routed_sum` (a MoE's down products, their routed sum and the residual in
    # one call); None where not served.
    qmatmul_experts_routed_sum: Callable[..., torch.Tensor | RMSNormed | None] | None = None


def _first(paths: Sequence, x: torch.Tensor, w: QTensor, *extra: torch.Tensor):
    for path in paths:
        if x.device.type in path.devices and w.device == x.device and path.supports(x, w, *extra):
            return path
    return None


# Float32 bytes of one dequantized tile: small next to any real weight, large enough that a tile's
# matmul is not dominated by launch overhead.
MAX_TILE_BYTES = 4 << 20
# Token-expert pairs up to which `qmatmul_experts` on CUDA gathers the selected experts on the device
# (decode: one token x k experts) instead of grouping tokens by expert on the host.
GATHER_MAX_PAIRS = 32


def tile_rows(w: QTensor) -> int:
    """Weight rows per dequantized tile (at least one row)."""
    return max(1, MAX_TILE_BYTES // (w.shape[-1] * 4))


def _check_operands(x: torch.Tensor, w: QTensor, bias: torch.Tensor | None) -> None:
    if len(w.shape) != 2:
        raise ValueError(f"tensor {w.name!r}: qmatmul needs a 2-D weight, shape is {w.shape}")
    out_features, in_features = w.shape
    if x.shape[-1] != in_features:
        raise ValueError(
            f"tensor {w.name!r}: input has {x.shape[-1]} features, the weight {w.shape} expects {in_features}"
        )
    if x.device != w.device:
        raise ValueError(f"tensor {w.name!r}: input on {x.device}, weight on {w.device}")
    if bias is not None and tuple(bias.shape) != (out_features,):
        raise ValueError(f"tensor {w.name!r}: bias shape {tuple(bias.shape)} != ({out_features},)")


def reference_qmatmul(
    x: torch.Tensor, w: QTensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """`x @ dequant(w).T + bias` in float32, one bounded tile of weight rows at a time."""
    out_features, in_features = w.shape
    x2 = x.reshape(-1, in_features).to(torch.float32)
    if w.qtype == GGMLType.F32:
        # The stored bytes already are the float32 weight: a zero-copy view, nothing to tile.
        y = x2 @ w.dequantize().T
    else:
        y = torch.empty(x2.shape[0], out_features, dtype=torch.float32, device=x.device)
        step = tile_rows(w)
        for r0 in range(0, out_features, step):
            r1 = min(r0 + step, out_features)
            y[:, r0:r1] = x2 @ w.dequantize(rows=slice(r0, r1)).T
    if bias is not None:
        y += bias.to(torch.float32)
    return y.reshape(*x.shape[:-1], out_features).to(out_dtype)


def qmatmul(
    x: torch.Tensor,
    w: QTensor,
    bias: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
    paths: Sequence[FastPath] = (),
) -> torch.Tensor:
    """`y = x @ dequant(w).T (+ bias)` for `x[..., in]` and `w (out, in)`, accumulated in float32.

    `out_dtype` defaults to `x.dtype` (fp16/bf16 activations are computed in float32 and cast back).
    The first of `paths` that supports the call serves it; otherwise the reference path.
    """
    _check_operands(x, w, bias)
    out_dtype = out_dtype or x.dtype
    fast = _first(paths, x, w)
    if fast is not None:
        return fast.qmatmul(x, w, bias, out_dtype)
    return reference_qmatmul(x, w, bias, out_dtype)


def qmatmuls(
    x: torch.Tensor,
    weights: Sequence[QTensor],
    biases: Sequence[torch.Tensor | None] | None = None,
    *,
    paths: Sequence[FastPath] = (),
) -> tuple[torch.Tensor, ...]:
    """`qmatmul(x, w, b)` for each weight of `weights` (one input, several weights: q/k/v, gate/up), in
    `x.dtype`. The first of `paths` whose `qmatmuls` serves the whole tuple computes it in one call (e.g. one
    product over the weights stored one after another); otherwise one `qmatmul` each. The outputs may be
    views of one buffer."""
    biases = tuple(biases) if biases is not None else (None,) * len(weights)
    if len(biases) != len(weights):
        raise ValueError(f"{len(weights)} weights but {len(biases)} biases")
    for w, b in zip(weights, biases, strict=True):
        _check_operands(x, w, b)
    for path in paths:
        if path.qmatmuls is not None and x.device.type in path.devices:
            ys = path.qmatmuls(x, tuple(weights), biases)
            if ys is not None:
                return ys
    return tuple(qmatmul(x, w, b, paths=paths) for w, b in zip(weights, biases, strict=True))


def qembedding(
    ids: torch.Tensor, w: QTensor, *, checked: bool = True, paths: Sequence[FastPath] = ()
) -> torch.Tensor:
    """Rows `ids` of an embedding table `w (vocab, dim)` as float32 `(*ids.shape, dim)`; only those rows
    are dequantized. `checked=False`: ids known to be in range, not read back to the host (CUDA graphs).
    The first of `paths` with an embedding function that supports `(ids, w)` serves it."""
    if len(w.shape) != 2:
        raise ValueError(f"tensor {w.name!r}: an embedding table is 2-D, shape is {w.shape}")
    fast = _first([p for p in paths if p.qembedding is not None], ids, w)
    if fast is not None:
        return fast.qembedding(ids, w, checked=checked)
    return w.dequantize(rows=ids.reshape(-1), checked=checked).reshape(*ids.shape, w.shape[1])


def qmatmul_experts(
    x: torch.Tensor,
    w: QTensor,
    expert_ids: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
    paths: Sequence[FastPath] = (),
    experts_paths: Sequence[ExpertsFastPath] = (),
) -> torch.Tensor:
    """Mixture-of-experts matmul: token t through each of its k selected experts.

    `x (T, in)`, `w (n_expert, out, in)`, `expert_ids (T, k)` (long), `bias (n_expert, out)` or None ->
    `(T, k, out)` with `y[t, j] = x[t] @ dequant(w[expert_ids[t, j]]).T + bias[expert_ids[t, j]]`.
    Each selected expert is visited once, with all the tokens routed to it; unselected experts are never
    dequantized. The first of `experts_paths` that supports the call serves it; otherwise tokens are
    grouped by expert on the host and each group is one `qmatmul` (through `paths`).
    """
    if len(w.shape) != 3:
        raise ValueError(f"tensor {w.name!r}: qmatmul_experts needs a 3-D expert tensor, shape is {w.shape}")
    n_expert, out_features, _ = w.shape
    n_tokens, k = expert_ids.shape
    if x.dim() != 2 or x.shape[0] != n_tokens:
        raise ValueError(
            f"tensor {w.name!r}: x {tuple(x.shape)} does not match expert_ids {tuple(expert_ids.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (n_expert, out_features):
        raise ValueError(
            f"tensor {w.name!r}: expert bias shape {tuple(bias.shape)} != ({n_expert}, {out_features})"
        )
    out_dtype = out_dtype or x.dtype
    fast = _first(experts_paths, x, w, expert_ids)
    if fast is not None:
        return fast.qmatmul_experts(x, w, expert_ids, bias, out_dtype)
    if x.is_cuda and n_tokens * k <= GATHER_MAX_PAIRS:
        # Decode on CUDA with a type no fast path serves: gather the selected experts on the device.
        # Grouping below reads expert ids back to the host, which a CUDA graph capture cannot do.
        return _experts_gathered(x, w, expert_ids, bias).to(out_dtype)
    flat = expert_ids.reshape(-1).to(device=x.device, dtype=torch.long)
    token_of = torch.arange(n_tokens, device=x.device).repeat_interleave(k)
    order = torch.argsort(flat, stable=True)
    experts, counts = torch.unique_consecutive(flat[order], return_counts=True)
    y = torch.empty(n_tokens * k, out_features, dtype=torch.float32, device=x.device)
    start = 0
    for e, count in zip(experts.tolist(), counts.tolist(), strict=True):
        picked = order[start : start + count]
        start += count
        expert_bias = bias[e] if bias is not None else None
        y[picked] = qmatmul(
            x[token_of[picked]], w.expert(e), expert_bias, out_dtype=torch.float32, paths=paths
        )
    return y.view(n_tokens, k, out_features).to(out_dtype)


def _experts_gathered(
    x: torch.Tensor, w: QTensor, expert_ids: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`qmatmul_experts` in float32 without a host sync: each (token, expert) pair's expert matrix is
    gathered and dequantized on the device (k matrices per token), then one batched product."""
    n_tokens, k = expert_ids.shape
    flat = expert_ids.reshape(-1).to(device=x.device, dtype=torch.long)
    # The range check reads the ids back to the host: skipped only inside a capture, where the ids come
    # from the router's top-k on the device.
    matrices = w.dequantize(rows=flat, checked=not (x.is_cuda and torch.cuda.is_current_stream_capturing()))
    rows = x.float().repeat_interleave(k, dim=0).unsqueeze(-1)  # (T*k, in, 1)
    y = torch.bmm(matrices, rows).squeeze(-1)
    if bias is not None:
        y = y + bias.float()[flat]
    return y.view(n_tokens, k, w.shape[1])


def qmatmul_experts_glu(
    x: torch.Tensor | RMSNormed,
    gate: QTensor,
    up: QTensor,
    expert_ids: torch.Tensor,
    biases: tuple[torch.Tensor | None, torch.Tensor | None],
    *,
    activation: tuple[float, float] | None = None,
    experts_paths: Sequence[ExpertsFastPath] = (),
) -> torch.Tensor | None:
    """`act(x @ gate[e].T + bg[e], x @ up[e].T + bu[e])` for each token's selected experts `e`, `(T, k, out)`
    float32, from the first of `experts_paths` whose `qmatmul_experts_glu` serves it in one call; None where
    none does (the caller takes the products and the activation apart). `act` is silu(g) * u, or with
    `activation=(alpha, limit)` gpt-oss's clamped SwiGLU (`reference_worker.models.gpt_oss.swiglu`)."""
    device = (x.x if isinstance(x, RMSNormed) else x).device
    for path in experts_paths:
        if path.qmatmul_experts_glu is not None and device.type in path.devices:
            y = path.qmatmul_experts_glu(x, gate, up, expert_ids, biases, activation)
            if y is not None:
                return y
    return None


def qmatmul_experts_routed_sum(
    x: torch.Tensor,
    w: QTensor,
    expert_ids: torch.Tensor,
    bias: torch.Tensor | None,
    route_weights: torch.Tensor,
    residual: torch.Tensor,
    *,
    then_norm: tuple[torch.Tensor, float] | None = None,
    experts_paths: Sequence[ExpertsFastPath] = (),
) -> torch.Tensor | RMSNormed | None:
    """A MoE's down projection and its routed sum in one call: x `(T * k, in)` (row t * k + j: token t's
    j-th pair), expert_ids and route_weights `(T, k)`, residual `(T, out)` float32 ->
    `residual + sum_j route_weights[:, j] * (x[pair j] @ w[expert j].T + b[expert j])` `(T, out)`, summed in
    expert order, from the first of `experts_paths` whose `qmatmul_experts_routed_sum` serves it; with
    `then_norm=(weight, eps)` that sum's `RMSNormed`. None where none does (the caller takes the products
    and the sum apart)."""
    for path in experts_paths:
        if path.qmatmul_experts_routed_sum is not None and x.device.type in path.devices:
            y = path.qmatmul_experts_routed_sum(x, w, expert_ids, bias, route_weights, residual, then_norm)
            if y is not None:
                return y
    return None


def qmatmuls_experts(
    x: torch.Tensor | RMSNormed,
    weights: Sequence[QTensor],
    expert_ids: torch.Tensor,
    biases: Sequence[torch.Tensor | None] | None = None,
    *,
    paths: Sequence[FastPath] = (),
    experts_paths: Sequence[ExpertsFastPath] = (),
) -> tuple[torch.Tensor, ...]:
    """`qmatmul_experts(x, w, expert_ids, b)` for each expert tensor of `weights` (one input, the same
    experts: a MoE's gate and up), in `x.dtype`. The first of `experts_paths` whose `qmatmuls_experts`
    serves the whole tuple computes it in one call; otherwise one `qmatmul_experts` each. The outputs may
    be views of one buffer. An `RMSNormed` input is normed inside the products where a path's
    `qmatmuls_experts_normed` serves them, else formed first."""
    biases = tuple(biases) if biases is not None else (None,) * len(weights)
    if len(biases) != len(weights):
        raise ValueError(f"{len(weights)} weights but {len(biases)} biases")
    if isinstance(x, RMSNormed):
        for path in experts_paths:
            if path.qmatmuls_experts_normed is not None and x.x.device.type in path.devices:
                ys = path.qmatmuls_experts_normed(x, tuple(weights), expert_ids, biases)
                if ys is not None:
                    return ys
        x = x.value()
    for path in experts_paths:
        if path.qmatmuls_experts is not None and x.device.type in path.devices:
            ys = path.qmatmuls_experts(x, tuple(weights), expert_ids, biases)
            if ys is not None:
                return ys
    return tuple(
        qmatmul_experts(x, w, expert_ids, b, paths=paths, experts_paths=experts_paths)
        for w, b in zip(weights, biases, strict=True)
    )


def qmatmuls_normed(
    h: RMSNormed,
    weights: Sequence[QTensor],
    biases: Sequence[torch.Tensor | None] | None = None,
    *,
    paths: Sequence[FastPath] = (),
) -> tuple[torch.Tensor, ...]:
    """`qmatmuls(h.value(), weights, biases)`: the first of `paths` whose `qmatmuls_normed` serves the
    call applies the norm inside its products; otherwise the norm is formed, then `qmatmuls`."""
    biases = tuple(biases) if biases is not None else (None,) * len(weights)
    for path in paths:
        if path.qmatmuls_normed is not None and h.x.device.type in path.devices:
            for w, b in zip(weights, biases, strict=True):
                _check_operands(h.xw, w, b)
            ys = path.qmatmuls_normed(h, tuple(weights), biases)
            if ys is not None:
                return ys
    return qmatmuls(h.value(), weights, biases, paths=paths)


def qmatmul_add_normed(
    x: torch.Tensor,
    w: QTensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    *,
    bias: torch.Tensor | None = None,
    paths: Sequence[FastPath] = (),
) -> RMSNormed | None:
    """`s = residual + qmatmul(x, w, bias)` with the rms_norm of `s` by `weight` left unformed:
    `RMSNormed(s, s * weight, eps)`, from the first of `paths` whose `qmatmul_add_normed` serves the call
    (one launch); None where none does (the caller adds and norms as it would without)."""
    for path in paths:
        if path.qmatmul_add_normed is not None and x.device.type in path.devices:
            _check_operands(x, w, bias)
            normed = path.qmatmul_add_normed(x, w, residual, weight, eps, bias)
            if normed is not None:
                return normed
    return None


def qmatmul_glu(
    h: torch.Tensor | RMSNormed,
    w_gate: QTensor,
    w_up: QTensor | None,
    *,
    paths: Sequence[FastPath] = (),
) -> torch.Tensor | None:
    """`silu(h @ gate.T) * (h @ up.T)` (float32; `w_up` None: `w_gate` holds the gate rows, then the up
    rows) from the first of `paths` whose `qmatmul_glu` serves it in one call; None where none does (the
    caller takes the products and the activation apart, as without)."""
    x = h.xw if isinstance(h, RMSNormed) else h
    for path in paths:
        if path.qmatmul_glu is not None and x.device.type in path.devices:
            act = path.qmatmul_glu(h, w_gate, w_up)
            if act is not None:
                return act
    return None
