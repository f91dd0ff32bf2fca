"""Whether a worker's output gives away a job's prompt or its generated text (M0-W-1902, M1).

A copy hides nowhere: each printed line is searched as written and, for a JSON line, in each of its string
values with the JSON escapes undone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

LEAK_MIN_CHARS = 8  # generated text shorter than this could appear in a log line by chance
PROMPT_WORD_MIN_CHARS = 10  # a prompt word this long is distinctive: a log line quoting it leaks the prompt
PROMPT_LENGTH_KEYS = ("prompt_chars", "prompt_length", "prompt_len", "prompt_bytes")


@dataclass(frozen=True)
class Leak:
    what: str  # "the prompt", "the prompt's word 'xyz'", "the generated text"
    secret: str
    line_number: int  # 1-based, over stdout then stderr
    line: str

    def describe(self) -> str:
        return f"{self.what} ({self.secret[:80]!r}) is in output line {self.line_number}: {self.line[:300]!r}"


def strings_in(value: object) -> list[str]:
    """Every string inside a JSON value: a log line's fields as written, escapes undone."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


def secrets_of(prompt: str, generated: str) -> dict[str, str]:
    """What must not be logged: the prompt, its distinctive words, and the generated text when it is long
    enough not to turn up by chance."""
    secrets = {"the prompt": prompt}
    for word in prompt.split():
        if len(word) >= PROMPT_WORD_MIN_CHARS:
            secrets[f"the prompt's word {word!r}"] = word
    generated = generated.strip()
    if len(generated) >= LEAK_MIN_CHARS:
        secrets["the generated text"] = generated
    return secrets


def _searchable(line: str) -> list[str]:
    texts = [line]
    if line.lstrip().startswith("{"):
        try:
            texts += strings_in(json.loads(line))
        except json.JSONDecodeError:
            pass
    return texts


def find_leaks(lines: list[str], secrets: dict[str, str]) -> list[Leak]:
    """Each (line, secret) where the line gives the secret away."""
    leaks = []
    for number, line in enumerate(lines, start=1):
        texts = _searchable(line)
        for what, secret in secrets.items():
            if any(secret in text for text in texts):
                leaks.append(Leak(what, secret, number, line))
    return leaks


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def carries_digest(record: dict, prompt: str) -> bool:
    """The record has a field whose value is the prompt's SHA-256 (hex, optionally `sha256:`-prefixed)."""
    digest = prompt_digest(prompt)
    return digest in [text.lower().removeprefix("sha256:") for text in strings_in(record)]


def carries_length(record: dict, prompt: str) -> bool:
    """The record gives the prompt's length in characters or UTF-8 bytes under a common key."""
    lengths = {len(prompt), len(prompt.encode("utf-8"))}
    values = [record[key] for key in PROMPT_LENGTH_KEYS if key in record]
    return any(
        isinstance(value, int) and not isinstance(value, bool) and value in lengths for value in values
    )
