"""Steps on cancellation (M0-SYS-6.3.5, M0-W-1330): a job streams in the background while it is cancelled."""

from __future__ import annotations

import time

from pytest_bdd import given, parsers, then, when

from steps import verdicts
from steps.contention import ContentionState, check_accepted_after_drop, drop_stream, send_until_accepted
from steps.jobs import ended_by_itself
from steps.sse import BackgroundStream
from steps.state import READ_TIMEOUT_S, ScenarioState, new_job_id
from steps.verdicts import RequirementViolation, not_applicable, require


@given(parsers.parse('a job with prompt "{prompt}" and max_tokens {max_tokens:d} is streaming tokens'))
def job_streaming(prompt: str, max_tokens: int, scenario_state: ScenarioState) -> None:
    scenario_state.job_id = new_job_id()
    body = {"job_id": scenario_state.job_id, "prompt": prompt, "max_tokens": max_tokens}
    scenario_state.request_body = body
    running = BackgroundStream(scenario_state.client, scenario_state.url("/execute"), body)
    scenario_state.running = running
    scenario_state.track(body, running=running)
    running.wait_until(lambda stream: stream.progressed, READ_TIMEOUT_S)
    stream = running.stream
    require(stream is not None, "M0-W-1300", f"POST /execute gave no response: {running.failure}")
    verdicts.check_event_stream_response(stream)
    require(stream.of_type("token"), "M0-W-1311", f"no token arrived; events: [{stream.summary()}]")


@when("I cancel the job")
@when("I cancel the job again")
def cancel_job(scenario_state: ScenarioState) -> None:
    assert scenario_state.job_id is not None, "no job to cancel yet"
    scenario_state.cancel(scenario_state.job_id)


@when("I cancel a job that does not exist")
def cancel_unknown(scenario_state: ScenarioState) -> None:
    scenario_state.cancel(new_job_id())


@then("every cancel request is answered 202")
def cancels_accepted(scenario_state: ScenarioState) -> None:
    require(scenario_state.cancels, "M0-W-1330", "no cancel request was sent")
    for number, call in enumerate(scenario_state.cancels, start=1):
        require(
            call.status_code == 202,
            "M0-W-1330",
            f"cancel request #{number} answered {call.status_code}, not 202: {call.body[:200]!r}",
        )


@then(parsers.parse("the stream ends with an error event with code {code} within {seconds:d} seconds"))
def stream_ends_cancelled(code: str, seconds: int, scenario_state: ScenarioState) -> None:
    running = scenario_state.running
    assert running is not None and running.stream is not None, "no job is streaming"
    assert scenario_state.cancels, "no cancel request was sent"
    deadline = scenario_state.cancels[0].sent_at + seconds
    finished = running.wait_done(max(0.0, deadline - time.monotonic()))
    stream = scenario_state.stream = running.stream
    if not finished:
        running.close()
        terminals = stream.of_type("end", "error")
        require(
            terminals,
            "M0-W-1330",
            f"no terminal event within {seconds} s of the cancel "
            f"({len(stream.of_type('token'))} token events in all; events: [{stream.summary()}])",
        )
        raise RequirementViolation(
            "M0-W-1311", f"the stream stayed open after {terminals[0].describe()} (the worker must close it)"
        )
    verdicts.check_stream_complete(stream)
    verdicts.check_one_terminal(stream)
    last = stream.events[-1]
    data = last.data or {}
    if ended_by_itself(last.type, data, scenario_state.request_body):
        not_applicable(
            f"the job ended by itself (stop_reason {data.get('stop_reason')}) before the cancel took effect"
        )
    require(
        last.type == "error" and data.get("code") == code,
        "M0-W-1330",
        f"a cancelled job must end with an error event with code {code}; it ended with {last.describe()}: "
        f"{last.raw[:200]!r}",
    )


@then(parsers.parse("the job's stream ends with one terminal event within {seconds:d} seconds"))
def stream_ends_with_terminal(seconds: int, scenario_state: ScenarioState, spec_ids: str) -> None:
    """The running job is closed properly (after SIGTERM: M0-W-1340), whatever its terminal event says."""
    running = scenario_state.running
    assert running is not None and running.stream is not None, "no job is streaming"
    running.wait_done(seconds)
    stream = scenario_state.stream = running.stream
    require(
        stream.ended,
        spec_ids,
        f"the job's stream {'closed' if running.done else 'stayed open'} without a terminal event "
        f"({len(stream.of_type('token'))} tokens; {running.failure or 'no transport error'}; "
        f"events: [{stream.summary()}])",
    )
    verdicts.check_one_terminal(stream)


# --- A client that drops its stream (M0-W-1611) -------------------------------------------------------


@when("the client drops the job's stream")
def client_drops(scenario_state: ScenarioState, contention_state: ContentionState) -> None:
    running = scenario_state.running
    assert running is not None, "no job is streaming"
    body = scenario_state.request_body
    max_tokens = body.get("max_tokens", 2048) if isinstance(body, dict) else 2048
    contention_state.dropped = drop_stream(running, max_tokens)


@when(
    parsers.parse(
        "I send one-token jobs until one is accepted, for at most {seconds:d} seconds after the drop"
    )
)
def send_after_drop(seconds: int, scenario_state: ScenarioState, contention_state: ContentionState) -> None:
    assert contention_state.dropped is not None, "no stream was dropped"
    send_until_accepted(scenario_state, contention_state.dropped, seconds)


@then(parsers.parse("a new job was accepted within {seconds:d} seconds of the drop"))
def accepted_after_drop(seconds: int, contention_state: ContentionState) -> None:
    assert contention_state.dropped is not None, "no stream was dropped"
    check_accepted_after_drop(contention_state.dropped, seconds)
