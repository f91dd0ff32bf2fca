"""The engine's event contract: stop reasons, stop strings, UTF-8, cancel, OOM, context limits, cleanup."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fixtures.paths import fixture_path
from reference_worker.device_memory import DeviceMemory
from reference_worker.engine import GRAPH_CACHE_BUCKET, DecodeSession, InferenceEngine, render_chat_template
from reference_worker.generation import (
    CancelToken,
    EndEvent,
    ErrorCode,
    ErrorEvent,
    GenerationRequest,
    PromptEvent,
    StopReason,
    TokenEvent,
)
from reference_worker.models.kv_cache import ContiguousKVCacheAllocator, KVLayout
from reference_worker.sampling import SamplingParams
from reference_worker.tokenizers import load_tokenizer
from tests.worker.llama_helpers import load_model

# A toy vocabulary: one token per piece; id 0 is BOS, id 1 is EOS.
PIECES = [b"", b"", b"a", b"b", b"S", b"T", b"O", b"P", b"x", b"\xe2\x82", b"\xac", b" ", b"\n"]
LAYOUT = KVLayout(n_layer=1, n_head_kv=1, head_dim=4)


class ToyTokenizer:
    kind = "gguf-bpe"
    vocab_size = len(PIECES)
    bos_id, eos_id = 0, 1
    eog_ids = frozenset({1})
    model_max_context = None
    chat_template = None
    add_bos = True
    add_space_prefix = False

    def encode(self, text, *, add_special=True, parse_special=True):
        return [self.bos_id] * add_special + [PIECES.index(c.encode()) for c in text]

    def decode(self, ids, *, render_special=False):
        return b"".join(PIECES[i] for i in ids).decode("utf-8", "replace")

    def token_bytes(self, token_id, *, render_special=False):
        return PIECES[token_id]


class ScriptedConfig:
    vocab_size = len(PIECES) + 3  # padded beyond the tokenizer's vocabulary, as real files are
    context_length = 16


class ScriptedModel:
    """Greedy decoding of this model yields `script`, one token per step; its cache is a real one."""

    def __init__(self, script: list[int], memory: DeviceMemory, fail_at: int | None = None) -> None:
        self.config = ScriptedConfig()
        self.script, self.fail_at = script, fail_at
        self.allocator = ContiguousKVCacheAllocator(LAYOUT, memory)
        self.fed: list[int] = []

    def new_cache(self, max_tokens):
        return self.allocator.new_cache(max_tokens)

    def forward(self, tokens, cache, *, last_only=False):
        cache.check_room(tokens.shape[0])
        if cache.length == 0:
            self.n_prompt = tokens.shape[0]
        cache.advance(tokens.shape[0])
        step = cache.length - self.n_prompt
        if step == self.fail_at:
            raise RuntimeError("kernel exploded")
        self.fed.extend(tokens.tolist())
        logits = torch.zeros(1, self.config.vocab_size)
        logits[0, self.script[step]] = 1.0
        return logits


def ids(text: str) -> list[int]:
    return [PIECES.index(c.encode()) for c in text]


def job_events(engine, request, cancel):
    """The job's token and terminal events; the leading PromptEvent is checked and set aside."""
    events = engine.generate(request, cancel)
    first = next(events)
    if isinstance(first, PromptEvent):
        assert first.prompt_tokens == len(engine.tokenize(request.prompt))
    else:  # a prompt refused before tokenizing ends at once
        yield first
    yield from events


def run(script, *, prompt="ab", memory=None, cancel_after=None, lookahead=False, **request):
    memory = memory or DeviceMemory("cpu")
    model = ScriptedModel(script, memory, fail_at=request.pop("fail_at", None))
    engine = InferenceEngine(model, ToyTokenizer())
    engine.lookahead = lookahead  # the CUDA choice (KernelConfig.lookahead_on); its bookkeeping runs on CPU
    cancel = CancelToken()
    events = []
    req = GenerationRequest(job_id="j", prompt=prompt, **{"temperature": 0.0, **request})
    for ev in job_events(engine, req, cancel):
        events.append(ev)
        if cancel_after is not None and len(events) == cancel_after:
            cancel.cancel()
    assert memory.by_category["kv_cache"] == 0, "the KV cache must be freed in every outcome"
    return events, model


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


