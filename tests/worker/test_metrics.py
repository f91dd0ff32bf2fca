"""Prometheus metrics (M1-METRICS, M0-W-1350): the text format 0.0.4 read back by prometheus-client's parser, the
counters fed by the engine's hooks, GET /metrics over a real server, and the hooks' no-op default (M0.5)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reference_worker.device_memory import DeviceMemory
from reference_worker.engine import InferenceEngine
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
from reference_worker.logs import EventLog
from reference_worker.metrics import DURATION_BUCKETS_MS, FIRST_TOKEN_BUCKETS_MS, PrometheusMetrics
from reference_worker.metrics_hooks import NoOpMetricsHooks
from reference_worker.server import Limits, ModelInfo, WorkerState
from tests.worker.serving import serving
from tests.worker.test_engine import ScriptedModel, ToyTokenizer, ids

HOOKS = ("request_start", "first_token", "token", "end", "error")

# --- the scrape read back by prometheus-client's own parser ----------------------------------------------


@dataclass
class Exposition:
    types: dict[str, str]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def buckets(self, name: str) -> list[tuple[float, float]]:
        pairs = [(float(dict(k)["le"]), v) for (n, k), v in self.samples.items() if n == f"{name}_bucket"]
        return sorted(pairs)


def parse(text: str) -> Exposition:
    """The text format read by `prometheus_client.parser`; every family typed, no sample twice."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        assert family.type in ("counter", "gauge", "histogram"), family
        assert family.documentation, f"{family.name} has no HELP"
        # The parser names a counter family without `_total`; the exposition's TYPE line carries it.
        types[family.name + ("_total" if family.type == "counter" else "")] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {sample}"
            samples[key] = sample.value
    return Exposition(types, samples)


def scrape(metrics: PrometheusMetrics, vram_bytes: int = 0, uptime_seconds: float = 1.0) -> Exposition:
    return parse(metrics.render(vram_bytes=vram_bytes, uptime_seconds=uptime_seconds))


def test_a_fresh_exposition_lists_every_metric_at_zero():
    text = PrometheusMetrics("w-1").render(vram_bytes=4096, uptime_seconds=2.5)
    assert "# TYPE worker_requests_total counter" in text.splitlines()
    exposition = parse(text)
    assert exposition.types == {
        "worker_vram_bytes": "gauge",
        "worker_requests_total": "counter",
        "worker_tokens_in_total": "counter",
        "worker_tokens_generated_total": "counter",
        "worker_inference_duration_ms": "histogram",
        "worker_first_token_ms": "histogram",
        "worker_uptime_seconds": "gauge",
        "worker_device_allocator_bytes": "gauge",
    }
    assert exposition.value("worker_vram_bytes", worker_id="w-1") == 4096
    assert not [name for name, _ in exposition.samples if name == "worker_device_allocator_bytes"]  # CPU
    for outcome in ("success", "error", "cancelled", "timeout"):
        assert exposition.value("worker_requests_total", outcome=outcome) == 0
    assert (
        exposition.value("worker_tokens_in_total") == 0 == exposition.value("worker_tokens_generated_total")
    )
    for histogram in ("worker_inference_duration_ms", "worker_first_token_ms"):
        assert exposition.value(f"{histogram}_bucket", le="+Inf") == 0
        assert exposition.value(f"{histogram}_sum") == 0 == exposition.value(f"{histogram}_count")
    assert exposition.value("worker_uptime_seconds") == 2.5
    assert not [name for name, _ in exposition.samples if name.endswith("_created")]


def test_the_allocator_pools_are_exposed_as_given():
    text = PrometheusMetrics().render(
        vram_bytes=0, uptime_seconds=1.0, allocator_bytes={"allocated": 1536, "reserved": 2 << 20}
    )
    exposition = parse(text)
    assert exposition.value("worker_device_allocator_bytes", pool="allocated") == 1536
    assert exposition.value("worker_device_allocator_bytes", pool="reserved") == 2 << 20


def test_histogram_buckets_are_cumulative_and_inclusive():
    metrics = PrometheusMetrics()
    for value in (5.0, 5.5, 400.0, 99_999.0):
        metrics.first_token("j", value)
    exposition = scrape(metrics)
    buckets = dict(exposition.buckets("worker_first_token_ms"))
    assert [b for b in buckets if b != float("inf")] == [float(b) for b in FIRST_TOKEN_BUCKETS_MS]
    assert buckets[5.0] == 1  # le is "less than or equal"
    assert buckets[10.0] == 2 and buckets[250.0] == 2 and buckets[500.0] == 3 and buckets[10000.0] == 3
    assert buckets[float("inf")] == 4 == exposition.value("worker_first_token_ms_count")
    assert exposition.value("worker_first_token_ms_sum") == pytest.approx(100_409.5)
    counts = list(buckets.values())
    assert counts == sorted(counts)
    assert [b for b, _ in exposition.buckets("worker_inference_duration_ms")][:-1] == [
        float(b) for b in DURATION_BUCKETS_MS
    ]


