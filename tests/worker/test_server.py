"""The HTTP/SSE layer against a scripted engine, over a real uvicorn server on a loopback port:
validation (M0-W-1302), SSE framing and order (M0-W-1310..1312), seeds (M0-W-1030), one job at a time
(M0-W-1301), cancel (M0-W-1330), disconnect, timeouts, engine failures and VRAM_OOM (M0-W-1021),
correlation ids, /health (M0-W-1320)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import httpx
import pytest

from reference_worker.device_memory import DeviceMemory, VramOOM
from reference_worker.generation import (
    CancelToken,
    EndEvent,
    ErrorCode,
    ErrorEvent,
    GenerationEvent,
    GenerationRequest,
    PromptEvent,
    StopReason,
    TokenEvent,
)
from reference_worker.logs import EventLog
from reference_worker.server import JobSlot, Limits, ModelInfo, WorkerState
from steps.sse import parse_event_stream
from tests.worker.serving import serving

VOCAB = 1000


class ScriptedEngine:
    """A Generator that yields `tokens` tokens (or `script`), sleeping `delay` before each event."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.delay = 0.0
        self.script: list[GenerationEvent | Exception] | None = None
        self.honour_cancel = True
        self.requests: list[GenerationRequest] = []
        self.saw_cancel = threading.Event()
        self.finished = threading.Event()

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[GenerationEvent]:
        self.requests.append(request)
        script = self.script
        if script is None:
            script = [TokenEvent(i, 100 + i, f"tok{i} ") for i in range(request.max_tokens)]
            script.append(EndEvent(request.max_tokens, StopReason.MAX_TOKENS, 5, 3))
        try:
            yield PromptEvent(_count_tokens(request.prompt))
            for item in script:
                time.sleep(self.delay)
                if cancel.cancelled:
                    self.saw_cancel.set()
                    if self.honour_cancel:
                        yield ErrorEvent(cancel.reason, "the job was cancelled")
                        return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.finished.set()


@dataclass
class Worker:
    url: str
    state: WorkerState
    engine: ScriptedEngine
    logs: io.StringIO

    def post(self, path: str, body=None, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=10, **kwargs)

    def log_events(self) -> list[dict]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines()]