def check_stream(events) -> None:
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert [e.index for e in tokens] == list(range(len(tokens)))
    assert isinstance(events[-1], EndEvent | ErrorEvent) and events[:-1] == tokens
    if isinstance(events[-1], EndEvent):
        assert events[-1].tokens_out == len(tokens)


def test_max_tokens_ends_with_max_tokens():
    events, model = run(ids("abab") * 3, max_tokens=5)
    check_stream(events)
    end = events[-1]
    assert end.stop_reason == StopReason.MAX_TOKENS and end.tokens_out == 5 and end.prompt_tokens == 3
    assert text_of(events) == "ababa"
    assert end.first_token_ms is not None and end.decode_time_ms >= 0
    assert model.fed == [0, *ids("ab"), *ids("abab")]  # the last sampled token is never fed


def test_eos_ends_generation_and_is_not_emitted():
    events, _ = run([*ids("ab"), 1, *ids("ab")], max_tokens=10)
    check_stream(events)
    assert events[-1].stop_reason == StopReason.EOS and text_of(events) == "ab"
    assert all(e.token_id != 1 for e in events[:-1])


def test_stop_string_across_tokens_is_not_emitted():
    events, _ = run([*ids("aSTOPb")], max_tokens=10, stop=("STOP",))
    check_stream(events)
    assert events[-1].stop_reason == StopReason.STOP_SEQUENCE
    assert events[-1].stop_sequence_matched == "STOP" and text_of(events) == "a"


def test_held_back_prefix_is_emitted_when_generation_ends():
    events, _ = run([*ids("xST"), 1], max_tokens=10, stop=("STOP",))
    check_stream(events)
    assert events[-1].stop_reason == StopReason.EOS and text_of(events) == "xST"
    events, _ = run([*ids("xST")], max_tokens=3, stop=("STOP",))
    assert events[-1].stop_reason == StopReason.MAX_TOKENS and text_of(events) == "xST"


def test_multibyte_character_split_across_tokens():
    euro_a, euro_b = PIECES.index(b"\xe2\x82"), PIECES.index(b"\xac")
    events, _ = run([euro_a, euro_b, *ids("a")], max_tokens=3)
    check_stream(events)
    assert [e.text for e in events[:-1]] == ["", "€", "a"]


def test_cancel_is_checked_every_token():
    events, _ = run(ids("abababab"), max_tokens=8, cancel_after=2)
    check_stream(events)
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == ErrorCode.CANCELLED
    assert len(events) == 3


def test_kv_cache_over_budget_is_vram_oom_and_the_next_request_works():
    memory = DeviceMemory("cpu", budget_bytes=6 * LAYOUT.bytes_per_position())
    events, _ = run(ids("abab"), max_tokens=5, memory=memory)  # 3 prompt + 4 fed positions: too many
    assert (
        isinstance(events[-1], ErrorEvent) and events[-1].code == ErrorCode.VRAM_OOM and events[-1].retriable
    )
    events, _ = run(ids("abab"), max_tokens=4, memory=memory)
    assert events[-1].stop_reason == StopReason.MAX_TOKENS


def test_prompt_longer_than_context_is_invalid_request():
    events, _ = run(ids("ab"), prompt="ab" * 8, max_tokens=4)
    assert events == [events[-1]] and events[-1].code == ErrorCode.INVALID_REQUEST
    assert "context" in events[-1].message


def test_generation_that_fills_the_context_ends_with_max_tokens():
    events, _ = run(ids("ab") * 10, prompt="ab" * 6, max_tokens=100)  # 13 prompt tokens, context 16
    assert events[-1].stop_reason == StopReason.MAX_TOKENS and events[-1].tokens_out == 4


