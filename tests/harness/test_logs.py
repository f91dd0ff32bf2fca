"""The worker-output readers of the harness (steps/logs.py, steps/redaction.py, steps/job_log.py,
steps/processes.py) on written output, with no worker involved."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from steps.job_log import performance_field_problem
from steps.logs import (
    command_argument,
    event_listing,
    log_level,
    log_records,
    names_file,
    output_text,
    problem_keywords,
    problem_lines,
    traceback_in,
)
from steps.processes import without_flag
from steps.redaction import carries_digest, carries_length, find_leaks, prompt_digest, secrets_of
from steps.sse import SSEStream, parse_event_stream
from steps.targets import WorkerHandle


def handle(tmp_path: Path, stdout: list[object], stderr: str = "") -> WorkerHandle:
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    out.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in stdout) + "\n")
    err.write_text(stderr)
    return WorkerHandle("http://127.0.0.1:9", stdout_path=out, stderr_path=err)


def test_log_records_merge_nested_context_and_skip_lines_without_an_event(tmp_path: Path):
    worker = handle(
        tmp_path,
        [
            "plain text",
            {"event": "startup", "fields": {"worker_id": "w"}, "level": "INFO"},
            {"message": "no event"},
            "{not json",
            {"event": "ready", "spans": [{"job_id": "j"}], "severity": "Error"},
            {"event": "ready"},
        ],
    )
    records = log_records(worker)
    assert [record["event"] for record in records] == ["startup", "ready", "ready"]
    assert records[0]["worker_id"] == "w" and records[1]["job_id"] == "j"
    assert [log_level(record) for record in records] == ["info", "error", ""]
    assert event_listing(records) == "startup, ready x2"
    assert event_listing([]) == "(none)"


def test_problem_lines_are_stderr_plain_stdout_and_error_records(tmp_path: Path):
    worker = handle(
        tmp_path,
        [
            "booting",
            {"event": "startup", "level": "info"},
            {"event": "load", "level": "critical", "msg": "bad"},
        ],
        stderr="error: model.gguf: bad magic\n",
    )
    lines = problem_lines(worker)
    assert lines[0] == "error: model.gguf: bad magic" and "booting" in lines
    assert any("msg=bad" in line for line in lines) and not any("startup" in line for line in lines)
    assert output_text(worker).startswith("error: model.gguf")
    assert names_file(lines[0], Path("/models/model.gguf"))


def test_tracebacks_of_python_and_rust_are_found():
    assert traceback_in("ok\nTraceback (most recent call last):\n  File x").startswith("Traceback")
    assert traceback_in("thread 'main' panicked at src/main.rs") == "panicked at src/main.rs"
    assert traceback_in("error: no such file") is None


def test_problem_keywords_name_a_problem_or_a_key():
    assert problem_keywords("not a GGUF file") == ("magic", "gguf")
    assert problem_keywords("the missing key qwen2.block_count") == ("qwen2.block_count",)
    assert problem_keywords("the architecture Mamba") == ("mamba",)
    with pytest.raises(AssertionError, match="known: not a GGUF file"):
        problem_keywords("a bad vibe")


def test_command_arguments_in_both_spellings_and_a_flag_left_out():
    command = ["w", "--model", "a.gguf", "--port=8080", "--gpu-device", "0"]
    assert command_argument(command, "--model") == "a.gguf"
    assert command_argument(command, "--port") == "8080"
    assert command_argument(command, "--worker-id") is None
    assert without_flag(command, "--port") == ["w", "--model", "a.gguf", "--gpu-device", "0"]
    assert without_flag(command, "--model") == ["w", "--port=8080", "--gpu-device", "0"]
    with pytest.raises(pytest.skip.Exception, match="not applicable"):
        without_flag(command, "--worker-id")


def test_leaks_are_found_through_json_escapes_and_short_text_is_not_a_secret():
    secrets = secrets_of("The secret word is PERIWINKLE-7731", " Hello, 世界 again ")
    assert set(secrets) == {"the prompt", "the prompt's word 'PERIWINKLE-7731'", "the generated text"}
    assert "the generated text" not in secrets_of("hi", "ok")
    lines = ['{"event": "execute_end", "text": "Hello, \\u4e16\\u754c again"}', "quiet", "PERIWINKLE-7731"]
    leaks = find_leaks(lines, secrets)
    assert [(leak.what, leak.line_number) for leak in leaks] == [
        ("the generated text", 1),
        ("the prompt's word 'PERIWINKLE-7731'", 3),
    ]
    assert "is in output line 1" in leaks[0].describe()


def test_prompt_digest_and_length_fields():
    prompt = "héllo"
    record = {
        "event": "execute_start",
        "prompt_hash": f"sha256:{prompt_digest(prompt).upper()}",
        "prompt_bytes": 6,
    }
    assert carries_digest(record, prompt) and carries_length(record, prompt)
    assert not carries_digest({"prompt_hash": "abc"}, prompt)
    assert not carries_length({"prompt_len": True}, prompt)


def test_performance_fields_are_checked_against_the_stream():
    body = (
        b'data: {"type": "started", "prompt_tokens": 3}\n\n'
        b'data: {"type": "token", "t": "a", "i": 0}\n\ndata: {"type": "end"}\n\n'
    )
    stream = SSEStream(200, httpx.Headers({"content-type": "text/event-stream"}), parse_event_stream(body))
    assert performance_field_problem("tokens_in", 3, stream) is None
    assert "prompt_tokens 3" in performance_field_problem("tokens_in", 4, stream)
    assert performance_field_problem("tokens_out", 1, stream) is None
    assert "1 token events" in performance_field_problem("tokens_out", 2, stream)
    assert performance_field_problem("decode_time_ms", 0.5, stream) is None
    assert performance_field_problem("first_token_ms", True, stream) is not None
    assert performance_field_problem("vram_bytes", 0, stream) is not None