def test_label_values_are_escaped():
    exposition = scrape(PrometheusMetrics('a"b\\c\nd'), vram_bytes=7)
    assert exposition.value("worker_vram_bytes", worker_id='a"b\\c\nd') == 7


def test_outcomes_follow_the_terminal_event():
    metrics = PrometheusMetrics()
    for job, event in enumerate(
        [
            EndEvent(2, StopReason.EOS, 5, 3),
            ErrorEvent(ErrorCode.CANCELLED, "cancelled"),
            ErrorEvent(ErrorCode.INFERENCE_TIMEOUT, "too slow", True),
            ErrorEvent(ErrorCode.VRAM_OOM, "oom", True),
            ErrorEvent(ErrorCode.INTERNAL, "boom", True),
        ]
    ):
        metrics.request_start(f"j{job}", 4)
        (metrics.end if isinstance(event, EndEvent) else metrics.error)(f"j{job}", event)
    exposition = scrape(metrics)
    outcomes = {o: exposition.value("worker_requests_total", outcome=o) for o in ("success", "error")}
    assert outcomes == {"success": 1, "error": 2}
    assert exposition.value("worker_requests_total", outcome="cancelled") == 1
    assert exposition.value("worker_requests_total", outcome="timeout") == 1
    assert exposition.value("worker_tokens_in_total") == 20
    assert exposition.value("worker_inference_duration_ms_count") == 5


def test_a_job_failing_before_it_starts_counts_without_a_duration():
    metrics = PrometheusMetrics()
    metrics.error("j", ErrorEvent(ErrorCode.INVALID_REQUEST, "bad prompt"))
    exposition = scrape(metrics)
    assert exposition.value("worker_requests_total", outcome="error") == 1
    assert exposition.value("worker_inference_duration_ms_count") == 0


# --- counters fed by the engine's hooks -----------------------------------------------------------------


def run_engine(metrics, script, *, prompt="ab", cancel_after=None, **request):
    engine = InferenceEngine(ScriptedModel(script, DeviceMemory("cpu")), ToyTokenizer(), metrics=metrics)
    cancel = CancelToken()
    events = []
    job = GenerationRequest(job_id="j", prompt=prompt, **{"temperature": 0.0, **request})
    for event in engine.generate(job, cancel):
        if isinstance(event, PromptEvent):
            continue
        events.append(event)
        if cancel_after is not None and len(events) == cancel_after:
            cancel.cancel()
    return events


def streamed(events) -> int:
    return sum(isinstance(e, TokenEvent) for e in events)


@pytest.mark.parametrize(
    ("script", "request_fields"),
    [
        (ids("abab") * 3, {"max_tokens": 5}),  # MAX_TOKENS
        ([*ids("ab"), 1, *ids("ab")], {"max_tokens": 10}),  # EOS: sampled, never streamed
        (ids("aSTOPb"), {"max_tokens": 10, "stop": ("STOP",)}),  # stop string swallowed
        ([*ids("xST"), 1], {"max_tokens": 10, "stop": ("STOP",)}),  # held-back text released at the end
    ],
    ids=["max_tokens", "eos", "stop", "held_back"],
)
def test_tokens_generated_are_the_tokens_streamed(script, request_fields):
    metrics = PrometheusMetrics()
    events = run_engine(metrics, script, **request_fields)
    end = events[-1]
    assert isinstance(end, EndEvent)
    exposition = scrape(metrics)
    assert exposition.value("worker_tokens_generated_total") == streamed(events) == end.tokens_out
    assert exposition.value("worker_tokens_in_total") == 3  # BOS + "ab"
    assert exposition.value("worker_requests_total", outcome="success") == 1
    assert exposition.value("worker_inference_duration_ms_count") == 1
    assert exposition.value("worker_first_token_ms_count") == 1


def test_a_cancelled_engine_job_counts_as_cancelled():
    metrics = PrometheusMetrics()
    events = run_engine(metrics, ids("abababab"), max_tokens=8, cancel_after=2)
    assert events[-1].code == ErrorCode.CANCELLED
    exposition = scrape(metrics)
    assert exposition.value("worker_requests_total", outcome="cancelled") == 1
    assert exposition.value("worker_tokens_generated_total") == streamed(events) == 2
    assert exposition.value("worker_inference_duration_ms_count") == 1


def test_an_invalid_prompt_counts_as_an_error():
    metrics = PrometheusMetrics()
    events = run_engine(metrics, ids("ab"), prompt="ab" * 8, max_tokens=4)  # longer than the context
    assert events[-1].code == ErrorCode.INVALID_REQUEST
    exposition = scrape(metrics)
    assert exposition.value("worker_requests_total", outcome="error") == 1
    assert exposition.value("worker_tokens_generated_total") == 0
    assert exposition.value("worker_first_token_ms_count") == 0


