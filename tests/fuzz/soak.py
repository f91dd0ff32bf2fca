"""Soak: many sequential requests of mixed kinds against one worker process under a device-memory budget,
with the process's memory watched.

Kinds (drawn with a fixed seed): greedy and sampled jobs of a few tokens, jobs with stop strings, jobs
too long for the budget (VRAM_OOM, M0-W-1021), jobs cancelled by /cancel, clients that leave mid-stream,
and invalid bodies. Every answer is judged; after the run the worker's device-memory accounting must be
what it was before, and its resident memory within `--rss-bound-mib` of the level after a warm-up.

    python -m tests.fuzz.soak --requests 1000 --out benchmarks/results/soak.json
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import record
from .inprocess import problems_with_events
from .process import Answer, WorkerProcess, execute, worker_process

BUDGET_MB = 4  # the tiny fixture's weights take ~3.2 MiB: a job over ~250 positions does not fit
WARMUP = 20
KINDS = ("greedy", "sampled", "stop", "oom", "cancel", "disconnect", "invalid")
EXPECTED_ERRORS = {"oom": ("VRAM_OOM",), "cancel": ("CANCELLED",)}


@dataclass
class SoakReport:
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)  # sampled every 50 requests


def request_for(kind: str, i: int, rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": f"soak-{i}", "prompt": rng.choice(["hello", "The sky is", "1 2 3 4"])}
    if kind == "greedy":
        body |= {"max_tokens": rng.randint(1, 16), "temperature": 0.0}
    elif kind == "sampled":
        body |= {
            "max_tokens": rng.randint(1, 16),
            "temperature": rng.uniform(0.1, 2.0),
            "top_p": rng.uniform(0.1, 1.0),
            "top_k": rng.randint(0, 50),
            "min_p": rng.uniform(0.0, 0.2),
            "repetition_penalty": rng.uniform(0.5, 2.0),
            "seed": rng.randrange(1 << 32),
        }
    elif kind == "stop":
        body |= {"max_tokens": 16, "stop": rng.sample(["e", " the", "a", "\n", "."], 2)}
    elif kind == "oom":
        body |= {"max_tokens": 2048}  # the KV cache for the whole context is over the budget
    elif kind in ("cancel", "disconnect"):
        body |= {"max_tokens": 128, "temperature": 0.0}
    else:
        body |= {"max_tokens": rng.choice([0, 5000, "ten"])}
    return body


def one(
    worker: WorkerProcess, client: httpx.Client, kind: str, body: dict[str, Any]
) -> tuple[str, list[str]]:
    job_id = body["job_id"]
    if kind == "invalid":
        r = client.post(worker.url + "/execute", json=body, timeout=30)
        ok = r.status_code == 400 and r.json()["errors"][0]["field"] == "max_tokens"
        return "400", [] if ok else [f"invalid body answered {r.status_code}: {r.text[:200]}"]
    if kind == "disconnect":
        answer = execute(client, worker.url, body, stop_after_tokens=1)
        return "left", [] if answer.status == 200 and answer.events else [f"no stream: {answer}"]
    if kind == "cancel":
        answers: list[Answer] = []

        def stream() -> None:
            with httpx.Client() as own:
                answers.append(execute(own, worker.url, body))

        thread = threading.Thread(target=stream)
        thread.start()
        while not worker.health()["busy"] and thread.is_alive():
            time.sleep(0.002)
        client.post(worker.url + "/cancel", json={"job_id": job_id}, timeout=30)
        thread.join(60)
        answer = answers[0]
    else:
        answer = execute(client, worker.url, body)
    if answer.status != 200:
        return str(answer.status), [f"HTTP {answer.status}: {answer.body or answer.transport_error}"]
    problems = problems_with_events(answer.events, job_id, EXPECTED_ERRORS.get(kind, ()))
    terminal = answer.terminal or {}
    outcome = terminal.get("code") or terminal.get("stop_reason") or "none"
    if kind == "oom" and outcome != "VRAM_OOM":
        problems.append(f"a job over the budget ended {outcome}")
    return outcome, problems


def run_soak(worker: WorkerProcess, requests: int, seed: int = 0) -> tuple[SoakReport, dict[str, Any]]:
    rng = random.Random(seed)
    report = SoakReport()
    before = worker.wait_idle()["vram_bytes_by_category"]
    rss_warm = None
    with httpx.Client() as client:
        for i in range(requests):
            kind = KINDS[i % len(KINDS)] if i < len(KINDS) else rng.choice(KINDS)
            outcome, problems = one(worker, client, kind, request_for(kind, i, rng))
            worker.wait_idle()
            report.requests += 1
            report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
            report.by_outcome[outcome] = report.by_outcome.get(outcome, 0) + 1
            report.failures += [f"#{i} {kind}: {p}" for p in problems]
            if i + 1 == min(WARMUP, requests):
                rss_warm = worker.rss_bytes
            if i % 50 == 49:
                report.rss_mib.append(round(worker.rss_bytes / 2**20, 1))
    after = worker.wait_idle()["vram_bytes_by_category"]
    if after != before:
        report.failures.append(f"device memory accounting {after} is not back at {before}")
    memory = {
        "vram_by_category_before": before,
        "vram_by_category_after": after,
        "rss_mib_after_warmup": round((rss_warm or worker.rss_bytes) / 2**20, 1),
        "rss_mib_end": round(worker.rss_bytes / 2**20, 1),
        "rss_mib_max_sampled": max(report.rss_mib, default=None),
    }
    return report, memory


def main(argv: list[str] | None = None) -> int:
    parser = record.parser("tests.fuzz.soak", __doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rss-bound-mib", type=float, default=64.0, help="allowed growth after the warm-up")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with worker_process("--vram-budget-mb", str(BUDGET_MB)) as worker:
        report, memory = run_soak(worker, args.requests, args.seed)
    growth = memory["rss_mib_end"] - memory["rss_mib_after_warmup"]
    if growth > args.rss_bound_mib:
        report.failures.append(f"resident memory grew {growth:.1f} MiB after the warm-up")
    result = {
        "command": record.command("tests.fuzz.soak", argv),
        "requests": report.requests,
        "by_kind": report.by_kind,
        "by_outcome": report.by_outcome,
        "failures": len(report.failures),
        "first_failures": report.failures[:20],
        "vram_budget_mb": BUDGET_MB,
        **memory,
        "rss_growth_mib": round(growth, 1),
        "rss_bound_mib": args.rss_bound_mib,
        "rss_mib_every_50": report.rss_mib,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return record.finish(result, args.out, bool(report.failures))


if __name__ == "__main__":
    raise SystemExit(main())