def _count_tokens(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def server() -> Iterator[Worker]:
    engine = ScriptedEngine()
    logs = io.StringIO()
    state = WorkerState(
        engine=engine,
        count_tokens=_count_tokens,
        model=ModelInfo(
            name="tiny-model",
            model_ref="/models/tiny.gguf",
            architecture="qwen2",
            quant_kind="Q4_K_M",
            tokenizer_kind="gguf-bpe",
            vocab_size=VOCAB,
            context_length=512,
            device="cpu",
        ),
        memory=DeviceMemory("cpu"),
        log=EventLog(logs, worker_id="w-1", model_ref="/models/tiny.gguf", gpu_device=0),
        limits=Limits(max_tokens_out=2048, inference_timeout_sec=30),
    )
    state.memory.allocate("weights", 4096)
    with serving(state) as url:
        yield Worker(url, state, engine, logs)


@pytest.fixture
def worker(server: Worker) -> Iterator[Worker]:
    server.engine.reset()
    server.state.limits = Limits(max_tokens_out=2048, inference_timeout_sec=30)
    server.state.last_error = None
    server.state.slot = JobSlot()
    yield server
    server.engine.delay = 0.0
    deadline = time.monotonic() + 5
    while server.state.slot.busy and time.monotonic() < deadline:
        time.sleep(0.02)


def parse_sse(text: str) -> list[tuple[str | None, dict]]:
    """(event line, data) per event; comment lines (pings) are skipped."""
    return [(event.event_field, event.data) for event in parse_event_stream(text.encode("utf-8"))]


def execute(worker: Worker, body: dict, **kwargs) -> tuple[httpx.Response, list[tuple[str | None, dict]]]:
    response = worker.post("/execute", body, **kwargs)
    return response, parse_sse(response.text) if response.status_code == 200 else []


def assert_well_formed(events: list[tuple[str | None, dict]]) -> None:
    for name, data in events:
        assert name == data["type"]
    types = [d["type"] for _, d in events]
    assert types[0] == "started"
    assert types[-1] in ("end", "error")
    assert sum(t in ("end", "error") for t in types) == 1
    assert set(types[1:-1]) <= {"token"}
    indices = [d["i"] for _, d in events if d["type"] == "token"]
    assert indices == list(range(len(indices)))


# --- validation (M0-W-1302) ---------------------------------------------------------------------------

OK = {"job_id": "j", "prompt": "hello"}

VALIDATION_CASES = [
    ({"prompt": "x"}, "job_id", "required"),
    ({"job_id": "j"}, "prompt", "required"),
    ({**OK, "job_id": ""}, "job_id", "non_empty"),
    ({**OK, "job_id": 7}, "job_id", "type(string)"),
    ({**OK, "prompt": ""}, "prompt", "length(1..=32768)"),
    ({**OK, "prompt": "x" * 32769}, "prompt", "length(1..=32768)"),
    ({**OK, "prompt": ["hi"]}, "prompt", "type(string)"),
    ({**OK, "max_tokens": 0}, "max_tokens", "range(1..=2048)"),
    ({**OK, "max_tokens": 2049}, "max_tokens", "range(1..=2048)"),
    ({**OK, "max_tokens": -5}, "max_tokens", "range(1..=2048)"),
    ({**OK, "max_tokens": 1.5}, "max_tokens", "type(integer)"),
    ({**OK, "max_tokens": 10.0}, "max_tokens", "type(integer)"),
    ({**OK, "max_tokens": "10"}, "max_tokens", "type(integer)"),
    ({**OK, "max_tokens": True}, "max_tokens", "type(integer)"),
    ({**OK, "temperature": -0.1}, "temperature", "range(0.0..=2.0)"),
    ({**OK, "temperature": 2.01}, "temperature", "range(0.0..=2.0)"),
    ({**OK, "temperature": "hot"}, "temperature", "type(number)"),
    ({**OK, "temperature": False}, "temperature", "type(number)"),
    ({**OK, "top_p": 1.5}, "top_p", "range(0.0..=1.0)"),
    ({**OK, "top_p": -0.5}, "top_p", "range(0.0..=1.0)"),
    ({**OK, "top_k": -1}, "top_k", f"range(0..={VOCAB})"),
    ({**OK, "top_k": VOCAB + 1}, "top_k", f"range(0..={VOCAB})"),
    ({**OK, "top_k": 2.5}, "top_k", "type(integer)"),
    ({**OK, "min_p": 1.1}, "min_p", "range(0.0..=1.0)"),
    ({**OK, "repetition_penalty": 2.5}, "repetition_penalty", "range(0.0..=2.0)"),
    ({**OK, "repetition_penalty": -1}, "repetition_penalty", "range(0.0..=2.0)"),
    ({**OK, "repetition_penalty": 0}, "repetition_penalty", "greater_than(0.0)"),
    ({**OK, "stop": ["a", "b", "c", "d", "e"]}, "stop", "max_count(4)"),
    ({**OK, "stop": ["ok", ""]}, "stop", "non_empty"),
    ({**OK, "stop": ["x" * 101]}, "stop", "max_length(100)"),
    ({**OK, "stop": ["é" * 51]}, "stop", "max_length(100)"),  # 102 bytes, 51 characters
    ({**OK, "stop": ["a " * 33]}, "stop", "max_tokens(32)"),
    ({**OK, "stop": "halt"}, "stop", "type(array of strings)"),
    ({**OK, "stop": ["ok", 3]}, "stop", "type(array of strings)"),
    ({**OK, "seed": -1}, "seed", f"range(0..={(1 << 64) - 1})"),
    ({**OK, "seed": 1 << 64}, "seed", f"range(0..={(1 << 64) - 1})"),
    ({**OK, "seed": 4.5}, "seed", "type(integer)"),
]


@pytest.mark.parametrize(("body", "field", "constraint"), VALIDATION_CASES)
def test_validation_error(worker: Worker, body: dict, field: str, constraint: str) -> None:
    response = worker.post("/execute", body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["code"] == "INVALID_REQUEST"
    assert {"field": field, "constraint": constraint} in [
        {"field": e["field"], "constraint": e["constraint"]} for e in payload["errors"]
    ]
    for error in payload["errors"]:
        assert error["message"]
        if error["field"] in ("prompt", "stop"):
            assert "value" not in error
    assert worker.engine.requests == []


def test_every_bad_field_is_reported_at_once(worker: Worker) -> None:
    body = {"job_id": "", "prompt": "", "max_tokens": 0, "temperature": 5, "top_p": "x", "seed": -1}
    errors = worker.post("/execute", body).json()["errors"]
    assert {e["field"] for e in errors} == {"job_id", "prompt", "max_tokens", "temperature", "top_p", "seed"}
    by_field = {e["field"]: e for e in errors}
    assert by_field["max_tokens"]["value"] == "0"
    assert by_field["max_tokens"]["message"] == "max_tokens must be at least 1 (got 0)"
    assert by_field["temperature"]["value"] == "5"


@pytest.mark.parametrize(
    ("content", "headers", "constraint"),
    [
        (b'{"job_id": "j", "prompt": ', {"content-type": "application/json"}, "valid_json"),
        (
            b'{"job_id": "j", "prompt": "p", "temperature": NaN}',
            {"content-type": "application/json"},
            "valid_json",
        ),
        (b'["job_id"]', {"content-type": "application/json"}, "json_object"),
        (b"42", {"content-type": "application/json"}, "json_object"),
        (b'{"job_id": "j", "prompt": "p"}', {}, "content_type(application/json)"),
        (b'{"job_id": "j", "prompt": "p"}', {"content-type": "text/plain"}, "content_type(application/json)"),
    ],
)
def test_body_errors(worker: Worker, content: bytes, headers: dict, constraint: str) -> None:
    response = httpx.post(worker.url + "/execute", content=content, headers=headers)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "body" and error["constraint"] == constraint


def test_unknown_fields_are_ignored_and_limits_are_inclusive(worker: Worker) -> None:
    body = {
        **OK,
        "max_tokens": 2,
        "temperature": 2.0,
        "top_p": 0.0,
        "top_k": VOCAB,
        "min_p": 1.0,
        "repetition_penalty": 2.0,
        "stop": ["a", "b", "c", "x" * 100],
        "seed": (1 << 64) - 1,
        "frobnicate": True,
        "prompt": "é" * 32768,  # 32768 code points, 65536 bytes
    }
    response, events = execute(worker, body)
    assert response.status_code == 200
    assert_well_formed(events)
    (request,) = worker.engine.requests
    assert (
        request.stop == ("a", "b", "c", "x" * 100)
        and request.top_k == VOCAB
        and request.seed == (1 << 64) - 1
    )


def test_defaults(worker: Worker) -> None:
    worker.state.limits = Limits(max_tokens_out=3, inference_timeout_sec=30)
    response, events = execute(worker, {**OK, "temperature": None})
    assert response.status_code == 200
    (request,) = worker.engine.requests
    assert request.max_tokens == 3  # default 2048, capped by --max-tokens-out
    assert (request.temperature, request.top_p, request.top_k, request.min_p) == (1.0, 1.0, 0, 0.0)
    assert (request.repetition_penalty, request.stop) == (1.0, ())


# --- SSE (M0-W-1310..1312, M0-W-1030) -----------------------------------------------------------------


def test_sse_stream(worker: Worker) -> None:
    response, events = execute(worker, {**OK, "max_tokens": 4, "seed": 42})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert_well_formed(events)
    started, end = events[0][1], events[-1][1]
    assert started["job_id"] == "j" and started["model"] == "tiny-model"
    assert datetime.fromisoformat(started["started_at"].replace("Z", "+00:00")).tzinfo is not None
    assert started["seed"] == 42 and started["prompt_tokens"] == 1
    assert [d["t"] for _, d in events[1:-1]] == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert end == {
        "type": "end",
        "tokens_out": 4,
        "decode_time_ms": 5,
        "stop_reason": "MAX_TOKENS",
        "seed": 42,
    }
    assert "data: {" in response.text and "event: started" in response.text


def test_generated_seed_is_reported(worker: Worker) -> None:
    _, events = execute(worker, {**OK, "max_tokens": 1})
    seed = events[0][1]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 1 << 64
    assert events[-1][1]["seed"] == seed == worker.engine.requests[0].seed


def test_stop_sequence_matched(worker: Worker) -> None:
    worker.engine.script = [
        TokenEvent(0, 5, "Hi"),
        EndEvent(1, StopReason.STOP_SEQUENCE, 1, 2, stop_sequence_matched="\n"),
    ]
    _, events = execute(worker, {**OK, "stop": ["\n"]})
    assert events[-1][1]["stop_reason"] == "STOP_SEQUENCE"
    assert events[-1][1]["stop_sequence_matched"] == "\n"


def test_tokens_stream_as_they_are_generated(worker: Worker) -> None:
    worker.engine.delay = 0.3
    arrivals: dict[str, float] = {}
    start = time.monotonic()
    with httpx.stream("POST", worker.url + "/execute", json={**OK, "max_tokens": 4}, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("event:"):
                arrivals.setdefault(line[6:].strip(), time.monotonic() - start)
    assert arrivals["token"] < 0.9 < arrivals["end"]


@pytest.mark.parametrize(
    ("item", "code", "retriable"),
    [
        (ErrorEvent(ErrorCode.VRAM_OOM, "KV cache allocation failed", True), "VRAM_OOM", True),
        (VramOOM("kv_cache", 1 << 30, 0, 1 << 20, "over the configured budget"), "VRAM_OOM", True),
        (RuntimeError("kernel exploded"), "INTERNAL", True),
    ],
)
def test_engine_failures_end_the_stream_and_the_worker_keeps_serving(
    worker: Worker, item, code: str, retriable: bool
) -> None:
    worker.engine.script = [TokenEvent(0, 1, "a"), item]
    response, events = execute(worker, OK)
    assert response.status_code == 200
    assert_well_formed(events)
    error = events[-1][1]
    assert error["code"] == code and error["retriable"] is retriable and error["message"]
    health = httpx.get(worker.url + "/health").json()
    assert health["status"] == "healthy" and health["busy"] is False
    assert health["last_error"]["code"] == code
    worker.engine.script = None
    _, events = execute(worker, {**OK, "max_tokens": 1})
    assert events[-1][1]["type"] == "end"


def test_engine_ending_without_terminal_event_is_internal(worker: Worker) -> None:
    worker.engine.script = [TokenEvent(0, 1, "a")]
    _, events = execute(worker, OK)
    assert_well_formed(events)
    assert events[-1][1]["code"] == "INTERNAL"


def test_inference_timeout(worker: Worker) -> None:
    worker.state.limits = Limits(max_tokens_out=2048, inference_timeout_sec=0.5)
    worker.engine.delay = 0.2
    _, events = execute(worker, {**OK, "max_tokens": 50})
    assert_well_formed(events)
    assert events[-1][1]["code"] == "INFERENCE_TIMEOUT"
    assert worker.engine.saw_cancel.wait(2)


# --- one job at a time, cancel, disconnect (M0-W-1301, M0-W-1330) --------------------------------------


class Background:
    """An /execute stream read on a thread."""

    def __init__(self, worker: Worker, body: dict) -> None:
        self.events: list[tuple[str | None, dict]] = []
        self.first_token = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(worker, body), daemon=True)
        self.thread.start()

    def _run(self, worker: Worker, body: dict) -> None:
        with httpx.stream("POST", worker.url + "/execute", json=body, timeout=30) as response:
            text = ""
            for chunk in response.iter_text():
                text += chunk
                if "event: token" in text:
                    self.first_token.set()
        self.events = parse_sse(text)

    def join(self, timeout: float) -> list[tuple[str | None, dict]]:
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        return self.events


def test_second_concurrent_job_gets_503(worker: Worker) -> None:
    worker.engine.delay = 0.1
    job = Background(worker, {"job_id": "first", "prompt": "p", "max_tokens": 8})
    assert job.first_token.wait(5)
    response = worker.post("/execute", {"job_id": "second", "prompt": "p"})
    assert response.status_code == 503
    assert response.json()["code"] == "WORKER_BUSY" and response.json()["retriable"] is True
    assert int(response.headers["retry-after"]) >= 1
    assert httpx.get(worker.url + "/health").json()["busy"] is True
    assert job.join(10)[-1][1]["type"] == "end"


def test_cancel_ends_the_stream_with_cancelled(worker: Worker) -> None:
    worker.engine.delay = 0.1
    job = Background(worker, {"job_id": "long", "prompt": "p", "max_tokens": 500})
    assert job.first_token.wait(5)
    start = time.monotonic()
    response = worker.post("/cancel", {"job_id": "long"})
    assert response.status_code == 202
    assert response.json() == {"job_id": "long", "status": "cancelling"}
    assert worker.post("/cancel", {"job_id": "long"}).json()["status"] in ("cancelling", "not_running")
    events = job.join(5)
    assert time.monotonic() - start < 5
    assert_well_formed(events)
    assert events[-1][1]["code"] == "CANCELLED" and events[-1][1]["retriable"] is False
    assert worker.post("/cancel", {"job_id": "long"}).json() == {"job_id": "long", "status": "not_running"}


def test_cancel_when_the_engine_does_not_answer(worker: Worker) -> None:
    worker.engine.delay = 0.1
    worker.engine.honour_cancel = False
    job = Background(worker, {"job_id": "deaf", "prompt": "p", "max_tokens": 100})
    assert job.first_token.wait(5)
    worker.post("/cancel", {"job_id": "deaf"})
    events = job.join(4)
    assert_well_formed(events)
    assert events[-1][1]["code"] == "CANCELLED"


def test_cancel_unknown_job_and_validation(worker: Worker) -> None:
    response = worker.post("/cancel", {"job_id": "nobody"})
    assert response.status_code == 202 and response.json() == {"job_id": "nobody", "status": "not_running"}
    response = worker.post("/cancel", {})
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "field": "job_id",
        "constraint": "required",
        "message": "job_id is required",
    }
    assert worker.post("/cancel", {"job_id": ""}).json()["errors"][0]["constraint"] == "non_empty"
    response = httpx.post(
        worker.url + "/cancel", content=b"nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["errors"][0]["constraint"] == "valid_json"


def test_client_disconnect_cancels_the_job(worker: Worker) -> None:
    worker.engine.delay = 0.1
    with httpx.stream(
        "POST", worker.url + "/execute", json={**OK, "max_tokens": 500}, timeout=10
    ) as response:
        for line in response.iter_lines():
            if line.startswith("event: token"):
                break
    assert worker.engine.saw_cancel.wait(3)
    assert worker.engine.finished.wait(3)
    deadline = time.monotonic() + 3
    while worker.state.slot.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.state.slot.busy


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def queued(worker: Worker) -> int:
    return httpx.get(worker.url + "/health").json()["queued"]


def test_with_a_queue_jobs_wait_in_arrival_order_and_the_next_one_is_refused(worker: Worker) -> None:
    worker.state.slot = JobSlot(queue_depth=2)
    worker.engine.delay = 0.05
    # 2 s of tokens: long enough for the next two clients to be admitted even on a loaded machine
    first = Background(worker, {"job_id": "q-a", "prompt": "p", "max_tokens": 40})
    assert first.first_token.wait(5)
    second = Background(worker, {"job_id": "q-b", "prompt": "p", "max_tokens": 3})
    assert wait_until(lambda: queued(worker) == 1)
    third = Background(worker, {"job_id": "q-c", "prompt": "p", "max_tokens": 3})
    assert wait_until(lambda: queued(worker) == 2)
    refused = worker.post("/execute", {"job_id": "q-d", "prompt": "p"})
    assert refused.status_code == 503 and refused.json()["code"] == "WORKER_BUSY"
    assert "2 wait" in refused.json()["message"] and "retry-after" in refused.headers
    for job in (first, second, third):
        events = job.join(10)
        assert_well_formed(events)
        assert events[-1][1]["type"] == "end"
    starts = [e["job_id"] for e in worker.log_events() if e["event"] == "execute_start"]
    assert starts[-3:] == ["q-a", "q-b", "q-c"]
    assert wait_until(lambda: not worker.state.slot.busy) and queued(worker) == 0


def test_a_job_cancelled_while_waiting_ends_with_cancelled(worker: Worker) -> None:
    worker.state.slot = JobSlot(queue_depth=1)
    worker.engine.delay = 0.05
    running = Background(worker, {"job_id": "w-run", "prompt": "p", "max_tokens": 20})
    assert running.first_token.wait(5)
    waiting = Background(worker, {"job_id": "w-wait", "prompt": "p", "max_tokens": 3})
    assert wait_until(lambda: queued(worker) == 1)
    response = worker.post("/cancel", {"job_id": "w-wait"})
    assert response.json() == {"job_id": "w-wait", "status": "cancelling"}
    events = waiting.join(5)
    assert_well_formed(events)
    assert [e for e, _ in events] == ["started", "error"] and events[-1][1]["code"] == "CANCELLED"
    assert running.join(10)[-1][1]["type"] == "end"
    assert wait_until(lambda: not worker.state.slot.busy)


def test_a_client_that_leaves_the_line_frees_its_place(worker: Worker) -> None:
    worker.state.slot = JobSlot(queue_depth=1)
    worker.engine.delay = 0.05
    running = Background(worker, {"job_id": "l-run", "prompt": "p", "max_tokens": 20})
    assert running.first_token.wait(5)
    with httpx.stream("POST", worker.url + "/execute", json={**OK, "job_id": "l-gone"}, timeout=10) as r:
        assert r.status_code == 200
        assert wait_until(lambda: queued(worker) == 1)
    assert wait_until(lambda: queued(worker) == 0)
    assert running.join(10)[-1][1]["type"] == "end"
    assert wait_until(lambda: not worker.state.slot.busy)
    worker.engine.delay = 0.0
    _, events = execute(worker, {**OK, "max_tokens": 3})
    assert events[-1][1]["type"] == "end"


def test_the_slot_passes_on_when_its_next_holder_leaves_before_hearing_of_it() -> None:
    """finish() hands the slot to the first waiter from the engine's thread; if that waiter's client is
    gone before the news arrives, the slot goes to the one after it instead of staying taken."""

    async def scenario() -> str | None:
        slot = JobSlot(queue_depth=2)
        running = slot.admit("a")
        b, c = slot.admit("b"), slot.admit("c")
        assert running is not None and running.turn is None and b.turn is not None and c.turn is not None
        waiter_b = asyncio.ensure_future(slot.wait_turn(b))
        waiter_c = asyncio.ensure_future(slot.wait_turn(c))
        await asyncio.sleep(0)
        slot.finish(running.job)  # b holds the slot now; its future resolves on the next loop turn
        waiter_b.cancel()  # ... but b's client left first
        with pytest.raises(asyncio.CancelledError):
            await waiter_b
        assert await asyncio.wait_for(waiter_c, 1) is True
        return slot.active_job_id

    assert asyncio.run(scenario()) == "c"


def test_a_negative_queue_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="queue_depth"):
        JobSlot(queue_depth=-1)


# --- correlation id, routing, health, logs ------------------------------------------------------------


def test_correlation_id_is_echoed_and_logged(worker: Worker) -> None:
    response, _ = execute(
        worker, {**OK, "job_id": "corr", "max_tokens": 1}, headers={"X-Correlation-Id": "req-123"}
    )
    assert response.headers["x-correlation-id"] == "req-123"
    logged = [e for e in worker.log_events() if e.get("job_id") == "corr"]
    assert {e["event"] for e in logged} >= {"execute_start", "execute_end"}
    assert all(e["correlation_id"] == "req-123" for e in logged)


@pytest.mark.parametrize("sent", [None, "", "x" * 129, "bad\x7fchar"])
def test_correlation_id_is_generated_when_absent_or_bad(worker: Worker, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Correlation-Id": sent}
    response = httpx.get(worker.url + "/health", headers=headers)
    uuid.UUID(response.headers["x-correlation-id"])


def test_correlation_id_on_error_responses(worker: Worker) -> None:
    for response in (
        worker.post("/execute", {}, headers={"X-Correlation-Id": "c-1"}),
        httpx.get(worker.url + "/nowhere", headers={"X-Correlation-Id": "c-1"}),
    ):
        assert response.headers["x-correlation-id"] == "c-1"


def test_unknown_path_and_wrong_method(worker: Worker) -> None:
    response = httpx.get(worker.url + "/nowhere")
    assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND"
    response = httpx.get(worker.url + "/execute")
    assert response.status_code == 405 and response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in response.headers["allow"]
    assert httpx.post(worker.url + "/health").status_code == 405


def test_health(worker: Worker) -> None:
    health = httpx.get(worker.url + "/health").json()
    assert health["status"] == "healthy" and health["resident"] is True
    assert health["model"] == "tiny-model" and health["architecture"] == "qwen2"
    assert health["quant_kind"] == "Q4_K_M" and health["tokenizer_kind"] == "gguf-bpe"
    assert health["vocab_size"] == VOCAB and health["context_length"] == 512
    assert health["vram_bytes_used"] == worker.state.memory.used_bytes > 0
    assert health["vram_bytes_by_category"]["weights"] > 0
    assert health["sm"] is None and health["cuda_runtime_version"] is None and health["device"] == "cpu"
    assert isinstance(health["uptime_seconds"], int) and health["busy"] is False


def test_unhealthy_worker_refuses_jobs(worker: Worker) -> None:
    worker.state.status, worker.state.resident = "unhealthy", False
    try:
        assert httpx.get(worker.url + "/health").json()["status"] == "unhealthy"
        response = worker.post("/execute", OK)
        assert response.status_code == 503 and response.json()["code"] == "WORKER_UNHEALTHY"
    finally:
        worker.state.status, worker.state.resident = "healthy", True


def test_nothing_is_logged_per_token(worker: Worker) -> None:
    before = len(worker.log_events())
    execute(worker, {**OK, "job_id": "quiet", "max_tokens": 20})
    new = worker.log_events()[before:]
    assert [e["event"] for e in new] == ["execute_start", "execute_end"]
    assert new[-1]["tokens_out"] == 20 and new[-1]["stop_reason"] == "MAX_TOKENS"


def test_limits_are_replaceable() -> None:
    assert replace(Limits(), max_tokens_out=5).max_tokens_out == 5
