"""SSE events of one job (M0-W-1310..1312, M0-W-1510) and the bridge from the engine's thread.

Each event carries both `event: <type>` and `data: {"type": <type>, ...}` so clients that read either
framing see the same stream. The engine's generator runs on a worker thread and hands each event to the
response through an asyncio queue as soon as it is produced: nothing is buffered until the end.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from sse_starlette import ServerSentEvent

from reference_worker.device_memory import VramOOM
from reference_worker.generation import (
    INTERNAL_MESSAGE,
    CancelToken,
    EndEvent,
    ErrorCode,
    ErrorEvent,
    GenerationEvent,
    GenerationRequest,
    Generator,
    TokenEvent,
)

# Characters Python's str.splitlines() breaks at that JSON leaves raw: sse-starlette splits `data` there
# into several `data:` lines, and a client joins them with "\n" inside a JSON string. Escaped instead.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse_event(event_type: str, **payload: Any) -> ServerSentEvent:
    data = json.dumps({"type": event_type, **payload}, ensure_ascii=False).translate(_LINE_BREAKS)
    return ServerSentEvent(data=data, event=event_type)


def started_event(request: GenerationRequest, model: str, started_at: str, prompt_tokens: int | None):
    return sse_event(
        "started",
        job_id=request.job_id,
        model=model,
        started_at=started_at,
        seed=request.seed,
        prompt_tokens=prompt_tokens,
    )


def token_event(event: TokenEvent) -> ServerSentEvent:
    return sse_event("token", t=event.text, i=event.index)


def end_event(event: EndEvent, seed: int) -> ServerSentEvent:
    payload: dict[str, Any] = {
        "tokens_out": event.tokens_out,
        "decode_time_ms": event.decode_time_ms,
        "stop_reason": event.stop_reason.value,
    }
    if event.stop_sequence_matched is not None:
        payload["stop_sequence_matched"] = event.stop_sequence_matched
    return sse_event("end", **payload, seed=seed)


def error_event(event: ErrorEvent) -> ServerSentEvent:
    return sse_event("error", code=event.code.value, message=event.message, retriable=event.retriable)


JobItem = GenerationEvent


def start_job_thread(
    engine: Generator,
    request: GenerationRequest,
    cancel: CancelToken,
    queue: asyncio.Queue[JobItem],
    on_done: Callable[[], None],
) -> threading.Thread:
    """Runs the engine on a thread; every event lands in `queue`; exactly one terminal event is sent."""
    loop = asyncio.get_running_loop()

    def put(item: JobItem) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown); nobody is listening
            pass

    def run() -> None:
        try:
            events = engine.generate(request, cancel)
            try:
                for event in events:
                    put(event)
                    if isinstance(event, EndEvent | ErrorEvent):
                        return
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
            put(ErrorEvent(ErrorCode.INTERNAL, "the engine stopped without an end or error event", True))
        except VramOOM as e:  # M0-W-1021: the engine's partial allocations are freed by unwinding
            put(ErrorEvent(ErrorCode.VRAM_OOM, str(e), True))
        except Exception as e:  # the worker keeps serving after an engine failure
            put(ErrorEvent(ErrorCode.INTERNAL, INTERNAL_MESSAGE, True, f"{type(e).__name__}: {e}"))
        finally:
            on_done()

    thread = threading.Thread(target=run, name=f"job-{request.job_id}", daemon=True)
    thread.start()
    return thread
