"""Checks of the M0 wire contract, each failing with the ID of the requirement it checks.

A failure message starts with the spec ID, then says what was seen, e.g.
"M0-W-1311: stream has 2 terminal events (end at #5, error at #6)". The checks accept anything the spec
allows: either SSE framing, extra fields, any model name, any timing not bounded by the spec.
"""

from __future__ import annotations

import pytest

from steps.sse import TERMINAL_TYPES, SSEEvent, SSEStream

# The wire contract's rules, each checked by one function below wherever a job's answer is read: a stream
# that breaks one fails under that rule's ID whatever the scenario's own rule is (a broken stream in a
# stop-string scenario is an M0-W-1311 failure, not an M0-W-1422 one). With the job slot and cancellation,
# judged at every scenario's teardown (steps/plugin.py), these are the spec IDs the harness's code names;
# every other check takes its ID from the scenario's tags (the `spec_ids` fixture).
EXECUTE_ANSWER = "M0-W-1300"
EVENT_STREAM = "M0-W-1310"
EVENT_ORDER = "M0-W-1311"
EVENT_FIELDS = "M0-W-1312"
JOB_SLOT = "M0-W-1301"
CANCEL = "M0-W-1330"
STABLE_CODES = "M0-W-1500"
RETRIABLE_FLAG = "M0-W-1510"
UTF8_TEXT = "M0-W-1824"
# /health's model facts, wherever a scenario reads them (loading, architectures): a wrong quant_kind is an
# M0-W-1320 failure and a wrong tokenizer_kind/vocab_size an M0-W-1364 one, not a failure of the
# scenario's own rule.
HEALTH_FIELDS = "M0-W-1320"
TOKENIZER_FACTS = "M0-W-1364"

EVENT_TYPES = ("started", "token", "metrics", "end", "error")  # M0-W-1310
STABLE_ERROR_CODES = (  # M0-W-1500
    "INVALID_REQUEST",
    "MODEL_LOAD_FAILED",
    "INSUFFICIENT_VRAM",
    "VRAM_OOM",
    "CUDA_ERROR",
    "INFERENCE_TIMEOUT",
    "CANCELLED",
    "INTERNAL",
)


class RequirementViolation(AssertionError):
    """A worker broke a numbered requirement; `str()` starts with the requirement's ID."""

    def __init__(self, requirement: str, message: str) -> None:
        super().__init__(f"{requirement}: {message}")
        self.requirement = requirement


def require(condition: object, requirement: str, message: str) -> None:
    __tracebackhide__ = True
    if not condition:
        raise RequirementViolation(requirement, message)


def not_applicable(reason: str) -> None:
    """A scenario that cannot be judged here: a skip whose reason says why; never a pass."""
    pytest.skip(f"not applicable: {reason}")


def _listing(events: list[SSEEvent]) -> str:
    return ", ".join(event.describe() for event in events)


def check_event_stream_response(stream: SSEStream) -> None:
    require(
        stream.status_code == 200,
        EXECUTE_ANSWER,
        f"POST /execute answered {stream.status_code}, not 200 with an SSE stream: {stream.body[:300]!r}",
    )
    require(
        stream.is_event_stream,
        EVENT_STREAM,
        f"Content-Type is {stream.headers.get('content-type')!r}, not text/event-stream",
    )


def check_stream_complete(stream: SSEStream) -> None:
    require(
        stream.transport_error is None,
        EVENT_ORDER,
        f"stream broke off after [{stream.summary()}]: {stream.transport_error}",
    )


def check_event_types(stream: SSEStream) -> None:
    unknown = [event for event in stream.events if event.type not in EVENT_TYPES]
    require(
        not unknown,
        EVENT_STREAM,
        f"event types outside {', '.join(EVENT_TYPES)}: {_listing(unknown)}",
    )


