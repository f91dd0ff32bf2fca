"""benchmarks.sse_overhead: the paced engine is a well-formed generator (no timing verdicts here) and the
tool runs end to end against the real app in a child process."""

from __future__ import annotations

from benchmarks.sse_overhead import PacedEngine, http_rate, in_process_rate
from reference_worker.generation import CancelToken, EndEvent, GenerationRequest, PromptEvent, TokenEvent


def test_the_paced_engine_yields_its_tokens_then_one_end_event() -> None:
    request = GenerationRequest(job_id="j", prompt="x", max_tokens=5)
    events = list(PacedEngine(1e-4, 1e-5).generate(request, CancelToken()))
    assert isinstance(events[0], PromptEvent) and isinstance(events[-1], EndEvent)
    assert [e.index for e in events if isinstance(e, TokenEvent)] == list(range(5))
    assert events[-1].tokens_out == 5


def test_both_rates_are_measured_against_the_real_app() -> None:
    # 2 ms a token: slow enough that the client reads the events apart (at 0.1 ms a loaded machine's
    # server can write all 16 in one read, and the client then sees no time between them)
    assert in_process_rate(PacedEngine(2e-3, 0.0), 16) > 0
    rates = http_rate(2e-3, 0.0, tokens=16, runs=2)
    assert len(rates) == 2 and all(rate > 0 for rate in rates)
