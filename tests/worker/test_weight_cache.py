"""The CPU weight cache at load: accounted in its own category, skipped when the budget has no room,
absent in reference mode, and a model served through it agrees with the reference path."""

from __future__ import annotations

import io
import json

import pytest
import torch

from kernels import cpu_dense
from kernels.backend import KernelConfig
from reference_worker.device_memory import DeviceMemory, MemoryCategory
from reference_worker.logs import EventLog
from reference_worker.weight_cache import build_weight_cache
from tests.worker.llama_helpers import load_model

MODEL = "tiny/qwen2-q4_k_m.gguf"


def _quantized(model) -> list:
    return [
        w for layer in model.layers for w in vars(layer).values() if getattr(w, "qtype", None) is not None
    ]


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_cache_bytes_are_accounted_as_weight_cache() -> None:
    model, memory, _ = load_model(MODEL)
    weights = {w.name: w for w in _quantized(model)} | {"output": model.output}
    before = memory.by_category
    log = io.StringIO()
    held = build_weight_cache(weights, memory, EventLog(log), KernelConfig())
    expected = sum(cpu_dense.cache_nbytes(w) for w in weights.values() if cpu_dense.cacheable(w))
    assert held == expected > 0
    assert memory.by_category[MemoryCategory.WEIGHT_CACHE] == held
    assert memory.by_category[MemoryCategory.WEIGHTS] == before[MemoryCategory.WEIGHTS]
    assert memory.used_bytes == sum(before.values()) + held
    (event,) = [e for e in _events(log) if e["event"] == "weight_cache_built"]
    assert event["cache_bytes"] == held and event["skipped"] == []


@pytest.mark.parametrize("name", ["tiny/llama-q4_k_m.gguf", "tiny/qwen2-q4_k_m.gguf"])
def test_each_layers_q_k_v_and_gate_up_are_one_product(name) -> None:
    """`SHARED_INPUT_GROUPS`: the copies of a layer's q, k, v (and gate, up) lie one after another, so
    the model's `qmatmuls` calls are one product each."""
    model, _, _ = load_model(name, weight_cache=True)
    x = torch.randn(1, model.config.dim)
    for layer in model.layers:
        qkv = (layer.wq, layer.wk, layer.wv)
        assert cpu_dense.dense_qmatmuls(x, qkv, (layer.bq, layer.bk, layer.bv)) is not None
        assert cpu_dense.dense_qmatmuls(x, (layer.w_gate, layer.w_up), (None, None)) is not None


def test_no_cache_when_the_budget_has_no_room() -> None:
    _, loaded, _ = load_model(MODEL)
    budget = loaded.used_bytes + 1024  # the weights fit, their dense copy does not
    model, memory, _ = load_model(MODEL, budget_bytes=budget)
    weights = {w.name: w for w in _quantized(model)}
    log = io.StringIO()
    assert build_weight_cache(weights, memory, EventLog(log), KernelConfig()) == 0
    assert memory.by_category[MemoryCategory.WEIGHT_CACHE] == 0
    (event,) = _events(log)
    assert event["event"] == "weight_cache_skipped" and event["level"] == "warning"
    assert all(cpu_dense.dense_weight(w) is None for w in weights.values())


def test_no_cache_in_reference_mode() -> None:
    model, memory, _ = load_model(MODEL, weight_cache=True, kernels=KernelConfig(kernels="reference"))
    assert memory.by_category[MemoryCategory.WEIGHT_CACHE] == 0
    assert all(cpu_dense.dense_weight(w) is None for w in _quantized(model))


def test_no_cache_off_the_cpu() -> None:
    memory = DeviceMemory("meta")
    assert build_weight_cache({}, memory, EventLog(io.StringIO()), KernelConfig()) == 0


@pytest.mark.parametrize(
    "name",
    [
        "tiny/llama-q4_k_m.gguf",
        "tiny/qwen2-q4_k_m.gguf",
        "tiny/phi3-q4_0.gguf",
        "tiny/gpt2-q8_0.gguf",
        "tiny/gpt-oss-mxfp4_moe.gguf",
    ],
)
def test_every_matrix_is_served_from_the_cache_and_logits_agree(name, monkeypatch) -> None:
    """Prefill and decode through the cache agree with the reference path; no matmul falls back to it."""
    ids = torch.tensor([5, 17, 200, 33, 1, 99, 150, 7])
    reference, _, _ = load_model(name)
    with torch.inference_mode():
        expected = reference.forward(ids, reference.new_cache(len(ids)))
    fast, memory, _ = load_model(name, weight_cache=True)
    assert memory.by_category[MemoryCategory.WEIGHT_CACHE] > 0
    fallbacks: list[str] = []
    from kernels import qmatmul as qmatmul_module

    original = qmatmul_module.reference_qmatmul

    def counting(x, w, bias, out_dtype):
        if w.qtype not in cpu_dense.PLAIN_TYPES:  # F32/F16/BF16 are read directly, never copied
            fallbacks.append(w.name)
        return original(x, w, bias, out_dtype)

    monkeypatch.setattr(qmatmul_module, "reference_qmatmul", counting)
    with torch.inference_mode():
        cache = fast.new_cache(len(ids))
        prefill = fast.forward(ids[:5], cache)
        steps = torch.cat([fast.forward(ids[i : i + 1], cache) for i in range(5, len(ids))])
    got = torch.cat([prefill, steps])
    rel = ((got - expected).norm(dim=-1) / expected.norm(dim=-1)).max().item()
    assert rel < 5e-3, f"{name}: relative RMS {rel:.2e} against the reference path"
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.85
    assert not fallbacks, f"{name}: quantized matmuls on the reference path: {sorted(set(fallbacks))}"


@pytest.mark.parametrize(
    "name",
    [
        "tiny/llama-q4_k_m.gguf",
        "tiny/qwen2-q4_k_m.gguf",
        "tiny/phi3-q4_0.gguf",
        "tiny/gpt-oss-mxfp4_moe.gguf",
    ],
)
def test_the_cpu_decode_step_agrees_with_the_reference_path(name) -> None:
    """The engine's CPU decode step (step form over static buffers, `kernels.cpu_decode`, the cache's
    embedding rows and float16 products) follows the reference path's plain forward token by token."""
    from reference_worker.decode_step import DecodeStep

    ids = torch.tensor([5, 17, 200, 33, 1, 99, 150, 7, 60, 61, 62, 63])
    reference, _, _ = load_model(name)
    with torch.inference_mode():
        expected = reference.forward(ids, reference.new_cache(len(ids)))[4:]
    fast, _, _ = load_model(name, weight_cache=True)
    assert fast.kernels.decode is not None and fast.step_uses_decode_kernels
    with torch.inference_mode():
        cache = fast.new_cache(len(ids))
        step = DecodeStep(fast, cache, None, static=True)
        first = fast.forward(ids[:5], cache, last_only=True)
        got = torch.cat([first, *(step(ids[i : i + 1])[None] for i in range(5, len(ids)))])
    assert cache.length == len(ids)
    rel = ((got - expected).norm(dim=-1) / expected.norm(dim=-1)).max().item()
    assert rel < 5e-3, f"{name}: relative RMS {rel:.2e} against the reference path"
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.85
