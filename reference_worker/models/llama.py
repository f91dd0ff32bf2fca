"""The Llama family (`llama`, `qwen2`, `phi3`): RMSNorm, RoPE, grouped-query attention, SwiGLU (M0-W-1214).

One forward pass, gpt-fast style:
    x = token_embd[tokens]
    per block:  x += attn_output( attention( rope(q), rope(k), v ) )   with q, k, v from rms_norm(x)
                x += ffn_down( silu(ffn_gate(h)) * ffn_up(h) )          with h = rms_norm(x)
    logits = output( rms_norm(x) )                                       output = token_embd when tied
What differs per architecture, all read from the file:
- `qwen2`: biases on attn_q/k/v; RoPE neox; freq_base 1e6 in the real files (M0 §6).
- `phi3`: one fused `attn_qkv` = [q; k; v] and one fused `ffn_up` = [gate; up] (llama.cpp `ggml_swiglu`
  takes the first half as the gate); RoPE neox over `rope.dimension_count` dimensions.
- `llama` (e.g. SmolLM2): RoPE "normal" (adjacent pairs); the converter permuted attn_q/k for it.
Weights stay in their ggml type (`QTensor`); matmuls go through `kernels.qmatmul` and never dequantize a
whole matrix. Activations, norms and logits are float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kernels.backend import KernelSet
from kernels.cpu_step import NativeStep
from kernels.qmatmul import RMSNormed
from reference_worker.models.attention import AttentionKernel
from reference_worker.models.base import (
    GGUFAdapter,
    ModelConfigError,
    TensorTable,
    metadata_value,
    next_positions,
)
from reference_worker.models.kv_cache import KVCache, KVCacheAllocator
from reference_worker.models.rope import apply_rope, rope_frequencies

# llama.cpp `llama_model_rope_type`: LLM_ARCH_LLAMA is ROPE_TYPE_NORM, QWEN2 and PHI3 are ROPE_TYPE_NEOX.
NEOX_ROPE = {"llama": False, "qwen2": True, "phi3": True}


@dataclass
class LlamaConfig:
    architecture: str
    vocab_size: int  # rows of token_embd: the padded vocabulary, not the tokenizer's (M0 §6)
    context_length: int
    dim: int  # embedding_length
    n_layer: int  # block_count
    n_head: int
    n_head_kv: int  # < n_head: grouped-query attention
    ffn_dim: int  # feed_forward_length
    norm_eps: float  # attention.layer_norm_rms_epsilon
    rope_base: float = 10000.0  # llama.cpp's default when rope.freq_base is absent
    head_dim: int = 0  # attention.key_length, else dim // n_head
    rope_dim: int = 0  # rope.dimension_count (phi3: partial rotary), else head_dim
    rope_neox: bool = False
    tied_output: bool = False  # no output.weight: the logits reuse token_embd

    def __post_init__(self) -> None:
        self.head_dim = self.head_dim or self.dim // self.n_head
        self.rope_dim = self.rope_dim or self.head_dim
        if self.n_head % self.n_head_kv:
            raise ModelConfigError(
                f"head_count {self.n_head} is not a multiple of head_count_kv {self.n_head_kv}"
            )

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], weights: dict[str, Any], source: str) -> LlamaConfig:
        arch = metadata_value(metadata, "general.architecture", source=source)

        def key(name: str, default: Any = ...) -> Any:
            return metadata_value(metadata, f"{arch}.{name}", default, source=source)

        if "token_embd.weight" not in weights:
            raise ModelConfigError(f"{source}: required tensor 'token_embd.weight' is missing")
        n_head = int(key("attention.head_count"))
        return cls(
            architecture=arch,
            vocab_size=weights["token_embd.weight"].shape[0],
            context_length=int(key("context_length")),
            dim=int(key("embedding_length")),
            n_layer=int(key("block_count")),
            n_head=n_head,
            n_head_kv=int(key("attention.head_count_kv", n_head)),
            ffn_dim=int(key("feed_forward_length")),
            norm_eps=float(key("attention.layer_norm_rms_epsilon")),
            rope_base=float(key("rope.freq_base", 10000.0)),
            head_dim=int(key("attention.key_length", 0)),
            rope_dim=int(key("rope.dimension_count", 0)),
            rope_neox=NEOX_ROPE[arch],
            tied_output="output.weight" not in weights,
        )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight, in float32. The weights are used as stored (M0 §6)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class Block:
    """One transformer block: GGUF tensors `blk.{i}.*`, shapes checked against the config. q/k/v may be one
    fused `attn_qkv` (phi3) and gate/up one fused `ffn_up` of twice the width (phi3); biases are optional
    (qwen2 has q/k/v biases)."""

    def __init__(self, tensors: TensorTable, i: int, config: LlamaConfig, kernels: KernelSet) -> None:
        c, p = config, f"blk.{i}."
        self.kernels = kernels
        E, F = c.dim, c.ffn_dim
        self.q_dim = c.n_head * c.head_dim
        self.kv_dim = c.n_head_kv * c.head_dim
        matrix, vector, bias = tensors.matrix, tensors.vector, tensors.optional_vector
        self.attn_norm = vector(p + "attn_norm.weight", E)
        self.ffn_norm = vector(p + "ffn_norm.weight", E)
        self.fused_qkv = tensors.has(p + "attn_qkv.weight")
        if self.fused_qkv:
            qkv_dim = self.q_dim + 2 * self.kv_dim
            self.wqkv, self.bqkv = (
                matrix(p + "attn_qkv.weight", qkv_dim, E),
                bias(p + "attn_qkv.bias", qkv_dim),
            )
        else:
            self.wq, self.bq = matrix(p + "attn_q.weight", self.q_dim, E), bias(p + "attn_q.bias", self.q_dim)
            self.wk, self.bk = (
                matrix(p + "attn_k.weight", self.kv_dim, E),
                bias(p + "attn_k.bias", self.kv_dim),
            )
            self.wv, self.bv = (
                matrix(p + "attn_v.weight", self.kv_dim, E),
                bias(p + "attn_v.bias", self.kv_dim),
            )
        self.wo, self.bo = matrix(p + "attn_output.weight", E, self.q_dim), bias(p + "attn_output.bias", E)
        self.fused_gate_up = not tensors.has(p + "ffn_gate.weight")
        self.w_up = matrix(p + "ffn_up.weight", 2 * F if self.fused_gate_up else F, E)
        self.w_gate = None if self.fused_gate_up else matrix(p + "ffn_gate.weight", F, E)
        self.w_down = matrix(p + "ffn_down.weight", E, F)

    def qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mm = self.kernels.qmatmul
        if self.fused_qkv:
            return mm(h, self.wqkv, self.bqkv).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        return self.kernels.qmatmuls(h, (self.wq, self.wk, self.wv), (self.bq, self.bk, self.bv))

    def ffn(
        self,
        h: torch.Tensor | RMSNormed,
        residual: torch.Tensor,
        fused: Any = None,
        then_norm: tuple[torch.Tensor, float] | None = None,
    ) -> torch.Tensor | RMSNormed:
        """`residual + ffn(h)` (with `then_norm`, that sum's next rms_norm unformed: `KernelSet.qmatmul_add`)."""
        mm = self.kernels.qmatmul
        act = None
        if fused is not None:  # decode step: gate, up and the activation in one launch where served
            act = self.kernels.qmatmul_glu(
                h, *((self.w_up, None) if self.fused_gate_up else (self.w_gate, self.w_up))
            )
        if act is None:
            if self.fused_gate_up:
                gate, up = mm(h, self.w_up).chunk(2, dim=-1)  # [gate; up], as ggml_swiglu splits it
            else:
                gate, up = self.kernels.qmatmuls(h, (self.w_gate, self.w_up))
            act = fused.silu_mul(gate, up) if fused is not None else F.silu(gate) * up
        return self.kernels.qmatmul_add(act, self.w_down, residual, then_norm=then_norm)


class LlamaModel(GGUFAdapter):
    config_type = LlamaConfig
    step_uses_decode_kernels = True  # the step form runs the kernel set's decode functions, if any

    def __init__(
        self,
        config: LlamaConfig,
        weights: dict[str, Any],
        device: torch.device,
        attention: AttentionKernel,
        kv_allocator: KVCacheAllocator,
        *,
        source: str = "model",
        kernels: KernelSet | None = None,
    ) -> None:
        self.architecture = config.architecture
        super().__init__(config, device, attention, kv_allocator, kernels)
        tensors = TensorTable(weights, source, device)
        c = config
        self.token_embd = tensors.matrix("token_embd.weight", c.vocab_size, c.dim)
        self.layers = [Block(tensors, i, c, self.kernels) for i in range(c.n_layer)]
        self.output_norm = tensors.vector("output_norm.weight", c.dim)
        self.output = (
            self.token_embd if c.tied_output else tensors.matrix("output.weight", c.vocab_size, c.dim)
        )
        self.rope_cos, self.rope_sin = rope_frequencies(
            config.head_dim,
            config.rope_base,
            config.rope_dim,
            max_positions=config.context_length,
            device=device,
        )
        self.scale = 1.0 / math.sqrt(config.head_dim)
        # With the CPU fast kernels, the step form in one C call where every matrix has a native GEMV;
        # `DecodeStep` calls it in place of `forward(..., positions=)`.
        on_cpu_fast = device.type == "cpu" and self.kernels.decode is not None
        self.native_step = NativeStep.for_model(self) if on_cpu_fast else None

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
        attention and the activation."""
        cfg = self.config
        mm = self.kernels.qmatmul
        n_tokens, start = tokens.shape[0], cache.length
        step = positions is not None
        fused = self.kernels.decode if step else None
        norm = fused.rms_norm if fused is not None else rms_norm
        # Decode step with GEMVs that norm their input (CUDA fast path): each layer's last GEMV also
        # forms the next rms_norm's rows x weight, and the next GEMVs apply its 1/rms (`RMSNormed`), so
        # the step runs no norm kernel after the first layer's.
        norms_in_gemv = fused is not None and self.kernels.norms_into_gemv
        h: RMSNormed | torch.Tensor | None = None  # the next GEMV's normed input, when formed ahead
        if not step:
            positions = next_positions(cache, n_tokens, cfg.context_length, self.device)
        checked = not step and last_row is None  # a step's or captured prefill's ids: checked by the caller
        x = self.kernels.qembedding(tokens, self.token_embd, checked=checked).float()  # [T, dim]
        for i, layer in enumerate(self.layers):
            q, k, v = layer.qkv(h if h is not None else norm(x, layer.attn_norm, cfg.norm_eps))
            if fused is not None:  # one position: RoPE, KV store and attention in one kernel
                keys, values = cache.keys[i], cache.values[i]
                a = fused.rope_attention(
                    q, k, v, keys, values, self.rope_cos, self.rope_sin, positions, cfg.rope_neox, self.scale
                )
            else:
                q = q.view(n_tokens, cfg.n_head, cfg.head_dim).transpose(0, 1)  # [n_head, T, head_dim]
                k = k.view(n_tokens, cfg.n_head_kv, cfg.head_dim).transpose(0, 1)
                v = v.view(n_tokens, cfg.n_head_kv, cfg.head_dim).transpose(0, 1)
                q = apply_rope(q, self.rope_cos, self.rope_sin, positions, cfg.rope_neox)
                k = apply_rope(k, self.rope_cos, self.rope_sin, positions, cfg.rope_neox)
                if step:
                    keys, values = cache.write_at(i, k, v, positions)
                else:
                    keys, values = cache.update(i, k, v)
                a = self.attention(q, keys, values, start_pos=start, scale=self.scale, positions=positions)
                a = a.transpose(0, 1)
            if norms_in_gemv:
                following = self.layers[i + 1].attn_norm if i + 1 < len(self.layers) else self.output_norm
                h = self.kernels.qmatmul_add(
                    a.reshape(n_tokens, -1), layer.wo, x, layer.bo, then_norm=(layer.ffn_norm, cfg.norm_eps)
                )
                h = layer.ffn(h, h.x, fused, then_norm=(following, cfg.norm_eps))
                x = h.x
                continue
            x = self.kernels.qmatmul_add(a.reshape(n_tokens, -1), layer.wo, x, layer.bo)
            x = layer.ffn(norm(x, layer.ffn_norm, cfg.norm_eps), x, fused)
        if not step:
            cache.advance(n_tokens)
        if h is not None:  # the output norm came with the last layer's down projection (one position)
            return mm(h, self.output).float()
        if last_row is not None:  # a captured prefill: the prompt's last row, not the padding's
            x = x.index_select(0, last_row)
        elif last_only:
            x = x[-1:]
        return mm(norm(x, self.output_norm, cfg.norm_eps), self.output).float()
