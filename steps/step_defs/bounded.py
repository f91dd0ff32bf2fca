"""Jobs read for a bounded time, for requirements that need many tokens (the default max_tokens of 2048).

A whole default job can take minutes on a slow but correct worker. Such a scenario says how long it reads
the job; a job still streaming at that bound has not broken the requirement, but has not shown it either:
the scenario is then not applicable, with the rate the worker showed and the time the whole job would
need. Teardown cancels the job (steps/hygiene.py).
"""

from __future__ import annotations

from pytest_bdd import parsers, then, when

from steps import verdicts
from steps.jobs import TimeBound, read_bounded
from steps.state import ScenarioState
from steps.verdicts import RequirementViolation, not_applicable, require

DEFAULT_MAX_TOKENS = 2048  # M0-W-1300


@when(
    parsers.re(
        r"I POST /execute with the JSON body, reading its events (?P<first_token>until the first token )?"
        r"for at most (?P<seconds>\d+) seconds"
        r"(?:, drawn again with another seed while it stops by itself within (?P<redraw>\d+) seconds?)?:"
    ),
    converters={"seconds": int},
    target_fixture="time_bound",
)
def execute_bounded(
    docstring: str, first_token: str | None, seconds: int, redraw: str | None, scenario_state: ScenarioState
) -> TimeBound:
    """Reads the job's events to its end, or only to its first token, for at most `seconds`. A sampled job
    that must run long (past an inference timeout) may be drawn again while a real model answers the prompt
    briefly and stops by itself (steps/jobs.py `read_bounded`)."""
    until = (lambda stream: stream.progressed) if first_token else (lambda stream: stream.ended)
    redraw_within_s = int(redraw) if redraw is not None else None
    return read_bounded(docstring, seconds, scenario_state, until=until, redraw_within_s=redraw_within_s)


@then("the job streams started and then tokens")
def streams_tokens(scenario_state: ScenarioState, time_bound: TimeBound) -> None:
    stream = scenario_state.stream
    assert stream is not None
    verdicts.check_event_stream_response(stream)
    first = stream.events[0].describe() if stream.events else "nothing"
    require(
        stream.events and stream.events[0].type == "started",
        verdicts.EVENT_ORDER,
        f"the first event must be started; it was {first}",
    )
    require(
        stream.of_type("token") or stream.of_type("end"),
        verdicts.EVENT_ORDER,
        f"no token within {time_bound.seconds} s; events: [{stream.summary()}]",
    )


@then("the job finishes with an end event within the time bound")
def finishes_within_bound(scenario_state: ScenarioState, time_bound: TimeBound, spec_ids: str) -> None:
    stream = scenario_state.stream
    assert stream is not None
    if not time_bound.ended:
        verdicts.check_event_stream_response(stream)
        tokens = len(stream.of_type("token"))
        rate = tokens / time_bound.elapsed_s if time_bound.elapsed_s > 0 else 0.0
        need = f"about {DEFAULT_MAX_TOKENS / rate:.0f} s" if rate > 0 else "longer"
        require(
            tokens <= DEFAULT_MAX_TOKENS,
            spec_ids,
            f"{tokens} tokens streamed; the default max_tokens is {DEFAULT_MAX_TOKENS}",
        )
        not_applicable(
            f"the job streamed {tokens} tokens in {time_bound.elapsed_s:.0f} s ({rate:.1f} tokens/s) without "
            f"ending; the whole default job of up to {DEFAULT_MAX_TOKENS} tokens would need {need} here, "
            f"beyond this scenario's time bound of {time_bound.seconds} s"
        )
    # The job's own rules, without the text check: default sampling (temperature 1) may pick any token,
    # and real vocabularies hold tokens whose text is U+FFFD itself (Qwen2.5: ids 5691, 98821, ...);
    # M0-W-1824 is judged by the UTF-8 scenarios on fixed prompts.
    verdicts.check_event_stream_response(stream)
    verdicts.check_stream_complete(stream)
    verdicts.check_event_types(stream)
    verdicts.check_order(stream)
    verdicts.check_payloads(stream, scenario_state.job_id)
    verdicts.check_ended_with_end(stream)


@then(
    parsers.re(
        r"the job, running past its timeout of (?P<seconds>\d+) seconds?, ends with an error event "
        r"with code (?P<code>\w+)"
    ),
    converters={"seconds": int},
)
def ends_past_timeout(
    seconds: int, code: str, scenario_state: ScenarioState, time_bound: TimeBound, spec_ids: str
) -> None:
    """M0-W-1101 (the timeout flag is honoured), M0-W-1500 (its stable code), M0-W-1510 (as an SSE error)."""
    stream = scenario_state.stream
    assert stream is not None
    verdicts.check_event_stream_response(stream)
    require(
        time_bound.ended,
        spec_ids,
        f"the job still streamed {time_bound.elapsed_s:.0f} s after it was sent, with an inference timeout of "
        f"{seconds} s ({len(stream.of_type('token'))} tokens; events: [{stream.summary()}])",
    )
    verdicts.check_stream_complete(stream)
    verdicts.check_one_terminal(stream)
    last = stream.events[-1]
    if last.type == "end":
        if last.arrived_s <= seconds:
            not_applicable(
                f"the job ended by itself after {last.arrived_s:.1f} s, within its timeout of {seconds} s"
            )
        raise RequirementViolation(
            spec_ids,
            f"the job ran {last.arrived_s:.1f} s, past its inference timeout of {seconds} s, and ended with "
            f"{last.describe()}: {last.raw[:200]!r}",
        )
    verdicts.check_error_event(last)
    data = last.data or {}
    require(
        data.get("code") == code,
        spec_ids,
        f"a job past its inference timeout must end with code {code}; it ended with {last.raw[:200]!r}",
    )
