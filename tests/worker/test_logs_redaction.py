"""Job log lines: the performance fields of execute_end (M0-W-1901) and no prompt or generated text in any
line, only the prompt's SHA-256 and length (M0-W-1902). Over a real uvicorn server and a scripted engine."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator

import pytest

from reference_worker.device_memory import DeviceMemory
from reference_worker.generation import EndEvent, ErrorCode, ErrorEvent, StopReason, TokenEvent
from reference_worker.logs import REDACTED, EventLog, prompt_digest, redact
from reference_worker.server import Limits, ModelInfo, WorkerState
from tests.worker.serving import serving
from tests.worker.test_server import VOCAB, ScriptedEngine, Worker, execute

SECRET = "The secret word is PERIWINKLE-7731 — ünïcødé 🚀"
GENERATED = ("TANGERINE", "-", "OCELOT", "-", "4409")


@pytest.fixture(scope="module")
def server() -> Iterator[Worker]:
    engine = ScriptedEngine()
    logs = io.StringIO()
    state = WorkerState(
        engine=engine,
        count_tokens=lambda text: len(text.split()),
        model=ModelInfo("tiny", "/models/tiny.gguf", "qwen2", "Q4_K_M", "gguf-bpe", VOCAB, 512, "cpu"),
        memory=DeviceMemory("cpu"),
        log=EventLog(logs, worker_id="w-1", model_ref="/models/tiny.gguf", gpu_device=0),
        limits=Limits(max_tokens_out=2048, inference_timeout_sec=30),
    )
    state.memory.allocate("weights", 4096)
    with serving(state) as url:
        yield Worker(url, state, engine, logs)


@pytest.fixture
def worker(server: Worker) -> Worker:
    server.engine.reset()
    server.logs.seek(0)
    server.logs.truncate()
    return server


def _generated_script(first_token_ms: float | None = 12.3456) -> list:
    tokens = [TokenEvent(i, 100 + i, text) for i, text in enumerate(GENERATED)]
    return [*tokens, EndEvent(len(tokens), StopReason.MAX_TOKENS, 7, 9, first_token_ms=first_token_ms)]


def _lines(worker: Worker) -> list[str]:
    return worker.logs.getvalue().splitlines()


def test_prompt_digest_is_the_sha256_of_the_utf8_prompt_and_its_length() -> None:
    digest = prompt_digest(SECRET)
    assert digest["prompt_sha256"] == hashlib.sha256(SECRET.encode("utf-8")).hexdigest()
    assert digest["prompt_chars"] == len(SECRET)
    assert prompt_digest("\ud800x")["prompt_chars"] == 2  # a lone surrogate from a JSON escape is hashed too


def test_redact_replaces_every_copy_of_the_prompt() -> None:
    assert redact(f"bad {SECRET!s} and {SECRET}", SECRET) == f"bad {REDACTED} and {REDACTED}"
    assert redact("nothing here", "") == "nothing here"


def test_execute_end_carries_the_performance_fields(worker: Worker) -> None:
    worker.engine.script = _generated_script()
    _, events = execute(worker, {"job_id": "perf", "prompt": SECRET, "max_tokens": 5})
    assert events[-1][1]["type"] == "end"
    end = [json.loads(line) for line in _lines(worker) if '"execute_end"' in line][-1]
    assert end["job_id"] == "perf" and end["stop_reason"] == "MAX_TOKENS"
    assert end["tokens_in"] == 9 and end["tokens_out"] == len(GENERATED)
    assert end["decode_time_ms"] == 7 and end["first_token_ms"] == 12.346
    assert end["vram_bytes"] == worker.state.memory.used_bytes > 0


def test_no_log_line_carries_the_prompt_or_the_generated_text(worker: Worker) -> None:
    worker.engine.script = _generated_script()
    execute(worker, {"job_id": "quiet", "prompt": SECRET, "max_tokens": 5})
    lines = _lines(worker)
    start = [json.loads(line) for line in lines if '"execute_start"' in line][-1]
    assert start["prompt_sha256"] == hashlib.sha256(SECRET.encode("utf-8")).hexdigest()
    assert start["prompt_chars"] == len(SECRET)
    text = "\n".join(lines)
    assert "PERIWINKLE" not in text and SECRET not in text
    assert "TANGERINE" not in text and "".join(GENERATED) not in text


def test_an_engine_error_quoting_the_prompt_is_logged_redacted(worker: Worker) -> None:
    worker.engine.script = [ErrorEvent(ErrorCode.INTERNAL, f"cannot tokenize {SECRET!r}", True)]
    _, events = execute(worker, {"job_id": "oops", "prompt": SECRET, "max_tokens": 5})
    assert events[-1][1]["type"] == "error"
    error = [json.loads(line) for line in _lines(worker) if '"error"' in line][-1]
    assert error["event"] == "error" and REDACTED in error["message"]
    assert "PERIWINKLE" not in worker.logs.getvalue()
    assert "PERIWINKLE" not in json.dumps(worker.state.last_error)


def test_a_rejected_request_logs_nothing_of_its_prompt(worker: Worker) -> None:
    response, _ = execute(worker, {"job_id": "bad", "prompt": SECRET, "max_tokens": 5, "temperature": 9})
    assert response.status_code == 400
    assert "PERIWINKLE" not in response.text and "PERIWINKLE" not in worker.logs.getvalue()