def test_a_failing_forward_is_internal_error():
    events, _ = run(ids("abab"), max_tokens=4, fail_at=2)
    check_stream(events)
    assert events[-1].code == ErrorCode.INTERNAL and "kernel exploded" in events[-1].detail
    assert "RuntimeError" not in events[-1].message  # the class and text stay in the log


LOOKAHEAD_CASES = {
    "max_tokens": (ids("abab") * 3, dict(max_tokens=5)),
    "eos": ([*ids("ab"), 1, *ids("ab")], dict(max_tokens=10)),
    "stop string": ([*ids("aSTOPb")], dict(max_tokens=10, stop=("STOP",))),
    "held-back prefix": ([*ids("xST"), 1], dict(max_tokens=10, stop=("STOP",))),
    "cancel": (ids("abababab"), dict(max_tokens=8, cancel_after=2)),
    "fills the context": (ids("ab") * 10, dict(prompt="ab" * 6, max_tokens=100)),
    "failing forward": (ids("abab"), dict(max_tokens=4, fail_at=2)),
    "sampled": (ids("abab") * 3, dict(max_tokens=6, temperature=1.0, seed=3)),
}


@pytest.mark.parametrize("case", LOOKAHEAD_CASES)
def test_lookahead_gives_the_same_events_and_forwards_at_most_one_token_more(case):
    """A session one step ahead of the host (KernelConfig.lookahead, CUDA) streams exactly the events of
    one that is not: the same tokens, text, stop and error, from samples drawn in the same order. It
    forwards at most one token the request does not use, never past max_tokens or the cache."""
    script, request = LOOKAHEAD_CASES[case]
    plain, plain_model = run(script, **request)
    ahead, ahead_model = run(script, lookahead=True, **request)

    def untimed(events):
        return [
            dataclasses.replace(e, first_token_ms=None, decode_time_ms=0) if isinstance(e, EndEvent) else e
            for e in events
        ]

    assert untimed(ahead) == untimed(plain)
    extra = ahead_model.fed[len(plain_model.fed) :]
    assert ahead_model.fed[: len(plain_model.fed)] == plain_model.fed and len(extra) <= 1
    if case == "max_tokens":
        assert not extra  # the last token of the budget is never forwarded


def test_padded_vocabulary_logits_are_never_sampled():
    events, _ = run([len(PIECES) + 1] * 3, max_tokens=2, temperature=1.0)  # logit peak in the padding
    assert all(e.token_id < len(PIECES) for e in events[:-1])


def test_metrics_hooks_see_every_stage():
    calls = []

    class Recorder:
        def __getattr__(self, name):
            return lambda *args: calls.append(name)

    engine = InferenceEngine(
        ScriptedModel(ids("abab"), DeviceMemory("cpu")), ToyTokenizer(), metrics=Recorder()
    )
    list(
        job_events(
            engine,
            GenerationRequest(job_id="j", prompt="a", max_tokens=2, temperature=0.0),
            CancelToken(),
        )
    )
    assert calls == ["request_start", "first_token", "token", "token", "end"]


