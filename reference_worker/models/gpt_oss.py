"""GPT-OSS (`general.architecture = "gpt-oss"`): the architecture of gpt-oss-20b and gpt-oss-120b.

Not the GPT-2-style model M0-W-1215 describes (docs/models-gpt.md, erratum). One forward pass:
    x = token_embd[tokens]
    per block:  h = rms_norm(x)
                x += attn_output( attention( rope(q), rope(k), v, sinks, window ) )   q/k/v/o with biases
                h = rms_norm(x)                                                      (post_attention_norm)
                x += sum_j  w_j * expert_j(h)     over the top-k experts of router(h), w = softmax(top-k)
                expert(h) = ffn_down( swiglu(ffn_gate(h), ffn_up(h)) )               all with biases
    logits = output( rms_norm(x) )
The surprising details, each checked against llama.cpp's `openai-moe` graph and the gpt-oss torch
reference: one learned sink logit per head; a sliding window on even layers only; YaRN in ggml's
formulation; softmax over the k selected router logits (not over all experts); a SwiGLU clamped at 7
whose linear half gets +1.

Weights stay in their stored ggml type (M0-W-1201): matrices go through `qmatmul`, which dequantizes
bounded row tiles, and an expert tensor (MXFP4 in MXFP4_MOE files) is only read for the experts that
some token selected (`qmatmul_experts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from kernels.backend import KernelSet
from kernels.qmatmul import RMSNormed
from kernels.qtensor import QTensor
from reference_worker.models.attention import AttentionKernel
from reference_worker.models.base import (
    GGUFAdapter,
    ModelConfigError,
    TensorTable,
    metadata_value,
    next_positions,
)
from reference_worker.models.kv_cache import KVCache, KVCacheAllocator
from reference_worker.models.llama import rms_norm
from reference_worker.models.rope import RopeScaling, apply_rope, rope_frequencies

ARCH = "gpt-oss"
SWIGLU_ALPHA = 1.702  # llama.cpp LLM_FFN_SWIGLU_OAI_MOE; gpt-oss reference swiglu(alpha=1.702, limit=7.0)
SWIGLU_LIMIT = 7.0


@dataclass(frozen=True)
class GptOssConfig:
    """Hyper-parameters read 1:1 from the file's `gpt-oss.*` metadata."""

    vocab_size: int  # rows of token_embd.weight: the width of the logits
    context_length: int
    n_embd: int  # embedding_length (2880 in gpt-oss-20b)
    n_layer: int  # block_count
    n_head: int  # attention.head_count
    n_head_kv: int  # attention.head_count_kv (grouped-query attention)
    head_dim: int  # attention.key_length; n_head * head_dim != n_embd in the real models
    norm_eps: float  # attention.layer_norm_rms_epsilon
    n_expert: int  # expert_count
    n_expert_used: int  # expert_used_count: the router's top-k
    n_ff_expert: int  # expert_feed_forward_length
    sliding_window: int  # attention.sliding_window (128 in the real models)
    swa_layers: tuple[bool, ...]  # per layer: True = sliding-window attention, False = full attention
    rope_base: float  # rope.freq_base
    rope_scaling: RopeScaling | None  # rope.scaling.type = yarn

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], weights: dict[str, Any], source: str) -> GptOssConfig:
        def key(name: str, default: Any = ...) -> Any:
            return metadata_value(metadata, f"{ARCH}.{name}", default, source=source)

        if "token_embd.weight" not in weights:
            raise ModelConfigError(f"{source}: required tensor 'token_embd.weight' is missing")
        vocab_size = weights["token_embd.weight"].shape[0]

        n_layer, n_head = int(key("block_count")), int(key("attention.head_count"))
        n_head_kv = int(key("attention.head_count_kv", n_head))
        n_embd = int(key("embedding_length"))
        head_dim = int(key("attention.key_length", n_embd // n_head))
        if int(key("attention.value_length", head_dim)) != head_dim:
            raise ModelConfigError(f"{source}: {ARCH}.attention.value_length differs from key_length")
        if n_head % n_head_kv:
            raise ModelConfigError(
                f"{source}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )
        context_length = int(key("context_length"))
        return cls(
            vocab_size=vocab_size,
            context_length=context_length,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            norm_eps=float(key("attention.layer_norm_rms_epsilon")),
            n_expert=int(key("expert_count")),
            n_expert_used=int(key("expert_used_count")),
            n_ff_expert=int(key("expert_feed_forward_length")),
            sliding_window=int(key("attention.sliding_window")),
            swa_layers=sliding_window_layers(key("attention.sliding_window_pattern", 2), n_layer, source),
            rope_base=float(key("rope.freq_base", 10000.0)),
            rope_scaling=yarn_scaling(key, context_length, source),
        )


def sliding_window_layers(pattern: int | list[bool], n_layer: int, source: str) -> tuple[bool, ...]:
    """llama.cpp `load_swa_pattern`: a per-layer bool array, or a period n in which the last layer is
    full attention. gpt-oss files carry no pattern: n = 2, even layers sliding and odd layers full."""
    if isinstance(pattern, list):
        if len(pattern) != n_layer:
            raise ModelConfigError(
                f"{source}: {ARCH}.attention.sliding_window_pattern has {len(pattern)} entries for {n_layer} layers"
            )
        return tuple(bool(p) for p in pattern)
    n = int(pattern)
    return tuple(n == 0 or layer % n < n - 1 for layer in range(n_layer))


def yarn_scaling(key: Any, context_length: int, source: str) -> RopeScaling | None:
    """`rope.scaling.*` in ggml's YaRN parameterisation (factor 32, original context 4096, betas 32/1).

    llama.cpp sets attn_factor to mscale / (1 + 0.1 ln factor) = 1 for gpt-oss and `ggml_rope_ext` then
    multiplies cos and sin by (1 + 0.1 ln factor), the reference's "concentration"; only an explicit
    `rope.scaling.attn_factor` changes that.
    """
    kind = str(key("rope.scaling.type", "none"))
    if kind == "none":
        return None
    if kind != "yarn":
        raise ModelConfigError(f"{source}: {ARCH}.rope.scaling.type {kind!r} is not supported (yarn, none)")
    return RopeScaling(
        factor=float(key("rope.scaling.factor")),
        original_context_length=int(key("rope.scaling.original_context_length", context_length)),
        beta_fast=float(key("rope.scaling.yarn_beta_fast", 32.0)),
        beta_slow=float(key("rope.scaling.yarn_beta_slow", 1.0)),
        attn_factor=float(key("rope.scaling.attn_factor", 1.0)),
    )


def swiglu(
    gate: torch.Tensor, linear: torch.Tensor, alpha: float = SWIGLU_ALPHA, limit: float = SWIGLU_LIMIT
):
    """gpt-oss's clamped SwiGLU (ggml_swiglu_oai): the gate is clamped from above only, the linear half on
    both sides, and the linear half gets an extra +1 (a bias baked into the activation)."""
    gate = gate.clamp(max=limit)
    linear = linear.clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (linear + 1)


def route(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token, weighted by a softmax over the k selected logits only
    (llama.cpp LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT; the reference's topk-then-softmax)."""
    top_logits, experts = torch.topk(router_logits, k, dim=-1, sorted=True)
    return experts, torch.softmax(top_logits, dim=-1)


class Block:
    """One transformer block: GGUF tensors `blk.{i}.*`, shapes checked against the config."""

    def __init__(self, tensors: TensorTable, i: int, config: GptOssConfig, kernels: KernelSet) -> None:
        c, p = config, f"blk.{i}."
        self.kernels = kernels
        q_dim, kv_dim = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
        E, F, X = c.n_embd, c.n_ff_expert, c.n_expert
        matrix, vector = tensors.matrix, tensors.vector
        self.attn_norm = vector(p + "attn_norm.weight", E)
        self.wq, self.bq = matrix(p + "attn_q.weight", q_dim, E), vector(p + "attn_q.bias", q_dim)
        self.wk, self.bk = matrix(p + "attn_k.weight", kv_dim, E), vector(p + "attn_k.bias", kv_dim)
        self.wv, self.bv = matrix(p + "attn_v.weight", kv_dim, E), vector(p + "attn_v.bias", kv_dim)
        self.wo, self.bo = matrix(p + "attn_output.weight", E, q_dim), vector(p + "attn_output.bias", E)
        self.sinks = vector(p + "attn_sinks.weight", c.n_head)
        self.sliding_window = c.sliding_window if c.swa_layers[i] else None
        # The MoE branch's pre-norm, named after its position in the HF checkpoint.
        self.ffn_norm = vector(p + "post_attention_norm.weight", E)
        self.router = matrix(p + "ffn_gate_inp.weight", X, E)
        self.router_b = vector(p + "ffn_gate_inp.bias", X)
        self.gate_exps = matrix(p + "ffn_gate_exps.weight", X, F, E)  # MXFP4 in MXFP4_MOE files
        self.gate_exps_b = vector(p + "ffn_gate_exps.bias", X, F)
        self.up_exps = matrix(p + "ffn_up_exps.weight", X, F, E)
        self.up_exps_b = vector(p + "ffn_up_exps.bias", X, F)
        self.down_exps = matrix(p + "ffn_down_exps.weight", X, E, F)
        self.down_exps_b = vector(p + "ffn_down_exps.bias", X, E)
        self.n_expert_used = c.n_expert_used

    def moe(
        self,
        h: torch.Tensor | RMSNormed,
        x: torch.Tensor,
        fused: Any = None,
        *,
        then_norm: tuple[torch.Tensor, float] | None = None,
    ) -> torch.Tensor | RMSNormed:
        """x + moe(h) for `[T, E]`; each expert some token selected is dequantized once, the others never.
        Routing stays on the device: expert ids go from top-k straight to the expert GEMVs. With the
        fused decode kernels: top-k and its softmax in one kernel, gate and up in one product, the
        weighted sum and the residual in one kernel. `h` may be an `RMSNormed` (the ffn norm, unformed:
        the router's and the experts' GEMVs take it in); with `then_norm=(weight, eps)` the result is the
        next rms_norm's `RMSNormed` of the sum, from the combining kernel."""
        kernels = self.kernels
        # The router's product and its top-k in one launch where the kernel set asks (`fused_router`,
        # off until timed) and the decode kernels serve this input; else a GEMV, then the routing.
        routed = (
            fused.moe_router(h, self.router, self.router_b, self.n_expert_used)
            if fused is not None and kernels.config.fused_router
            else None
        )
        if routed is not None:
            experts, weights = routed
        else:
            logits = kernels.qmatmul(h, self.router, self.router_b)
            experts, weights = (
                fused.moe_route(logits, self.n_expert_used)
                if fused is not None
                else route(logits, self.n_expert_used)
            )
        biases = (self.gate_exps_b, self.up_exps_b)
        # Decode: gate, up and the clamped SwiGLU in one launch where a fast path serves it.
        act = (
            kernels.qmatmul_experts_glu(
                h, self.gate_exps, self.up_exps, experts, biases, activation=(SWIGLU_ALPHA, SWIGLU_LIMIT)
            )
            if fused is not None
            else None
        )
        if act is None:
            gate, up = kernels.qmatmuls_experts(
                h, (self.gate_exps, self.up_exps), experts, biases
            )  # [T, k, F]
            act = (
                fused.swiglu_oai(gate, up, SWIGLU_ALPHA, SWIGLU_LIMIT)
                if fused is not None
                else swiglu(gate, up)
            )
        # Token t's j-th expert sees act[t, j]: flatten (t, j) so each row goes through its own expert.
        n_tokens, k = experts.shape
        token_rows = act.reshape(n_tokens * k, -1)
        # The weighted sum and the residual in the down products' launch where the kernel set asks
        # (`fused_combine`, off until timed) and a fast path serves it.
        if fused is not None and kernels.config.fused_combine:
            summed = kernels.qmatmul_experts_routed_sum(
                token_rows, self.down_exps, experts, self.down_exps_b, weights, x, then_norm=then_norm
            )
            if summed is not None:
                return summed
        down = kernels.qmatmul_experts(token_rows, self.down_exps, experts.reshape(-1, 1), self.down_exps_b)
        down = down.view(n_tokens, k, -1)
        if fused is not None:
            return fused.moe_combine(x, down, weights, then_norm=then_norm)
        y = x + (down * weights[..., None]).sum(dim=1)
        return y if then_norm is None else RMSNormed(y, y * then_norm[0], then_norm[1])


class GptOssModel(GGUFAdapter):
    architecture = ARCH
    config_type = GptOssConfig
    step_uses_decode_kernels = True  # the step form runs the kernel set's decode functions, if any

    def __init__(
        self,
        config: GptOssConfig,
        weights: dict[str, QTensor],
        device: torch.device,
        attention: AttentionKernel,
        kv_allocator: KVCacheAllocator,
        *,
        source: str = "model",
        kernels: KernelSet | None = None,
    ) -> None:
        super().__init__(config, device, attention, kv_allocator, kernels)
        tensors = TensorTable(weights, source, device)
        c = config
        self.token_embd = tensors.matrix("token_embd.weight", c.vocab_size, c.n_embd)
        self.layers = [Block(tensors, i, c, self.kernels) for i in range(c.n_layer)]
        self.output_norm = tensors.vector("output_norm.weight", c.n_embd)
        self.output = tensors.matrix("output.weight", c.vocab_size, c.n_embd)  # never tied in gpt-oss
        self.rope_cos, self.rope_sin = rope_frequencies(
            c.head_dim, c.rope_base, scaling=c.rope_scaling, max_positions=c.context_length, device=device
        )
        self.scale = 1.0 / math.sqrt(c.head_dim)

    def forward(
        self,
        tokens: torch.Tensor,
        cache: KVCache,
        *,
        last_only: bool = False,
        positions: torch.Tensor | None = None,
        last_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`positions` (device tensor): the decode step of a CUDA graph, see `decode_step.py`; with the
        fused decode kernels of the chosen `KernelSet` (CUDA) it uses them for norms, RoPE + KV store,
        attention (sinks, sliding window), the SwiGLU and the MoE's routing and weighted sum."""
        c = self.config
        mm = self.kernels.qmatmul
        n_tokens, start = tokens.shape[0], cache.length
        step = positions is not None
        fused = self.kernels.decode if step else None
        norm = fused.rms_norm if fused is not None else rms_norm
        # Decode step with GEMVs that norm their input (CUDA fast path, as the llama family's): the
        # attention's output projection also forms the ffn norm's rows x weight, the combining kernel the
        # next layer's attention norm's (or the output norm's); the router's, the experts' and the next
        # q/k/v GEMVs apply its 1/rms, so the step runs no norm kernel after the first layer's.
        norms_in_gemv = fused is not None and self.kernels.norms_into_gemv
        h: RMSNormed | torch.Tensor | None = None  # the next GEMVs' normed input, when formed ahead
        if not step:
            positions = next_positions(cache, n_tokens, c.context_length, self.device)
        checked = not step and last_row is None  # a step's or captured prefill's ids: checked by the caller
        x = self.kernels.qembedding(tokens, self.token_embd, checked=checked).float()  # [T, E]
        for i, layer in enumerate(self.layers):
            if h is None:
                h = norm(x, layer.attn_norm, c.norm_eps)
            q, k, v = self.kernels.qmatmuls(h, (layer.wq, layer.wk, layer.wv), (layer.bq, layer.bk, layer.bv))
            if fused is not None:  # one position: RoPE, KV store and attention (sinks, window) in one kernel
                keys, values = cache.keys[i], cache.values[i]
                a = fused.rope_attention(
                    q, k, v, keys, values, self.rope_cos, self.rope_sin, positions, True, self.scale,
                    layer.sliding_window, layer.sinks,
                )  # fmt: skip
            else:
                q = q.view(n_tokens, c.n_head, c.head_dim).transpose(0, 1)
                k = k.view(n_tokens, c.n_head_kv, c.head_dim).transpose(0, 1)
                v = v.view(n_tokens, c.n_head_kv, c.head_dim).transpose(0, 1)
                q = apply_rope(q, self.rope_cos, self.rope_sin, positions, neox=True)
                k = apply_rope(k, self.rope_cos, self.rope_sin, positions, neox=True)
                if step:
                    keys, values = cache.write_at(i, k, v, positions)
                else:
                    keys, values = cache.update(i, k, v)
                a = self.attention(
                    q,
                    keys,
                    values,
                    start_pos=start,
                    scale=self.scale,
                    sliding_window=layer.sliding_window,
                    sinks=layer.sinks,
                    positions=positions,
                ).transpose(0, 1)
            if norms_in_gemv:
                following = self.layers[i + 1].attn_norm if i + 1 < len(self.layers) else self.output_norm
                h = self.kernels.qmatmul_add(
                    a.reshape(n_tokens, -1), layer.wo, x, layer.bo, then_norm=(layer.ffn_norm, c.norm_eps)
                )
                h = layer.moe(h, h.x, fused, then_norm=(following, c.norm_eps))
                x = h.x
                continue
            x = x + mm(a.reshape(n_tokens, -1), layer.wo, layer.bo)
            x = layer.moe(norm(x, layer.ffn_norm, c.norm_eps), x, fused)
            h = None
        if not step:
            cache.advance(n_tokens)
        if h is not None:  # the output norm came with the last layer's combination (one position)
            return mm(h, self.output).float()
        if last_row is not None:  # a captured prefill: the prompt's last row, not the padding's
            x = x.index_select(0, last_row)
        elif last_only:
            x = x[-1:]
        return mm(norm(x, self.output_norm, c.norm_eps), self.output).float()
