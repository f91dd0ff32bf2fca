"""Metrics hook points of the generation loop (M0.5): no-ops by default; `metrics.PrometheusMetrics`
implements them for GET /metrics (M1, M0-W-1350).

The engine calls them at request start (prompt tokenized), first sampled token, every token event, end
and error. Implementations must be cheap and must not raise: the calls sit inside the decode loop.
"""

from __future__ import annotations

from typing import Protocol

from reference_worker.generation import EndEvent, ErrorEvent


class MetricsHooks(Protocol):
    def request_start(self, job_id: str, prompt_tokens: int) -> None: ...
    def first_token(self, job_id: str, latency_ms: float) -> None: ...
    def token(self, job_id: str, token_id: int) -> None: ...
    def end(self, job_id: str, event: EndEvent) -> None: ...
    def error(self, job_id: str, event: ErrorEvent) -> None: ...


class NoOpMetricsHooks:
    def request_start(self, job_id: str, prompt_tokens: int) -> None:
        pass

    def first_token(self, job_id: str, latency_ms: float) -> None:
        pass

    def token(self, job_id: str, token_id: int) -> None:
        pass

    def end(self, job_id: str, event: EndEvent) -> None:
        pass

    def error(self, job_id: str, event: ErrorEvent) -> None:
        pass
