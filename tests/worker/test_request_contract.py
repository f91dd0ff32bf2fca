"""The request contract's rules that the API fuzzing found missing, each pinned by a plain example: text
fields are Unicode text, a field given twice is refused, the body is UTF-8 JSON of bounded depth and size,
echoed values are valid UTF-8, and an SSE `data` line is never split inside its JSON."""

from __future__ import annotations

import json

import pytest

from reference_worker.server import schemas
from reference_worker.server.errors import InvalidRequest
from reference_worker.server.sse import sse_event


def refused(raw: bytes) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as caught:
        body = schemas.parse_json_object(raw)
        schemas.execute_request(body, vocab_size=100, max_tokens_out=2048, count_tokens=len)
    return [(e.field, e.constraint) for e in caught.value.errors]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"job_id": "j", "prompt": "\\ud800"}', [("prompt", "valid_unicode")]),
        (b'{"job_id": "\\udfff", "prompt": "p"}', [("job_id", "valid_unicode")]),
        (b'{"job_id": "j", "prompt": "p", "stop": ["ok", "x\\ud83d"]}', [("stop", "valid_unicode")]),
        (b'{"job_id": "j", "prompt": "p", "prompt": "q"}', [("prompt", "unique")]),
        (b'{"job_id": "j", "prompt": "\xed\xa0\x80"}', [("body", "valid_json")]),  # an encoded surrogate
        (b'{"job_id": "j", "prompt": "\xff"}', [("body", "valid_json")]),
        (
            b'{"job_id": "j", "prompt": "p", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            [("body", "valid_json")],
        ),
        (b'"\xef\xbb\xbf{}"', [("body", "json_object")]),
    ],
)
def test_bodies_the_fuzzing_found(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert refused(raw) == expected


def test_a_good_pair_of_surrogates_is_text() -> None:
    body = schemas.parse_json_object(b'{"job_id": "j", "prompt": "\\ud83d\\ude00"}')
    request = schemas.execute_request(body, vocab_size=100, max_tokens_out=2048, count_tokens=len)
    assert request.prompt == "\U0001f600"


def test_an_echoed_value_with_a_lone_surrogate_is_escaped() -> None:
    with pytest.raises(InvalidRequest) as caught:
        schemas.cancel_job_id({"job_id": "a\ud800b"})
    (error,) = caught.value.errors
    assert error.value == "a\\ud800b" and error.value.encode("utf-8")


def test_every_error_names_a_field_of_the_contract_or_the_body() -> None:
    body = {"job_id": 1, "prompt": None, "max_tokens": "x", "top_k": 101, "stop": ["", "y" * 101], "seed": -1}
    with pytest.raises(InvalidRequest) as caught:
        schemas.execute_request(body, vocab_size=100, max_tokens_out=2048, count_tokens=len)
    found = {(e.field, e.constraint) for e in caught.value.errors}
    assert found == {
        ("job_id", "type(string)"),
        ("prompt", "type(string)"),
        ("max_tokens", "type(integer)"),
        ("top_k", "range(0..=100)"),
        ("stop", "non_empty"),
        ("stop", "max_length(100)"),
        ("seed", f"range(0..={(1 << 64) - 1})"),
    }
    messages = {e.message for e in caught.value.errors}
    assert (
        "stop[0] must not be empty" in messages and "stop[1] must be at most 100 bytes (got 101)" in messages
    )


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029", "\r", "\n", "\x0b", "\x1c"])
def test_an_sse_data_line_is_one_line_of_json(char: str) -> None:
    wire = sse_event("token", t=f"a{char}b", i=0).encode().decode("utf-8")
    data = [line for line in wire.split("\r\n") if line.startswith("data:")]
    assert len(data) == 1 and not set(data[0]) & {"\x85", "\u2028", "\u2029", "\r", "\n"}
    assert json.loads(data[0][5:])["t"] == f"a{char}b"


def test_the_openapi_description_is_the_model() -> None:
    operation = schemas.openapi_operation(schemas.ExecuteBody, {})
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == set(schemas.ExecuteBody.model_fields)
    assert schema["required"] == ["job_id", "prompt"]
    assert schema["properties"]["max_tokens"]["anyOf"][0] == {
        "maximum": 2048,
        "minimum": 1,
        "type": "integer",
    }
