"""Fuzzing the worker's API with hypothesis-drawn requests, against a real worker on a tiny CPU fixture
(in-process ASGI app). Every answer is judged by `inprocess.problems_with_answer` against the oracle of
`bodies.bad_fields`, and after every request a valid one must succeed.

    python -m tests.fuzz.api_fuzz --examples 10000 --seed 0 --out benchmarks/results/api-fuzz.json

The bounded version runs in `tests/fuzz/test_api_fuzz.py`. Exit code 0 only when nothing failed.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from reference_worker.config import DEFAULT_MAX_BODY_BYTES
from reference_worker.server import WorkerState

from . import record
from .bodies import RawRequest, bad_fields, encode, execute_bodies, json_values, raw_requests, texts
from .inprocess import (
    TINY_MODEL,
    Verdicts,
    asgi_client,
    load_tiny_worker,
    problems_with_answer,
    valid_request_works,
    wait_idle,
)


def requests_strategy(vocab_size: int, max_body_bytes: int) -> st.SearchStrategy[tuple[str, Any]]:
    """("execute", body) three times in five, ("raw", RawRequest) and ("cancel", body) once each."""
    cancel_bodies = st.fixed_dictionaries({}, optional={"job_id": texts | json_values, "x": json_values})
    execute = st.tuples(st.just("execute"), execute_bodies(vocab_size))
    return st.one_of(
        execute,
        execute,
        execute,
        st.tuples(st.just("raw"), raw_requests(max_body_bytes)),
        st.tuples(st.just("cancel"), cancel_bodies),
    )


class ApiFuzzer:
    """One worker, one client, one event loop; `send` judges one drawn request."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state
        self.verdicts = Verdicts()
        self.loop = asyncio.new_event_loop()
        self._client_cm = asgi_client(state)
        self.client: httpx.AsyncClient = self.loop.run_until_complete(self._client_cm.__aenter__())

    def close(self) -> None:
        self.loop.run_until_complete(self._client_cm.__aexit__(None, None, None))
        pending = asyncio.all_tasks(self.loop)  # sse-starlette's shutdown watchers
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def send(self, kind: str, payload: Any) -> None:
        problems = self.loop.run_until_complete(self._send(kind, payload))
        for problem in problems:
            self.verdicts.fail(f"{kind} {_describe(payload)}: {problem}")

    async def _send(self, kind: str, payload: Any) -> list[str]:
        await wait_idle(self.state)
        limit = self.state.limits.max_body_bytes
        if kind == "execute":
            content = encode(payload)
            response = await self.client.post("/execute", content=content, headers=_JSON)
            if len(content) > limit:
                expected = {"body"}
            else:
                expected = bad_fields(payload, self.state.model.vocab_size, self.state.count_tokens)
            problems = problems_with_answer(response, expected, payload.get("job_id"))
        elif kind == "cancel":
            response = await self.client.post("/cancel", content=encode(payload), headers=_JSON)
            job_id = payload.get("job_id")
            good = (
                isinstance(job_id, str)
                and job_id != ""
                and "job_id" not in bad_fields({"job_id": job_id, "prompt": "p"}, 1, len)
            )
            problems = _cancel_problems(response, good)
        else:
            response = await self._send_raw(payload)
            problems = _raw_problems(response, payload)
        self.verdicts.count(response.status_code)
        problems += await valid_request_works(self.client, self.state)
        self.verdicts.valid_after += 1
        return problems

    async def _send_raw(self, request: RawRequest) -> httpx.Response:
        headers = {} if request.content_type is None else {"content-type": request.content_type}
        content: bytes | AsyncIterator[bytes] = request.content
        if request.chunked:
            content = _chunks(request.content)
        return await self.client.post("/execute", content=content, headers=headers)


_JSON = {"content-type": "application/json"}


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _cancel_problems(response: httpx.Response, good: bool) -> list[str]:
    if good:
        if response.status_code != 202 or response.json().get("status") != "not_running":
            return [f"cancel of an idle worker answered {response.status_code}: {response.text[:200]}"]
        return []
    return problems_with_answer(response, {"job_id"})


def _raw_problems(response: httpx.Response, request: RawRequest) -> list[str]:
    problems = problems_with_answer(response, {request.field})
    if problems:
        return problems
    constraints = [e["constraint"] for e in response.json()["errors"]]
    if not any(c.startswith(request.constraint) for c in constraints):
        return [f"400 gives {constraints}, not {request.constraint!r}"]
    return []


def _describe(payload: Any) -> str:
    text = repr(payload)
    return text if len(text) <= 200 else text[:200] + f"... ({len(text)} chars)"


def run(fuzzer: ApiFuzzer, examples: int, seed: int | None) -> Verdicts:
    """Draws `examples` requests (`seed`: a fixed sequence; None: derandomized) and judges each."""
    strategy = requests_strategy(fuzzer.state.model.vocab_size, fuzzer.state.limits.max_body_bytes)

    @settings(
        max_examples=examples,
        derandomize=seed is None,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def each(request: tuple[str, Any]) -> None:
        fuzzer.send(*request)

    if seed is not None:
        each = hypothesis_seed(seed)(each)
    each()
    return fuzzer.verdicts


def main(argv: list[str] | None = None) -> int:
    parser = record.parser("tests.fuzz.api_fuzz", __doc__)
    parser.add_argument("--examples", type=int, default=10_000, help="requests to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=TINY_MODEL, help="a tiny CPU fixture (.gguf)")
    args = parser.parse_args(argv)
    if record.missing(args.model):
        return 1
    started = time.perf_counter()
    fuzzer = ApiFuzzer(load_tiny_worker(args.model.resolve()))
    try:
        verdicts = run(fuzzer, args.examples, args.seed)
    finally:
        fuzzer.close()
    result = {
        "command": record.command("tests.fuzz.api_fuzz", argv),
        "model": str(args.model),
        "seed": args.seed,
        "examples_asked": args.examples,
        "requests": verdicts.requests,
        "valid_requests_after": verdicts.valid_after,
        "by_status": {str(k): v for k, v in sorted(verdicts.by_status.items())},
        "failures": verdicts.failure_count,
        "first_failures": verdicts.failures,
        "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
        "seconds": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
    }
    return record.finish(result, args.out, verdicts.failure_count > 0)


if __name__ == "__main__":
    raise SystemExit(main())
