"""Logits of the gpt2 and gpt-oss adapters against two independent references:

- llama.cpp (llama-cpp-python, F32 KV cache), every position of a 20-token prompt that is longer than
  the tiny gpt-oss sliding window (8), so sliding-window attention is exercised;
- a plain float64 forward written here from gguf-py's dequantized weights (every expert computed densely),
  the oracle for "quantized weights, dequantized on the fly" (MXFP4 experts included).

Measured on the tiny fixtures (docs/models-gpt.md keeps the table): gpt-oss F32 vs llama.cpp 5e-7 relative
RMS; quantized files 1e-2 (llama.cpp quantizes activations to Q8_0 inside its matmuls); gpt2 F32 3e-4,
because llama.cpp's CPU GELU reads an fp16 table; ours vs float64 ~1e-7 for every file type.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from fixtures.paths import fixture_path
from reference_worker.device_memory import DeviceMemory
from reference_worker.gguf import GGUFFile
from reference_worker.loader import load_weights
from reference_worker.logs import EventLog
from reference_worker.models import create_model, gpt_oss
from tests.oracle.llama_cpp_oracle import llama_cpp_logits, relative_rms

pytestmark = pytest.mark.oracle

PROMPT_LENGTH = 20  # > the tiny gpt-oss sliding window of 8


def prompt(vocab_size: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(1).integers(0, vocab_size, PROMPT_LENGTH)]


def our_logits(path: Path, ids: list[int]) -> np.ndarray:
    """Through the worker's own path: GGUF reader, loader, model registry, contiguous KV cache."""
    file = GGUFFile.open(path)
    memory = DeviceMemory("cpu")
    weights = load_weights(file, memory, EventLog(io.StringIO()))
    model = create_model(file, weights, "cpu", memory)
    return model.forward(torch.tensor(ids), model.new_cache(len(ids))).numpy()


