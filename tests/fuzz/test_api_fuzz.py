"""Bounded API fuzzing (M0-W-1302, M0-W-1300): a real worker on a tiny CPU fixture, in-process.

- hypothesis draws `/execute` and `/cancel` bodies and broken requests (derandomized: the same examples
  on every run); each answer is judged against the oracle of `bodies.bad_fields`, and a valid request
  right after each one must succeed. The recorded 10,000-request run is `python -m tests.fuzz.api_fuzz`.
- schemathesis derives requests from the worker's own OpenAPI description of its bodies and checks the
  answers against it: no 5xx, the documented statuses, Content-Types and 400 body.
- The oracle itself is shown able to fail: a worker that lets bad bodies through, or names the wrong
  field, is caught.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

pytest.importorskip("hypothesis")

from reference_worker.server import schemas  # noqa: E402
from reference_worker.server.errors import FieldError, InvalidRequest  # noqa: E402
from reference_worker.server.state import WorkerState  # noqa: E402

from .api_fuzz import ApiFuzzer, run  # noqa: E402
from .bodies import bad_fields  # noqa: E402
from .inprocess import TINY_MODEL, load_tiny_worker  # noqa: E402

pytestmark = pytest.mark.skipif(
    not TINY_MODEL.is_file(), reason=f"{TINY_MODEL} missing: run `python -m fixtures prepare --tiny`"
)

BOUNDED_EXAMPLES = 250


@pytest.fixture(scope="module")
def tiny_state() -> WorkerState:
    return load_tiny_worker()


@pytest.fixture
def fuzzer(tiny_state: WorkerState) -> Iterator[ApiFuzzer]:
    fuzzer = ApiFuzzer(tiny_state)
    yield fuzzer
    fuzzer.close()


def test_fuzzed_requests_get_the_documented_answers(fuzzer: ApiFuzzer) -> None:
    verdicts = run(fuzzer, BOUNDED_EXAMPLES, seed=None)
    assert verdicts.failures == [], "\n".join(verdicts.failures)
    assert verdicts.requests == verdicts.valid_after == BOUNDED_EXAMPLES
    assert set(verdicts.by_status) <= {200, 202, 400}
    assert verdicts.by_status.get(400, 0) > BOUNDED_EXAMPLES // 2 and verdicts.by_status.get(200, 0) > 0


def _ignore_temperature(real):
    def validate(model, body, **context):  # a worker that never looks at `temperature`
        return real(model, {k: v for k, v in body.items() if k != "temperature"}, **context)

    return validate


def _name_the_body(real):
    def validate(model, body, **context):  # a worker that blames the whole body
        try:
            return real(model, body, **context)
        except InvalidRequest as e:
            raise InvalidRequest([FieldError("body", e.errors[0].constraint, "bad")]) from None

    return validate


@pytest.mark.parametrize(
    ("fault", "expect"),
    [(_ignore_temperature, "temperature"), (_name_the_body, "400 names ['body']")],
    ids=["ignores_a_field", "names_the_body"],
)
def test_the_oracle_catches_a_worker_that_misjudges_bodies(
    fuzzer: ApiFuzzer, monkeypatch: pytest.MonkeyPatch, fault, expect: str
) -> None:
    monkeypatch.setattr(schemas, "validate_body", fault(schemas.validate_body))
    verdicts = run(fuzzer, 80, seed=None)
    assert any(expect in failure for failure in verdicts.failures), verdicts.failures[:3]


def test_the_oracle_restates_the_contract_table() -> None:
    def words(text: str) -> int:
        return len(text.split())

    good = {"job_id": "j", "prompt": "p", "max_tokens": 2048, "temperature": 2, "top_k": 10, "seed": 0}
    assert bad_fields(good, 10, words) == set()
    assert bad_fields({**good, "top_k": 11, "max_tokens": True}, 10, words) == {"top_k", "max_tokens"}
    assert bad_fields({**good, "repetition_penalty": 0, "prompt": "\ud800"}, 10, words) == {
        "repetition_penalty",
        "prompt",
    }
    assert bad_fields({**good, "stop": ["a " * 33]}, 10, words) == {"stop"}
    assert bad_fields({"prompt": "x" * 32769}, 10, words) == {"job_id", "prompt"}


# --- schemathesis, from the worker's OpenAPI description -------------------------------------------------


def schemathesis_run(state: WorkerState, max_examples: int) -> list[str]:
    """Paths of the requests schemathesis sent; raises on the first failed check."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import checks

    from reference_worker.server import create_app

    app = create_app(state)
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    selected = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.negative_data_rejection,
    ]
    tried: list[str] = []
    for operation in schema.get_all_operations():

        @settings(
            max_examples=max_examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.ok().as_strategy())
        def each(case) -> None:
            deadline = time.monotonic() + 10
            while state.slot.busy and time.monotonic() < deadline:  # the last job frees its slot
                time.sleep(0.002)
            response = case.call()
            case.validate_response(response, checks=selected)
            tried.append(case.operation.path)

        each()
    return tried


def test_schemathesis_finds_no_server_error_or_undocumented_answer(tiny_state: WorkerState) -> None:
    tried = schemathesis_run(tiny_state, max_examples=40)
    assert tried.count("/execute") >= 20 and tried.count("/cancel") >= 10


def test_schemathesis_catches_a_server_error(
    tiny_state: WorkerState, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = schemas.validate_body

    def crash_on_seed(model, body, **context):  # a worker that fails on one field
        if "seed" in body:
            raise RuntimeError("boom")
        return real(model, body, **context)

    monkeypatch.setattr(schemas, "validate_body", crash_on_seed)
    with pytest.raises(Exception, match="boom|Server error"):  # the exception, or a 500 found
        schemathesis_run(tiny_state, max_examples=40)
