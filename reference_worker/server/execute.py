"""POST /execute (M0-W-1300..1312): validate, take the job slot, stream the job as SSE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from reference_worker.generation import (
    EndEvent,
    ErrorCode,
    ErrorEvent,
    GenerationRequest,
    PromptEvent,
    TokenEvent,
)
from reference_worker.logs import EventLog, prompt_digest, redact, rfc3339_now

from . import errors, schemas
from .jobs import Admission
from .sse import (
    EventChannel,
    JobItem,
    end_event,
    error_event,
    start_job_thread,
    started_event,
    token_event,
)
from .state import State, WorkerState

router = APIRouter()

POLL_SEC = 0.1  # how often the stream looks at its cancel flag and deadline while the engine is quiet
CANCEL_GRACE_SEC = 1.0  # time the engine gets to answer a cancel itself before the stream ends it
# While tokens flow, the stream sends what has arrived at most this often, in one write. Waking the event
# loop for each token hands the GIL back and forth twice per token: on a tiny model over HTTP the decode ran
# at ~1,700 tokens/s that way against ~4,000 in process. A token waits at most this long (well inside
# the spec's 10-50 ms inter-token range); the first one, one after a quiet spell, and the end go at once.
COALESCE_SEC = 0.005


_SSE_EVENT = {  # each event of the stream (docs/worker.md "SSE events")
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"enum": ["started", "token", "end", "error"]}, "data": {"type": "string"}},
}
_OPENAPI = schemas.openapi_operation(
    schemas.ExecuteBody,
    {
        "200": {
            "description": "the job's SSE stream",
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        }
    },
)


@router.post("/execute", response_model=None, openapi_extra=_OPENAPI)
async def execute(request: Request, state: State) -> JSONResponse | EventSourceResponse:
    body = await schemas.read_json_object(request, state.limits.max_body_bytes)
    job = schemas.execute_request(
        body,
        vocab_size=state.model.vocab_size,
        max_tokens_out=state.limits.max_tokens_out,
        count_tokens=state.count_tokens,
    )
    if state.status != "healthy":
        return errors.worker_unhealthy(state.unhealthy_reason or "unknown")
    correlation_id = getattr(request.state, "correlation_id", None)
    admission = state.slot.admit(job.job_id, correlation_id)
    if admission is None:
        return errors.worker_busy(job.job_id, state.slot.queue_depth)
    log = state.log.bind(job_id=job.job_id, correlation_id=correlation_id)
    if admission.turn is not None:
        log.event("execute_queued", "job waits for the slot", queued=state.slot.queued)
    return EventSourceResponse(_stream(state, job, admission, log), ping=15)


async def _stream(
    state: WorkerState, job: GenerationRequest, admission: Admission, log: EventLog
) -> AsyncIterator[ServerSentEvent | bytes]:
    active = admission.job
    # With --queue-depth, a job in line waits here (the stream's headers and pings are already out); the
    # inference timeout counts from its start, not from its arrival.
    if not await state.slot.wait_turn(admission):  # cancelled while waiting (M0-W-1330)
        log.event("execute_end", "job cancelled while waiting", stop_reason="CANCELLED")
        yield started_event(job, state.model.name, rfc3339_now(), None)
        yield error_event(ErrorEvent(ErrorCode.CANCELLED, "job cancelled", False))
        return
    # M0-W-1902: the prompt's hash and length, never its text.
    log.event(
        "execute_start", "job started", max_tokens=job.max_tokens, seed=job.seed, **prompt_digest(job.prompt)
    )
    loop = asyncio.get_running_loop()
    channel = EventChannel(loop)
    started_at = rfc3339_now()
    start_job_thread(
        state.engine,
        job,
        active.cancel,
        channel,
        lambda: state.slot.finish(active),
    )
    deadline = loop.time() + state.limits.inference_timeout_sec
    cancel_noticed: float | None = None
    sent_started = False
    terminal: ErrorEvent | EndEvent | None = None
    try:
        while terminal is None:
            now = loop.time()
            items: list[JobItem] = []
            if now >= deadline:
                active.cancel.cancel(ErrorCode.INFERENCE_TIMEOUT)
                items = [
                    ErrorEvent(
                        ErrorCode.INFERENCE_TIMEOUT,
                        f"job exceeded the inference timeout of {state.limits.inference_timeout_sec} s",
                        True,
                    )
                ]
            elif active.cancel.cancelled:
                cancel_noticed = cancel_noticed or now
                if now - cancel_noticed >= CANCEL_GRACE_SEC:
                    items = [ErrorEvent(active.cancel.reason, "job cancelled", False)]
            if not items:
                items = channel.take_ready()  # what arrived meanwhile: no timer, no wake-up (most tokens)
                if not items:
                    if not await channel.wait(POLL_SEC):
                        continue
                    items = channel.take_ready()
            out: list[ServerSentEvent] = []
            for item in items:
                if isinstance(item, PromptEvent) or not sent_started:
                    sent_started = True
                    prompt_tokens = item.prompt_tokens if isinstance(item, PromptEvent) else None
                    out.append(started_event(job, state.model.name, started_at, prompt_tokens))
                    if isinstance(item, PromptEvent):
                        continue
                if isinstance(item, TokenEvent):
                    if not active.cancel.cancelled:  # no tokens once a cancel is requested (M0-W-1330)
                        out.append(token_event(item))
                elif isinstance(item, EndEvent):
                    terminal = item
                    out.append(end_event(item, job.seed))
                    break
                elif isinstance(item, ErrorEvent):
                    terminal = item
                    out.append(error_event(item))
                    break
            # Events that arrived together leave in one write: the same events, fewer sends (a client
            # reads events, not chunks); one alone goes as it is.
            if len(out) == 1:
                yield out[0]
            elif out:
                yield b"".join(event.encode() for event in out)
            if terminal is None and any(isinstance(item, TokenEvent) for item in items):
                await channel.pause(COALESCE_SEC)
    finally:
        if terminal is None:  # the client went away (M0-W-1611): stop the engine
            active.cancel.cancel(ErrorCode.CANCELLED)
            log.event("execute_end", "client disconnected; job cancelled", stop_reason="DISCONNECTED")
        elif isinstance(terminal, EndEvent):
            first_token_ms = terminal.first_token_ms
            log.event(  # M0-W-1901: the job's performance fields, once, after the stream
                "execute_end",
                "job finished",
                stop_reason=terminal.stop_reason.value,
                tokens_in=terminal.prompt_tokens,
                tokens_out=terminal.tokens_out,
                decode_time_ms=terminal.decode_time_ms,
                first_token_ms=None if first_token_ms is None else round(first_token_ms, 3),
                vram_bytes=state.memory.used_bytes,
            )
        elif terminal.code == ErrorCode.CANCELLED:
            log.event("execute_end", "job cancelled", stop_reason="CANCELLED")
        else:
            message = redact(terminal.message, job.prompt)  # an engine error may quote its input
            state.record_error(terminal.code.value, message, job.job_id)
            detail = None if terminal.detail is None else redact(terminal.detail, job.prompt)
            log.error(message, code=terminal.code.value, retriable=terminal.retriable, detail=detail)
