"""Jobs that compete for the worker's one job slot (M0-W-1301): several clients sending at once, and a client
that drops its stream (M0-W-1611). Fixtures `client_jobs`, `dropped_job` (given by the steps that send them).

Clients at once: each prompt is first run alone (greedy), then all are sent together on their own
connections. Every client must get either its job's whole stream, with the tokens of its run alone (never
cut short, never another job's tokens), or the busy refusal (`steps/jobs.busy_refusal`); a worker that
queues passes as well as one that refuses.

A dropped client: the harness closes a running job's connection, then sends one-token jobs until one is
accepted (a stream that starts) or a time bound is up. When the dropped job would have ended by itself
within the bound at the rate it showed, the check cannot tell, and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from steps import verdicts
from steps.jobs import ClockedJob, Run, busy_refusal
from steps.sse import BackgroundStream
from steps.state import ScenarioState, new_job_id, step_result
from steps.verdicts import RequirementViolation, not_applicable, require

# Prompts of their own for clients sent at once: greedy runs of different prompts give different tokens,
# so a stream carrying another job's tokens shows.
CLIENT_PROMPTS = (
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):",
    "Hello, my name is",
    "In the beginning",
    "The quick brown fox",
    "Water boils at",
    "My favourite colour is",
)
RETRY_PAUSE_S = 0.2


@dataclass
class DroppedJob:
    max_tokens: int
    tokens_before_drop: int
    streamed_s: float  # from the request to the drop
    dropped_at: float  # time.monotonic()
    accepted_at: float | None = None  # when a later job's stream started
    tries: int = 0
    refusals: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tokens_before_drop / self.streamed_s if self.streamed_s > 0 else 0.0

    def left_alone_s(self) -> float:
        """About how long the dropped job would still have run had the worker not stopped it."""
        left = max(0, self.max_tokens - self.tokens_before_drop)
        return left / self.rate if self.rate > 0 else float("inf")


client_jobs = step_result("client_jobs", "When the same jobs are sent by as many clients at once")
dropped_job = step_result("dropped_job", "When the client drops the job's stream")


def client_job(index: int, max_tokens: int) -> dict:
    prompt = CLIENT_PROMPTS[index % len(CLIENT_PROMPTS)]
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}


def send_at_once(state: ScenarioState, bodies: list[dict]) -> list[ClockedJob]:
    """Each body on its own thread and connection, all started together, each with a fresh job id."""
    return [ClockedJob(state.url("/execute"), {**body, "job_id": new_job_id()}) for body in bodies]


def check_clients(alone: list[Run], clients: list[ClockedJob], requirement: str) -> None:
    """M0-W-1301 / M0-W-1311: every client got its whole stream with its solo tokens, or a busy refusal."""
    ran = 0
    for number, (solo, job) in enumerate(zip(alone, clients, strict=True), start=1):
        who = f"client #{number} ({solo.body['prompt']!r})"
        require(job.stream is not None, requirement, f"{who} got no HTTP answer: {job.failure}")
        if busy_refusal(job) is not None:
            continue
        require(
            job.stream.status_code == 200 and job.stream.is_event_stream,
            requirement,
            f"{who} was answered {job.describe()}: neither its stream nor a busy refusal (503)",
        )
        verdicts.check_well_formed_job(job.stream, job.body["job_id"])
        last = job.stream.events[-1]
        require(
            last.type == "end",
            verdicts.EVENT_ORDER,
            f"{who}'s stream was cut short: it ended with {last.describe()} after "
            f"{len(job.of_type('token'))} tokens: {last.raw[:200]!r}",
        )
        tokens = [str((timed.event.data or {}).get("t", "")) for timed in job.of_type("token")]
        if tokens != solo.tokens:
            raise RequirementViolation(
                requirement,
                f"{who}'s stream differs from the same job run alone ({_first_difference(solo.tokens, tokens)}): "
                f"it carries another job's tokens; alone: {solo.text[:120]!r}, at once: {''.join(tokens)[:120]!r}",
            )
        ran += 1
    require(
        ran > 0,
        requirement,
        f"all {len(clients)} clients were refused as busy, yet no other job was running: "
        + "; ".join(job.describe() for job in clients),
    )


def _first_difference(expected: list[str], seen: list[str]) -> str:
    for index, (mine, theirs) in enumerate(zip(expected, seen, strict=False)):
        if mine != theirs:
            return f"token #{index}: {mine!r} alone, {theirs!r} at once"
    return f"{len(expected)} tokens alone, {len(seen)} at once"


def drop_stream(running: BackgroundStream, max_tokens: int) -> DroppedJob:
    """Closes the client side of a running job's stream, noting how far and how fast it had come."""
    stream = running.stream
    assert stream is not None, "the job has no stream to drop"
    tokens = len(stream.of_type("token"))
    streamed_s = stream.events[-1].arrived_s if stream.events else 0.0
    running.close()
    return DroppedJob(max_tokens, tokens, streamed_s, time.monotonic())


def send_until_accepted(state: ScenarioState, dropped: DroppedJob, seconds: float) -> None:
    """Sends one-token jobs until one is accepted (its stream starts) or `seconds` are up; a busy refusal
    is retried after a pause."""
    deadline = dropped.dropped_at + seconds
    while time.monotonic() < deadline:
        dropped.tries += 1
        body = {"job_id": new_job_id(), "prompt": "Hello", "max_tokens": 1}
        job = BackgroundStream(state.client, state.url("/execute"), body)
        state.track(body, running=job)
        job.wait_until(
            lambda stream: stream.progressed or stream.ended, max(0.0, deadline - time.monotonic())
        )
        stream = job.stream
        if stream is not None and stream.is_event_stream and stream.of_type("started", "token"):
            dropped.accepted_at = time.monotonic()
            job.wait_done(5.0)
            return
        job.close()
        answer = f"HTTP {stream.status_code}" if stream is not None else f"no answer ({job.failure})"
        dropped.refusals.append(answer)
        time.sleep(RETRY_PAUSE_S)


def check_accepted_after_drop(dropped: DroppedJob, seconds: float, requirement: str) -> None:
    """M0-W-1611: a dropped client's job is stopped, so the worker accepts a new job soon after."""
    if dropped.accepted_at is not None and dropped.accepted_at - dropped.dropped_at <= seconds:
        return
    if dropped.left_alone_s() <= seconds:
        not_applicable(
            f"the dropped job streamed {dropped.tokens_before_drop} tokens in {dropped.streamed_s:.1f} s "
            f"({dropped.rate:.0f} tokens/s); left alone it would have ended within {seconds:.0f} s anyway, so "
            "an accepted job shows nothing here"
        )
    after = (
        f"only after {dropped.accepted_at - dropped.dropped_at:.1f} s"
        if dropped.accepted_at is not None
        else f"not within the {seconds:.0f} s"
    )
    raise RequirementViolation(
        requirement,
        f"the client dropped its stream after {dropped.tokens_before_drop} tokens; a new job was accepted "
        f"{after} ({dropped.tries} tries: {', '.join(dropped.refusals[:3])}...): the dropped job kept the "
        f"worker busy (left alone it had about {dropped.left_alone_s():.0f} s to run)",
    )
