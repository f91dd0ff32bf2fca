"""Prefill as a captured CUDA graph (`reference_worker.prefill_graph`).

On CPU, the computation a graph records: the prompt padded to its bucket, forwarded into the graph's
own cache with the logits of the prompt's last row (`last_row`), then the prompt's positions copied into
the request's cache, must give the plain prefill's logits and cache, for every architecture; and the
bookkeeping around it (buckets, the unchecked ids checked first, one capture per bucket, eager prefill
for what no graph serves), with the capture replaced by its eager computation. On CUDA (skipped
elsewhere): the replay against the eager padded forward, bit for bit, and the engine's tokens with the
graphs on and off.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kernels.backend import KernelConfig
from reference_worker import prefill_graph
from reference_worker.decode_step import DecodeGraphs
from reference_worker.engine import DecodeSession
from reference_worker.models.kv_cache import ContiguousKVCache
from reference_worker.prefill_graph import PREFILL_BUCKETS, PrefillGraphs, bucket_for
from reference_worker.sampling import Sampler, SamplingParams
from tests.worker.llama_helpers import load_model

FIXTURES = [
    "tiny/llama-q4_k_m.gguf",
    "tiny/qwen2-q8_0.gguf",
    "tiny/phi3-q4_0.gguf",
    "tiny/gpt2-f16.gguf",
    "tiny/gpt-oss-mxfp4_moe.gguf",
]
PROMPT = [(7 * i + 3) % 50 + 1 for i in range(21)]  # bucket 32: 11 positions of padding
TOL = 1e-5  # float32 products of 21 and of 32 rows: the same sums, perhaps in another order


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


def plain_prefill(model, prompt: list[int]) -> tuple[torch.Tensor, ContiguousKVCache]:
    cache = model.new_cache(64)
    logits = model.forward(torch.tensor(prompt), cache, last_only=True)[0]
    return logits, cache


class EagerGraph:
    """Stands in for a captured graph on CPU: its replay runs the recorded forward."""

    def __init__(self, captured) -> None:
        self.captured = captured

    def replay(self) -> None:
        self.captured.logits.copy_(self.captured.forward())


@pytest.fixture
def eager_capture(monkeypatch):
    """`PrefillGraphs` on CPU: the capture becomes the eager forward, its replays run it again."""
    captured = []

    def capture(self, pool, side) -> None:
        self.logits = self.forward().clone()
        self.graph = EagerGraph(self)
        captured.append(self.bucket)

    monkeypatch.setattr(prefill_graph._CapturedPrefill, "capture", capture)
    monkeypatch.setattr(prefill_graph, "on_cuda", lambda tensor: True)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: None)
    return captured


def test_buckets() -> None:
    assert [bucket_for(n) for n in (1, 16, 17, 33, 129, 512)] == [16, 16, 32, 64, 256, 512]
    assert bucket_for(513) is None and PREFILL_BUCKETS[-1] == 512  # the engine's prefill chunk


@pytest.mark.parametrize("name", FIXTURES)
def test_the_padded_prefill_gives_the_plain_prefills_logits_and_cache(name, eager_capture) -> None:
    model, _, _ = load_model(name, kernels=KernelConfig(kernels="reference"))
    want, want_cache = plain_prefill(model, PROMPT)
    graphs = PrefillGraphs(model)
    cache = model.new_cache(64)
    got = graphs.prefill(PROMPT, cache)
    assert got is not None and eager_capture == [32]
    assert rel_err(got, want) < TOL
    n = len(PROMPT)
    assert cache.length == n
    assert rel_err(cache.keys[:, :, :n], want_cache.keys[:, :, :n]) < TOL
    assert rel_err(cache.values[:, :, :n], want_cache.values[:, :, :n]) < TOL


def test_one_capture_per_bucket_and_the_graph_cache_is_scratch(eager_capture) -> None:
    model, memory, _ = load_model("tiny/qwen2-q8_0.gguf", kernels=KernelConfig(kernels="reference"))
    graphs = PrefillGraphs(model)
    kv_before = memory.by_category["kv_cache"]
    for prompt in (PROMPT, PROMPT[:17], PROMPT[:5], PROMPT[:2] * 20):  # buckets 32, 32, 16, 64
        want, want_cache = plain_prefill(model, prompt)
        cache = model.new_cache(64)
        assert rel_err(graphs.prefill(prompt, cache), want) < TOL
        cache.free()
        want_cache.free()
    assert eager_capture == [32, 16, 64] and graphs.captures == 3
    # The graph's own cache (the largest bucket within the context) is scratch, not a request's KV cache.
    assert memory.by_category["kv_cache"] == kv_before and memory.by_category["scratch"] > 0


def test_what_no_graph_serves_is_prefilled_eagerly(eager_capture) -> None:
    model, _, _ = load_model("tiny/llama-q4_k_m.gguf", kernels=KernelConfig(kernels="reference"))
    graphs = PrefillGraphs(model, buckets=(16,))
    assert graphs.prefill(PROMPT, model.new_cache(64)) is None  # longer than the largest bucket
    started = model.new_cache(64)
    started.advance(1)
    assert graphs.prefill(PROMPT[:4], started) is None  # a cache that already holds positions
    with pytest.raises(ValueError, match="token id out of range"):
        graphs.prefill([model.config.vocab_size], model.new_cache(64))  # the graph reads ids unchecked
    sampler = Sampler(SamplingParams(temperature=0.0), model.config.vocab_size, device="cpu")
    session = DecodeSession(model, PROMPT, 64, sampler, prefill_graphs=graphs)
    session.start()  # falls back to the eager chunks
    assert rel_err(session._logits, plain_prefill(model, PROMPT)[0]) < TOL and eager_capture == []


def test_a_capture_that_fails_leaves_every_prefill_eager(eager_capture, monkeypatch) -> None:
    """A model whose prefill reads a value back to the host cannot be captured: the request still gets its
    prefill (eager), and the reason is kept."""

    def capture(self, pool, side) -> None:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(prefill_graph._CapturedPrefill, "capture", capture)
    model, _, _ = load_model("tiny/llama-q4_k_m.gguf", kernels=KernelConfig(kernels="reference"))
    graphs = PrefillGraphs(model)
    cache = model.new_cache(64)
    assert graphs.prefill(PROMPT, cache) is None and cache.length == 0
    assert graphs.failure == "RuntimeError: CUDA error: operation not permitted when stream is capturing"
    assert not graphs.serves(len(PROMPT), cache) and graphs.captures == 0


def test_a_session_prefilled_by_a_graph_decodes_the_plain_sessions_tokens(eager_capture) -> None:
    model, _, _ = load_model("tiny/qwen2-q8_0.gguf", kernels=KernelConfig(kernels="reference"))
    tokens = []
    for graphs in (None, PrefillGraphs(model)):
        sampler = Sampler(SamplingParams(temperature=0.0), model.config.vocab_size, device="cpu")
        session = DecodeSession(model, PROMPT, 64, sampler, prefill_graphs=graphs)
        session.start()
        tokens.append([session.next_token() for _ in range(8)])
        session.free()
    assert tokens[0] == tokens[1]


def test_budgets_turn_the_prefill_graphs_off() -> None:
    from reference_worker.config import WorkerConfig

    base = dict(worker_id="w", model="/m.gguf", gpu_device=0, port=8080, device="cuda")
    assert WorkerConfig(**base).kernel_config.prefill_graphs
    assert not WorkerConfig(**base, vram_budget_mb=512).kernel_config.prefill_graphs
    assert not WorkerConfig(**base, kv_cache_size_mb=16).kernel_config.prefill_graphs
    cuda = torch.device("cuda")
    assert KernelConfig().prefill_graphs_on(cuda)
    assert not KernelConfig(fused_prefill=False).prefill_graphs_on(cuda)  # reads expert counts on the host
    assert not KernelConfig(kernels="reference").prefill_graphs_on(cuda)
    assert not KernelConfig().prefill_graphs_on(torch.device("cpu"))


no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
no_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.mark.cuda
@no_cuda
@no_triton
@pytest.mark.parametrize("name", FIXTURES)
def test_the_replay_is_the_eager_padded_prefill_and_decodes_the_same_tokens(name) -> None:
    model, _, _ = load_model(name, device="cuda", kernels=KernelConfig())
    graphs = PrefillGraphs(model)
    tokens = {}
    for label, prefill_graphs in (("eager", None), ("graph", graphs), ("replayed", graphs)):
        sampler = Sampler(SamplingParams(temperature=0.0), model.config.vocab_size, device="cuda")
        session = DecodeSession(
            model, PROMPT, 64, sampler, DecodeGraphs(model), prefill_graphs=prefill_graphs
        )
        session.start()
        tokens[label] = [session.next_token() for _ in range(6)]
        session.free()
    assert graphs.captures == 1 and graphs.failure is None
    assert tokens["graph"] == tokens["replayed"]
    # The eager prefill of 21 rows and the graph's of 32 may sum in another order: greedy tokens agree
    # unless two logits are within that rounding (the tiny models' logits are well apart).
    assert tokens["graph"] == tokens["eager"]
    # The replay against the same padded forward run eagerly: the same kernels, the same bits.
    step = graphs._graphs[32]
    replayed = step.logits.clone()
    assert torch.equal(replayed, step.forward())