def test_chat_template_wraps_the_prompt_as_a_user_turn():
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert render_chat_template(template, "Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def tiny_llama_engine():
    model, memory, gguf = load_model("tiny/llama-f32.gguf")
    tokenizer = load_tokenizer(gguf.metadata, fixture_path("tiny/llama-f32.gguf"))
    return InferenceEngine(model, tokenizer), memory


def test_tiny_llama_generates_reproducibly_with_a_seed():
    engine, memory = tiny_llama_engine()

    def once(seed):
        req = GenerationRequest(job_id="j", prompt="Hello world", max_tokens=8, temperature=0.8, seed=seed)
        return list(job_events(engine, req, CancelToken()))

    first, again, other = once(7), once(7), once(8)
    check_stream(first)
    assert isinstance(first[-1], EndEvent)
    assert [e.token_id for e in first[:-1]] == [e.token_id for e in again[:-1]]
    assert [e.token_id for e in first[:-1]] != [e.token_id for e in other[:-1]]
    assert memory.by_category["kv_cache"] == 0


def test_tiny_llama_kv_budget_gives_vram_oom():
    engine, memory = tiny_llama_engine()
    memory.budget_bytes = memory.used_bytes + 1000  # the weights fit, a KV cache does not
    events = list(
        job_events(engine, GenerationRequest(job_id="j", prompt="Hello", max_tokens=4), CancelToken())
    )
    assert events[-1].code == ErrorCode.VRAM_OOM and memory.by_category["kv_cache"] == 0


def test_a_graph_bucket_the_budget_cannot_hold_gives_the_job_the_positions_it_needs():
    engine, memory = tiny_llama_engine()
    engine.graphs = object()  # KV caches rounded to GRAPH_CACHE_BUCKET (a CPU cache never replays a graph)
    probe = engine.model.new_cache(1)
    per_position = memory.by_category["kv_cache"]
    probe.free()
    prompt = engine.tokenize("Hello")
    needed = len(prompt) + 4 - 1
    bucket = min(GRAPH_CACHE_BUCKET, engine.max_context)
    assert needed < bucket

    def capacity_for_a_4_token_job() -> int:
        session = engine.start(prompt, 4, SamplingParams())
        capacity = session.cache.capacity
        session.free()
        return capacity

    assert capacity_for_a_4_token_job() == bucket
    memory.budget_bytes = memory.used_bytes + per_position * (needed + 8)  # the job fits, the bucket not
    assert capacity_for_a_4_token_job() == needed
    memory.budget_bytes = memory.used_bytes + per_position * (needed - 1)  # neither fits
    events = list(
        job_events(engine, GenerationRequest(job_id="j", prompt="Hello", max_tokens=4), CancelToken())
    )
    assert events[-1].code == ErrorCode.VRAM_OOM and memory.by_category["kv_cache"] == 0


def test_a_session_that_fails_after_its_cache_is_allocated_frees_it(monkeypatch):
    engine, memory = tiny_llama_engine()

    def failing_step(*args, **kwargs):
        raise torch.OutOfMemoryError("no room for the step's buffers")

    monkeypatch.setattr("reference_worker.engine.DecodeStep", failing_step)
    events = list(
        job_events(engine, GenerationRequest(job_id="j", prompt="Hello", max_tokens=4), CancelToken())
    )
    assert events[-1].code == ErrorCode.VRAM_OOM and memory.by_category["kv_cache"] == 0


def test_chunked_prefill_gives_the_same_next_token_logits():
    engine, _ = tiny_llama_engine()
    prompt = engine.tokenize("The quick brown fox jumps over the lazy dog")
    params = SamplingParams(temperature=0.0)
    whole = engine.start(prompt, 4, params)
    whole_logits = whole._logits.clone()
    whole.free()
    session = DecodeSession(engine.model, prompt, len(prompt) + 3, whole.sampler)
    session.start(chunk=3)
    torch.testing.assert_close(session._logits, whole_logits, atol=1e-5, rtol=1e-5)
    session.free()


def test_on_cpu_the_fast_kernels_run_the_static_decode_step() -> None:
    """With `--kernels fast` on CPU, llama-family decode steps take the step form (the kernel set's decode
    functions); the reference kernels, and adapters whose step form does not use them, keep the plain
    forward."""
    from kernels.backend import KernelConfig

    def step_of(name: str, kernels: KernelConfig) -> bool:
        model, _, gguf = load_model(name, weight_cache=True, kernels=kernels)
        engine = InferenceEngine(model, load_tokenizer(gguf.metadata, fixture_path(name)), device="cpu")
        session = engine.start([5, 6, 7], 4, SamplingParams(temperature=0.0))
        try:
            return session.step._eager is not None
        finally:
            session.free()

    assert step_of("tiny/qwen2-q4_k_m.gguf", KernelConfig())
    assert not step_of("tiny/qwen2-q4_k_m.gguf", KernelConfig(kernels="reference"))
    assert not step_of("tiny/gpt2-q8_0.gguf", KernelConfig())
