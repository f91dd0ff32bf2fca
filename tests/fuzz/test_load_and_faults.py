"""Load and faults against a real worker process on a tiny CPU fixture (M0-W-1301, M0-W-1330, M0-W-1340,
M0-W-1611): concurrent clients, client disconnect, cancel storms, the inference timeout, the body size
limit, SIGTERM during a generation. After each, the next request works and the worker's memory
accounting is back at its baseline. No timing is asserted: "promptly" is shown by the job ending long
before it could have finished on its own."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .inprocess import TINY_MODEL, problems_with_events
from .load import run_load
from .process import Answer, WorkerProcess, execute, worker_process

pytestmark = pytest.mark.skipif(
    not TINY_MODEL.is_file(), reason=f"{TINY_MODEL} missing: run `python -m fixtures prepare --tiny`"
)

LONG = {
    "prompt": "Once upon a time",
    "max_tokens": 2048,
    "temperature": 0.0,
    "seed": 3,
}  # to the context's end
RSS_SLACK_BYTES = 64 << 20  # allocator caches may keep some host memory; a leak per job would exceed this


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    with worker_process("--max-body-bytes", "65536") as w:
        yield w


@pytest.fixture
def baseline(worker: WorkerProcess) -> Iterator[dict[str, Any]]:
    """The idle worker's memory before a test; after it, the same, and a valid request works."""
    health = worker.wait_idle()
    before = {"vram": health["vram_bytes_by_category"], "rss": worker.rss_bytes}
    yield before
    health = worker.wait_idle()
    assert not health["busy"]
    assert health["vram_bytes_by_category"] == before["vram"]
    with httpx.Client() as client:
        answer = execute(client, worker.url, {"job_id": "next", "prompt": "hi", "max_tokens": 2})
    assert problems_with_events(answer.events, "next") == [] and answer.terminal["type"] == "end"
    assert worker.wait_idle()["vram_bytes_by_category"] == before["vram"]
    assert worker.rss_bytes - before["rss"] < RSS_SLACK_BYTES


def metric(worker: WorkerProcess, line_start: str) -> float:
    text = httpx.get(worker.url + "/metrics", timeout=10).text
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).split()[-1])


def start_long_job(worker: WorkerProcess, job_id: str) -> tuple[threading.Thread, list[Answer]]:
    """A job that would run to the end of the context, streamed on a thread; returns once it holds the slot."""
    answers: list[Answer] = []

    def run() -> None:
        with httpx.Client() as client:
            answers.append(execute(client, worker.url, {"job_id": job_id, **LONG}))

    thread = threading.Thread(target=run)
    thread.start()
    while not worker.health()["busy"] and thread.is_alive():
        time.sleep(0.005)
    return thread, answers


def full_length(worker: WorkerProcess) -> int:
    """Tokens the LONG job streams when left alone."""
    with httpx.Client() as client:
        answer = execute(client, worker.url, {"job_id": "alone", **LONG})
    assert answer.terminal["type"] == "end"
    return answer.terminal["tokens_out"]


def test_32_concurrent_clients_get_a_complete_stream_or_busy(worker: WorkerProcess, baseline) -> None:
    report = run_load(worker, clients=32, rounds=1, max_tokens=4)
    assert report.failures == [], report.failures[:5]
    assert report.streams == 32 and report.busy > 0
    assert report.health_failures == 0 and report.health_latencies_ms


def test_with_a_bounded_queue_every_client_gets_a_complete_stream_or_busy() -> None:
    with worker_process("--queue-depth", "3") as worker:
        report = run_load(worker, clients=8, rounds=1, max_tokens=4)
        health = worker.wait_idle()
    assert report.failures == [] and report.health_failures == 0
    assert report.streams == 8 and health["queued"] == 0 and health["busy"] is False


def test_client_disconnect_stops_the_job(worker: WorkerProcess, baseline) -> None:
    alone = full_length(worker)
    worker.wait_idle()
    cancelled = metric(worker, 'worker_requests_total{outcome="cancelled"}')
    generated = metric(worker, "worker_tokens_generated_total")
    with httpx.Client() as client:
        answer = execute(client, worker.url, {"job_id": "leaver", **LONG}, stop_after_tokens=2)
    assert answer.status == 200 and answer.terminal is None  # the client left mid-stream
    worker.wait_idle()
    assert metric(worker, 'worker_requests_total{outcome="cancelled"}') == cancelled + 1
    assert metric(worker, "worker_tokens_generated_total") - generated < alone  # it stopped early


