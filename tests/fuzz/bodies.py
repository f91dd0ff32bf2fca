"""Request bodies for fuzzing `/execute`, and an independent oracle of which fields are bad.

`bad_fields` re-states the contract's table (spec §2.3, docs/worker.md) in plain Python, apart from the
worker's pydantic model, so a body the worker misjudges is caught either way: a 400 for a good body, a
stream for a bad one, or a 400 that names other fields than the bad ones.

`execute_bodies()` draws whole bodies: every field absent, good, at a bound, just past it, of another JSON
type, or an arbitrary JSON value; strings with lone surrogates, huge and empty strings; extra fields.
`raw_requests()` draws what is wrong with the body itself (Content-Type, bytes, nesting, duplicates,
size), with the `body`-level constraint each must get.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

FIELDS = (
    "job_id",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "stop",
    "seed",
)
UINT64_MAX = (1 << 64) - 1


# --- the oracle -----------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


def _is_text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")  # a lone surrogate is not text
    except UnicodeEncodeError:
        return False
    return True


def bad_fields(body: dict[str, Any], vocab_size: int, count_tokens: Callable[[str], int]) -> set[str]:
    """The fields of `body` (a decoded JSON object) that break the contract."""
    bad = set()
    for name in ("job_id", "prompt"):
        value = body.get(name)
        limit = 32768 if name == "prompt" else None
        if not _is_text(value) or value == "" or (limit is not None and len(value) > limit):
            bad.add(name)
    number_ranges: dict[str, tuple[Callable[[Any], bool], float, float]] = {
        "max_tokens": (_is_int, 1, 2048),
        "temperature": (_is_number, 0.0, 2.0),
        "top_p": (_is_number, 0.0, 1.0),
        "top_k": (_is_int, 0, vocab_size),
        "min_p": (_is_number, 0.0, 1.0),
        "repetition_penalty": (_is_number, 0.0, 2.0),
        "seed": (_is_int, 0, UINT64_MAX),
    }
    for name, (is_type, low, high) in number_ranges.items():
        value = body.get(name)
        if value is not None and not (is_type(value) and low <= value <= high):
            bad.add(name)
    if body.get("repetition_penalty") == 0:
        bad.add("repetition_penalty")  # the penalty divides: 0 is refused, 1.0 turns it off
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, list)
        and len(stop) <= 4
        and all(
            _is_text(s) and s != "" and len(s.encode("utf-8")) <= 100 and count_tokens(s) <= 32 for s in stop
        )
    ):
        bad.add("stop")
    return bad


# --- bodies ---------------------------------------------------------------------------------------------

LONE_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")
HUGE_STRINGS = ("x" * 32768, "x" * 32769, "é" * 32768, "\U0001f600" * 32769, "a " * 40)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
texts = (
    st.text(max_size=40)
    | st.text(st.characters(codec="utf-8"), max_size=40)
    | st.builds(
        lambda a, s, b: a + s + b, st.text(max_size=5), st.sampled_from(LONE_SURROGATES), st.text(max_size=5)
    )
    | st.sampled_from(HUGE_STRINGS)
    | st.just("")
)


def _numbers(low: float, high: float, integer: bool) -> st.SearchStrategy[Any]:
    step = 1 if integer else 0.001
    bounds = st.sampled_from([low, high, low - step, high + step, 0, -1])
    inside = st.integers(int(low), int(high)) if integer else st.floats(low, high, allow_nan=False)
    return bounds | inside | (st.integers() if integer else st.floats(allow_nan=False, allow_infinity=False))


def field_values(vocab_size: int) -> dict[str, st.SearchStrategy[Any]]:
    """Per field: good values, bounds, values just past them, other types, any JSON."""
    return {
        "job_id": texts | json_values,
        "prompt": texts | json_values,
        "max_tokens": _numbers(1, 2048, True) | st.floats(1, 2048) | json_values,
        "temperature": _numbers(0.0, 2.0, False) | st.integers(0, 3) | json_values,
        "top_p": _numbers(0.0, 1.0, False) | json_values,
        "top_k": _numbers(0, vocab_size, True) | json_values,
        "min_p": _numbers(0.0, 1.0, False) | json_values,
        "repetition_penalty": _numbers(0.0, 2.0, False) | st.just(0) | json_values,
        "stop": st.lists(texts, max_size=6) | st.lists(st.text(max_size=110), max_size=5) | json_values,
        "seed": _numbers(0, UINT64_MAX, True) | json_values,
    }


def execute_bodies(vocab_size: int, max_tokens: int | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Whole `/execute` bodies; about half keep the required fields good so the others get judged."""
    values = field_values(vocab_size)
    good_required = {"job_id": st.text(min_size=1, max_size=12), "prompt": st.text(min_size=1, max_size=40)}
    extra = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in FIELDS), json_values, max_size=3)
    optional = {k: v for k, v in values.items() if k not in good_required}
    mixed = st.fixed_dictionaries({}, optional=values)
    mostly_good = st.fixed_dictionaries(good_required, optional=optional)
    return st.builds(lambda body, more: {**more, **body}, mixed | mostly_good, extra)


