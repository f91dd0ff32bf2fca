"""Steps on cancellation: a job streams in the background while it is cancelled."""

from __future__ import annotations

import time

from pytest_bdd import given, parsers, then, when

from steps import verdicts
from steps.contention import DroppedJob, check_accepted_after_drop, drop_stream, send_until_accepted
from steps.jobs import DRAWS, RunningJob, answered, drawn_again, start_job
from steps.state import READ_TIMEOUT_S, ScenarioState, new_job_id
from steps.verdicts import RequirementViolation, not_applicable, require

# Tokens a job must stream without ending by itself before the scenario acts on it.
SETTLE_TOKENS = 4


@given(
    parsers.parse('a job with prompt "{prompt}" and max_tokens {max_tokens:d} is streaming tokens'),
    target_fixture="running_job",
)
def job_streaming(prompt: str, max_tokens: int, scenario_state: ScenarioState) -> RunningJob:
    """A job still generating when the scenario goes on. A real model may answer the prompt briefly and stop
    by EOS (its own choice, not a fault) before a cancel or a disconnect reaches it: a job that has ended
    by itself within its first SETTLE_TOKENS tokens is replaced by another draw of the same prompt (another
    seed), up to DRAWS jobs; the last is handed on whatever it did (the Then steps call a job that still
    ended by itself not applicable)."""
    first = {"job_id": new_job_id(), "prompt": prompt, "max_tokens": max_tokens}
    for draw in range(DRAWS):
        job = start_job(scenario_state, drawn_again(first, draw) if draw else first)
        job.reader.wait_until(lambda stream: stream.progressed, READ_TIMEOUT_S)
        verdicts.check_streaming(answered(scenario_state, job), job.reader.failure)
        job.reader.wait_until(lambda stream: len(stream.of_type("token")) >= SETTLE_TOKENS, READ_TIMEOUT_S)
        if not (job.reader.done and job.ended_by_itself()):
            break
    return job


@when("I cancel the job")
@when("I cancel the job again")
def cancel_job(running_job: RunningJob, scenario_state: ScenarioState) -> None:
    scenario_state.cancel(running_job.job_id)


@when("I cancel a job that does not exist")
def cancel_unknown(scenario_state: ScenarioState) -> None:
    scenario_state.cancel(new_job_id())


@then("every cancel request is answered 202")
def cancels_accepted(scenario_state: ScenarioState, spec_ids: str) -> None:
    require(scenario_state.cancels, spec_ids, "no cancel request was sent")
    for number, call in enumerate(scenario_state.cancels, start=1):
        require(
            call.status_code == 202,
            spec_ids,
            f"cancel request #{number} answered {call.status_code}, not 202: {call.body[:200]!r}",
        )


@then(parsers.parse("the stream ends with an error event with code {code} within {seconds:d} seconds"))
def stream_ends_cancelled(
    code: str, seconds: int, running_job: RunningJob, scenario_state: ScenarioState, spec_ids: str
) -> None:
    assert scenario_state.cancels, "no cancel request was sent"
    deadline = scenario_state.cancels[0].sent_at + seconds
    finished = running_job.reader.wait_done(max(0.0, deadline - time.monotonic()))
    stream = running_job.stream
    if not finished:
        terminals = stream.of_type("end", "error")
        require(
            terminals,
            spec_ids,
            f"no terminal event within {seconds} s of the cancel "
            f"({len(stream.of_type('token'))} token events in all; events: [{stream.summary()}])",
        )
        raise RequirementViolation(
            verdicts.EVENT_ORDER,
            f"the stream stayed open after {terminals[0].describe()} (the worker must close it)",
        )
    verdicts.check_stream_complete(stream)
    verdicts.check_one_terminal(stream)
    last = stream.events[-1]
    data = last.data or {}
    if running_job.ended_by_itself():
        not_applicable(
            f"the job ended by itself (stop_reason {data.get('stop_reason')}) before the cancel took effect"
        )
    require(
        last.type == "error" and data.get("code") == code,
        spec_ids,
        f"a cancelled job must end with an error event with code {code}; it ended with {last.describe()}: "
        f"{last.raw[:200]!r}",
    )


@then(parsers.parse("the job's stream ends with one terminal event within {seconds:d} seconds"))
def stream_ends_with_terminal(seconds: int, running_job: RunningJob, spec_ids: str) -> None:
    """The running job is closed properly (after SIGTERM: M0-W-1340), whatever its terminal event says."""
    running_job.reader.wait_done(seconds)
    stream = running_job.stream
    require(
        stream.ended,
        spec_ids,
        f"the job's stream {'closed' if running_job.reader.done else 'stayed open'} without a terminal event "
        f"({len(stream.of_type('token'))} tokens; {running_job.reader.failure or 'no transport error'}; "
        f"events: [{stream.summary()}])",
    )
    verdicts.check_one_terminal(stream)


# --- A client that drops its stream ------------------------------------------------------------------


@when("the client drops the job's stream", target_fixture="dropped_job")
def client_drops(running_job: RunningJob) -> DroppedJob:
    return drop_stream(running_job.reader, running_job.body.get("max_tokens", 2048))


@when(
    parsers.parse(
        "I send one-token jobs until one is accepted, for at most {seconds:d} seconds after the drop"
    )
)
def send_after_drop(seconds: int, scenario_state: ScenarioState, dropped_job: DroppedJob) -> None:
    send_until_accepted(scenario_state, dropped_job, seconds)


@then(parsers.parse("a new job was accepted within {seconds:d} seconds of the drop"))
def accepted_after_drop(seconds: int, dropped_job: DroppedJob, spec_ids: str) -> None:
    check_accepted_after_drop(dropped_job, seconds, spec_ids)
