"""What a worker process printed: its JSON log lines (M0-W-1900), its plain output, and the lines a
start-up error is reported on. Read from the stdout/stderr files of a `WorkerHandle`; nothing here knows
one worker's logger: nested context (tracing's `fields`, `span`, `spans`) is merged in and the level is
found under any common key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from steps.targets import WorkerHandle

LEVEL_KEYS = ("level", "lvl", "severity", "levelname", "log.level")  # the spec names no key
ERROR_LEVELS = ("error", "critical", "fatal")
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "panicked at", "stack backtrace:")
# M0-W-1200/1210/1211/1212: a refused model file's error names the problem in words any worker might use.
PROBLEM_KEYWORDS = {
    "not a GGUF file": ("magic", "gguf"),
    "the GGUF version": ("version",),
    "too many tensors": ("tensor",),
    "an unknown tensor type": ("type",),
    "the file is cut short": (
        "truncat",
        "end of file",
        "eof",
        "beyond",
        "past",
        "outside",
        "short",
        "incomplete",
        "exceed",
        "size",
    ),
}
NAMED_PROBLEMS = ("the missing key ", "the architecture ")  # + the key or architecture, the word to find
LOG_WAIT_S = 5.0  # a log line may be written just after the event it reports (e.g. ready after listen)
LOG_QUIET_S = 0.5  # a job's log lines are all written once the log has not grown for this long
LOG_SETTLE_LIMIT_S = 5.0


def flatten(record: dict) -> dict:
    """A JSON log record with nested context merged in (tracing's `fields`, `span`, `spans`)."""
    flat = dict(record)
    nested = [record.get("fields"), record.get("span"), *(record.get("spans") or [])]
    for part in nested:
        if isinstance(part, dict):
            for key, value in part.items():
                flat.setdefault(key, value)
    return flat


def log_level(record: dict) -> str:
    """The record's level in lower case, under whichever common key the worker's logger uses."""
    for key in LEVEL_KEYS:
        if isinstance(record.get(key), str):
            return record[key].lower()
    return ""


def _paths(handle: WorkerHandle, *, stderr_first: bool = False) -> list[Path]:
    paths = (
        [handle.stderr_path, handle.stdout_path] if stderr_first else [handle.stdout_path, handle.stderr_path]
    )
    return [path for path in paths if path is not None and path.exists()]


def output_lines(handle: WorkerHandle) -> list[str]:
    """Every line the worker printed, stdout first, then stderr."""
    lines = []
    for path in _paths(handle):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines


def output_text(handle: WorkerHandle) -> str:
    """Everything the worker printed, stderr first (where a one-line error goes)."""
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace") for path in _paths(handle, stderr_first=True)
    )


def parse_record(line: str) -> dict | None:
    """The flattened JSON log record on `line`, or None when the line is not a JSON object."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return flatten(record) if isinstance(record, dict) else None


def log_records(handle: WorkerHandle) -> list[dict]:
    """The worker's JSON log lines that name an `event`, stdout first, then stderr, each in order."""
    records = (parse_record(line) for line in output_lines(handle))
    return [record for record in records if record is not None and isinstance(record.get("event"), str)]


def wait_for_event(handle: WorkerHandle, event: str, timeout_s: float = LOG_WAIT_S) -> list[dict]:
    """The log records once one with `event` is there (or after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = log_records(handle)
        if any(record["event"] == event for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def settled_lines(handle: WorkerHandle) -> list[str]:
    """The output once it has stopped growing (a job's last line may follow its end event)."""
    deadline = time.monotonic() + LOG_SETTLE_LIMIT_S
    lines = output_lines(handle)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = output_lines(handle)
        if len(now) != len(lines):
            lines, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= LOG_QUIET_S:
            break
    return lines


def events_of(records: list[dict], event: str) -> list[dict]:
    return [record for record in records if record["event"] == event]


def event_listing(records: list[dict]) -> str:
    """The logged event names in order, runs folded: "startup, model_load_progress x5, ready"."""
    names: list[list] = []
    for record in records:
        if names and names[-1][0] == record["event"]:
            names[-1][1] += 1
        else:
            names.append([record["event"], 1])
    return ", ".join(name if count == 1 else f"{name} x{count}" for name, count in names) or "(none)"


def traceback_in(text: str) -> str | None:
    """The traceback in `text` from its marker on (Python, Rust panics and backtraces), or None."""
    for marker in TRACEBACK_MARKERS:
        if marker in text:
            return text[text.index(marker) :]
    return None


def problem_lines(handle: WorkerHandle) -> list[str]:
    """stderr lines, plain stdout lines and error-level log records flattened to text: where a start-up
    error is reported."""
    lines = []
    if handle.stderr_path is not None and handle.stderr_path.exists():
        lines += handle.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()
    if handle.stdout_path is not None and handle.stdout_path.exists():
        lines += [
            line
            for line in handle.stdout_path.read_text(encoding="utf-8", errors="replace").splitlines()
            if not line.lstrip().startswith("{")
        ]
    for record in log_records(handle):
        if record["event"] == "error" or log_level(record) in ERROR_LEVELS:
            lines.append(" ".join(f"{key}={value}" for key, value in record.items()))
    return [line for line in lines if line.strip()]


def problem_keywords(problem: str) -> tuple[str, ...]:
    """The words, any one of which says `problem` (a key of PROBLEM_KEYWORDS, or "the missing key K",
    "the architecture A")."""
    for prefix in NAMED_PROBLEMS:
        if problem.startswith(prefix):
            return (problem.removeprefix(prefix).strip().lower(),)
    if problem not in PROBLEM_KEYWORDS:
        known = [*PROBLEM_KEYWORDS, *(f"{prefix}<name>" for prefix in NAMED_PROBLEMS)]
        raise AssertionError(f"no keywords known for the problem {problem!r}; known: {', '.join(known)}")
    return PROBLEM_KEYWORDS[problem]


def names_file(line: str, path: Path) -> bool:
    return str(path) in line or path.name in line


def command_argument(command: list[str] | None, flag: str) -> str | None:
    """The value given to `flag` in a command line (`--flag value` or `--flag=value`), or None."""
    command = command or []
    for index, token in enumerate(command):
        if token == flag and index + 1 < len(command):
            return command[index + 1]
        if token.startswith(f"{flag}="):
            return token.split("=", 1)[1]
    return None