def check_one_terminal(stream: SSEStream) -> None:
    terminals = stream.of_type(*TERMINAL_TYPES)
    require(
        len(terminals) == 1,
        EVENT_ORDER,
        f"stream has {len(terminals)} terminal events"
        + (f" ({_listing(terminals)})" if terminals else "")
        + f"; events: [{stream.summary()}]",
    )
    last = stream.events[-1]
    require(
        last.type in TERMINAL_TYPES,
        EVENT_ORDER,
        f"events follow the terminal event: [{stream.summary()}]",
    )


def check_order(stream: SSEStream) -> None:
    """started, then token/metrics, then exactly one end|error (M0-W-1311)."""
    events = stream.events
    require(events, EVENT_ORDER, "stream has no events")
    require(
        events[0].type == "started",
        EVENT_ORDER,
        f"first event is {events[0].describe()}, not started; events: [{stream.summary()}]",
    )
    check_one_terminal(stream)
    for event in events[1:-1]:
        require(
            event.type in ("token", "metrics"),
            EVENT_ORDER,
            f"{event.describe()} between started and the terminal event; events: [{stream.summary()}]",
        )


def check_utf8(stream: SSEStream) -> None:
    """Every event is UTF-8 JSON and no token text holds a lone surrogate (M0-W-1824, M0-W-1312).

    U+FFFD is valid UTF-8: a worker may put it where a model emitted bytes that are invalid in themselves
    (random weights do). Whether split characters were rejoined is judged by `check_text_rejoined`, where
    the bytes are known to be valid (ERRATA E-28)."""
    for event in stream.events:
        require(event.problem is None, UTF8_TEXT, f"event {event.describe()} is {event.problem}")
    for event in stream.of_type("token"):
        text = (event.data or {}).get("t")
        if not isinstance(text, str):
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequirementViolation(
                UTF8_TEXT, f"token {event.describe()} text holds a lone surrogate: {text!r}"
            ) from None


def check_text_utf8(text: str) -> None:
    """M0-W-1824: the concatenated token texts of a job are valid UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequirementViolation(
            UTF8_TEXT, f"the concatenated token texts are not valid UTF-8 ({exc.reason}): {text!r}"
        ) from None


def check_text_rejoined(text: str) -> None:
    """M0-W-1824 on a model whose output bytes are valid UTF-8 (real weights): a character split across
    tokens is held back until complete, so the concatenated text holds no U+FFFD (ERRATA E-28)."""
    check_text_utf8(text)
    require(
        "\ufffd" not in text,
        UTF8_TEXT,
        f"the concatenated token texts hold U+FFFD although the model's bytes are valid UTF-8 (real "
        f"weights): a character split across tokens was not rejoined: {text!r}",
    )


def _field(event: SSEEvent, name: str, kinds: tuple[type, ...], requirement: str) -> object:
    data = event.data or {}
    require(name in data, requirement, f"{event.describe()} lacks `{name}`: {event.raw[:200]!r}")
    value = data[name]
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    type_names = " or ".join(kind.__name__ for kind in kinds)
    require(ok, requirement, f"{event.describe()} `{name}` is {value!r}, not {type_names}")
    return value


def check_payloads(stream: SSEStream, job_id: str | None) -> None:
    """M0-W-1312 payloads; error events also M0-W-1500/1510."""
    tokens = stream.of_type("token")
    for event in stream.of_type("started"):
        got = _field(event, "job_id", (str,), EVENT_FIELDS)
        if job_id is not None:
            require(got == job_id, EVENT_FIELDS, f"started.job_id is {got!r}, the job is {job_id!r}")
        _field(event, "model", (str,), EVENT_FIELDS)
        _field(event, "started_at", (str, int, float), EVENT_FIELDS)
    for position, event in enumerate(tokens):
        _field(event, "t", (str,), EVENT_FIELDS)
        index = _field(event, "i", (int,), EVENT_FIELDS)
        require(
            index == position,
            EVENT_FIELDS,
            f"{event.describe()} has i={index}; token indices must count 0, 1, 2, ... (expected {position})",
        )
    for event in stream.of_type("end"):
        tokens_out = _field(event, "tokens_out", (int,), EVENT_FIELDS)
        decode_ms = _field(event, "decode_time_ms", (int, float), EVENT_FIELDS)
        require(decode_ms >= 0, EVENT_FIELDS, f"end.decode_time_ms is negative: {decode_ms}")
        require(
            tokens_out == len(tokens),
            EVENT_FIELDS,
            f"end.tokens_out is {tokens_out} but the stream has {len(tokens)} token events",
        )
    for event in stream.of_type("error"):
        check_error_event(event)


def check_error_event(event: SSEEvent) -> None:
    code = _field(event, "code", (str,), EVENT_FIELDS)
    _field(event, "message", (str,), EVENT_FIELDS)
    require(
        code in STABLE_ERROR_CODES,
        STABLE_CODES,
        f"{event.describe()} code {code!r} is not a stable code ({', '.join(STABLE_ERROR_CODES)})",
    )
    _field(event, "retriable", (bool,), RETRIABLE_FLAG)


def check_well_formed_job(stream: SSEStream, job_id: str | None) -> None:
    """Everything a finished `/execute` stream must satisfy, whatever the job."""
    check_event_stream_response(stream)
    check_stream_complete(stream)
    check_event_types(stream)
    check_order(stream)
    check_utf8(stream)
    check_payloads(stream, job_id)


def check_ended_with_end(stream: SSEStream) -> None:
    """The job's terminal event is `end` (M0-W-1311), for scenarios whose job must run to its end."""
    last = stream.events[-1]
    require(last.type == "end", EVENT_ORDER, f"the job ended with {last.describe()}: {last.raw[:200]!r}")


