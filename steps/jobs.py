"""Jobs a scenario runs on `/execute` and keeps: finished runs compared with each other (fixture
`job_runs`), and jobs read on their own threads with absolute arrival times, so two of them can be put on
one time line (fixtures `first_job`, `second_job`, M0-W-1301).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from steps import verdicts
from steps.hygiene import wait_idle
from steps.sse import BackgroundStream, SSEEvent, SSEStream, open_event_stream
from steps.state import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ScenarioState, new_job_id, step_result, with_job_id
from steps.verdicts import not_applicable, require

# A worker runs one job at a time and may free its slot only just after the previous job's end event has
# reached the client. A job run right after one of the scenario's own (ended) jobs therefore waits until
# the worker says it is idle, and retries a 503 busy answer, both for at most this long.
SEQUENTIAL_WAIT_S = 10.0
RETRY_PAUSE_S = 0.1
BUSY_STATUSES = (503,)  # M0-W-1301: a second job may be refused as busy (Service Unavailable)
# A real model may answer a long job's prompt briefly and stop by EOS (its own choice, not a fault) before
# the scenario acts on the job (a cancel, a timeout): such a job is drawn again, up to this many jobs in all.
DRAWS = 3


@dataclass
class Run:
    """One finished `/execute` job."""

    body: dict
    stream: SSEStream

    @property
    def tokens(self) -> list[str]:
        return [str((event.data or {}).get("t", "")) for event in self.stream.of_type("token")]

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def payload(self, event_type: str) -> dict:
        events = self.stream.of_type(event_type)
        return (events[-1].data or {}) if events else {}

    def reported_seeds(self) -> list[tuple[str, object]]:
        """(event type, seed) for each of the started and end events that carries a `seed` (ERRATA E-22)."""
        return [
            (kind, self.payload(kind)["seed"]) for kind in ("started", "end") if "seed" in self.payload(kind)
        ]

    def difference(self, other: Run) -> str:
        """Where the tokens of `other` first differ from these."""
        for index, (mine, theirs) in enumerate(zip(self.tokens, other.tokens, strict=False)):
            if mine != theirs:
                return f"token #{index}: {mine!r} vs {theirs!r}"
        return f"{len(self.tokens)} vs {len(other.tokens)} tokens"

    def describe(self) -> str:
        settings = {k: v for k, v in self.body.items() if k not in ("job_id", "prompt")}
        return f"{json.dumps(settings)} -> {self.text[:160]!r} [{self.stream.summary()}]"


@dataclass
class JobRuns:
    runs: list[Run] = field(default_factory=list)
    stop: str | None = None  # the stop string chosen from the first run's output
    golden: dict | None = None

    @property
    def first(self) -> Run:
        assert self.runs, "no job has run yet: the scenario needs 'When I run a job with:'"
        return self.runs[0]

    @property
    def last(self) -> Run:
        return self.runs[-1] if self.runs else self.first


@pytest.fixture
def job_runs() -> JobRuns:
    return JobRuns()


def step_value(text: str) -> object:
    """A table or step value: JSON when it parses (numbers, lists, quoted strings), else the raw text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def settle_after_own_jobs(state: ScenarioState) -> bool:
    """Whether every job this scenario sent before has ended; if so, waits (at most SEQUENTIAL_WAIT_S)
    until `/health` says idle: the worker may still be letting go of the last one, and the spec does not
    tie the free slot to the terminal event."""
    after_own_jobs = bool(state.jobs) and all(job.ended for job in state.jobs)
    if after_own_jobs and state.worker is not None:
        wait_idle(state.client, state.worker.base_url, SEQUENTIAL_WAIT_S, probe=False)
    return after_own_jobs


def send_job(body: dict, state: ScenarioState, *, after_own_jobs: bool | None = None) -> SSEStream:
    """POST /execute `body` and read the answer. After the scenario's own ended jobs
    (`settle_after_own_jobs`, unless the caller has settled already) a busy answer is sent again for at
    most SEQUENTIAL_WAIT_S; one that outlasts that is the worker's to explain."""
    if after_own_jobs is None:
        after_own_jobs = settle_after_own_jobs(state)
    deadline = time.monotonic() + SEQUENTIAL_WAIT_S
    stream = state.post_stream("/execute", json_body=body)
    while after_own_jobs and stream.status_code in BUSY_STATUSES and time.monotonic() < deadline:
        time.sleep(RETRY_PAUSE_S)  # the job was refused, not started: the same job id may be sent again
        stream = state.post_stream("/execute", json_body=body)
    return stream


