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

Labels stay low-cardinality (contract §5 item 8): a job id is never a label. The hooks run on the job's
thread and the scrape on the server's: one lock guards the numbers, held only for an update or for taking
a snapshot; the text is formatted outside it. The per-token hook is one integer increment.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from enum import StrEnum

from reference_worker.generation import EndEvent, ErrorCode, ErrorEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS_MS = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
FIRST_TOKEN_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


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


class Histogram:
    """Counts per bucket (`value <= bound`, the last bucket is +Inf) and the sum; the owner locks it."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> Histogram:
        copy = Histogram(self.bounds)
        copy.counts, copy.sum = list(self.counts), self.sum
        return copy

    def samples(self, name: str) -> list[str]:
        lines, cumulative = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f"{name}_sum {_number(self.sum)}")
        lines.append(f"{name}_count {cumulative}")
        return lines


class PrometheusMetrics:
    """The `MetricsHooks` of `metrics_hooks.py`, counting for `render()`."""

    def __init__(self, worker_id: str = "") -> None:
        self.worker_id = worker_id
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}  # job id -> perf_counter at request_start
        self._requests = dict.fromkeys(Outcome, 0)
        self._tokens_in = 0
        self._tokens_generated = 0
        self._duration = Histogram(DURATION_BUCKETS_MS)
        self._first_token = Histogram(FIRST_TOKEN_BUCKETS_MS)

    # --- hooks (called by the engine on the job's thread) ---

    def request_start(self, job_id: str, prompt_tokens: int) -> None:
        now = time.perf_counter()
        with self._lock:
            self._started[job_id] = now
            self._tokens_in += prompt_tokens

    def first_token(self, job_id: str, latency_ms: float) -> None:
        with self._lock:
            self._first_token.observe(latency_ms)

    def token(self, job_id: str, token_id: int) -> None:
        with self._lock:
            self._tokens_generated += 1

    def end(self, job_id: str, event: EndEvent) -> None:
        self._finish(job_id, Outcome.SUCCESS)

    def error(self, job_id: str, event: ErrorEvent) -> None:
        self._finish(job_id, outcome_of(event.code))

    def _finish(self, job_id: str, outcome: Outcome) -> None:
        now = time.perf_counter()
        with self._lock:
            self._requests[outcome] += 1
            started = self._started.pop(job_id, None)
            if started is not None:  # a job that failed before it started (e.g. tokenizing) has no duration
                self._duration.observe((now - started) * 1000.0)

    # --- exposition ---

    def render(self, *, vram_bytes: int, uptime_seconds: float) -> str:
        """The Prometheus text format 0.0.4; gauges are the values given, read by the caller at scrape."""
        with self._lock:
            requests = dict(self._requests)
            tokens_in, tokens_generated = self._tokens_in, self._tokens_generated
            duration, first_token = self._duration.snapshot(), self._first_token.snapshot()
        worker = _label_value(self.worker_id)
        families = [
            (
                "worker_vram_bytes",
                "gauge",
                "Device memory held by the worker (weights, KV cache, scratch), in bytes.",
                [f'worker_vram_bytes{{worker_id="{worker}"}} {vram_bytes}'],
            ),
            (
                "worker_requests_total",
                "counter",
                "Inference jobs finished, by outcome.",
                [f'worker_requests_total{{outcome="{o.value}"}} {n}' for o, n in requests.items()],
            ),
            (
                "worker_tokens_in_total",
                "counter",
                "Prompt tokens of the jobs that started.",
                [f"worker_tokens_in_total {tokens_in}"],
            ),
            (
                "worker_tokens_generated_total",
                "counter",
                "Tokens delivered in token events.",
                [f"worker_tokens_generated_total {tokens_generated}"],
            ),
            (
                "worker_inference_duration_ms",
                "histogram",
                "Time from a job's start to its end or error, in milliseconds.",
                duration.samples("worker_inference_duration_ms"),
            ),
            (
                "worker_first_token_ms",
                "histogram",
                "Time from a job's start to its first sampled token, in milliseconds.",
                first_token.samples("worker_first_token_ms"),
            ),
            (
                "worker_uptime_seconds",
                "gauge",
                "Seconds since the worker finished loading its model.",
                [f"worker_uptime_seconds {_number(round(uptime_seconds, 3))}"],
            ),
        ]
        lines = []
        for name, kind, help_text, samples in families:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """A sample value or `le` bound as Prometheus reads it: integers plainly, +Inf spelled out."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
