"""Server-sent events over httpx, parsed incrementally and tolerantly.

A worker may name the event type on an `event:` line (the original S1/S2 framing) or only inside the
JSON payload's `type` field (S3); both are M0-conformant, so both are read. Comments (keep-alives), `id:`
and `retry:` lines, CRLF/CR line ends and multi-line `data:` are handled as the SSE standard says.
Each event keeps its raw bytes and its arrival time, so checks can look at UTF-8 validity (M0-W-1824)
and timing (M0-W-1330) without the client itself failing on a bad byte.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class SSEEvent:
    index: int  # 0-based position in the stream
    type: str  # `event:` line when present and not "message", else JSON `type`, else "message"
    data: dict | None  # the JSON payload when `data` is a JSON object, else None
    raw: bytes  # the `data` field as received (lines joined by b"\n")
    arrived_s: float  # seconds since the request was sent
    event_field: str | None = None  # the `event:` line as sent, if any
    problem: str | None = None  # why `raw` is not a UTF-8 JSON object, if it is not

    def describe(self) -> str:
        return f"{self.type} at #{self.index}"


@dataclass
class SSEStream:
    """One `/execute` response read as SSE. `events` grows while the stream is read."""

    status_code: int
    headers: httpx.Headers
    events: list[SSEEvent] = field(default_factory=list)
    closed: bool = False  # the server ended the response
    transport_error: str | None = None  # read timeout or broken connection
    body: bytes = b""  # the whole body when the response was not an event stream

    @property
    def is_event_stream(self) -> bool:
        return self.headers.get("content-type", "").split(";")[0].strip() == "text/event-stream"

    def of_type(self, *types: str) -> list[SSEEvent]:
        return [event for event in self.events if event.type in types]

    @property
    def ended(self) -> bool:
        """A terminal event (end or error) has arrived."""
        return bool(self.of_type(*TERMINAL_TYPES))

    @property
    def progressed(self) -> bool:
        """A token or a terminal event has arrived: the job is generating, or done."""
        return self.ended or bool(self.of_type("token"))

    def summary(self) -> str:
        """Event types in order, runs folded: "started, token x16, end"."""
        runs: list[list] = []
        for event in self.events:
            if runs and runs[-1][0] == event.type:
                runs[-1][1] += 1
            else:
                runs.append([event.type, 1])
        return ", ".join(kind if count == 1 else f"{kind} x{count}" for kind, count in runs) or "(no events)"


TERMINAL_TYPES = ("end", "error")


def _split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (CRLF, LF or CR terminated) and the unterminated rest.

    A trailing CR is kept in the rest: it may be the first half of a CRLF split across chunks.
    """
    lines = []
    start = 0
    i = 0
    n = len(buffer)
    while i < n:
        byte = buffer[i]
        if byte == 0x0A:
            lines.append(buffer[start:i])
            start = i + 1
        elif byte == 0x0D:
            if i + 1 == n:
                break
            lines.append(buffer[start:i])
            start = i + 2 if buffer[i + 1] == 0x0A else i + 1
            i = start - 1
        i += 1
    return lines, buffer[start:]


class SSEParser:
    """Feeds bytes, yields events; follows the WHATWG event-stream interpretation rules."""

    def __init__(self, started_at: float) -> None:
        self._started_at = started_at
        self._buffer = b""
        self._data: list[bytes] = []
        self._event: str | None = None
        self._count = 0

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        lines, self._buffer = _split_lines(self._buffer + chunk)
        for line in lines:
            event = self._line(line)
            if event is not None:
                yield event

    def end(self) -> Iterator[SSEEvent]:
        """End of body: a pending CR was a line end after all (CR-only framing)."""
        if self._buffer.endswith(b"\r"):
            yield from self.feed(b"\n")
        self._buffer = b""

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):  # comment / keep-alive
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
        # `id`, `retry` and unknown fields carry nothing the M0 contract uses.
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = None
            return None
        raw = b"\n".join(self._data)
        event_field = self._event
        self._data, self._event = [], None
        data, problem = _decode(raw)
        declared = event_field if event_field and event_field != "message" else None
        payload_type = data.get("type") if data is not None and isinstance(data.get("type"), str) else None
        event = SSEEvent(
            index=self._count,
            type=declared or payload_type or "message",
            data=data,
            raw=raw,
            arrived_s=time.monotonic() - self._started_at,
            event_field=event_field,
            problem=problem,
        )
        self._count += 1
        return event


