"""The `/execute` and `/cancel` request contract (M0-W-1300, M0-W-1302; contract §2.3, §2.4).

Types are checked by pydantic in strict mode (no "1" for 1, no 1.5 or true for an integer); ranges by the
table below, so that every bad field is reported at once with the contract's constraint strings.
Unknown fields are ignored; `null` means "use the default".
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from reference_worker.generation import GenerationRequest

from .errors import FieldError, InvalidRequest

MAX_PROMPT_CHARS = 32768  # Unicode code points
MAX_TOKENS_LIMIT = 2048
MAX_STOP_COUNT = 4
MAX_STOP_BYTES = 100
MAX_STOP_TOKENS = 32
UINT64_MAX = (1 << 64) - 1
GENERATED_SEED_BITS = 53  # a generated seed survives any JSON client's float64 numbers


class ExecuteBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    job_id: str
    prompt: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    stop: list[str] | None = None
    seed: int | None = None


class CancelBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    job_id: str


# JSON type of each field, for the `type(...)` constraint of a wrongly typed value.
_JSON_TYPES = {
    "job_id": "string",
    "prompt": "string",
    "max_tokens": "integer",
    "temperature": "number",
    "top_p": "number",
    "top_k": "integer",
    "min_p": "number",
    "repetition_penalty": "number",
    "stop": "array of strings",
    "seed": "integer",
}


def parse_json_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as a JSON object, or InvalidRequest naming `body`."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise InvalidRequest(
            [
                FieldError(
                    "body",
                    "content_type(application/json)",
                    f"Content-Type must be application/json (got {content_type or 'none'!r})",
                )
            ]
        )
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequest([FieldError("body", "valid_json", f"body is not valid JSON: {e}")]) from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            [FieldError("body", "json_object", f"body must be a JSON object (got {type(body).__name__})")]
        )
    return body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _typed(model: type[BaseModel], body: dict[str, Any]) -> tuple[Any, list[FieldError]]:
    """The body typed by `model`, with every field of the wrong type (or missing) reported."""
    try:
        return model.model_validate(body), []
    except ValidationError as e:
        errors: dict[str, FieldError] = {}
        for err in e.errors():
            name = str(err["loc"][0])
            if name in errors:
                continue
            if err["type"] == "missing":
                errors[name] = FieldError(name, "required", f"{name} is required")
            else:
                json_type = _JSON_TYPES[name]
                errors[name] = FieldError(
                    name, f"type({json_type})", f"{name} must be a {json_type}", _echo(name, body.get(name))
                )
        # The other fields still get their range checks; a bad required string stands in as "".
        rest = {k: v for k, v in body.items() if k not in errors}
        rest.update({name: "" for name in errors if model.model_fields[name].is_required()})
        return model.model_validate(rest), list(errors.values())


def _echo(name: str, value: Any) -> Any:
    # §2.4: the value is echoed, except for prompt and stop.
    if name in ("prompt", "stop"):
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:100]


def _range(
    body: dict[str, Any], typed: BaseModel, name: str, low: float, high: float, constraint: str
) -> FieldError | None:
    """A range error for `name` (the value echoed as the client sent it), or None."""
    value = getattr(typed, name)
    if value is None or low <= value <= high:
        return None
    sent = _echo(name, body.get(name))
    bound = f"at least {low}" if value < low else f"at most {high}"
    return FieldError(name, constraint, f"{name} must be {bound} (got {sent})", sent)


def execute_request(
    body: dict[str, Any],
    *,
    vocab_size: int,
    max_tokens_out: int,
    count_tokens: Callable[[str], int],
) -> GenerationRequest:
    """A validated GenerationRequest, or InvalidRequest listing every bad field."""
    typed, errors = _typed(ExecuteBody, body)
    bad = {e.field for e in errors}
    if "job_id" not in bad and not typed.job_id:
        errors.append(FieldError("job_id", "non_empty", "job_id must not be empty", ""))
    if "prompt" not in bad:
        n = len(typed.prompt)  # code points
        if n == 0:
            errors.append(FieldError("prompt", "length(1..=32768)", "prompt must not be empty"))
        elif n > MAX_PROMPT_CHARS:
            errors.append(
                FieldError(
                    "prompt",
                    "length(1..=32768)",
                    f"prompt must be at most {MAX_PROMPT_CHARS} characters (got {n})",
                )
            )
    ranges = [
        ("max_tokens", 1, MAX_TOKENS_LIMIT, "range(1..=2048)"),
        ("temperature", 0.0, 2.0, "range(0.0..=2.0)"),
        ("top_p", 0.0, 1.0, "range(0.0..=1.0)"),
        ("top_k", 0, vocab_size, f"range(0..={vocab_size})"),
        ("min_p", 0.0, 1.0, "range(0.0..=1.0)"),
        ("repetition_penalty", 0.0, 2.0, "range(0.0..=2.0)"),
        ("seed", 0, UINT64_MAX, f"range(0..={UINT64_MAX})"),
    ]
    errors.extend(e for r in ranges if (e := _range(body, typed, *r)) is not None)
    if typed.repetition_penalty == 0.0:
        # Positive logits are divided by the penalty: 0 is undefined. 1.0 turns the penalty off.
        errors.append(
            FieldError(
                "repetition_penalty",
                "greater_than(0.0)",
                "repetition_penalty must be greater than 0 (1.0 turns it off)",
                0.0,
            )
        )
    if typed.stop is not None:
        errors.extend(_stop_errors(typed.stop, count_tokens))
    if errors:
        raise InvalidRequest(errors)
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


def _stop_errors(stop: list[str], count_tokens: Callable[[str], int]) -> list[FieldError]:
    errors: list[FieldError] = []
    if len(stop) > MAX_STOP_COUNT:
        errors.append(
            FieldError(
                "stop", "max_count(4)", f"stop must have at most {MAX_STOP_COUNT} entries (got {len(stop)})"
            )
        )
    for i, s in enumerate(stop):
        if not s:
            errors.append(FieldError("stop", "non_empty", f"stop[{i}] must not be empty"))
            continue
        nbytes = len(s.encode("utf-8"))
        if nbytes > MAX_STOP_BYTES:
            errors.append(
                FieldError(
                    "stop",
                    "max_length(100)",
                    f"stop[{i}] must be at most {MAX_STOP_BYTES} bytes (got {nbytes})",
                )
            )
            continue
        ntokens = count_tokens(s)
        if ntokens > MAX_STOP_TOKENS:
            errors.append(
                FieldError(
                    "stop",
                    "max_tokens(32)",
                    f"stop[{i}] must be at most {MAX_STOP_TOKENS} tokens (got {ntokens})",
                )
            )
    return errors


def cancel_job_id(body: dict[str, Any]) -> str:
    typed, errors = _typed(CancelBody, body)
    if not errors and not typed.job_id:
        errors.append(FieldError("job_id", "non_empty", "job_id must not be empty", ""))
    if errors:
        raise InvalidRequest(errors)
    return typed.job_id