def run_job(body: dict, state: ScenarioState, runs: JobRuns) -> Run:
    body = {**body, "job_id": new_job_id()}
    state.job_id = body["job_id"]
    run = Run(body, send_job(body, state))
    runs.runs.append(run)
    return run


@dataclass
class TimedEvent:
    event: SSEEvent
    at: float  # time.monotonic() when the client had it


class ClockedJob:
    """One `/execute` job read on its own thread and connection; each event keeps its absolute arrival time,
    so the events of two jobs can be put on one time line."""

    def __init__(self, url: str, body: dict) -> None:
        self.body = body
        self.events: list[TimedEvent] = []
        self.stream: SSEStream | None = None
        self.failure: str | None = None
        self.sent_at = time.monotonic()
        self.ended_at: float | None = None
        self._changed = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(url,), name="clocked-job", daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        try:
            with (
                httpx.Client(timeout=timeout) as client,
                open_event_stream(client, url, json_body=self.body) as reader,
            ):
                self.stream = reader.stream
                for event in reader:
                    with self._changed:
                        self.events.append(TimedEvent(event, time.monotonic()))
                        self._changed.notify_all()
        except Exception as exc:  # noqa: BLE001 - recorded for the verdict
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            with self._changed:
                self.ended_at = time.monotonic()
                self._done = True
                self._changed.notify_all()

    def wait(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate() and not self._done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return predicate() or self._done

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def of_type(self, *types: str) -> list[TimedEvent]:
        return [timed for timed in self.events if timed.event.type in types]

    def describe(self) -> str:
        if self.stream is None:
            return f"no response ({self.failure})"
        if not self.stream.is_event_stream:
            return f"HTTP {self.stream.status_code}: {self.stream.body[:200]!r}"
        return f"HTTP {self.stream.status_code} [{self.stream.summary()}]"


first_job = step_result("first_job", "Given a first job with prompt ... is streaming tokens")
second_job = step_result("second_job", "When a second job with prompt ... is sent")


def clocked_job(state: ScenarioState, prompt: str, max_tokens: int) -> ClockedJob:
    body = {"job_id": new_job_id(), "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
    return ClockedJob(state.url("/execute"), body)


def busy_refusal(job: ClockedJob) -> str | None:
    """Why `job` counts as refused as busy, or None: HTTP 503, or a stream of one retriable error."""
    stream = job.stream
    assert stream is not None
    if stream.status_code in BUSY_STATUSES:
        body = stream.body
        require(
            b'"retriable": false' not in body and b'"retriable":false' not in body,
            verdicts.JOB_SLOT,
            f"a busy refusal must be retriable; the second job got {job.describe()}",
        )
        return f"HTTP {stream.status_code}"
    if stream.status_code == 200 and stream.is_event_stream and not stream.of_type("token"):
        errors = stream.of_type("error")
        if errors:
            data = errors[0].data or {}
            require(
                data.get("retriable") is True,
                verdicts.JOB_SLOT,
                f"a busy refusal must be retriable; the second job ended with {errors[0].raw[:200]!r}",
            )
            return f"an SSE error {data.get('code')!r}"
    return None


def choose_stop_string(run: Run) -> str:
    """A stop string the greedy run is sure to produce again: a few characters around a token boundary
    in the middle of its text, so the match spans two tokens whenever the tokens allow it."""
    tokens = run.tokens
    boundaries = []
    offset = 0
    for piece in tokens:
        offset += len(piece)
        boundaries.append(offset)
    text = run.text
    for boundary in boundaries[len(boundaries) // 2 :] + boundaries[: len(boundaries) // 2]:
        candidate = text[max(0, boundary - 2) : boundary + 2]
        first = text.find(candidate)
        if candidate.strip() and 0 < first and first + len(candidate) < len(text):
            return candidate
    not_applicable(f"the greedy output {text!r} offers no stop string that starts after its first character")
    raise AssertionError("unreachable")


def finished_runs(runs: list[Run], spec_ids: str) -> list[Run]:
    """The runs, each required to have ended with an end event (a failure names `spec_ids`)."""
    for run in runs:
        require(
            run.stream.events and run.stream.events[-1].type == "end",
            spec_ids,
            f"a job did not finish: {run.describe()}",
        )
    return runs


# --- A job streaming in the background (fixture `running_job`) ------------------------------------


@dataclass
class RunningJob:
    """A job that streams on its own thread while the scenario acts on it (cancels it, drops it, stops the
    worker): what `Given a job ... is streaming tokens` gives the steps after it."""

    body: dict
    reader: BackgroundStream

    @property
    def job_id(self) -> str:
        return self.body["job_id"]

    @property
    def stream(self) -> SSEStream:
        """What has arrived so far (the reader fills it in as events come)."""
        assert self.reader.stream is not None, f"the job got no answer yet: {self.reader.failure}"
        return self.reader.stream

    def ended_by_itself(self) -> bool:
        """An `end` for a reason of the job's own (EOS, a stop sequence) short of max_tokens: a race with
        whatever the scenario did to it, not a fault."""
        last = self.stream.events[-1] if self.stream.events else None
        data = (last.data or {}) if last is not None else {}
        return (
            last is not None
            and last.type == "end"
            and data.get("stop_reason") not in (None, "CANCELLED", "MAX_TOKENS")
            and data.get("tokens_out") != self.body.get("max_tokens")
        )


def drawn_again(body: dict, draw: int) -> dict:
    """Draw `draw` (1, 2, ...) of a sampled job: the same request with a fresh job id and another seed."""
    return body | {"job_id": new_job_id(), "seed": int(body.get("seed", 0)) + draw}


def start_job(state: ScenarioState, body: dict) -> RunningJob:
    """Send `body` to /execute and read the answer on a thread; it is the scenario's latest answer, and
    teardown cancels it while it runs (steps/hygiene.py)."""
    reader = BackgroundStream(state.client, state.url("/execute"), body)
    state.track(body, running=reader)
    state.job_id = body["job_id"]
    return RunningJob(body, reader)


def answered(state: ScenarioState, job: RunningJob) -> SSEStream:
    """The running job's answer, required to have come, and kept as the scenario's latest answer (the
    stream object grows as events arrive, so later steps see them)."""
    stream = job.reader.stream
    require(
        stream is not None, verdicts.EXECUTE_ANSWER, f"POST /execute gave no response: {job.reader.failure}"
    )
    state.stream = stream
    state.status_code, state.body = stream.status_code, stream.body
    return stream


running_job = step_result("running_job", "Given a job ... is streaming tokens")


# --- A job read for a bounded time (features/http/execute.feature) ---------------------------------


@dataclass
class TimeBound:
    seconds: int  # the bound the scenario gives
    elapsed_s: float  # how long the job was read
    ended: bool  # a terminal event arrived within the bound


def read_bounded(
    docstring: str,
    seconds: int,
    state: ScenarioState,
    until: Callable[[SSEStream], bool],
    redraw_within_s: int | None = None,
) -> TimeBound:
    """Reads the docstring's job until `until` holds, for at most `seconds`. With `redraw_within_s`, a job
    that ends by itself (EOS, a stop sequence) within that many seconds is drawn again (`drawn_again`), up
    to DRAWS jobs; the last is judged whatever it did."""
    body, _ = with_job_id(docstring)
    for draw in range(DRAWS if redraw_within_s is not None else 1):
        if draw:
            body = drawn_again(body, draw)
        started = time.monotonic()
        job = start_job(state, body)
        if (
            job.reader.wait_until(until, seconds)
            and job.reader.stream is not None
            and job.reader.stream.ended
        ):
            job.reader.wait_done(READ_TIMEOUT_S)  # a terminal event: the worker closes the stream next
        bound = TimeBound(seconds, time.monotonic() - started, answered(state, job).ended)
        if not (
            redraw_within_s is not None
            and bound.ended
            and job.ended_by_itself()
            and job.stream.events[-1].arrived_s <= redraw_within_s
        ):
            break
    return bound


time_bound = step_result("time_bound", "When I POST /execute with the JSON body, reading its events ...")
