"""Rotary position embeddings (RoPE) as llama.cpp applies them, including YaRN context extension.

Two pairings of the rotated dimensions exist, and which one a GGUF file needs depends on its architecture:
- "normal" (`neox=False`, llama.cpp `LLAMA_ROPE_TYPE_NORM`, used by `llama`): adjacent pairs
  (x[2i], x[2i+1]). The HF -> GGUF converter permutes the rows of `attn_q`/`attn_k` so that this pairing
  on the GGUF weights equals HF's half-split pairing on the original ones.
- "neox" (`neox=True`, `LLAMA_ROPE_TYPE_NEOX`, used by `qwen2`, `phi3`, `gpt-oss`): pairs
  (x[i], x[i + rope_dim/2]); the converter leaves those weights unpermuted.
Only the first `rope_dim` dimensions of a head rotate (phi3's partial rotary); the rest pass through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RopeScaling:
    """YaRN parameters (`{arch}.rope.scaling.*`); gpt-oss uses factor 32, original context 4096."""

    factor: float
    original_context_length: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attn_factor: float = 1.0


def _yarn_correction_dims(rope_dim: int, base: float, scaling: RopeScaling) -> tuple[float, float]:
    """ggml's `ggml_rope_yarn_corr_dims`: the dimension range over which YaRN blends the two regimes."""

    def corr_dim(n_rot: float) -> float:
        return (
            rope_dim
            * math.log(scaling.original_context_length / (n_rot * 2 * math.pi))
            / (2 * math.log(base))
        )

    low = max(0.0, math.floor(corr_dim(scaling.beta_fast)))
    high = min(rope_dim - 1.0, math.ceil(corr_dim(scaling.beta_slow)))
    return low, high


def rope_frequencies(
    head_dim: int,
    base: float,
    rope_dim: int | None = None,
    scaling: RopeScaling | None = None,
    *,
    max_positions: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, float32 `[max_positions, rope_dim // 2]`; row p holds the angles of position p.

    theta_i = p * base^(-2i / rope_dim). With YaRN (ggml `rope_yarn`), each frequency blends the
    interpolated angle (theta / factor) and the original one by a ramp over the correction dims, and
    cos/sin are scaled by `attn_factor * (1 + 0.1 ln factor)`. Computed in float64, stored in float32.
    """
    rope_dim = head_dim if rope_dim is None else rope_dim
    if rope_dim % 2 or rope_dim > head_dim:
        raise ValueError(f"rope dimension {rope_dim} must be even and at most the head dimension {head_dim}")
    i = torch.arange(rope_dim // 2, dtype=torch.float64)
    inv_freq = base ** (-2.0 * i / rope_dim)
    mscale = 1.0
    if scaling is not None:
        low, high = _yarn_correction_dims(rope_dim, base, scaling)
        ramp = 1.0 - ((i - low) / max(0.001, high - low)).clamp(0.0, 1.0)  # 1: keep the original frequency
        inv_freq = inv_freq / scaling.factor * (1.0 - ramp) + inv_freq * ramp
        mscale = scaling.attn_factor * (1.0 + 0.1 * math.log(scaling.factor))
    angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos = (torch.cos(angles) * mscale).to(torch.float32)
    sin = (torch.sin(angles) * mscale).to(torch.float32)
    return cos.to(device), sin.to(device)


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, neox: bool
) -> torch.Tensor:
    """Rotates `x[..., T, head_dim]` at absolute `positions[T]` with tables from `rope_frequencies`."""
    rope_dim = cos.shape[-1] * 2
    c, s = cos[positions], sin[positions]  # [T, rope_dim/2]
    rot, rest = x[..., :rope_dim], x[..., rope_dim:]
    if neox:
        x1, x2 = rot[..., : rope_dim // 2], rot[..., rope_dim // 2 :]
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    o1 = x1 * c - x2 * s
    o2 = x1 * s + x2 * c
    rot = torch.cat([o1, o2], dim=-1) if neox else torch.stack([o1, o2], dim=-1).flatten(-2)
    return torch.cat([rot, rest], dim=-1) if rest.shape[-1] else rot
