"""Load against the single-slot worker (M0-W-1301): N concurrent clients, each retrying a busy answer
until it gets its stream, while /health is polled throughout. With `--queue-depth N` the worker lets N
jobs wait in line and refuses the next; the judgement is the same.

Every answer must be a complete stream (started, tokens 0..n-1, one terminal event) whose text is the
one this prompt gives alone (greedy, so a stream cut short, duplicated or mixed with another job's tokens
shows), or the documented busy answer (503 WORKER_BUSY, retriable, Retry-After). /health must answer
200 every time; its latency percentiles are reported, not judged.

    python -m tests.fuzz.load --clients 32 --rounds 5 --out benchmarks/results/load.json
    python -m tests.fuzz.load --clients 32 --rounds 5 --queue-depth 4
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import record
from .inprocess import problems_with_events
from .process import Answer, WorkerProcess, execute, worker_process

PROMPTS = ("The quick brown fox", "hello world", "One two three four", "Lorem ipsum dolor sit amet")
MAX_ATTEMPTS = 2000  # per client and round; a client that never gets the slot is a failure
BUSY_BACKOFF_SEC = 0.01  # the clients retry much sooner than Retry-After, to keep the slot contended


@dataclass
class LoadReport:
    clients: int
    rounds: int
    streams: int = 0
    busy: int = 0
    failures: list[str] = field(default_factory=list)
    health_latencies_ms: list[float] = field(default_factory=list)
    health_failures: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.health_latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

        return {
            "clients": self.clients,
            "rounds": self.rounds,
            "complete_streams": self.streams,
            "busy_answers": self.busy,
            "failures": len(self.failures),
            "first_failures": self.failures[:20],
            "health_requests": len(lat) + self.health_failures,
            "health_failures": self.health_failures,
            "health_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": round(lat[-1], 2) if lat else None},
        }


def body(prompt: str, job_id: str, max_tokens: int) -> dict[str, Any]:
    return {"job_id": job_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "seed": 7}


def references(worker: WorkerProcess, max_tokens: int) -> dict[str, str]:
    """Each prompt's text when it runs alone."""
    out = {}
    with httpx.Client() as client:
        for i, prompt in enumerate(PROMPTS):
            worker.wait_idle()
            answer = execute(client, worker.url, body(prompt, f"reference-{i}", max_tokens))
            problems = problems_with_events(answer.events, f"reference-{i}")
            if answer.status != 200 or problems or answer.terminal.get("type") != "end":
                raise RuntimeError(f"reference run of {prompt!r} failed: {answer} {problems}")
            out[prompt] = answer.text
    worker.wait_idle()
    return out


def judge(answer: Answer, job_id: str, expected_text: str) -> list[str]:
    if answer.status == 200:
        problems = problems_with_events(answer.events, job_id)
        if not problems and answer.text != expected_text:
            problems = [f"text {answer.text!r} is not this prompt's {expected_text!r}"]
        return problems
    if answer.status == 503:
        b = answer.body or {}
        if b.get("code") == "WORKER_BUSY" and b.get("retriable") is True and answer.retry_after:
            return []
        return [f"503 that is not the documented busy answer: {b} Retry-After={answer.retry_after}"]
    return [f"HTTP {answer.status} {answer.transport_error or answer.body}"]


def run_load(worker: WorkerProcess, clients: int, rounds: int = 1, max_tokens: int = 4) -> LoadReport:
    expected = references(worker, max_tokens)
    report = LoadReport(clients, rounds)
    lock = threading.Lock()
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(worker.url + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if ok:
                        report.health_latencies_ms.append(elapsed)
                    else:
                        report.health_failures += 1
                time.sleep(0.01)

    def client_loop(index: int, barrier: threading.Barrier) -> None:
        prompt = PROMPTS[index % len(PROMPTS)]
        with httpx.Client() as client:
            for r in range(rounds):
                barrier.wait()
                for attempt in range(MAX_ATTEMPTS):
                    job_id = f"load-{index}-{r}-{attempt}"
                    answer = execute(client, worker.url, body(prompt, job_id, max_tokens))
                    problems = judge(answer, job_id, expected[prompt])
                    with lock:
                        report.failures += [f"{job_id}: {p}" for p in problems]
                        report.busy += answer.status == 503
                        report.streams += answer.status == 200 and not problems
                    if answer.status != 503:
                        break
                    time.sleep(BUSY_BACKOFF_SEC)
                else:
                    with lock:
                        report.failures.append(
                            f"client {index} round {r}: no stream in {MAX_ATTEMPTS} attempts"
                        )

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=client_loop, args=(i, barrier)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    poller.join(10)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = record.parser("tests.fuzz.load", __doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--queue-depth", type=int, default=0, help="the worker's --queue-depth")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with worker_process("--queue-depth", str(args.queue_depth)) as worker:
        report = run_load(worker, args.clients, args.rounds, args.max_tokens)
        health = worker.wait_idle()
    result = {
        "command": record.command("tests.fuzz.load", argv),
        "queue_depth": args.queue_depth,
        **report.summary(),
        "busy_after": health["busy"],
        "queued_after": health.get("queued"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return record.finish(result, args.out, bool(report.failures or report.health_failures))


if __name__ == "__main__":
    raise SystemExit(main())