def test_a_cancel_storm_ends_the_job_once(worker: WorkerProcess, baseline) -> None:
    thread, answers = start_long_job(worker, "storm")
    statuses: list[tuple[str, int, str]] = []

    def storm(ids: list[str]) -> None:
        with httpx.Client(timeout=10) as client:
            for job_id in ids:
                r = client.post(worker.url + "/cancel", json={"job_id": job_id})
                statuses.append((job_id, r.status_code, r.json().get("status")))

    targets = [["storm"] * 25 + [f"unknown-{t}-{i}" for i in range(25)] for t in range(8)]
    storms = [threading.Thread(target=storm, args=(ids,)) for ids in targets]
    for s in storms:
        s.start()
    for s in storms:
        s.join()
    thread.join(60)
    (answer,) = answers
    assert problems_with_events(answer.events, "storm", ("CANCELLED",)) == []
    assert answer.terminal["type"] == "error" and answer.terminal["code"] == "CANCELLED"
    assert {code for _, code, _ in statuses} == {202} and len(statuses) == 400
    assert {s for j, _, s in statuses if j.startswith("unknown")} == {"not_running"}
    assert {s for j, _, s in statuses if j == "storm"} <= {"cancelling", "not_running"}


def test_the_inference_timeout_ends_the_job() -> None:
    with worker_process("--inference-timeout-sec", "0.05", "--max-tokens-out", "2048") as worker:
        before = worker.health()["vram_bytes_by_category"]
        with httpx.Client() as client:
            answer = execute(client, worker.url, {"job_id": "slow", **LONG})
            assert problems_with_events(answer.events, "slow", ("INFERENCE_TIMEOUT",)) == []
            assert answer.terminal["code"] == "INFERENCE_TIMEOUT" and answer.terminal["retriable"] is True
            assert worker.wait_idle()["vram_bytes_by_category"] == before
            after = execute(client, worker.url, {"job_id": "quick", "prompt": "hi", "max_tokens": 1})
        assert after.terminal["type"] == "end"


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_a_body_over_the_limit_is_refused(worker: WorkerProcess, baseline, chunked: bool) -> None:
    content = b'{"job_id": "big", "prompt": "' + b"x" * 70_000 + b'"}'
    payload = iter([content[i : i + 8192] for i in range(0, len(content), 8192)]) if chunked else content
    response = httpx.post(
        worker.url + "/execute", content=payload, headers={"content-type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["field"], error["constraint"]) == ("body", "max_bytes(65536)")


def test_sigterm_during_a_generation_ends_it_with_a_terminal_event_and_exit_0() -> None:
    with worker_process() as worker:
        thread, answers = start_long_job(worker, "terminated")
        worker.popen.send_signal(signal.SIGTERM)
        thread.join(60)
        code = worker.popen.wait(timeout=60)
        (answer,) = answers
        assert problems_with_events(answer.events, "terminated", ("CANCELLED",)) == []
        assert answer.terminal["type"] == "error" and answer.terminal["code"] == "CANCELLED"
        assert code == 0
    events = [json.loads(line) for line in worker.stdout.splitlines()]
    assert events[-1]["event"] == "shutdown" and events[-1]["exit_code"] == 0
    # M0-W-1902: neither the prompt nor the generated text is in any log line.
    assert LONG["prompt"] not in worker.stdout + worker.stderr
    generated = answer.text
    assert len(generated) < 12 or generated not in worker.stdout + worker.stderr


# --- the judge of the load run, shown able to fail ------------------------------------------------------


def _stream(job_id: str, *texts: str, terminal: str = "end") -> Answer:
    events = [{"type": "started", "job_id": job_id}]
    events += [{"type": "token", "t": t, "i": i} for i, t in enumerate(texts)]
    events += [{"type": terminal, "code": "INTERNAL"}] if terminal else []
    return Answer(200, events=events)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (_stream("j", "a", "X"), "is not this prompt's"),  # another job's token mixed in
        (_stream("j", "a", "b", "a", "b"), "is not this prompt's"),  # duplicated
        (_stream("j", "a", terminal=""), "cut"),  # cut short
        (_stream("other", "a", "b"), "names job"),
        (_stream("j", "a", "b", terminal="error"), "the job failed"),
        (Answer(503, body={"code": "WORKER_BUSY", "retriable": True}), "not the documented busy answer"),
        (Answer(500, body={"code": "INTERNAL"}), "HTTP 500"),
    ],
)
def test_the_load_judge_catches_bad_answers(answer: Answer, problem: str) -> None:
    from .load import judge

    assert problem in " ".join(judge(answer, "j", "ab"))
    assert judge(_stream("j", "a", "b"), "j", "ab") == []
