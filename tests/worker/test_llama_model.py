"""The Llama-family adapter: config from metadata, RoPE variants, KV-cached decoding, and a float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from fixtures.paths import fixture_path
from kernels.qtensor import QTensor
from reference_worker.device_memory import DeviceMemory
from reference_worker.gguf import GGUFFile
from reference_worker.models import ADAPTERS, UnsupportedArchitecture, create_model
from reference_worker.models.base import ModelConfigError
from reference_worker.models.llama import LlamaConfig, LlamaModel
from reference_worker.models.rope import RopeScaling, apply_rope, rope_frequencies
from tests.worker.llama_helpers import load_model, read_weights

IDS = [5, 17, 200, 33, 1, 99, 150, 7, 64, 300, 12, 3]


class FakeGGUF:
    def __init__(self, metadata):
        self.metadata = metadata


def test_config_from_metadata_llama():
    model, _, gguf = load_model("tiny/llama-f32.gguf")
    cfg = model.config
    assert (cfg.architecture, cfg.dim, cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.head_dim) == (
        "llama",
        256,
        2,
        4,
        2,
        64,
    )
    assert cfg.vocab_size == gguf.tensors["token_embd.weight"].shape[0]
    assert cfg.rope_base == 1e5 and not cfg.rope_neox and not cfg.tied_output


def test_config_qwen2_is_tied_neox_with_biases():
    model, _, _ = load_model("tiny/qwen2-f32.gguf")
    assert model.config.tied_output and model.config.rope_neox and model.config.rope_base == 1e6
    assert model.output is model.token_embd
    assert model.layers[0].bq is not None


def test_config_phi3_uses_fused_tensors():
    model, _, _ = load_model("tiny/phi3-f32.gguf")
    assert model.layers[0].fused_qkv and model.layers[0].fused_gate_up and model.config.rope_neox


def test_missing_metadata_key_is_named_with_the_file():
    with pytest.raises(ModelConfigError, match=r"model\.gguf: .*llama\.context_length"):
        LlamaConfig.from_metadata(
            {"general.architecture": "llama", "llama.attention.head_count": 4},
            {"token_embd.weight": torch.zeros(10, 8)},
            "model.gguf",
        )


def test_rope_base_defaults_to_10000():
    md = {
        "general.architecture": "llama",
        "llama.context_length": 64,
        "llama.embedding_length": 8,
        "llama.block_count": 1,
        "llama.feed_forward_length": 16,
        "llama.attention.head_count": 2,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
    }
    cfg = LlamaConfig.from_metadata(md, {"token_embd.weight": torch.zeros(10, 8)}, "model.gguf")
    assert cfg.rope_base == 10000.0 and cfg.n_head_kv == 2 and cfg.head_dim == 4 and cfg.tied_output


def test_unknown_architecture_names_it_and_the_supported_list():
    with pytest.raises(UnsupportedArchitecture) as e:
        create_model(FakeGGUF({"general.architecture": "mamba"}), {}, "cpu", None)
    assert "'mamba'" in str(e.value)
    for arch in ADAPTERS:
        assert arch in str(e.value)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
def test_incremental_decoding_matches_one_prefill(arch):
    model, _, _ = load_model(f"tiny/{arch}-f32.gguf")
    ids = torch.tensor(IDS)
    full = model.forward(ids, model.new_cache(len(IDS)))
    cache = model.new_cache(len(IDS))
    parts = [model.forward(ids[:5], cache)] + [
        model.forward(ids[i : i + 1], cache) for i in range(5, len(IDS))
    ]
    torch.testing.assert_close(torch.cat(parts), full, atol=2e-5, rtol=1e-5)
    last = model.forward(ids, model.new_cache(len(IDS)), last_only=True)
    torch.testing.assert_close(last, full[-1:], atol=2e-5, rtol=1e-5)


def reference_forward(model, tokens: list[int]) -> torch.Tensor:
    """Float64, whole dequantized matrices, complex-number RoPE, explicit GQA loops: written independently
    of the adapter's own code paths."""
    cfg = model.config
    f64 = lambda q: q.dequantize().double()  # noqa: E731
    T, H, KV, d, r = len(tokens), cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.rope_dim
    x = f64(model.token_embd)[tokens]
    inv = torch.tensor([cfg.rope_base ** (-2 * i / r) for i in range(r // 2)], dtype=torch.float64)
    rot = torch.polar(torch.ones(T, r // 2, dtype=torch.float64), torch.arange(T)[:, None] * inv[None, :])

    def rope(t):  # t [T, heads, d]
        head, rest = t[..., :r], t[..., r:]
        if cfg.rope_neox:
            z = torch.complex(head[..., : r // 2], head[..., r // 2 :]) * rot[:, None, :]
            head = torch.cat([z.real, z.imag], -1)
        else:
            z = (
                torch.view_as_complex(head.reshape(*head.shape[:-1], r // 2, 2).contiguous())
                * rot[:, None, :]
            )
            head = torch.view_as_real(z).flatten(-2)
        return torch.cat([head, rest], -1)

    def norm(t, w):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + cfg.norm_eps) * w.double()

    def lin(t, w, b=None):
        return t @ f64(w).T + (0 if b is None else b.double())

    for layer in model.layers:
        h = norm(x, layer.attn_norm)
        if layer.fused_qkv:
            q, k, v = lin(h, layer.wqkv).split([H * d, KV * d, KV * d], -1)
        else:
            q, k, v = lin(h, layer.wq, layer.bq), lin(h, layer.wk, layer.bk), lin(h, layer.wv, layer.bv)
        q, k, v = rope(q.view(T, H, d)), rope(k.view(T, KV, d)), v.view(T, KV, d)
        out = torch.zeros(T, H, d, dtype=torch.float64)
        for hh in range(H):
            kv = hh // (H // KV)
            s = q[:, hh] @ k[:, kv].T / math.sqrt(d)
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            out[:, hh] = torch.softmax(s, -1) @ v[:, kv]
        x = x + lin(out.reshape(T, H * d), layer.wo)
        h = norm(x, layer.ffn_norm)
        if layer.fused_gate_up:
            g, u = lin(h, layer.w_up).chunk(2, -1)
        else:
            g, u = lin(h, layer.w_gate), lin(h, layer.w_up)
        x = x + lin(g * torch.sigmoid(g) * u, layer.w_down)
    return lin(norm(x, model.output_norm), model.output)


@pytest.mark.parametrize(
    "name", ["tiny/llama-f32.gguf", "tiny/qwen2-f32.gguf", "tiny/phi3-f32.gguf", "tiny/llama-q4_k_m.gguf"]
)
def test_forward_matches_float64_reference(name):
    model, _, _ = load_model(name)
    ours = model.forward(torch.tensor(IDS), model.new_cache(len(IDS))).double()
    ref = reference_forward(model, IDS)
    rel = ((ours - ref).pow(2).mean() / ref.pow(2).mean()).sqrt().item()
    assert rel < 1e-5, rel


def test_rope_tables_follow_the_formula():
    cos, sin = rope_frequencies(8, 100.0, max_positions=5)
    angle = 3 * 100.0 ** (-2 * 2 / 8)
    assert cos.shape == (5, 4)
    assert math.isclose(cos[3, 2].item(), math.cos(angle), rel_tol=1e-6)
    assert math.isclose(sin[3, 2].item(), math.sin(angle), rel_tol=1e-6)


def test_partial_rotary_leaves_the_tail_untouched():
    x = torch.randn(2, 3, 16)
    cos, sin = rope_frequencies(16, 10000.0, rope_dim=8, max_positions=3)
    y = apply_rope(x, cos, sin, torch.arange(3), neox=True)
    assert torch.equal(y[..., 8:], x[..., 8:])
    assert not torch.allclose(y[..., 1:, :8], x[..., 1:, :8])


def test_normal_rope_on_permuted_weights_equals_neox_on_original():
    # The HF -> GGUF converter permutes q/k rows so that adjacent-pair RoPE reproduces half-split RoPE.
    x = torch.randn(2, 5, 8)
    perm = torch.arange(8).view(2, 4).T.flatten()  # [0, 4, 1, 5, 2, 6, 3, 7]
    cos, sin = rope_frequencies(8, 10000.0, max_positions=5)
    neox = apply_rope(x, cos, sin, torch.arange(5), neox=True)
    normal = apply_rope(x[..., perm], cos, sin, torch.arange(5), neox=False)
    torch.testing.assert_close(normal, neox[..., perm])


def test_yarn_follows_ggml():
    """ggml `rope_yarn` per dimension, written out with floats (factor 32, original context 4096)."""
    sc = RopeScaling(factor=32.0, original_context_length=4096, beta_fast=32.0, beta_slow=1.0)
    dim, base, pos = 64, 150000.0, 1000
    cos, sin = rope_frequencies(dim, base, scaling=sc, max_positions=pos + 1)

    def corr(n_rot):
        return dim * math.log(4096 / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(0, math.floor(corr(32.0))), min(dim - 1, math.ceil(corr(1.0)))
    mscale = 1 + 0.1 * math.log(32.0)
    for i in range(dim // 2):
        extrap = pos * base ** (-2 * i / dim)
        ramp = 1 - min(1.0, max(0.0, (i - low) / max(0.001, high - low)))
        theta = extrap / 32.0 * (1 - ramp) + extrap * ramp
        assert math.isclose(cos[pos, i].item(), math.cos(theta) * mscale, abs_tol=1e-5)
        assert math.isclose(sin[pos, i].item(), math.sin(theta) * mscale, abs_tol=1e-5)


@pytest.mark.parametrize(
    ("name", "drop", "reshape", "message"),
    [
        (
            "qwen2-f32",
            "blk.1.attn_k.weight",
            None,
            r"qwen2-f32\.gguf: required tensor 'blk\.1\.attn_k\.weight'",
        ),
        (
            "llama-f32",
            None,
            "blk.0.ffn_down.weight",
            r"llama-f32\.gguf: tensor 'blk\.0\.ffn_down\.weight' has shape \(\d+, \d+\), expected",
        ),
        (
            "phi3-f32",
            None,
            "blk.0.attn_qkv.weight",
            r"phi3-f32\.gguf: tensor 'blk\.0\.attn_qkv\.weight' has shape",
        ),
    ],
    ids=["missing", "mis-shaped", "mis-shaped-fused-qkv"],
)
def test_a_missing_or_misshaped_tensor_names_it_and_the_file(name, drop, reshape, message):
    """Every weight is checked against the shape the config implies (`TensorTable`), as in the other
    adapters: a bad file is refused at load with the tensor, its shape and the file, not in a matmul."""
    gguf = GGUFFile.open(fixture_path(f"tiny/{name}.gguf"))
    weights = read_weights(gguf)
    if drop:
        del weights[drop]
    if reshape:
        w = weights[reshape]
        weights[reshape] = QTensor(w.data, w.qtype, (w.shape[1], w.shape[0]), w.name)  # transposed dims
    with pytest.raises(ModelConfigError, match=message):
        LlamaModel.from_gguf(
            gguf,
            weights,
            torch.device("cpu"),
            DeviceMemory("cpu"),
            attention="reference",
            kv_cache="contiguous",
        )
