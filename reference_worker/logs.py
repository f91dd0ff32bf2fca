"""Structured logs (M0-W-1900): one JSON object per line on stdout.

Every line has `ts` (RFC 3339, UTC), `level`, `event`, `message` and the worker's context (`worker_id`,
`model_ref`, `gpu_device`); job lines add `job_id` and `correlation_id`. Event names:
startup, model_load_start, model_load_progress (percent), model_load_complete (vram_bytes), ready,
execute_start, execute_end, error, shutdown, residency_check_failed, warning. Nothing is logged per token.

Prompts and generated text are never logged (M0-W-1902): a job's lines carry the prompt's SHA-256 and
length instead (`prompt_digest`), and text that may quote the prompt goes through `redact` first.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

_write_lock = threading.Lock()


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


REDACTED = "<redacted prompt>"


def prompt_digest(prompt: str) -> dict[str, Any]:
    """What the logs say about a prompt instead of its text (M0-W-1902): hex SHA-256 of its UTF-8 bytes
    (lone surrogates from JSON escapes encoded as is) and its length in code points."""
    data = prompt.encode("utf-8", "surrogatepass")
    return {"prompt_sha256": hashlib.sha256(data).hexdigest(), "prompt_chars": len(prompt)}


def redact(text: str, prompt: str) -> str:
    """`text` (e.g. an error message) with every copy of `prompt` replaced (M0-W-1902)."""
    return text.replace(prompt, REDACTED) if prompt else text


class EventLog:
    def __init__(self, stream: TextIO | None = None, **context: Any) -> None:
        self._stream = stream
        self._context = {k: v for k, v in context.items() if v is not None}

    def bind(self, **context: Any) -> EventLog:
        """A log that adds `context` (e.g. job_id, correlation_id) to every line."""
        child = EventLog(self._stream)
        child._context = {**self._context, **{k: v for k, v in context.items() if v is not None}}
        return child

    def event(self, event: str, message: str, *, level: str = "info", **fields: Any) -> None:
        record = {"ts": rfc3339_now(), "level": level, "event": event, "message": message}
        record.update(self._context)
        record.update(fields)
        line = json.dumps(record, default=str, ensure_ascii=False)
        stream = self._stream or sys.stdout
        with _write_lock:
            stream.write(line + "\n")
            stream.flush()

    def error(self, message: str, **fields: Any) -> None:
        self.event("error", message, level="error", **fields)
