"""The `/execute` and `/cancel` request contract (M0-W-1300, M0-W-1302; contract §2.3, §2.4), in one place.

Each field is declared once below, with its pydantic constraints (strict types: no "1" for 1, no 1.5 or
true for an integer); `validate_body` turns pydantic's findings into the contract's constraint strings
and messages, so every bad field is reported at once. The constraints that depend on the loaded model
(`top_k` up to the vocabulary, a stop string's token count) read it from the validation context. Unknown
fields are ignored; `null` means "use the default". The body itself (size, Content-Type, JSON) is checked
by `read_json_object` before any field.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError
from starlette.requests import Request

from reference_worker.generation import GenerationRequest

from .errors import FieldError, InvalidRequest

MAX_PROMPT_CHARS = 32768  # Unicode code points
MAX_TOKENS_LIMIT = 2048
MAX_STOP_COUNT = 4
MAX_STOP_BYTES = 100
MAX_STOP_TOKENS = 32
UINT64_MAX = (1 << 64) - 1
GENERATED_SEED_BITS = 53  # a generated seed survives any JSON client's float64 numbers

# --- the constraints pydantic does not know ------------------------------------------------------------


def _contract_error(constraint: str, detail: str) -> PydanticCustomError:
    """A failed rule of the contract; `detail` follows the field's name in the message."""
    return PydanticCustomError("contract", "{detail}", {"constraint": constraint, "detail": detail})


def _within_vocabulary(top_k: int | None, info: ValidationInfo) -> int | None:
    vocab_size = (info.context or {}).get(_CONTEXT_BOUNDS["top_k"])
    if top_k is not None and vocab_size is not None and top_k > vocab_size:
        raise PydanticCustomError("less_than_equal", "above the vocabulary", {"le": vocab_size})
    return top_k


def _penalty_divides(value: float | None) -> float | None:
    if value == 0.0:  # positive logits are divided by the penalty; 1.0 turns it off
        raise _contract_error("greater_than(0.0)", "must be greater than 0 (1.0 turns it off)")
    return value


def _stop_bytes(text: str) -> str:
    n = len(text.encode("utf-8"))
    if n > MAX_STOP_BYTES:
        raise _contract_error(
            f"max_length({MAX_STOP_BYTES})", f"must be at most {MAX_STOP_BYTES} bytes (got {n})"
        )
    return text


def _stop_tokens(text: str, info: ValidationInfo) -> str:
    count_tokens = (info.context or {}).get("count_tokens")
    n = count_tokens(text) if count_tokens is not None else 0
    if n > MAX_STOP_TOKENS:
        raise _contract_error(
            f"max_tokens({MAX_STOP_TOKENS})", f"must be at most {MAX_STOP_TOKENS} tokens (got {n})"
        )
    return text


StopString = Annotated[
    str,
    Field(min_length=1),
    AfterValidator(_stop_bytes),
    AfterValidator(_stop_tokens),
]

# --- the bodies -----------------------------------------------------------------------------------------


class ExecuteBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    job_id: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: Annotated[int | None, AfterValidator(_within_vocabulary)] = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: Annotated[float | None, AfterValidator(_penalty_divides)] = Field(
        None, ge=0.0, le=2.0
    )
    stop: list[StopString] | None = Field(None, max_length=MAX_STOP_COUNT)
    seed: int | None = Field(None, ge=0, le=UINT64_MAX)


class CancelBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    job_id: str = Field(min_length=1)


# Upper bounds that come from the loaded model, by the validation context's key.
_CONTEXT_BOUNDS = {"top_k": "vocab_size"}
# JSON type of each Python type, for the `type(...)` constraint of a wrongly typed value.
_JSON_TYPES = {int: "integer", float: "number", str: "string", list: "array of strings"}
_NOT_ECHOED = ("prompt", "stop")  # §2.4: every other field's value is echoed as sent


