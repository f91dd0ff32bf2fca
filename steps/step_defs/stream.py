"""Then steps on an `/execute` event stream (M0-W-1310, M0-W-1311, M0-W-1312, M0-W-1824)."""

from __future__ import annotations

import re
from collections.abc import Callable

from pytest_bdd import parsers, then

from steps import verdicts
from steps.sse import SSEStream
from steps.state import ScenarioState
from steps.verdicts import require

# The wire contract's checks of the last answer, one phrase each as the features write them (a check that
# reads the stream's events first requires an event stream that did not break off).
STREAM_CHECKS: dict[str, tuple[Callable[[SSEStream], None], ...]] = {
    "the response is an event stream": (verdicts.check_event_stream_response,),
    "the events are in the order started, token*, terminal": (
        verdicts.check_event_stream_response,
        verdicts.check_stream_complete,
        verdicts.check_order,
    ),
    "the stream has exactly one terminal event": (
        verdicts.check_event_stream_response,
        verdicts.check_stream_complete,
        verdicts.check_one_terminal,
    ),
    "every event type is one of started, token, metrics, end, error": (verdicts.check_event_types,),
    "every event is valid UTF-8": (verdicts.check_utf8,),
}


@then(parsers.re("(?P<phrase>" + "|".join(re.escape(phrase) for phrase in STREAM_CHECKS) + ")$"))
def stream_satisfies(phrase: str, scenario_state: ScenarioState) -> None:
    stream = scenario_state.the_stream()
    for check in STREAM_CHECKS[phrase]:
        check(stream)


@then("every event carries the fields the spec gives its type")
def event_payloads(scenario_state: ScenarioState) -> None:
    verdicts.check_payloads(scenario_state.the_stream(), scenario_state.job_id)


@then("the job finishes with an end event")
def finishes_with_end(scenario_state: ScenarioState) -> None:
    stream = scenario_state.the_stream()
    verdicts.check_well_formed_job(stream, scenario_state.job_id)
    verdicts.check_ended_with_end(stream)


@then(parsers.parse("the job produced at most {limit:d} tokens"))
def at_most_tokens(limit: int, scenario_state: ScenarioState, spec_ids: str) -> None:
    count = len(scenario_state.the_stream().of_type("token"))
    require(count <= limit, spec_ids, f"max_tokens is {limit} but the job streamed {count} tokens")


@then("every error event carries a stable code, a message and a retriable flag")
def error_events_complete(scenario_state: ScenarioState, spec_ids: str) -> None:
    errors = scenario_state.the_stream().of_type("error")
    require(errors, spec_ids, f"the stream has no error event: [{scenario_state.the_stream().summary()}]")
    for event in errors:
        verdicts.check_error_event(event)
