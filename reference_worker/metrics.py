"""Prometheus metrics (M1-METRICS, M0-W-1350): the M0.5 hooks counted in-process, served by GET /metrics
in the Prometheus text exposition format 0.0.4.

| metric | type | meaning |
|---|---|---|
| `worker_vram_bytes{worker_id}` | gauge | device bytes held (all categories), read at scrape time |
| `worker_requests_total{outcome}` | counter | finished jobs: `success` (end), `error`, `cancelled`, `timeout` |
| `worker_tokens_in_total` | counter | prompt tokens of the jobs that started |
| `worker_tokens_generated_total` | counter | tokens delivered in token events (the EOS token is not one) |
| `worker_inference_duration_ms` | histogram | job start (prompt tokenized) to its end or error |
| `worker_first_token_ms` | histogram | job start to the first sampled token (tokenization and prefill) |
| `worker_uptime_seconds` | gauge | seconds since the server state was built (as /health's `uptime_seconds`) |

Labels stay low-cardinality (contract §5 item 8): a job id is never a label. The numbers and the text
format are `prometheus-client`'s (one registry per worker, so tests can hold several); the hooks run on
the job's thread and the scrape on the server's, and the library's metrics are thread-safe. The per-token
hook is one counter increment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from enum import StrEnum

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from reference_worker.generation import EndEvent, ErrorCode, ErrorEvent

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

DURATION_BUCKETS_MS = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
FIRST_TOKEN_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# The `*_created` series of counters and histograms name no metric of M0-W-1350; the worker has none.
prometheus_client.disable_created_metrics()


class Outcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


def outcome_of(code: ErrorCode) -> Outcome:
    if code == ErrorCode.CANCELLED:
        return Outcome.CANCELLED
    if code == ErrorCode.INFERENCE_TIMEOUT:
        return Outcome.TIMEOUT
    return Outcome.ERROR


class PrometheusMetrics:
    """The `MetricsHooks` of `metrics_hooks.py`, counting into a registry that `render()` exposes."""

    def __init__(self, worker_id: str = "") -> None:
        self.worker_id = worker_id
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()  # guards `_started` only
        self._started: dict[str, float] = {}  # job id -> perf_counter at request_start
        r = self.registry
        self._vram = Gauge(
            "worker_vram_bytes",
            "Device memory held by the worker (weights, KV cache, scratch), in bytes.",
            ["worker_id"],
            registry=r,
        )
        self._requests = Counter(
            "worker_requests", "Inference jobs finished, by outcome.", ["outcome"], registry=r
        )
        for outcome in Outcome:  # every outcome is listed from the first scrape on
            self._requests.labels(outcome.value)
        self._tokens_in = Counter("worker_tokens_in", "Prompt tokens of the jobs that started.", registry=r)
        self._tokens_generated = Counter(
            "worker_tokens_generated", "Tokens delivered in token events.", registry=r
        )
        self._duration = Histogram(
            "worker_inference_duration_ms",
            "Time from a job's start to its end or error, in milliseconds.",
            buckets=DURATION_BUCKETS_MS,
            registry=r,
        )
        self._first_token = Histogram(
            "worker_first_token_ms",
            "Time from a job's start to its first sampled token, in milliseconds.",
            buckets=FIRST_TOKEN_BUCKETS_MS,
            registry=r,
        )
        self._allocator = Gauge(
            "worker_device_allocator_bytes",
            "PyTorch's CUDA caching allocator: bytes in tensors (allocated) and held (reserved); no samples on CPU.",
            ["pool"],
            registry=r,
        )
        self._uptime = Gauge(
            "worker_uptime_seconds", "Seconds since the worker finished loading its model.", registry=r
        )

    # --- hooks (called by the engine on the job's thread) ---

    def request_start(self, job_id: str, prompt_tokens: int) -> None:
        with self._lock:
            self._started[job_id] = time.perf_counter()
        self._tokens_in.inc(prompt_tokens)

    def first_token(self, job_id: str, latency_ms: float) -> None:
        self._first_token.observe(latency_ms)

    def token(self, job_id: str, token_id: int) -> None:
        self._tokens_generated.inc()

    def end(self, job_id: str, event: EndEvent) -> None:
        self._finish(job_id, Outcome.SUCCESS)

    def error(self, job_id: str, event: ErrorEvent) -> None:
        self._finish(job_id, outcome_of(event.code))

    def _finish(self, job_id: str, outcome: Outcome) -> None:
        now = time.perf_counter()
        with self._lock:
            started = self._started.pop(job_id, None)
        self._requests.labels(outcome.value).inc()
        if started is not None:  # a job that failed before it started (e.g. tokenizing) has no duration
            self._duration.observe((now - started) * 1000.0)

    # --- exposition ---

    def render(
        self, *, vram_bytes: int, uptime_seconds: float, allocator_bytes: Mapping[str, int] | None = None
    ) -> str:
        """The Prometheus text format 0.0.4; the gauges take the values given, read by the caller."""
        self._vram.labels(self.worker_id).set(vram_bytes)
        for pool, value in (allocator_bytes or {}).items():
            self._allocator.labels(pool).set(value)
        self._uptime.set(round(uptime_seconds, 3))
        return generate_latest(self.registry).decode("utf-8")