# --- pydantic's findings in the contract's words -------------------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    low: Any = None
    high: Any = None
    min_length: int | None = None
    max_length: int | None = None


def _bounds(model: type[BaseModel], name: str) -> _Bounds:
    found: dict[str, Any] = {}
    for m in model.model_fields[name].metadata:
        if isinstance(m, Ge):
            found["low"] = m.ge
        elif isinstance(m, Le):
            found["high"] = m.le
        elif isinstance(m, MinLen):
            found["min_length"] = m.min_length
        elif isinstance(m, MaxLen):
            found["max_length"] = m.max_length
    return _Bounds(**found)


def _json_type(model: type[BaseModel], name: str) -> str:
    annotation = model.model_fields[name].annotation
    kinds = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return _JSON_TYPES.get(get_origin(kinds[0]) or kinds[0], "string")


def echo(name: str, value: Any) -> str | None:
    """The value as the client sent it, for the error's `value` (never prompt or stop), at most 100 chars."""
    if name in _NOT_ECHOED:
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value)
        except (ValueError, RecursionError):
            text = f"<{type(value).__name__}>"
    # A lone surrogate cannot go out as UTF-8: it is echoed as its escape, `\ud800`.
    return text[:100].encode("utf-8", "backslashreplace").decode("utf-8")


def _field_error(
    model: type[BaseModel], err: dict[str, Any], body: dict[str, Any], context: dict[str, Any]
) -> FieldError:
    name = str(err["loc"][0])
    where = name + "".join(f"[{i}]" for i in err["loc"][1:])  # stop[1]
    kind, ctx = err["type"], err.get("ctx") or {}
    sent = echo(name, body.get(name))
    bounds = _bounds(model, name)
    if kind == "missing":
        return FieldError(name, "required", f"{name} is required")
    if kind == "string_unicode":  # a lone surrogate from a `\ud800` escape: no UTF-8 text holds it
        return FieldError(
            name, "valid_unicode", f"{where} must be valid Unicode text (a lone surrogate)", sent
        )
    if kind == "contract":
        return FieldError(name, ctx["constraint"], f"{where} {ctx['detail']}", sent)
    if kind in ("greater_than_equal", "less_than_equal"):
        low = bounds.low
        high = bounds.high if bounds.high is not None else context.get(_CONTEXT_BOUNDS.get(name, ""))
        bound = f"at least {low}" if kind == "greater_than_equal" else f"at most {high}"
        return FieldError(name, f"range({low}..={high})", f"{where} must be {bound} (got {sent})", sent)
    if kind == "string_too_short" and (bounds.max_length is None or len(err["loc"]) > 1):
        return FieldError(name, "non_empty", f"{where} must not be empty", sent)
    if kind in ("string_too_short", "string_too_long"):
        low, high = bounds.min_length, bounds.max_length
        if kind == "string_too_short":
            message = f"{where} must not be empty"
        else:
            message = f"{where} must be at most {high} characters (got {len(err['input'])})"
        return FieldError(name, f"length({low}..={high})", message, sent)
    if kind == "too_long":
        high = bounds.max_length
        return FieldError(
            name,
            f"max_count({high})",
            f"{name} must have at most {high} entries (got {ctx['actual_length']})",
        )
    json_type = _json_type(model, name)  # every other finding is a value of the wrong JSON type
    return FieldError(name, f"type({json_type})", f"{name} must be a {json_type}", sent)


def validate_body(model: type[BaseModel], body: dict[str, Any], **context: Any) -> BaseModel:
    """`body` typed by `model`, or InvalidRequest listing every bad field (one error per finding)."""
    try:
        return model.model_validate(body, context=context)
    except ValidationError as e:
        errors = [_field_error(model, err, body, context) for err in e.errors(include_url=False)]
        raise InvalidRequest(list(dict.fromkeys(errors))) from None


# --- the body ------------------------------------------------------------------------------------------


