"""The gpt-oss adapter's parts: config from metadata, sinks, sliding window, router, clamped SwiGLU, the
selected-experts-only MoE path, and the errors a malformed file gets. Logits against llama.cpp are in
tests/oracle/test_gpt_logits.py."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from fixtures.paths import fixture_path
from kernels.qtensor import QTensor
from reference_worker.device_memory import DeviceMemory
from reference_worker.gguf import GGUFFile
from reference_worker.models import gpt_oss
from reference_worker.models.attention import ReferenceAttention
from reference_worker.models.base import ModelConfigError
from reference_worker.models.gpt_oss import GptOssConfig, route, sliding_window_layers, swiglu
from tests.worker.llama_helpers import load_model, read_weights

TINY = "tiny/gpt-oss-f32.gguf"


@pytest.fixture(scope="module")
def tiny():
    model, _, gguf = load_model(TINY)
    return model, gguf


def test_config_is_read_from_the_gpt_oss_metadata(tiny):
    model, _ = tiny
    c = model.config
    assert (c.n_embd, c.n_layer, c.n_head, c.n_head_kv, c.head_dim) == (128, 2, 4, 2, 64)
    assert (c.n_expert, c.n_expert_used, c.n_ff_expert, c.sliding_window) == (4, 2, 128, 8)
    assert c.swa_layers == (True, False)  # no pattern key: even layers sliding, odd layers full (llama.cpp)
    assert c.rope_base == 150000.0
    assert c.rope_scaling is not None and c.rope_scaling.factor == 32.0
    assert c.rope_scaling.original_context_length == 4096
    assert c.n_head * c.head_dim != c.n_embd  # like the real model: projections are not square


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (2, (True, False, True, False)),
        (0, (True,) * 4),
        (3, (True, True, False, True)),
        ([False, True] * 2, (False, True) * 2),
    ],
)
def test_sliding_window_pattern_follows_llama_cpp(pattern, expected):
    assert sliding_window_layers(pattern, 4, "f.gguf") == expected


def test_swiglu_clamps_the_gate_above_only_and_the_linear_half_both_ways_then_adds_one():
    gate = torch.tensor([-20.0, -1.0, 0.0, 2.0, 20.0])
    linear = torch.tensor([-20.0, 0.5, 3.0, -1.0, 20.0])
    g = gate.clamp(max=7.0)
    expected = g * torch.sigmoid(1.702 * g) * (linear.clamp(-7.0, 7.0) + 1.0)
    torch.testing.assert_close(swiglu(gate, linear), expected, rtol=0, atol=0)
    # +1 on the linear half: a zero linear input passes the gated gate through unchanged.
    torch.testing.assert_close(
        swiglu(torch.tensor([1.0]), torch.tensor([0.0])), torch.sigmoid(torch.tensor([1.702]))
    )
    # The gate is not clamped from below: a very negative gate still gives (almost) zero, not a clamped value.
    assert swiglu(torch.tensor([-20.0]), torch.tensor([0.0])).abs().item() < 1e-12
    assert swiglu(torch.tensor([100.0]), torch.tensor([100.0])).item() == pytest.approx(7.0 * 8.0, rel=1e-5)


def test_router_takes_a_softmax_over_the_selected_logits_only():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    experts, weights = route(logits, 2)
    assert experts.tolist() == [[1, 3]]  # sorted by logit, largest first
    torch.testing.assert_close(weights, torch.softmax(torch.tensor([[3.0, 2.0]]), -1))
    assert weights.sum().item() == pytest.approx(1.0)


def test_a_sink_takes_softmax_mass_without_contributing_a_value():
    q = torch.ones(1, 1, 4)
    k = torch.ones(1, 1, 4) * 0.5
    v = torch.arange(4.0).view(1, 1, 4)
    score = 0.5 * 4 * 0.5  # q.k * scale
    for sink in (-1.0, 0.0, 2.0):
        out = ReferenceAttention()(q, k, v, start_pos=0, scale=0.5, sinks=torch.tensor([sink]))
        weight = math.exp(score) / (math.exp(score) + math.exp(sink))
        torch.testing.assert_close(out, v * weight)


def test_sliding_window_layers_forget_tokens_older_than_the_receptive_field(tiny):
    model, _ = tiny
    window = model.config.sliding_window
    ids = torch.arange(1, 24)
    changed = ids.clone()
    changed[0] = 300
    for layer in model.layers:  # make layer 1 sliding too (it is full attention in the file)
        layer.sliding_window = window
    try:
        a = model.forward(ids, model.new_cache(32))
        b = model.forward(changed, model.new_cache(32))
    finally:
        for layer, is_swa in zip(model.layers, model.config.swa_layers, strict=True):
            layer.sliding_window = window if is_swa else None
    # A query at p sees keys p-W+1..p; through two sliding layers token 0 reaches positions up to 2(W-1).
    reach = 2 * (window - 1)
    assert not torch.allclose(a[reach], b[reach], rtol=1e-3, atol=1e-3)
    # Not bit-exact: changing token 0 changes its experts, so the other tokens' expert matmuls run in
    # groups of other sizes, and the BLAS may block (and round) those differently.
    torch.testing.assert_close(a[reach + 1 :], b[reach + 1 :], rtol=1e-5, atol=1e-5)


def test_full_attention_layer_still_sees_the_first_token(tiny):
    model, _ = tiny
    ids = torch.arange(1, 24)
    changed = ids.clone()
    changed[0] = 300
    a = model.forward(ids, model.new_cache(32))
    b = model.forward(changed, model.new_cache(32))
    assert not torch.allclose(a[-1], b[-1])  # layer 1 is full attention


def test_decode_steps_match_prefill(tiny):
    model, _ = tiny
    ids = torch.arange(5, 17)
    prefill = model.forward(ids, model.new_cache(16))
    cache = model.new_cache(16)
    model.forward(ids[:4], cache)
    steps = torch.cat([model.forward(ids[i : i + 1], cache) for i in range(4, 12)])
    torch.testing.assert_close(steps, prefill[4:], rtol=1e-5, atol=1e-5)


def test_only_the_selected_experts_are_dequantized(monkeypatch):
    model, _, _ = load_model("tiny/gpt-oss-mxfp4_moe.gguf")
    assert model.layers[0].gate_exps.qtype.name == "MXFP4"
    calls: list[tuple[str, object]] = []
    routed: list[torch.Tensor] = []
    real_dequantize, real_route = QTensor.dequantize, gpt_oss.route

    def spy_dequantize(self, rows=None, **kw):
        calls.append((self.name, rows))
        return real_dequantize(self, rows, **kw)

    def spy_route(logits, k):
        experts, weights = real_route(logits, k)
        routed.append(experts)
        return experts, weights

    monkeypatch.setattr(QTensor, "dequantize", spy_dequantize)
    monkeypatch.setattr(gpt_oss, "route", spy_route)
    model.forward(torch.tensor([7]), model.new_cache(4))  # one token: k = 2 of 4 experts per layer

    for layer, experts in enumerate(routed):
        selected = set(experts.flatten().tolist())
        assert len(selected) == model.config.n_expert_used
        for kind in ("gate", "up", "down"):
            name = f"blk.{layer}.ffn_{kind}_exps.weight"
            assert (name, None) not in calls, f"{name} was dequantized whole"
            touched = {int(n[len(name) + 1 : -1]) for n, _ in calls if n.startswith(name + "[")}
            assert touched == selected, f"{name}: dequantized experts {touched}, selected {selected}"


def test_missing_metadata_key_names_the_key_and_the_file(tiny):
    _, gguf = tiny
    metadata = {k: v for k, v in gguf.metadata.items() if k != "gpt-oss.expert_feed_forward_length"}
    with pytest.raises(
        ModelConfigError, match=r"model\.gguf: .*'gpt-oss\.expert_feed_forward_length' is missing"
    ):
        GptOssConfig.from_metadata(metadata, read_weights(gguf), "model.gguf")


def test_missing_tensor_names_the_tensor_and_the_file(tiny):
    _, gguf = tiny
    weights = {name: t for name, t in read_weights(gguf).items() if name != "blk.1.attn_sinks.weight"}
    with pytest.raises(
        ModelConfigError, match=r"gpt-oss-f32\.gguf: required tensor 'blk\.1\.attn_sinks\.weight'"
    ):
        build(gguf, weights)


def test_an_mxfp4_row_that_is_not_whole_blocks_is_refused_at_load(tmp_path):
    """A 48-value MXFP4 row (not a multiple of the 32-value block) cannot be read: the error names the tensor."""
    raw = bytearray(fixture_path("tiny/gpt-oss-mxfp4_moe.gguf").read_bytes())
    name = b"blk.0.ffn_gate_exps.weight"
    at = raw.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)  # its tensor info: n_dims, ne...
    assert struct.unpack_from("<IQ", raw, at) == (3, 128)
    struct.pack_into("<Q", raw, at + 4, 48)
    path = tmp_path / "bad-mxfp4.gguf"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_gate_exps\.weight") as info:
        gguf = GGUFFile.open(path)
        build(gguf, read_weights(gguf))
    assert "32" in str(info.value)


def build(gguf: GGUFFile, weights: dict[str, QTensor]) -> gpt_oss.GptOssModel:
    memory = DeviceMemory("cpu")
    return gpt_oss.GptOssModel.from_gguf(
        gguf, weights, torch.device("cpu"), memory, attention="reference", kv_cache="contiguous"
    )


@pytest.mark.parametrize(("attention", "kv_cache"), [("sdpa", "contiguous"), ("reference", "paged")])
def test_other_attention_kernels_and_caches_give_the_same_logits(tiny, attention, kv_cache):
    """Sinks and the sliding window go through the AttentionKernel seam; every kernel must honour them."""
    model, _ = tiny
    other, _, _ = load_model(TINY, attention=attention, kv_cache=kv_cache)
    ids = torch.arange(3, 23)
    expected = model.forward(ids, model.new_cache(20))
    torch.testing.assert_close(other.forward(ids, other.new_cache(20)), expected, rtol=1e-5, atol=1e-5)
