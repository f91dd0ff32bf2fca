"""GPT-2 (`general.architecture = "gpt2"`): the model M0-W-1215 and M0-W-1432..1434 describe.

One forward pass, nanoGPT style, tensor names as llama.cpp's `gpt2` graph loads them:
    x = token_embd[tokens] + position_embd[positions]                      (M0-W-1434: wpe[position_ids])
    per block:  x += attn_output( attention( split(attn_qkv(layer_norm(x))) ) )   (M0-W-1432)
                x += ffn_down( gelu(ffn_up(layer_norm(x))) )                      (M0-W-1433)
    logits = output( layer_norm(x) )                                       output = token_embd when tied
Every matrix has a bias; LayerNorm has a scale and a bias. The spec's HF names map to GGUF names:
wte -> token_embd, wpe -> position_embd, h.{L}.ln_1 -> blk.{L}.attn_norm, attn.c_attn -> attn_qkv,
attn.c_proj -> attn_output, ln_2 -> ffn_norm, mlp.c_fc -> ffn_up, mlp.c_proj -> ffn_down, ln_f -> output_norm,
lm_head -> output. This is *not* the architecture of GPT-OSS (see gpt_oss.py and docs/models-gpt.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from kernels.backend import KernelSet
from kernels.qmatmul import qembedding
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

ARCH = "gpt2"


@dataclass(frozen=True)
class GPT2Config:
    """Hyper-parameters read 1:1 from the file's `gpt2.*` metadata."""

    vocab_size: int  # rows of token_embd.weight: the width of the logits
    context_length: int  # also the rows of position_embd.weight
    n_embd: int  # embedding_length
    n_layer: int  # block_count
    n_head: int  # attention.head_count
    n_head_kv: int  # attention.head_count_kv; GPT-2 itself is multi-head (= n_head)
    n_ff: int  # feed_forward_length (4 * n_embd in GPT-2)
    norm_eps: float = 1e-5  # attention.layer_norm_epsilon (M0-W-1432)
    tied_output: bool = False  # no output.weight: the logits reuse token_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], weights: dict[str, QTensor], source: str) -> GPT2Config:
        def key(name: str, default: Any = ...) -> Any:
            return metadata_value(metadata, f"{ARCH}.{name}", default, source=source)

        if "token_embd.weight" not in weights:
            raise ModelConfigError(f"{source}: required tensor 'token_embd.weight' is missing")
        n_head = int(key("attention.head_count"))
        n_embd = int(key("embedding_length"))
        n_head_kv = int(key("attention.head_count_kv", n_head))
        if n_embd % n_head or n_head % n_head_kv:
            raise ModelConfigError(
                f"{source}: embedding_length {n_embd}, head_count {n_head}, head_count_kv {n_head_kv} do not divide"
            )
        return cls(
            vocab_size=weights["token_embd.weight"].shape[0],
            context_length=int(key("context_length")),
            n_embd=n_embd,
            n_layer=int(key("block_count")),
            n_head=n_head,
            n_head_kv=n_head_kv,
            n_ff=int(key("feed_forward_length")),
            norm_eps=float(key("attention.layer_norm_epsilon")),
            tied_output="output.weight" not in weights,
        )


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """M0-W-1432: (x - mean) / sqrt(var + eps) * gamma + beta, biased variance, in float32."""
    centred = x - x.mean(-1, keepdim=True)
    return centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    """M0-W-1433: the tanh approximation 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), which is what
    ggml_gelu computes (llama.cpp's CPU backend reads it from an fp16 table; docs/models-gpt.md)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class Block:
    def __init__(self, tensors: TensorTable, i: int, config: GPT2Config, kernels: KernelSet) -> None:
        c, p = config, f"blk.{i}."
        self.kernels = kernels
        E, F = c.n_embd, c.n_ff
        qkv_dim = E + 2 * c.n_head_kv * c.head_dim
        matrix, vector = tensors.matrix, tensors.vector
        self.attn_norm, self.attn_norm_b = vector(p + "attn_norm.weight", E), vector(p + "attn_norm.bias", E)
        self.wqkv, self.bqkv = matrix(p + "attn_qkv.weight", qkv_dim, E), vector(p + "attn_qkv.bias", qkv_dim)
        self.wo, self.bo = matrix(p + "attn_output.weight", E, E), vector(p + "attn_output.bias", E)
        self.ffn_norm, self.ffn_norm_b = vector(p + "ffn_norm.weight", E), vector(p + "ffn_norm.bias", E)
        self.w_up, self.b_up = matrix(p + "ffn_up.weight", F, E), vector(p + "ffn_up.bias", F)
        self.w_down, self.b_down = matrix(p + "ffn_down.weight", E, F), vector(p + "ffn_down.bias", E)
        self.qkv_split = [E, c.n_head_kv * c.head_dim, c.n_head_kv * c.head_dim]

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        mm = self.kernels.qmatmul
        return mm(gelu(mm(h, self.w_up, self.b_up)), self.w_down, self.b_down)


class GPT2Model(GGUFAdapter):
    architecture = ARCH
    config_type = GPT2Config

    def __init__(
        self,
        config: GPT2Config,
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
        self.position_embd = tensors.matrix("position_embd.weight", c.context_length, c.n_embd)
        self.layers = [Block(tensors, i, c, self.kernels) for i in range(c.n_layer)]
        self.output_norm = tensors.vector("output_norm.weight", c.n_embd)
        self.output_norm_b = tensors.vector("output_norm.bias", c.n_embd)
        self.output = (
            self.token_embd if c.tied_output else tensors.matrix("output.weight", c.vocab_size, c.n_embd)
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
        """`positions` (device tensor): the decode step of a CUDA graph, see `decode_step.py`."""
        c = self.config
        mm = self.kernels.qmatmul
        n_tokens, start = tokens.shape[0], cache.length
        step = positions is not None
        # Learned positions end at context_length: there is no row for a later position.
        if not step:
            positions = next_positions(cache, n_tokens, c.context_length, self.device)
        checked = not step and last_row is None  # a step's or captured prefill's ids: checked by the caller
        x = qembedding(tokens, self.token_embd, checked=checked).float()
        x = x + qembedding(positions, self.position_embd, checked=checked).float()
        for i, layer in enumerate(self.layers):
            h = layer_norm(x, layer.attn_norm, layer.attn_norm_b, c.norm_eps)
            q, k, v = mm(h, layer.wqkv, layer.bqkv).split(layer.qkv_split, dim=-1)
            q = q.reshape(n_tokens, c.n_head, c.head_dim).transpose(0, 1)  # [n_head, T, head_dim]
            k = k.reshape(n_tokens, c.n_head_kv, c.head_dim).transpose(0, 1)
            v = v.reshape(n_tokens, c.n_head_kv, c.head_dim).transpose(0, 1)
            if step:
                keys, values = cache.write_at(i, k, v, positions)
            else:
                keys, values = cache.update(i, k, v)
            a = self.attention(q, keys, values, start_pos=start, scale=self.scale, positions=positions)
            x = x + mm(a.transpose(0, 1).reshape(n_tokens, -1), layer.wo, layer.bo)
            x = x + layer.mlp(layer_norm(x, layer.ffn_norm, layer.ffn_norm_b, c.norm_eps))
        if not step:
            cache.advance(n_tokens)
        if last_row is not None:  # a captured prefill: the prompt's last row, not the padding's
            x = x.index_select(0, last_row)
        elif last_only:
            x = x[-1:]
        return mm(layer_norm(x, self.output_norm, self.output_norm_b, c.norm_eps), self.output).float()
