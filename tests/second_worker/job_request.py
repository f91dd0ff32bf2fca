"""The /execute request, checked field by field (M0-W-1300, M0-W-1302); the first problem is reported."""

from __future__ import annotations

import json
import secrets

from tests.second_worker.engine import Engine, Sampling

MAX_PROMPT_CHARS = 32768
MAX_STOPS = 4
MAX_STOP_TOKENS = 32  # M0-W-1422: each stop string is at most 32 tokens of the model's tokenizer
UINT64_MAX = (1 << 64) - 1


class RequestError(Exception):
    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param, self.reason = param, reason


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(name, f"must be a number, got {json.dumps(value)}")
    if not low <= value <= high:
        raise RequestError(name, f"must lie in [{low}, {high}], got {value}")
    return float(value)


def _integer(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, f"must be an integer, got {json.dumps(value)}")
    if not low <= value <= high:
        raise RequestError(name, f"must lie in [{low}, {high}], got {value}")
    return value


def read_job(raw: bytes, engine: Engine) -> tuple[str, str, Sampling]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError("body", f"not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise RequestError("job_id", "a non-empty string is required")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("prompt", "a non-empty string is required")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError("prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")
    prompt_tokens = engine.count_tokens(prompt)
    if prompt_tokens >= engine.facts.context_length:
        raise RequestError(
            "prompt", f"{prompt_tokens} tokens do not fit the context of {engine.facts.context_length}"
        )
    stop = body.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(entry, str) for entry in stop):
        raise RequestError("stop", "must be a list of strings")
    if len(stop) > MAX_STOPS:
        raise RequestError("stop", f"at most {MAX_STOPS} entries, got {len(stop)}")
    for entry in stop:
        if not entry:
            raise RequestError("stop", "entries must not be empty")
        if engine.count_tokens(entry) > MAX_STOP_TOKENS:
            raise RequestError("stop", f"each entry is at most {MAX_STOP_TOKENS} tokens")
    seed = body.get("seed")
    sampling = Sampling(
        max_tokens=_integer(body, "max_tokens", 2048, 1, 2048),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_integer(body, "top_k", 0, 0, engine.facts.vocab_size),
        min_p=_number(body, "min_p", 0.0, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.0, 2.0),
        stop=stop,
        seed=_integer(body, "seed", 0, 0, UINT64_MAX) if seed is not None else secrets.randbits(63),
    )
    return job_id, prompt, sampling