def parse_event_stream(body: bytes) -> list[SSEEvent]:
    """Every event of a whole event-stream body read at once (arrival times are all about 0)."""
    parser = SSEParser(time.monotonic())
    return [*parser.feed(body), *parser.end()]


def _decode(raw: bytes) -> tuple[dict | None, str | None]:
    """The JSON object in `raw` and, when `raw` is not clean UTF-8 JSON, what is wrong with it.

    Invalid UTF-8 is decoded with replacement characters so the event's type and order can still be
    judged; the problem string makes the encoding violation visible to the UTF-8 checks.
    """
    problem = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not valid UTF-8 ({exc.reason} at byte {exc.start}: {raw[exc.start : exc.start + 4]!r})"
        text = raw.decode("utf-8", errors="replace")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, problem or f"not JSON ({exc.msg})"
    if not isinstance(value, dict):
        return None, problem or "JSON payload is not an object"
    return value, problem


class EventStreamReader:
    """An open `/execute` response; iterate to receive events as they arrive."""

    def __init__(self, response: httpx.Response, started_at: float) -> None:
        self.response = response
        self.stream = SSEStream(status_code=response.status_code, headers=response.headers)
        self._parser = SSEParser(started_at)
        self._chunks = response.iter_raw() if self.stream.is_event_stream else None

    def __iter__(self) -> Iterator[SSEEvent]:
        if self._chunks is None:
            if not self.stream.closed:
                self.stream.body = self.response.read()
                self.stream.closed = True
            return
        try:
            for chunk in self._chunks:
                for event in self._parser.feed(chunk):
                    self.stream.events.append(event)
                    yield event
            for event in self._parser.end():
                self.stream.events.append(event)
                yield event
        except httpx.HTTPError as exc:
            self.stream.transport_error = f"{type(exc).__name__}: {exc}"
            return
        self.stream.closed = True

    def read_until(self, *types: str) -> SSEEvent | None:
        """Read until an event of one of `types` arrives (returned) or the stream ends (None)."""
        for event in self:
            if event.type in types:
                return event
        return None

    def read_all(self) -> SSEStream:
        for _ in self:
            pass
        return self.stream


@contextmanager
def open_event_stream(
    client: httpx.Client,
    url: str,
    *,
    json_body: object = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[EventStreamReader]:
    """POST and yield an `EventStreamReader`; leaving the block closes the connection."""
    started_at = time.monotonic()
    body: dict[str, object] = {"content": content} if content is not None else {"json": json_body}
    with client.stream("POST", url, headers=headers, **body) as response:
        yield EventStreamReader(response, started_at)


class BackgroundStream:
    """Reads one `/execute` stream on a thread, so a scenario can act (e.g. cancel) while it flows."""

    def __init__(self, client: httpx.Client, url: str, json_body: object) -> None:
        self._client = client
        self._url = url
        self._body = json_body
        self._changed = threading.Condition()
        self._response: httpx.Response | None = None
        self.stream: SSEStream | None = None
        self.done = False
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with open_event_stream(self._client, self._url, json_body=self._body) as reader:
                with self._changed:
                    self._response = reader.response
                    self.stream = reader.stream
                    self._changed.notify_all()
                for _ in reader:
                    with self._changed:
                        self._changed.notify_all()
        except Exception as exc:  # noqa: BLE001 - any failure is recorded for the verdict, not raised here
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            with self._changed:
                self.done = True
                self._changed.notify_all()

    def wait_until(self, predicate: Callable[[SSEStream], bool], timeout_s: float) -> bool:
        """True when `predicate(stream)` held before the timeout; False on timeout or end of stream."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                if self.stream is not None and predicate(self.stream):
                    return True
                remaining = deadline - time.monotonic()
                if self.done or remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def wait_done(self, timeout_s: float) -> bool:
        return self.wait_until(lambda _: self.done, timeout_s) or self.done

    def close(self) -> None:
        """Drop the connection (a client disconnect) and let the reader thread finish."""
        if self._response is not None and not self.done:
            self._response.close()
        self._thread.join(timeout=5.0)
