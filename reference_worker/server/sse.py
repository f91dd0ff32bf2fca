"""SSE events of one job (M0-W-1310..1312, M0-W-1510) and the bridge from the engine's thread.

Each event carries both `event: <type>` and `data: {"type": <type>, ...}` so clients that read either
framing see the same stream. The engine's generator runs on a worker thread and hands each event to the
response through an `EventChannel` as soon as it is produced: nothing is buffered until the end.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
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


class EventChannel:
    """The job's events from the engine's thread to the response's task, in order.

    Why not an asyncio.Queue fed by `call_soon_threadsafe`: that wakes the event loop (a write to its
    self-pipe and a callback) for every token, and the GIL then passes between the two threads twice per
    token; on a small model that costs more than the decode step itself. Here the thread appends to a
    deque and wakes the loop only when the reader waits on an empty channel (`wait`), or, while the reader
    pauses to let tokens gather (`pause`), for a terminal event."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[JobItem] = deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._pausing = False  # the waiter is a pause: only an urgent item ends it early

    def put(self, item: JobItem, *, urgent: bool = False) -> None:
        """From any thread. `urgent`: end a pause too (the job's last event)."""
        with self._lock:
            self._items.append(item)
            waiter = self._waiter
            if waiter is not None and (urgent or not self._pausing):
                self._waiter = None
            else:
                waiter = None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the event loop is gone (shutdown); nobody is listening
                pass

    def take_ready(self) -> list[JobItem]:
        """Every item that has arrived, oldest first (possibly none); on the loop."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    async def wait(self, timeout: float) -> bool:
        """Until an item is there (True) or `timeout` seconds have passed (False); on the loop."""
        if await self._sleep(timeout, pausing=False):
            return True
        with self._lock:
            return bool(self._items)

    async def pause(self, seconds: float) -> None:
        """`seconds`, or less if an urgent item arrives; on the loop."""
        await self._sleep(seconds, pausing=True)

    async def _sleep(self, seconds: float, *, pausing: bool) -> bool:
        with self._lock:
            if self._items and not pausing:
                return True
            waiter = self._waiter = self._loop.create_future()
            self._pausing = pausing
        try:
            await asyncio.wait_for(waiter, seconds)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if self._waiter is waiter:
                    self._waiter = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def start_job_thread(
    engine: Generator,
    request: GenerationRequest,
    cancel: CancelToken,
    channel: EventChannel,
    on_done: Callable[[], None],
) -> threading.Thread:
    """Runs the engine on a thread; every event lands in `channel`; exactly one terminal event is sent,
    after the engine has let go of the job (its generator closed) and `on_done` has freed the slot: a
    client that sends its next job the moment it reads `end` or `error` is never refused as busy."""
    put = channel.put

    def run() -> None:
        terminal: EndEvent | ErrorEvent | None = None
        try:
            events = engine.generate(request, cancel)
            try:
                for event in events:
                    if isinstance(event, EndEvent | ErrorEvent):
                        terminal = event
                        break
                    put(event)
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
            if terminal is None:
                terminal = ErrorEvent(
                    ErrorCode.INTERNAL, "the engine stopped without an end or error event", True
                )
        except VramOOM as e:  # M0-W-1021: the engine's partial allocations are freed by unwinding
            terminal = ErrorEvent(ErrorCode.VRAM_OOM, str(e), True)
        except Exception as e:  # the worker keeps serving after an engine failure
            terminal = ErrorEvent(ErrorCode.INTERNAL, INTERNAL_MESSAGE, True, f"{type(e).__name__}: {e}")
        finally:
            on_done()
            if terminal is not None:
                put(terminal, urgent=True)

    thread = threading.Thread(target=run, name=f"job-{request.job_id}", daemon=True)
    thread.start()
    return thread
