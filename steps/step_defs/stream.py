"""Then steps on an `/execute` event stream (M0-W-1310, M0-W-1311, M0-W-1312, M0-W-1824)."""

from __future__ import annotations

from pytest_bdd import parsers, then

from steps import verdicts
from steps.state import ScenarioState
from steps.verdicts import require


@then("the response is an event stream")
def is_event_stream(scenario_state: ScenarioState) -> None:
    verdicts.check_event_stream_response(scenario_state.the_stream())


@then("the events are in the order started, token*, terminal")
def events_in_order(scenario_state: ScenarioState) -> None:
    stream = scenario_state.the_stream()
    verdicts.check_event_stream_response(stream)
    verdicts.check_stream_complete(stream)
    verdicts.check_order(stream)


@then("the stream has exactly one terminal event")
def one_terminal(scenario_state: ScenarioState) -> None:
    stream = scenario_state.the_stream()
    verdicts.check_event_stream_response(stream)
    verdicts.check_stream_complete(stream)
    verdicts.check_one_terminal(stream)


@then("every event type is one of started, token, metrics, end, error")
def known_event_types(scenario_state: ScenarioState) -> None:
    verdicts.check_event_types(scenario_state.the_stream())


@then("every event carries the fields the spec gives its type")
def event_payloads(scenario_state: ScenarioState) -> None:
    verdicts.check_payloads(scenario_state.the_stream(), scenario_state.job_id)


@then("every event is valid UTF-8")
def events_utf8(scenario_state: ScenarioState) -> None:
    verdicts.check_utf8(scenario_state.the_stream())


@then("the job finishes with an end event")
def finishes_with_end(scenario_state: ScenarioState) -> None:
    stream = scenario_state.the_stream()
    verdicts.check_well_formed_job(stream, scenario_state.job_id)
    last = stream.events[-1]
    require(last.type == "end", "M0-W-1311", f"the job ended with {last.describe()}: {last.raw[:200]!r}")


@then(parsers.parse("the job produced at most {limit:d} tokens"))
def at_most_tokens(limit: int, scenario_state: ScenarioState, spec_ids: str) -> None:
    count = len(scenario_state.the_stream().of_type("token"))
    require(count <= limit, spec_ids, f"max_tokens is {limit} but the job streamed {count} tokens")


@then("every error event carries a stable code, a message and a retriable flag")
def error_events_complete(scenario_state: ScenarioState) -> None:
    errors = scenario_state.the_stream().of_type("error")
    require(errors, "M0-W-1510", f"the stream has no error event: [{scenario_state.the_stream().summary()}]")
    for event in errors:
        verdicts.check_error_event(event)
