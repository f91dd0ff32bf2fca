"""What one scenario has seen so far: the worker it talks to, the last response, the last stream."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from steps.models import ModelFile
from steps.sse import BackgroundStream, SSEStream, open_event_stream
from steps.targets import WorkerHandle
from steps.verdicts import require

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # longest silence tolerated between two chunks (prefill on a slow CPU included)


def new_job_id() -> str:
    return f"conformance-{uuid.uuid4()}"


def with_job_id(text: str) -> tuple[object, str]:
    """A feature's JSON docstring with `{job_id}` replaced by a fresh job id, and that id."""
    job_id = new_job_id()
    return json.loads(text.replace("{job_id}", job_id)), job_id


def step_result(name: str, step: str):
    """The fixture `name` that the step `step` gives the steps after it (`target_fixture=name`): requested
    in a scenario without that step, it is a setup error that names the step."""

    def missing() -> None:
        pytest.fail(f"setup error: the scenario needs a '{step}' step before this one", pytrace=False)

    return pytest.fixture(name=name)(missing)


@dataclass
class CancelCall:
    job_id: str
    status_code: int
    body: bytes
    sent_at: float  # time.monotonic() when the request was sent


@dataclass
class SentJob:
    """A job this scenario sent to `/execute`; teardown cancels it while it has not ended."""

    job_id: str
    stream: SSEStream | None = None  # the answer, once read (to its end, or as far as it came)
    running: BackgroundStream | None = None  # a job streaming in the background

    @property
    def ended(self) -> bool:
        """Refused (not an event stream) or closed by a terminal event (M0-W-1311)."""
        stream = self.running.stream if self.running is not None else self.stream
        if stream is None:
            return self.running is not None and self.running.done  # never answered: nothing runs
        return not stream.is_event_stream or bool(stream.of_type("end", "error"))


@dataclass
class ScenarioState:
    client: httpx.Client = field(
        default_factory=lambda: httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
    )
    worker: WorkerHandle | None = None
    model: ModelFile | None = None
    status_code: int | None = None  # of the last request, whatever it was
    body: bytes = b""  # of the last request when it was not an event stream
    stream: SSEStream | None = None  # last /execute answer read to its end
    request_body: object = None
    job_id: str | None = None
    cancels: list[CancelCall] = field(default_factory=list)
    jobs: list[SentJob] = field(default_factory=list)  # every job sent, for teardown (steps/hygiene.py)

    def url(self, path: str) -> str:
        assert self.worker is not None, "no worker: the scenario needs a 'Given a worker serving ...' step"
        return f"{self.worker.base_url}{path}"

    def post_stream(self, path: str, *, json_body: object = None, content: bytes | None = None) -> SSEStream:
        """POST and read the answer to its end: an SSE stream, or a plain body when it is not one."""
        headers = {"content-type": "application/json"} if content is not None else None
        job = self.track(json_body) if path == "/execute" else None
        with open_event_stream(
            self.client, self.url(path), json_body=json_body, content=content, headers=headers
        ) as reader:
            if job is not None:
                job.stream = reader.stream  # what arrived so far, should reading fail half-way
            self.stream = reader.read_all()
        self.request_body = json_body if content is None else content
        self.status_code, self.body = self.stream.status_code, self.stream.body
        return self.stream

    def track(self, body: object, running: BackgroundStream | None = None) -> SentJob | None:
        """Remember a job sent with `body`, so that teardown can cancel it if it is still running."""
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if not isinstance(job_id, str):
            return None
        job = SentJob(job_id, running=running)
        self.jobs.append(job)
        return job

    def get(self, path: str) -> httpx.Response:
        response = self.client.get(self.url(path))
        self.status_code, self.body = response.status_code, response.content
        return response

    def the_stream(self) -> SSEStream:
        """The last /execute answer."""
        assert self.stream is not None, (
            "no /execute answer yet: the scenario needs a When step that runs a job"
        )
        return self.stream

    def cancel(self, job_id: str) -> None:
        """POST /cancel for `job_id`; the answer is kept in `cancels`."""
        sent_at = time.monotonic()
        response = self.client.post(self.url("/cancel"), json={"job_id": job_id})
        self.cancels.append(CancelCall(job_id, response.status_code, response.content, sent_at))

    def the_job_stream(self) -> SSEStream:
        """The stream of the job this scenario ran."""
        assert self.stream is not None and self.job_id is not None, "no job ran in this scenario"
        return self.stream

    def the_job_prompt(self) -> str:
        body = self.request_body
        assert isinstance(body, dict) and isinstance(body.get("prompt"), str), "no job with a prompt ran"
        return body["prompt"]

    def get_health(self, requirement: str) -> dict:
        """GET /health, required to answer 200 with a JSON object (a failure names `requirement`)."""
        self.get("/health")
        return self.health_body(requirement)

    def health_body(self, requirement: str) -> dict:
        """The last answer, required to be a /health 200 with a JSON object."""
        body = self.body_json()
        require(self.status_code == 200, requirement, f"GET /health answered {self.status_code}")
        require(
            isinstance(body, dict), requirement, f"/health body is not a JSON object: {self.body[:300]!r}"
        )
        return body

    def body_json(self) -> object:
        """The last plain response body as JSON; None when it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def close(self) -> None:
        for job in self.jobs:
            if job.running is not None:
                job.running.close()
        self.client.close()
