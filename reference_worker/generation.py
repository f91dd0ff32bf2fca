"""What a generation job is and what it emits: the contract between the HTTP layer and the engine.

The server turns a validated `/execute` body into a `GenerationRequest`, hands it to the engine with a
cancel flag, and turns each `GenerationEvent` into one SSE event (M0-W-1310..1312). Nothing here knows
about HTTP or about tensors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class StopReason(StrEnum):
    """Why a job ended normally; reported in the `end` event (`stop_reason`)."""

    MAX_TOKENS = "MAX_TOKENS"
    EOS = "EOS"
    STOP_SEQUENCE = "STOP_SEQUENCE"


class ErrorCode(StrEnum):
    """Stable error codes (M0-W-1500); carried by the SSE `error` event (M0-W-1510)."""

    INVALID_REQUEST = "INVALID_REQUEST"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    INSUFFICIENT_VRAM = "INSUFFICIENT_VRAM"
    VRAM_OOM = "VRAM_OOM"
    CUDA_ERROR = "CUDA_ERROR"
    INFERENCE_TIMEOUT = "INFERENCE_TIMEOUT"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class GenerationRequest:
    """One validated `/execute` job. Defaults are the spec's (M0-W-1300, M0-W-1420)."""

    job_id: str
    prompt: str
    max_tokens: int = 2048
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0  # always concrete here: the server generates one when the client sent none (M0-W-1030)


@dataclass(frozen=True)
class PromptEvent:
    """The prompt's token count, yielded once before any token (for `started.prompt_tokens`)."""

    prompt_tokens: int


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. `text` holds only complete UTF-8 characters and may be "" (M0-W-1824)."""

    index: int
    token_id: int
    text: str


@dataclass(frozen=True)
class EndEvent:
    tokens_out: int
    stop_reason: StopReason
    decode_time_ms: int
    prompt_tokens: int
    first_token_ms: float | None = None
    stop_sequence_matched: str | None = None


# The client's message for a failure inside the engine; what failed goes to the log (ErrorEvent.detail).
INTERNAL_MESSAGE = "inference failed with an internal error; the worker keeps serving"


@dataclass(frozen=True)
class ErrorEvent:
    code: ErrorCode
    message: str  # sent to the client: stable, no exception names, paths or prompt text
    retriable: bool = False
    detail: str | None = field(default=None, compare=False)  # for the worker's log only


GenerationEvent = PromptEvent | TokenEvent | EndEvent | ErrorEvent


@dataclass
class CancelToken:
    """Set by `/cancel` or a client disconnect; the decode loop checks it once per token."""

    reason: ErrorCode = ErrorCode.CANCELLED
    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self, reason: ErrorCode = ErrorCode.CANCELLED) -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class Generator(Protocol):
    """The `InferenceEngine` seam as the HTTP layer sees it."""

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[GenerationEvent]:
        """Yields an optional PromptEvent, TokenEvents, then exactly one EndEvent or ErrorEvent. Never raises
        for a job's failure."""
        ...