def compare(record_property, ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    err = float(relative_rms(ours, ref).max())
    top1 = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    record_property("max_relative_rms", err)
    record_property("top1_agreement", top1)
    return err, top1


# --------------------------------------------------------------------------------------------------
# vs llama.cpp


@pytest.mark.parametrize(
    ("name", "tolerance", "min_top1"),
    [
        ("tiny/gpt-oss-f32.gguf", 1e-5, 1.0),
        ("tiny/gpt-oss-f16.gguf", 2e-3, 1.0),
        # llama.cpp quantizes activations to Q8_0 inside quantized matmuls: ~1e-2 is its noise, not ours.
        ("tiny/gpt-oss-mxfp4_moe.gguf", 3e-2, 0.9),
        ("tiny/gpt-oss-q8_0.gguf", 3e-2, 0.9),
        ("tiny/gpt-oss-q4_k_m.gguf", 3e-2, 0.9),
        # llama.cpp's CPU GELU rounds its input to fp16 and reads the result from an fp16 table.
        ("tiny/gpt2-f32.gguf", 1e-3, 1.0),
        ("tiny/gpt2-q8_0.gguf", 3e-2, 0.9),
        ("tiny/gpt2-q4_0.gguf", 3e-2, 0.9),
    ],
)
def test_logits_match_llama_cpp_at_every_position(name, tolerance, min_top1, record_property):
    path = fixture_path(name)
    ids = prompt(_vocab_size(path))
    ref = llama_cpp_logits(path, ids)
    err, top1 = compare(record_property, our_logits(path, ids), ref)
    assert err < tolerance, f"{name}: max relative RMS {err:.2e} over {len(ids)} positions"
    assert top1 >= min_top1, f"{name}: top-1 agreement {top1:.2f}"


def test_sliding_window_is_what_makes_gpt_oss_match(monkeypatch):
    """Negative control: with the window switched off, logits agree before position W and not after."""
    path = fixture_path("tiny/gpt-oss-f32.gguf")
    ids = prompt(_vocab_size(path))
    ref = llama_cpp_logits(path, ids)
    real_block = gpt_oss.Block

    class FullAttentionBlock(real_block):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.sliding_window = None

    monkeypatch.setattr(gpt_oss, "Block", FullAttentionBlock)
    err = relative_rms(our_logits(path, ids), ref)
    window = int(GGUFFile.open(path).metadata["gpt-oss.attention.sliding_window"])
    assert err[:window].max() < 1e-5
    assert err[window:].min() > 1e-3


# --------------------------------------------------------------------------------------------------
# vs a float64 reference over gguf-py's dequantized weights


@pytest.mark.parametrize(
    "name",
    [
        "tiny/gpt-oss-f32.gguf",
        "tiny/gpt-oss-mxfp4_moe.gguf",
        "tiny/gpt-oss-q4_k_m.gguf",
        "tiny/gpt2-f32.gguf",
        "tiny/gpt2-q8_0.gguf",
    ],
)
def test_logits_match_a_float64_reference_on_the_same_weights(name, record_property):
    path = fixture_path(name)
    reader = gguf.GGUFReader(path)
    ids = prompt(_vocab_size(path))
    reference = gpt_oss_reference if name.startswith("tiny/gpt-oss") else gpt2_reference
    ref = reference(_metadata(reader), _dequantized(reader), ids).numpy()
    err, top1 = compare(record_property, our_logits(path, ids), ref)
    assert err < 1e-5, f"{name}: max relative RMS {err:.2e} against float64"
    assert top1 == 1.0


def _vocab_size(path: Path) -> int:
    return int(next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight").shape[1])


def _metadata(reader: gguf.GGUFReader) -> dict[str, object]:
    arch = reader.get_field("general.architecture").contents()
    return {
        key.removeprefix(arch + "."): field.contents()
        for key, field in reader.fields.items()
        if key.startswith(arch)
    }


def _dequantized(reader: gguf.GGUFReader) -> dict[str, torch.Tensor]:
    """Every tensor dequantized by gguf-py (bit-exact with ggml), as float64 in PyTorch order."""
    return {
        t.name: torch.from_numpy(
            gguf.quants.dequantize(t.data, t.tensor_type)
            .astype(np.float64)
            .reshape(list(reversed(t.shape.tolist())))
        )
        for t in reader.tensors
    }


def _causal_softmax_attention(q, k, v, scale, window=None, sinks=None):
    """q [T, H, D], k/v [T, KV, D] in float64; query head h reads KV head h // (H / KV)."""
    n_tokens, n_head, _ = q.shape
    group = n_head // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("thd,shd->hts", q, k) * scale
    pos = torch.arange(n_tokens)
    visible = pos[None, :] <= pos[:, None]
    if window:
        visible &= pos[:, None] - pos[None, :] < window
    scores = scores.masked_fill(~visible, -math.inf)
    if sinks is not None:
        scores = torch.cat([scores, sinks.view(n_head, 1, 1).expand(n_head, n_tokens, 1)], -1)
    probs = torch.softmax(scores, -1)[..., :n_tokens]
    return torch.einsum("hts,shd->thd", probs, v).reshape(n_tokens, -1)


def gpt_oss_reference(md: dict, w: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    H, KV, D = md["attention.head_count"], md["attention.head_count_kv"], md["attention.key_length"]
    eps, k_used, window = (
        md["attention.layer_norm_rms_epsilon"],
        md["expert_used_count"],
        md["attention.sliding_window"],
    )
    base, factor, orig = (
        md["rope.freq_base"],
        md["rope.scaling.factor"],
        md["rope.scaling.original_context_length"],
    )

    def rms(x, g):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g

    # YaRN as ggml_rope_ext computes it (ext_factor 1, beta_fast 32, beta_slow 1).
    def corr_dim(n_rot):
        return D * math.log(orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(0, math.floor(corr_dim(32.0))), min(D - 1, math.ceil(corr_dim(1.0)))
    i = torch.arange(D // 2, dtype=torch.float64)
    theta = base ** (-2 * i / D)
    keep = 1 - ((i - low) / max(0.001, high - low)).clamp(0, 1)
    theta = theta / factor * (1 - keep) + theta * keep
    angle = torch.arange(len(ids), dtype=torch.float64)[:, None] * theta
    mscale = 1 + 0.1 * math.log(factor)
    cos, sin = (torch.cos(angle) * mscale)[:, None], (torch.sin(angle) * mscale)[:, None]

    def rope(x):
        a, b = x[..., : D // 2], x[..., D // 2 :]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    T = len(ids)
    x = w["token_embd.weight"][ids]
    for layer in range(md["block_count"]):
        p = f"blk.{layer}."

        def lin(name, h, p=p):
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        h = rms(x, w[p + "attn_norm.weight"])
        q, k, v = (
            lin("attn_q", h).view(T, H, D),
            lin("attn_k", h).view(T, KV, D),
            lin("attn_v", h).view(T, KV, D),
        )
        a = _causal_softmax_attention(
            rope(q),
            rope(k),
            v,
            1 / math.sqrt(D),
            window if layer % 2 == 0 else None,
            w[p + "attn_sinks.weight"],
        )
        x = x + lin("attn_output", a)
        h = rms(x, w[p + "post_attention_norm.weight"])
        router = lin("ffn_gate_inp", h)
        top, chosen = router.topk(k_used, -1)
        gates = torch.zeros_like(router).scatter(-1, chosen, torch.softmax(top, -1))  # dense [T, n_expert]
        moe = torch.zeros_like(x)
        for e in range(router.shape[-1]):  # every expert, weighted by its (mostly zero) gate
            g = h @ w[p + "ffn_gate_exps.weight"][e].T + w[p + "ffn_gate_exps.bias"][e]
            u = h @ w[p + "ffn_up_exps.weight"][e].T + w[p + "ffn_up_exps.bias"][e]
            g, u = g.clamp(max=7.0), u.clamp(-7.0, 7.0)
            y = (g * torch.sigmoid(1.702 * g) * (u + 1)) @ w[p + "ffn_down_exps.weight"][e].T
            moe += gates[:, e : e + 1] * (y + w[p + "ffn_down_exps.bias"][e])
        x = x + moe
    return rms(x, w["output_norm.weight"]) @ w["output.weight"].T


def gpt2_reference(md: dict, w: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    H, eps, T = md["attention.head_count"], md["attention.layer_norm_epsilon"], len(ids)

    def ln(x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def lin(name, h):
        return h @ w[name + ".weight"].T + w[name + ".bias"]

    x = w["token_embd.weight"][ids] + w["position_embd.weight"][:T]
    D = x.shape[-1] // H
    for layer in range(md["block_count"]):
        p = f"blk.{layer}."
        q, k, v = lin(p + "attn_qkv", ln(x, p + "attn_norm")).view(T, 3, H, D).unbind(1)
        x = x + lin(p + "attn_output", _causal_softmax_attention(q, k, v, 1 / math.sqrt(D)))
        h = lin(p + "ffn_up", ln(x, p + "ffn_norm"))
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        x = x + lin(p + "ffn_down", h)
    return ln(x, "output_norm") @ w.get("output.weight", w["token_embd.weight"]).T