def check_streaming(stream: SSEStream | None, failure: object) -> SSEStream:
    """A job sent in the background answered with an event stream that has brought a token, or has
    already ended by itself: the precondition of the scenarios that act on a running job (M0-W-1300,
    M0-W-1311). A model may draw EOS as its very first token (`started, end`, no token): conforming, and
    the caller draws the job again or calls the scenario not applicable, never a failure."""
    require(stream is not None, EXECUTE_ANSWER, f"POST /execute gave no response: {failure}")
    check_event_stream_response(stream)
    require(stream.of_type("token", "end"), EVENT_ORDER, f"no token arrived; events: [{stream.summary()}]")
    return stream


def is_number(value: object) -> bool:
    """A JSON number (true and false are not numbers, though Python's bool is an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_count(value: object) -> bool:
    """A JSON integer."""
    return isinstance(value, int) and not isinstance(value, bool)


def matches_kind(value: object, kind: str) -> bool:
    """`kind` as written in a feature table: string, boolean, integer, "integer or null", "one of a, b"."""
    if kind.startswith("one of "):
        return value in [choice.strip() for choice in kind.removeprefix("one of ").split(",")]
    alternatives = [part.strip() for part in kind.split(" or ")]
    checks = {
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "null": lambda v: v is None,
    }
    unknown = [part for part in alternatives if part not in checks]
    assert not unknown, f"unknown type {kind!r} in the feature table; use {', '.join(checks)} or 'one of ...'"
    return any(checks[part](value) for part in alternatives)


def field_entries(value: object, field: str) -> list[dict]:
    """Error entries that point at `field`, whatever the error body's shape.

    Known shapes: `{"errors": [{"field", "constraint", "message"}]}` (the original worker),
    `{"error": {"details": ...}}` (SYS-5.5.1), `{"detail": [{"loc": [..., field], "msg", "type"}]}`.
    """
    found = []
    if isinstance(value, dict):
        pointer = value.get("field", value.get("name", value.get("param")))
        loc = value.get("loc")
        if pointer == field or (isinstance(loc, list) and field in loc):
            found.append(value)
        for child in value.values():
            found += field_entries(child, field)
    elif isinstance(value, list):
        for child in value:
            found += field_entries(child, field)
    return found
