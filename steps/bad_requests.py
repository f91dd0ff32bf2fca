"""Malformed `/execute` bodies drawn by hypothesis, each breaking one rule of the request contract, and the
worker's answer to each (issue 14, validation under fuzz; M0-W-1302).

Only what the spec fixes is drawn (the field table of M0-W-1300 as `features/http/validation.feature`
lists it): a wrong JSON type, a value out of its range, an empty or too long string, a missing required
field. Extra fields, unusual but valid Unicode and other framings are the worker's choice and are not
drawn. Every body differs from a valid one in exactly one field, so the answer must name that field.

The sample is bounded and reproducible: `derandomize=True` draws the same bodies on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.state import new_job_id
from steps.verdicts import RequirementViolation, field_entries, require

VALID_BODY = {"prompt": "Hello", "max_tokens": 4}
MAX_PROMPT_CHARS = 32768  # M0-W-1300
MAX_STOP_STRINGS = 4
MAX_SEED = 2**64 - 1

# JSON values of the wrong type for a field of each type; booleans count as the wrong type for numbers.
_TEXT = st.text(max_size=8)
_NOT_A_STRING = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(_TEXT, max_size=2)
)
_NOT_A_NUMBER = st.one_of(
    _TEXT, st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(_TEXT, _TEXT)
)
_NOT_AN_INTEGER = st.one_of(
    _NOT_A_NUMBER,
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda value: not value.is_integer()),
)


def _number_outside(low: float, high: float) -> st.SearchStrategy:
    return st.one_of(
        st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False),
        _NOT_A_NUMBER,
    )


def _integer_outside(low: int, high: int) -> st.SearchStrategy:
    return st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1), _NOT_AN_INTEGER)


def bad_values(vocab_size: int) -> dict[str, st.SearchStrategy]:
    """For each field of the request, the values that break its rule."""
    bad_string = st.one_of(st.just(""), _NOT_A_STRING)
    return {
        "job_id": bad_string,
        "prompt": st.one_of(
            bad_string, st.integers(MAX_PROMPT_CHARS + 1, MAX_PROMPT_CHARS + 64).map(lambda n: "a" * n)
        ),
        "max_tokens": _integer_outside(1, 2048),
        "temperature": _number_outside(0.0, 2.0),
        "top_p": _number_outside(0.0, 1.0),
        "top_k": _integer_outside(0, vocab_size),
        "repetition_penalty": _number_outside(0.0, 2.0),
        "seed": _integer_outside(0, MAX_SEED),
        "stop": st.one_of(
            _TEXT,
            st.integers(),
            st.lists(_NOT_A_STRING, min_size=1, max_size=3),
            st.lists(_TEXT, min_size=MAX_STOP_STRINGS + 1, max_size=MAX_STOP_STRINGS + 3),
        ),
    }


@dataclass(frozen=True)
class BadRequest:
    field: str  # the one field that breaks a rule
    body: dict
    how: str  # "set to <value>" or "missing", for messages

    def describe(self) -> str:
        return f"{self.field} {self.how}"


def bad_requests(vocab_size: int) -> st.SearchStrategy[BadRequest]:
    """A valid body with one field set to a bad value, or without one of the required fields."""
    values = bad_values(vocab_size)

    def with_value(field: str) -> st.SearchStrategy[BadRequest]:
        return values[field].map(
            lambda value: BadRequest(
                field, {"job_id": new_job_id(), **VALID_BODY, field: value}, f"set to {value!r:.80}"
            )
        )

    def without(field: str) -> BadRequest:
        body = {"job_id": new_job_id(), **VALID_BODY}
        del body[field]
        return BadRequest(field, body, "missing")

    missing = st.sampled_from(["job_id", "prompt"]).map(without)
    return st.one_of(missing, *(with_value(field) for field in values))


@dataclass(frozen=True)
class Answer:
    request: BadRequest
    status_code: int | None  # None: no HTTP answer (the connection dropped)
    body: bytes
    problem: str | None = None  # the transport error when there was no answer

    def describe(self) -> str:
        seen = f"HTTP {self.status_code}: {self.body[:160]!r}" if self.status_code else self.problem
        return f"{self.request.describe()} -> {seen}"


@dataclass
class MalformedSample:
    """The answers to one scenario's sample of malformed bodies (fixture `malformed_sample`)."""

    answers: list[Answer] = field(default_factory=list)
    wrong: list[Answer] = field(default_factory=list)  # answers that are not a 400

    @property
    def sent(self) -> int:
        return len(self.answers)


@pytest.fixture
def malformed_sample() -> MalformedSample:
    return MalformedSample()


# After this many answers that are not a 400 the sample stops: a worker that accepts bad bodies would
# otherwise run a job for each of them.
STOP_AFTER_WRONG = 3


def send_sample(
    client: httpx.Client, base_url: str, vocab_size: int, count: int, sample: MalformedSample
) -> None:
    """POSTs `count` bad bodies (the same ones on every run) to `/execute`; a body that is answered with a
    stream is cancelled at once (`/cancel`), so the worker is free for the next one."""

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(bad_requests(vocab_size))
    def send(request: BadRequest) -> None:
        if len(sample.wrong) >= STOP_AFTER_WRONG:
            return
        answer = _post(client, base_url, request)
        sample.answers.append(answer)
        if answer.status_code != 400:
            sample.wrong.append(answer)

    send()


def _post(client: httpx.Client, base_url: str, request: BadRequest) -> Answer:
    try:
        with client.stream("POST", f"{base_url}/execute", json=request.body) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                job_id = request.body.get("job_id")
                if isinstance(job_id, str) and job_id:
                    client.post(f"{base_url}/cancel", json={"job_id": job_id})
                return Answer(request, response.status_code, b"(an event stream)")
            return Answer(request, response.status_code, response.read())
    except httpx.HTTPError as exc:
        return Answer(request, None, b"", f"no HTTP answer ({type(exc).__name__}: {exc})")


def check_refusals(sample: MalformedSample, requirement: str) -> None:
    """M0-W-1302: every malformed body refused with 400 and an error that names its field; never a 5xx,
    a dropped connection or a stream."""
    require(sample.sent, requirement, "no malformed body was sent")
    if sample.wrong:
        stopped = (
            f" (the sample stopped after {STOP_AFTER_WRONG} such answers)"
            if len(sample.wrong) >= STOP_AFTER_WRONG
            else ""
        )
        raise RequirementViolation(
            requirement,
            f"{len(sample.wrong)} of {sample.sent} malformed bodies were not refused with 400{stopped}: "
            + "; ".join(answer.describe() for answer in sample.wrong),
        )
    unnamed = [
        answer for answer in sample.answers if not field_entries(_json(answer.body), answer.request.field)
    ]
    require(
        not unnamed,
        requirement,
        f"{len(unnamed)} of {sample.sent} refusals do not name the broken field: "
        + "; ".join(answer.describe() for answer in unnamed[:3]),
    )


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