def _body_error(constraint: str, message: str) -> InvalidRequest:
    return InvalidRequest([FieldError("body", constraint, message)])


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's body as a JSON object, read up to `max_bytes`; else InvalidRequest naming `body`."""
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _body_error(
            "content_type(application/json)",
            f"Content-Type must be application/json (got {(content_type or 'none')[:100]!r})",
        )
    too_large = _body_error(f"max_bytes({max_bytes})", f"body must be at most {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return parse_json_object(b"".join(chunks))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object, or InvalidRequest naming `body` (or a duplicated field)."""
    try:
        text = raw.decode("utf-8")  # RFC 8259 §8.1: JSON on the wire is UTF-8 (no encoded surrogates)
        body = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise InvalidRequest([FieldError(e.key, "unique", f"{e.key} is given more than once")]) from None
    except RecursionError:
        raise _body_error("valid_json", "body is not valid JSON: nested too deeply") from None
    except UnicodeDecodeError as e:
        raise _body_error("valid_json", f"body is not UTF-8 (byte {e.start})") from None
    except ValueError as e:
        raise _body_error("valid_json", f"body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(body, dict):
        raise _body_error("json_object", f"body must be a JSON object (got {_json_kind(body)})")
    return body


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = echo("", key) or "body"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # An object with a key twice is ambiguous (RFC 8259 §4); which one wins differs between parsers.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


# --- the contract as OpenAPI (for clients and API fuzzers; the routes read the raw body themselves) -----

_FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "required": ["code", "errors"],
    "properties": {
        "code": {"const": "INVALID_REQUEST"},
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["field", "constraint", "message"],
                "properties": {
                    "field": {"type": "string"},
                    "constraint": {"type": "string"},
                    "message": {"type": "string"},
                    "value": {"type": "string"},
                },
            },
        },
    },
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message", "retriable"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "retriable": {"type": "boolean"},
    },
}


def openapi_operation(model: type[BaseModel], success: dict[str, Any]) -> dict[str, Any]:
    """The `openapi_extra` of a route that takes `model` as its JSON body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        },
        "responses": {
            **success,
            "400": {
                "description": "INVALID_REQUEST: every bad field, with the contract's constraint",
                "content": {"application/json": {"schema": _FIELD_ERRORS_SCHEMA}},
            },
            "503": {
                "description": "WORKER_BUSY or WORKER_UNHEALTHY",
                "content": {"application/json": {"schema": _ERROR_SCHEMA}},
            },
        },
    }


# --- the typed requests --------------------------------------------------------------------------------


def execute_request(
    body: dict[str, Any],
    *,
    vocab_size: int,
    max_tokens_out: int,
    count_tokens: Callable[[str], int],
) -> GenerationRequest:
    """A validated GenerationRequest, or InvalidRequest listing every bad field."""
    typed = validate_body(ExecuteBody, body, vocab_size=vocab_size, count_tokens=count_tokens)
    assert isinstance(typed, ExecuteBody)
    max_tokens = typed.max_tokens if typed.max_tokens is not None else MAX_TOKENS_LIMIT
    return GenerationRequest(
        job_id=typed.job_id,
        prompt=typed.prompt,
        max_tokens=min(max_tokens, max_tokens_out),
        temperature=1.0 if typed.temperature is None else typed.temperature,
        top_p=1.0 if typed.top_p is None else typed.top_p,
        top_k=0 if typed.top_k is None else typed.top_k,
        min_p=0.0 if typed.min_p is None else typed.min_p,
        repetition_penalty=1.0 if typed.repetition_penalty is None else typed.repetition_penalty,
        stop=tuple(typed.stop or ()),
        seed=typed.seed if typed.seed is not None else secrets.randbits(GENERATED_SEED_BITS),  # M0-W-1030
    )


def cancel_job_id(body: dict[str, Any]) -> str:
    typed = validate_body(CancelBody, body)
    assert isinstance(typed, CancelBody)
    return typed.job_id
