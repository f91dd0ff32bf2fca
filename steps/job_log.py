"""The log events of one job (M0-W-1900 `job_id`), and the M1 performance fields of its `execute_end`
(M0-W-1901), each checked against what the client saw of the same job.
"""

from __future__ import annotations

from collections.abc import Callable

from steps.logs import event_listing, events_of, wait_for_event
from steps.sse import SSEStream
from steps.targets import WorkerHandle
from steps.verdicts import is_count, is_number, require


def job_records(handle: WorkerHandle, job_id: str | None, event: str) -> tuple[list[dict], list[dict]]:
    """(the `event` records with `job_id`, every record) once the job's execute_end is logged."""
    records = wait_for_event(handle, "execute_end")
    return [record for record in events_of(records, event) if record.get("job_id") == job_id], records


def one_job_record(handle: WorkerHandle, job_id: str | None, event: str, spec_ids: str) -> dict:
    """The one `event` log record with the job's id; a failure names `spec_ids`."""
    mine, records = job_records(handle, job_id, event)
    require(
        len(mine) == 1,
        spec_ids,
        f"expected one {event} log event with job_id {job_id!r}, found {len(mine)}; "
        f"logged events: {event_listing(records)}",
    )
    return mine[0]


def _tokens_in(value: object, stream: SSEStream) -> str | None:
    if not is_count(value) or value < 1:
        return f"is {value!r}, not a positive integer (the prompt has tokens)"
    started = stream.of_type("started")
    counted = started[0].data.get("prompt_tokens") if started and started[0].data else None
    if is_count(counted) and counted != value:
        return f"is {value}, but the started event says prompt_tokens {counted}"
    return None


def _tokens_out(value: object, stream: SSEStream) -> str | None:
    streamed = len(stream.of_type("token"))
    return (
        None
        if is_count(value) and value == streamed
        else f"is {value!r}, but the stream has {streamed} token events"
    )


def _millis(value: object, stream: SSEStream) -> str | None:
    return None if is_number(value) and value >= 0 else f"is {value!r}, not a non-negative number"


def _vram_bytes(value: object, stream: SSEStream) -> str | None:
    return None if is_count(value) and value > 0 else f"is {value!r}, not a positive integer"


PERFORMANCE_FIELDS: dict[str, Callable[[object, SSEStream], str | None]] = {  # M0-W-1901
    "tokens_in": _tokens_in,
    "tokens_out": _tokens_out,
    "decode_time_ms": _millis,
    "first_token_ms": _millis,
    "vram_bytes": _vram_bytes,
}


def performance_field_problem(name: str, value: object, stream: SSEStream) -> str | None:
    """What is wrong with `execute_end`'s `name` given the job's stream, or None."""
    assert name in PERFORMANCE_FIELDS, f"no check for {name!r}; known: {', '.join(PERFORMANCE_FIELDS)}"
    return PERFORMANCE_FIELDS[name](value, stream)