# --- the no-op default (M0.5) ---------------------------------------------------------------------------


def test_the_engine_hooks_are_no_ops_by_default():
    engine = InferenceEngine(ScriptedModel(ids("ab"), DeviceMemory("cpu")), ToyTokenizer())
    assert type(engine.metrics) is NoOpMetricsHooks
    hooks = NoOpMetricsHooks()
    calls = [
        hooks.request_start("j", 3),
        hooks.first_token("j", 1.0),
        hooks.token("j", 2),
        hooks.end("j", EndEvent(1, StopReason.EOS, 1, 3)),
        hooks.error("j", ErrorEvent(ErrorCode.INTERNAL, "x")),
    ]
    assert calls == [None] * len(HOOKS)
    assert vars(hooks) == {}  # nothing kept


def test_prometheus_metrics_implements_every_hook():
    for name in HOOKS:
        assert callable(getattr(PrometheusMetrics, name)) and callable(getattr(NoOpMetricsHooks, name))


# --- GET /metrics on a real server, the engine behind it scripted ----------------------------------------


class SlowScriptedModel(ScriptedModel):
    delay = 0.0

    def forward(self, tokens, cache, *, last_only=False):
        time.sleep(self.delay)
        return super().forward(tokens, cache, last_only=last_only)


@dataclass
class Served:
    url: str
    state: WorkerState
    model: SlowScriptedModel

    def scrape(self) -> tuple[httpx.Response, Exposition]:
        response = httpx.get(self.url + "/metrics", timeout=10)
        return response, parse(response.text)

    def run_job(self, **body) -> httpx.Response:
        response = httpx.post(self.url + "/execute", json={"job_id": "j", "prompt": "ab", **body}, timeout=10)
        deadline = time.monotonic() + 5  # the engine's last hook runs before the slot is free
        while self.state.slot.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        return response


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    memory = DeviceMemory("cpu")
    memory.allocate("weights", 4096)
    model = SlowScriptedModel(ids("ab") * 8, memory)
    metrics = PrometheusMetrics("w-1")
    engine = InferenceEngine(model, ToyTokenizer(), metrics=metrics)
    state = WorkerState(
        engine=engine,
        count_tokens=lambda text: len(engine.tokenize(text)),
        model=ModelInfo(
            name="toy",
            model_ref="/models/toy.gguf",
            architecture="llama",
            quant_kind="F32",
            tokenizer_kind="gguf-bpe",
            vocab_size=ToyTokenizer.vocab_size,
            context_length=16,
            device="cpu",
        ),
        memory=memory,
        log=EventLog(io.StringIO(), worker_id="w-1"),
        limits=Limits(max_tokens_out=2048, inference_timeout_sec=30),
        metrics=metrics,
    )
    with serving(state) as url:
        yield Served(url, state, model)


def test_metrics_endpoint_serves_the_text_format(served: Served):
    response, exposition = served.scrape()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert exposition.value("worker_vram_bytes", worker_id="w-1") == served.state.memory.used_bytes > 0
    assert exposition.value("worker_uptime_seconds") > 0
    assert httpx.post(served.url + "/metrics", timeout=10).status_code == 405


def test_a_job_moves_the_counters_by_what_it_streamed(served: Served):
    _, before = served.scrape()
    response = served.run_job(max_tokens=4, temperature=0.0)
    _, after = served.scrape()
    tokens = response.text.count("event: token")
    assert tokens == 4

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert grew("worker_requests_total", outcome="success") == 1
    assert grew("worker_tokens_generated_total") == tokens
    assert grew("worker_tokens_in_total") == 3
    assert grew("worker_inference_duration_ms_count") == 1 and grew("worker_first_token_ms_count") == 1
    assert grew("worker_inference_duration_ms_sum") > 0


def test_a_timed_out_job_counts_as_timeout(served: Served):
    _, before = served.scrape()
    served.model.delay = 0.1
    served.state.limits = Limits(max_tokens_out=2048, inference_timeout_sec=0.3)
    try:
        response = served.run_job(max_tokens=12, temperature=0.0)
    finally:
        served.model.delay = 0.0
        served.state.limits = Limits(max_tokens_out=2048, inference_timeout_sec=30)
    assert "INFERENCE_TIMEOUT" in response.text
    _, after = served.scrape()
    timeouts = after.value("worker_requests_total", outcome="timeout")
    assert timeouts - before.value("worker_requests_total", outcome="timeout") == 1
    assert after.value("worker_requests_total", outcome="success") == before.value(
        "worker_requests_total", outcome="success"
    )
