"""The GPT-2 adapter (M0-W-1215): LayerNorm (M0-W-1432), tanh GELU (M0-W-1433), learned absolute positions
(M0-W-1434), the config it reads and the errors a malformed file gets. Logits against llama.cpp are in
tests/oracle/test_gpt_logits.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reference_worker.device_memory import DeviceMemory
from reference_worker.models import gpt2
from reference_worker.models.base import ModelConfigError
from reference_worker.models.gpt2 import GPT2Config, GPT2Model, gelu, layer_norm
from tests.worker.llama_helpers import load_model, read_weights


@pytest.fixture(scope="module")
def tiny():
    model, _, gguf = load_model("tiny/gpt2-f32.gguf")
    return model, gguf


def test_config_is_read_from_the_gpt2_metadata(tiny):
    model, _ = tiny
    c = model.config
    assert (c.n_embd, c.n_layer, c.n_head, c.n_head_kv, c.n_ff, c.head_dim) == (256, 2, 4, 4, 1024, 64)
    assert c.norm_eps == pytest.approx(1e-5)
    assert c.tied_output and model.output is model.token_embd  # no output.weight: logits reuse wte
    assert c.vocab_size == model.token_embd.shape[0]


def test_layer_norm_is_mean_and_biased_variance_with_scale_and_bias():
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 16) * 4 + 2, torch.randn(16), torch.randn(16)
    torch.testing.assert_close(layer_norm(x, w, b, 1e-5), F.layer_norm(x, (16,), w, b, 1e-5))


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    torch.testing.assert_close(gelu(x), F.gelu(x, approximate="tanh"), rtol=1e-12, atol=1e-12)
    assert (gelu(x) - F.gelu(x)).abs().max() > 1e-4  # and not the erf form


def test_positions_index_the_learned_table_from_the_cache_length(tiny, monkeypatch):
    model, _ = tiny
    looked_up: list[list[int]] = []
    real = gpt2.qembedding

    def spy(ids, w, **kw):
        if w is model.position_embd:
            looked_up.append(ids.tolist())
        return real(ids, w, **kw)

    monkeypatch.setattr(gpt2, "qembedding", spy)
    cache = model.new_cache(8)
    model.forward(torch.tensor([5, 6, 7]), cache)
    model.forward(torch.tensor([8]), cache)
    assert looked_up == [[0, 1, 2], [3]]  # wpe[position_ids] (M0-W-1434)


def test_the_same_token_at_another_position_gives_other_logits(tiny):
    model, _ = tiny
    logits = model.forward(torch.tensor([9, 9]), model.new_cache(2))
    assert not torch.allclose(logits[0], logits[1])


def test_decode_steps_match_prefill(tiny):
    model, _ = tiny
    ids = torch.arange(20, 32)
    prefill = model.forward(ids, model.new_cache(16))
    cache = model.new_cache(16)
    model.forward(ids[:5], cache)
    steps = torch.cat([model.forward(ids[i : i + 1], cache) for i in range(5, 12)])
    torch.testing.assert_close(steps, prefill[5:], rtol=1e-5, atol=1e-5)


def test_positions_past_the_learned_table_are_refused(tiny):
    model, _ = tiny
    n = model.config.context_length
    cache = model.new_cache(n + 1)
    cache.length = n  # as if the context were full
    with pytest.raises(ValueError, match="exceeds the context length"):
        model.forward(torch.tensor([1]), cache)


def test_missing_metadata_key_names_the_key_and_the_file(tiny):
    _, gguf = tiny
    metadata = {k: v for k, v in gguf.metadata.items() if k != "gpt2.attention.layer_norm_epsilon"}
    with pytest.raises(
        ModelConfigError, match=r"x\.gguf: .*'gpt2\.attention\.layer_norm_epsilon' is missing"
    ):
        GPT2Config.from_metadata(metadata, read_weights(gguf), "x.gguf")


def test_missing_tensor_names_the_tensor_and_the_file(tiny):
    _, gguf = tiny
    weights = {k: v for k, v in read_weights(gguf).items() if k != "position_embd.weight"}
    with pytest.raises(ModelConfigError, match=r"gpt2-f32\.gguf: required tensor 'position_embd\.weight'"):
        GPT2Model.from_gguf(
            gguf,
            weights,
            torch.device("cpu"),
            DeviceMemory("cpu"),
            attention="reference",
            kv_cache="contiguous",
        )
