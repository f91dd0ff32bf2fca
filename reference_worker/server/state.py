"""What the routes share: the engine, the model's facts for /health, limits, health status, the job slot,
the metrics the engine's hooks count for /metrics.

Everything /health reports is cached here (M0-W-1604: no device calls while answering).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from reference_worker.config import DEFAULT_MAX_BODY_BYTES
from reference_worker.device_memory import DeviceMemory
from reference_worker.generation import Generator
from reference_worker.logs import EventLog
from reference_worker.metrics import PrometheusMetrics

from .jobs import JobSlot


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model, fixed at startup (M0-W-1320, M0-W-1364)."""

    name: str
    model_ref: str
    architecture: str
    quant_kind: str
    tokenizer_kind: str
    vocab_size: int
    context_length: int | None
    device: str
    sm: str | None = None
    cuda_runtime_version: str | None = None


@dataclass(frozen=True)
class Limits:
    max_tokens_out: int = 2048
    inference_timeout_sec: float = 300.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # a larger request body is refused unread (400, `body`)


@dataclass
class WorkerState:
    engine: Generator
    count_tokens: Callable[[str], int]  # tokens of a stop string, without special tokens
    model: ModelInfo
    memory: DeviceMemory
    log: EventLog
    limits: Limits = field(default_factory=Limits)
    slot: JobSlot = field(default_factory=JobSlot)
    status: str = "healthy"
    resident: bool = True
    unhealthy_reason: str | None = None
    last_error: dict[str, Any] | None = None
    started_monotonic: float = field(default_factory=time.monotonic)
    metrics: PrometheusMetrics = field(default_factory=PrometheusMetrics)  # the engine's hooks (M0-W-1350)

    def mark_unhealthy(self, reason: str) -> None:
        self.status = "unhealthy"
        self.unhealthy_reason = reason

    def record_error(self, code: str, message: str, job_id: str | None) -> None:
        self.last_error = {"code": code, "message": message, "job_id": job_id, "at": time.time()}


def get_state(request: Request) -> WorkerState:
    return request.app.state.worker


State = Annotated[WorkerState, Depends(get_state)]