def encode(body: dict[str, Any]) -> bytes:
    """The body as JSON text; lone surrogates go out as `\\udXXX` escapes, as a JSON client sends them."""
    return json.dumps(body, allow_nan=False).encode("ascii")


# --- whole requests that are wrong as bodies ------------------------------------------------------------


@dataclass(frozen=True)
class RawRequest:
    content: bytes
    content_type: str | None
    field: str  # the field the 400 must name
    constraint: str  # the constraint it must give (a prefix for the size limit)
    chunked: bool = False  # sent without Content-Length, in pieces


_GOOD = b'{"job_id": "j", "prompt": "hi"}'
_JSON = "application/json"


def raw_requests(max_body_bytes: int) -> st.SearchStrategy[RawRequest]:
    def wrong_type(ct: str | None) -> RawRequest:
        return RawRequest(_GOOD, ct, "body", "content_type(application/json)")

    not_json = st.binary(max_size=64).filter(lambda b: not _parses(b))
    return st.one_of(
        st.sampled_from(
            [
                None,
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/jsonx",
                "",
            ]
        ).map(wrong_type),
        not_json.map(lambda b: RawRequest(b, _JSON, "body", "valid_json")),
        st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]).map(
            lambda c: RawRequest(
                b'{"job_id": "j", "prompt": "p", "top_p": ' + c + b"}", _JSON, "body", "valid_json"
            )
        ),
        st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80"]).map(
            lambda b: RawRequest(b'{"job_id": "j", "prompt": "' + b + b'"}', _JSON, "body", "valid_json")
        ),
        json_scalars.map(lambda v: RawRequest(json.dumps(v).encode(), _JSON, "body", "json_object")),
        st.lists(json_scalars, max_size=3).map(
            lambda v: RawRequest(json.dumps(v).encode(), _JSON, "body", "json_object")
        ),
        st.integers(2_000, 200_000)
        .map(
            lambda depth: RawRequest(
                b'{"job_id": "j", "prompt": "p", "x": ' + b"[" * depth + b"]" * depth + b"}",
                _JSON,
                "body",
                "valid_json",  # nested past any sane parser's limit
            )
        )
        .filter(lambda r: len(r.content) <= max_body_bytes),
        st.sampled_from(FIELDS).map(
            lambda name: RawRequest(
                b'{"job_id": "j", "prompt": "p", "' + name.encode() + b'": 1, "' + name.encode() + b'": 2}',
                _JSON,
                name,
                "unique",
            )
        ),
        st.builds(
            lambda extra, chunked: RawRequest(
                b'{"job_id": "j", "prompt": "' + b"x" * (max_body_bytes + extra) + b'"}',
                _JSON,
                "body",
                "max_bytes(",
                chunked,
            ),
            st.integers(1, 3 * max_body_bytes),
            st.booleans(),
        ),
    )


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True
