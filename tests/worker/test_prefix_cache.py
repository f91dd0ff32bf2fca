"""The prefix cache (M1-PREFIX-CACHE, `reference_worker.prefix_cache`): a prompt that starts like the last one
prefills only the rest, and gives what a cold prefill gives; its memory is accounted and given up when a
request needs it."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fixtures.paths import fixture_path
from reference_worker.engine import InferenceEngine
from reference_worker.generation import CancelToken, EndEvent, ErrorCode, GenerationRequest, TokenEvent
from reference_worker.prefix_cache import shared_prefix
from reference_worker.tokenizers import load_tokenizer
from tests.worker.llama_helpers import load_model

# A system prompt long enough that its positions are most of the prompt, then two different questions.
SYSTEM = "You are a careful assistant. Answer in one short sentence, and never make up facts. " * 3
FIRST, SECOND = SYSTEM + "What is a GPU?", SYSTEM + "Why is the sky blue?"


def test_the_shared_prefix_stops_before_the_prompts_last_token():
    assert shared_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert shared_prefix([1, 2, 3], [1, 2, 3]) == 2  # the same prompt: its last token is run again
    assert shared_prefix([1, 2], [1, 2, 3, 4]) == 2
    assert shared_prefix([5, 2], [1, 2, 3]) == 0
    assert shared_prefix([], [1, 2]) == 0


def engine_for(name: str, *, prefix_cache: bool, kv_cache: str = "contiguous", device: str = "cpu", **load):
    model, memory, gguf = load_model(name, kv_cache=kv_cache, device=device, **load)
    tokenizer = load_tokenizer(gguf.metadata, fixture_path(name))
    return InferenceEngine(model, tokenizer, prefix_cache=prefix_cache, device=device), memory


def greedy(engine: InferenceEngine, prompt: str, max_tokens: int = 12) -> list[int]:
    request = GenerationRequest(job_id="j", prompt=prompt, max_tokens=max_tokens, temperature=0.0)
    events = list(engine.generate(request, CancelToken()))
    assert isinstance(events[-1], EndEvent), events[-1]
    return [e.token_id for e in events if isinstance(e, TokenEvent)]


@pytest.mark.parametrize(
    "name",
    [
        "tiny/llama-q8_0.gguf",
        "tiny/qwen2-q4_k_m.gguf",
        "tiny/phi3-q8_0.gguf",
        "tiny/gpt2-q8_0.gguf",
        "tiny/gpt-oss-mxfp4_moe.gguf",
    ],
)
def test_a_prompt_that_starts_like_the_last_gives_the_cold_tokens(name):
    cold, _ = engine_for(name, prefix_cache=False)
    warm, _ = engine_for(name, prefix_cache=True)
    expected = {prompt: greedy(cold, prompt) for prompt in (FIRST, SECOND)}
    assert greedy(warm, FIRST) == expected[FIRST]  # nothing kept yet
    assert warm.prefix_cache.hits == 0
    assert greedy(warm, SECOND) == expected[SECOND]  # the system prompt reused
    assert greedy(warm, SECOND) == expected[SECOND]  # all but the last token reused
    assert greedy(warm, FIRST) == expected[FIRST]
    shared = shared_prefix(warm.tokenize(FIRST), warm.tokenize(SECOND))
    assert shared > len(warm.tokenize(SECOND)) // 2
    assert warm.prefix_cache.hits == 3
    assert warm.prefix_cache.reused_positions == 2 * shared + len(warm.tokenize(SECOND)) - 1


def test_the_reused_prefill_gives_the_cold_logits():
    """Positions 0..L-1 from the kept cache, the rest prefilled: the first token's logits are those of the
    whole prompt prefilled at once (here within float rounding: the products run over fewer rows)."""
    cold, _ = engine_for("tiny/llama-f32.gguf", prefix_cache=False)
    warm, _ = engine_for("tiny/llama-f32.gguf", prefix_cache=True)
    greedy(warm, FIRST)
    ids = warm.tokenize(SECOND)
    from reference_worker.sampling import SamplingParams

    sessions = [engine.start(ids, 4, SamplingParams(temperature=0.0)) for engine in (cold, warm)]
    try:
        assert sessions[1].cache.length == len(ids)
        torch.testing.assert_close(sessions[1]._logits, sessions[0]._logits, atol=1e-5, rtol=1e-5)
    finally:
        for session in sessions:
            session.free()


def test_the_kept_cache_is_accounted_and_dropped_when_a_request_needs_its_memory():
    engine, memory = engine_for("tiny/llama-q8_0.gguf", prefix_cache=True)
    greedy(engine, FIRST)
    kept = memory.by_category["kv_cache"]
    assert kept > 0 and engine.prefix_cache.kept_positions == len(engine.tokenize(FIRST))
    # Room for one request's cache but not for two: the kept one gives way, the request is served.
    per_position = kept // engine.prefix_cache._cache.capacity
    memory.budget_bytes = memory.used_bytes + 8 * per_position
    assert greedy(engine, "Hello", max_tokens=4)
    assert engine.prefix_cache.hits == 0
    # A request that cannot fit even alone is VRAM_OOM, as without the prefix cache (M0-W-1021).
    request = GenerationRequest(job_id="j", prompt=SECOND, max_tokens=64, temperature=0.0)
    events = list(engine.generate(request, CancelToken()))
    assert events[-1].code == ErrorCode.VRAM_OOM
    assert memory.by_category["kv_cache"] == 0  # the failed request kept nothing


def test_a_failed_job_keeps_nothing_and_a_cancelled_one_keeps_its_prompt():
    engine, memory = engine_for("tiny/llama-q8_0.gguf", prefix_cache=True)
    cancel = CancelToken()
    events = engine.generate(GenerationRequest(job_id="j", prompt=FIRST, max_tokens=8), cancel)
    for event in events:
        if isinstance(event, TokenEvent):
            cancel.cancel()
    assert engine.prefix_cache.kept_positions == len(engine.tokenize(FIRST))

    def exploding_step(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    engine.model.forward = exploding_step
    events = list(engine.generate(GenerationRequest(job_id="j", prompt=SECOND, max_tokens=8), CancelToken()))
    assert events[-1].code == ErrorCode.INTERNAL
    assert engine.prefix_cache.kept_positions == 0 and memory.by_category["kv_cache"] == 0


def test_a_paged_cache_is_reused_too():
    cold, _ = engine_for("tiny/llama-q8_0.gguf", prefix_cache=False, kv_cache="paged")
    warm, _ = engine_for("tiny/llama-q8_0.gguf", prefix_cache=True, kv_cache="paged")
    greedy(warm, FIRST, max_tokens=4)
    assert greedy(warm, SECOND, max_tokens=40) == greedy(cold, SECOND, max_tokens=40)
    assert warm.prefix_cache.hits == 1


def test_clear_frees_the_kept_cache():
    engine, memory = engine_for("tiny/llama-q8_0.gguf", prefix_cache=True)
    greedy(engine, FIRST)
    engine.prefix_cache.clear()
    assert memory.by_category["kv_cache"] == 0 and engine.prefix_cache.kept_positions == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gpt-oss"])
def test_on_cuda_the_fast_path_with_graphs_reuses_the_prefix_and_gives_the_cold_tokens(arch):
    """The worker's CUDA defaults (fast kernels, decode graphs, prefill graphs, one step ahead): a cold prompt
    is prefilled by a captured graph, a reused one eagerly from its first new position; the kept cache is
    adopted when it holds the job's positions (the decode graph of its address replayed)."""
    from kernels.backend import KernelConfig

    name = f"tiny/{arch}-q4_k_m.gguf"
    cold, _ = engine_for(name, prefix_cache=False, device="cuda", kernels=KernelConfig())
    warm, _ = engine_for(name, prefix_cache=True, device="cuda", kernels=KernelConfig())
    assert warm.graphs is not None and warm.prefill_graphs is not None
    short = SYSTEM.split(" Answer")[0]  # "You are a careful assistant."
    prompts = [FIRST, SECOND, SECOND, short + " What is a GPU?", short + " Why is the sky blue?", FIRST]
    for prompt in prompts:
        assert greedy(warm, prompt, max_tokens=24) == greedy(cold, prompt, max_tokens=24), prompt
    assert warm.prefix_cache.hits == len(prompts) - 1
