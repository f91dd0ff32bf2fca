"""A real worker on a tiny CPU fixture, in this process (the ASGI app behind httpx, no socket), and the
checks every answer to a fuzzed request must pass.

The worker is the one `python -m reference_worker` serves (`load_worker` + `create_app`), with
`--max-tokens-out` small so that a valid request generates a few tokens only.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reference_worker.config import WorkerConfig
from reference_worker.logs import EventLog
from reference_worker.server import WorkerState, create_app
from reference_worker.worker import load_worker

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO / "fixtures" / "build" / "tiny" / "qwen2-q4_0.gguf"
VALID = {"job_id": "after", "prompt": "hello", "max_tokens": 1, "seed": 1}

# What an error body must never carry: an exception's class, a traceback, a source file.
_LEAKS = re.compile(r"Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b|\.py\b|site-packages")


def load_tiny_worker(model: Path = TINY_MODEL, max_tokens_out: int = 4, **config: Any) -> WorkerState:
    worker_config = WorkerConfig(
        worker_id=str(uuid.uuid4()),
        model=model,
        gpu_device=0,
        port=8080,
        device="cpu",
        max_tokens_out=max_tokens_out,
        **config,
    )
    return load_worker(worker_config, EventLog(io.StringIO()))


@asynccontextmanager
async def asgi_client(state: WorkerState) -> AsyncIterator[httpx.AsyncClient]:
    # An exception out of the app becomes a 500, as a real server answers it (or drops the connection).
    transport = httpx.ASGITransport(app=create_app(state), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=30) as client:
        yield client


def sse_events(text: str) -> list[dict[str, Any]]:
    """The `data:` payloads of an SSE body, in order."""
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


@dataclass
class Verdicts:
    """Counts of a fuzz run; `failures` holds the first few problems in full."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    valid_after: int = 0

    def fail(self, problem: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 20:
            self.failures.append(problem)

    def count(self, status: int) -> None:
        self.requests += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1


def problems_with_answer(
    response: httpx.Response, expected_bad: set[str] | None, job_id: Any = None
) -> list[str]:
    """What is wrong with one answer. `expected_bad`: the fields the oracle finds bad (empty: a good body,
    None: not predicted, any 400 naming some field is right)."""
    status, ctype = response.status_code, response.headers.get("content-type", "")
    if status == 400:
        if not ctype.startswith("application/json"):
            return [f"400 with Content-Type {ctype!r}"]
        body = response.json()
        errors = body.get("errors")
        if body.get("code") != "INVALID_REQUEST" or not isinstance(errors, list) or not errors:
            return [f"400 body is not the documented shape: {response.text[:300]}"]
        out = []
        for e in errors:
            if not all(isinstance(e.get(k), str) and e.get(k) for k in ("field", "constraint", "message")):
                out.append(f"error entry without field/constraint/message: {e}")
            if e.get("field") in ("prompt", "stop") and "value" in e:
                out.append(f"{e['field']} value echoed: {e}")
            if _LEAKS.search(e.get("message", "")):
                out.append(f"error message leaks internals: {e['message'][:200]}")
        named = {e.get("field") for e in errors}
        if expected_bad is not None and named != expected_bad:
            out.append(f"400 names {sorted(named)}, the contract finds {sorted(expected_bad)} bad")
        return out
    if status == 200:
        if expected_bad:
            return [f"200 stream for a body with bad fields {sorted(expected_bad)}"]
        return problems_with_stream(response.text, job_id)
    if status == 503 and response.json().get("code") == "WORKER_BUSY":
        return ["503 WORKER_BUSY while the worker was idle"]
    return [f"unexpected HTTP {status}: {response.text[:300]}"]


def problems_with_stream(text: str, job_id: Any = None) -> list[str]:
    """A complete stream: started first (for `job_id`), tokens 0.., exactly one end or error, last. An
    `error` is only the documented prompt-does-not-fit refusal (INVALID_REQUEST), never INTERNAL."""
    try:
        events = sse_events(text)
    except ValueError as e:
        return [f"an SSE data line is not JSON: {e}"]
    return problems_with_events(events, job_id)


def problems_with_events(
    events: list[dict[str, Any]], job_id: Any = None, errors: tuple[str, ...] = ("INVALID_REQUEST",)
) -> list[str]:
    """As `problems_with_stream`; `errors`: the codes a terminal `error` may carry here."""
    types = [e.get("type") for e in events]
    if not types or types[0] != "started":
        return [f"stream does not start with started: {types[:3]}"]
    if job_id is not None and events[0].get("job_id") != job_id:
        return [f"started names job {events[0].get('job_id')!r}, not {job_id!r}"]
    if types[-1] not in ("end", "error") or sum(t in ("end", "error") for t in types) != 1:
        return [f"stream is cut or has several terminal events: {types[-3:]}"]
    if set(types[1:-1]) - {"token"}:
        return [f"unexpected events inside the stream: {set(types[1:-1])}"]
    indices = [e["i"] for e in events if e["type"] == "token"]
    if indices != list(range(len(indices))):
        return [f"token indices are not 0..n-1: {indices[:10]}"]
    last = events[-1]
    if last["type"] == "error" and last.get("code") not in errors:
        return [f"the job failed: {last}"]
    return []


async def wait_idle(state: WorkerState, timeout: float = 10.0) -> None:
    """The engine frees the slot just after the stream's last event; wait for it (bounded)."""
    deadline = time.monotonic() + timeout
    while state.slot.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


async def valid_request_works(client: httpx.AsyncClient, state: WorkerState) -> list[str]:
    await wait_idle(state)
    response = await client.post("/execute", json=VALID)
    problems = problems_with_answer(response, set(), VALID["job_id"])
    if not problems and sse_events(response.text)[-1]["type"] != "end":
        problems = [f"the valid request after did not end: {response.text[-200:]}"]
    await wait_idle(state)
    return problems
