"""Steps on the worker as a process: command line, startup, model files, logs and signals.

M0-W-1100/1101 (CLI), M0-W-1110/1111/1120 (startup), M0-W-1200/1210/1211/1212 (model files),
M0-W-1621/1900 (logs), M0-W-1901/1902 (M1: performance fields and redaction in logs), M0-W-1340/1630
(SIGTERM). The worker is judged only by what any process shows: exit code, stdout/stderr, JSON log lines
and HTTP. Bad model files are made at run time from a fixture model (header bytes patched, or the file
rewritten with gguf-py), so any worker can be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pytest_bdd import given, parsers, then, when

from steps.capabilities import capability_args, device_memory_judged
from steps.models import ModelFile, ModelSetupError
from steps.plugin import Harness, record_worker
from steps.sse import SSEStream
from steps.state import ScenarioState
from steps.step_defs.worker import _serve
from steps.targets import SpawnTarget, WorkerHandle, free_port
from steps.verdicts import not_applicable, require

TRACEBACK_MARKERS = ("Traceback (most recent call last)", "panicked at", "stack backtrace:")
FLAG_PLACEHOLDERS = {
    "--worker-id": "{worker_id}",
    "--model": "{model}",
    "--gpu-device": "{gpu}",
    "--port": "{port}",
}
UNKNOWN_GGML_TYPE = 1000  # no ggml type has this id
LOG_WAIT_S = 5.0  # a log line may be written just after the event it reports (e.g. ready after listen)


# --- Log lines ---------------------------------------------------------------------------------------


def _flatten(record: dict) -> dict:
    """A JSON log record with nested context merged in (tracing's `fields`, `span`, `spans`)."""
    flat = dict(record)
    nested = [record.get("fields"), record.get("span"), *(record.get("spans") or [])]
    for part in nested:
        if isinstance(part, dict):
            for key, value in part.items():
                flat.setdefault(key, value)
    return flat


LEVEL_KEYS = ("level", "lvl", "severity", "levelname", "log.level")  # the spec names no key


def log_level(record: dict) -> str:
    """The record's level in lower case, under whichever common key the worker's logger uses."""
    for key in LEVEL_KEYS:
        if isinstance(record.get(key), str):
            return record[key].lower()
    return ""


def log_records(handle: WorkerHandle) -> list[dict]:
    """The worker's JSON log lines that name an `event`, stdout first, then stderr, each in order."""
    records = []
    for path in (handle.stdout_path, handle.stderr_path):
        if path is None or not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                record = _flatten(record)
                if isinstance(record.get("event"), str):
                    records.append(record)
    return records


def output_text(handle: WorkerHandle) -> str:
    """Everything the worker printed, stderr first (where a one-line error goes)."""
    parts = []
    for path in (handle.stderr_path, handle.stdout_path):
        if path is not None and path.exists():
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def wait_for_event(handle: WorkerHandle, event: str, timeout_s: float = LOG_WAIT_S) -> list[dict]:
    """The log records once one with `event` is there (or after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = log_records(handle)
        if any(record["event"] == event for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def events_of(records: list[dict], event: str) -> list[dict]:
    return [record for record in records if record["event"] == event]


def _event_listing(records: list[dict]) -> str:
    names: list[list] = []
    for record in records:
        if names and names[-1][0] == record["event"]:
            names[-1][1] += 1
        else:
            names.append([record["event"], 1])
    return ", ".join(name if count == 1 else f"{name} x{count}" for name, count in names) or "(none)"


# --- One-off worker processes ----------------------------------------------------------------------


@dataclass
class WatchedProcess:
    """A worker process a scenario expects to exit."""

    handle: WorkerHandle
    description: str  # how it was started or what was done to it, for messages: "after SIGTERM"
    probe_health: bool  # a worker that answers /health has accepted its input (it should have exited)
    since: float = field(default_factory=time.monotonic)


@dataclass
class ProcessState:
    """What one process scenario has set up: the model file, temp files, held ports, the watched process."""

    model: ModelFile | None = None
    watched: WatchedProcess | None = None
    held_sockets: list[socket.socket] = field(default_factory=list)
    one_off: list[WorkerHandle] = field(default_factory=list)

    def close(self) -> None:
        for handle in self.one_off:
            handle.stop()
        for sock in self.held_sockets:
            sock.close()


@pytest.fixture
def process_state() -> Generator[ProcessState]:
    state = ProcessState()
    yield state
    state.close()


def spawn_target(harness: Harness) -> SpawnTarget:
    target = harness.target
    if not isinstance(target, SpawnTarget):
        not_applicable("the harness does not start workers here (attach mode)")
    return target


def start_one_off(
    harness: Harness,
    state: ProcessState,
    request: pytest.FixtureRequest,
    *,
    model_path: str | Path,
    description: str,
    worker_id: str | None = None,
    port: int | str | None = None,
    gpu: int | str | None = None,
    extra_args: tuple[str, ...] = (),
    drop_flag: str | None = None,
) -> WorkerHandle:
    """Starts the worker command once with the given values; the scenario then watches it exit."""
    target = spawn_target(harness)
    port = free_port() if port is None else port
    model = ModelFile("generated", Path(model_path), synthetic=True)
    command = target.command_for(model, port, worker_id or str(uuid.uuid4()), extra_args, gpu=gpu)
    if drop_flag is not None:
        command = _without_flag(command, drop_flag)
    handle = target.launch(command, port=port, model=None, label="process")
    state.one_off.append(handle)
    record_worker(request.node, handle)
    # A worker that answers /health on its port accepted its input; a port outside 1..65535 cannot be probed.
    probe = str(port).isdigit() and 0 < int(port) < 65536
    state.watched = WatchedProcess(handle, description, probe_health=probe)
    return handle


def _without_flag(command: list[str], flag: str) -> list[str]:
    found = [index for index, token in enumerate(command) if token == flag or token.startswith(f"{flag}=")]
    if not found:
        not_applicable(f"the worker command does not pass {flag}, so it cannot be left out")
    index = found[0]
    width = 2 if command[index] == flag else 1  # "--flag value" or "--flag=value"
    return command[:index] + command[index + width :]


def _answers_health(handle: WorkerHandle) -> bool:
    try:
        return httpx.get(f"{handle.base_url}/health", timeout=1.0).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return False


def _resolve_model(harness: Harness, name: str) -> ModelFile:
    try:
        return harness.catalogue.resolve(name)
    except ModelSetupError as exc:
        pytest.fail(f"setup error: {exc}", pytrace=False)


def _model(state: ProcessState) -> ModelFile:
    assert state.model is not None, "the scenario needs a 'Given the model file of the ... model' step"
    return state.model


def _watched(state: ProcessState) -> WatchedProcess:
    assert state.watched is not None, "no worker process was started or signalled yet"
    return state.watched


def _spawned_worker(state: ScenarioState) -> WorkerHandle:
    worker = state.worker
    if worker is None or not worker.spawned:
        not_applicable("the worker was not started by the harness, so its process and logs are not visible")
    return worker


# --- Bad model files -------------------------------------------------------------------------------


def _patched(source: Path, target: Path, offset: int, data: bytes) -> Path:
    shutil.copyfile(source, target)
    with target.open("r+b") as handle:
        handle.seek(offset)
        handle.write(data)
    return target


def _truncated(source: Path, target: Path) -> Path:
    import gguf

    data_start = gguf.GGUFReader(source).data_offset
    size = source.stat().st_size
    with source.open("rb") as handle:
        target.write_bytes(handle.read(data_start + (size - data_start) // 2))
    return target


def _unknown_tensor_type(source: Path, target: Path) -> Path:
    import gguf

    shutil.copyfile(source, target)
    reader = gguf.GGUFReader(target, "r+")
    reader.tensors[0].field.parts[4][0] = UNKNOWN_GGML_TYPE  # the tensor info's ggml type
    reader.data.flush()
    del reader
    return target


def _rewritten(
    source: Path, target: Path, *, architecture: str | None = None, drop: str | None = None, tensors: int = 0
) -> Path:
    """The model rewritten with gguf-py: another architecture (keys renamed along), a key left out, or
    padded with small F32 tensors up to `tensors` tensors."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(source)
    old_arch = str(reader.get_field("general.architecture").contents())
    new_arch = architecture or old_arch
    writer = gguf.GGUFWriter(target, arch=new_arch, endianess=reader.endianess)
    for item in reader.fields.values():
        name = item.name
        if name == "general.architecture" or name.startswith("GGUF.") or name == drop:
            continue
        if name.startswith(f"{old_arch}."):
            name = new_arch + name[len(old_arch) :]
        value_type = item.types[0]
        sub_type = item.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, item.contents(), value_type, sub_type=sub_type)
    extra = max(0, tensors - len(reader.tensors))
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    padding = np.zeros(8, dtype=np.float32)
    for index in range(extra):
        writer.add_tensor_info(
            f"conformance.extra.{index}.weight", padding.shape, padding.dtype, padding.nbytes
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    for _ in range(extra):
        writer.write_tensor_data(padding)
    writer.close()
    return target


_CHANGES = [
    (
        re.compile(r"with GGUF version (\d+)"),
        lambda s, t, m: _patched(s, t, 4, int(m[1]).to_bytes(4, "little")),
    ),
    (re.compile(r"with the magic number (\S{4})"), lambda s, t, m: _patched(s, t, 0, m[1].encode("ascii"))),
    (re.compile(r"cut off in the middle of its tensor data"), lambda s, t, m: _truncated(s, t)),
    (re.compile(r"with an unknown tensor type"), lambda s, t, m: _unknown_tensor_type(s, t)),
    (re.compile(r"with (\d+) tensors"), lambda s, t, m: _rewritten(s, t, tensors=int(m[1]))),
    (
        re.compile(r"with general\.architecture set to (\S+)"),
        lambda s, t, m: _rewritten(s, t, architecture=m[1]),
    ),
    (re.compile(r"without the key (\S+)"), lambda s, t, m: _rewritten(s, t, drop=m[1])),
]


def make_bad_copy(source: Path, directory: Path, change: str) -> Path:
    target = directory / source.name
    for pattern, make in _CHANGES:
        match = pattern.fullmatch(change)
        if match:
            return make(source, target, match)
    raise AssertionError(f"unknown change {change!r}; known: {', '.join(p.pattern for p, _ in _CHANGES)}")


# --- Given / When ----------------------------------------------------------------------------------


@given(parsers.parse("the model file of the {model} model"))
def model_file(
    model: str, harness: Harness, process_state: ProcessState, scenario_state: ScenarioState
) -> None:
    process_state.model = scenario_state.model = _resolve_model(harness, model)


@when(parsers.parse("the worker is started with {flag} set to {value}"))
def start_with_bad_value(
    flag: str,
    value: str,
    harness: Harness,
    process_state: ProcessState,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """M0-W-1100: one value replaced; the others are the ones a correct start would use."""
    model = _model(process_state)
    model_path: str | Path = model.path
    worker_id: str | None = None
    gpu: str | None = None
    port: int | str | None = None
    if flag == "--worker-id":
        worker_id = value
    elif flag == "--model":
        model_path = _model_value(value, model, harness, tmp_path)
    elif flag == "--gpu-device":
        gpu = value
    elif flag == "--port":
        port = _port_value(value, process_state)
    else:
        raise AssertionError(
            f"no bad value known for {flag}; use --worker-id, --model, --gpu-device or --port"
        )
    start_one_off(
        harness,
        process_state,
        request,
        model_path=model_path,
        description=f"started with {flag} set to {value}",
        worker_id=worker_id,
        gpu=gpu,
        port=port,
    )


def _model_value(value: str, model: ModelFile, harness: Harness, tmp_path: Path) -> str:
    if value == "a relative path to the model":
        cwd = spawn_target(harness).config.cwd or Path.cwd()
        return os.path.relpath(model.path, cwd)
    if value == "a path that does not exist":
        return str(tmp_path / "no-such-dir" / model.path.name)
    if value == "a copy of the model named model.bin":
        return str(shutil.copyfile(model.path, tmp_path / "model.bin"))
    return value


def _port_value(value: str, state: ProcessState) -> int | str:
    if value != "a port that is in use":
        return value
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    sock.listen(1)
    state.held_sockets.append(sock)
    return sock.getsockname()[1]


@given(parsers.parse("a worker serving the {model} model started with the optional flags of M0-W-1101"))
def worker_with_optional_flags(
    model: str, harness: Harness, scenario_state: ScenarioState, request: pytest.FixtureRequest
) -> None:
    """M0-W-1101 is a MAY: a worker that has the optional flags declares them (`optional_flags`)."""
    args = capability_args(
        request.config, "optional_flags", max_tokens_in=256, max_tokens_out=64, timeout_s=120, kv_cache_mb=16
    )
    _serve(model, args, harness, scenario_state, request)


@when(parsers.parse("the worker is started without {flag}"))
def start_without_flag(
    flag: str, harness: Harness, process_state: ProcessState, request: pytest.FixtureRequest
) -> None:
    model = _model(process_state)
    start_one_off(
        harness,
        process_state,
        request,
        model_path=model.path,
        description=f"started without {flag}",
        drop_flag=flag,
    )


@when(parsers.parse("the worker is started on a copy of the model {change}"))
def start_on_bad_copy(
    change: str, harness: Harness, process_state: ProcessState, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path = make_bad_copy(_model(process_state).path, tmp_path, change)
    start_one_off(
        harness, process_state, request, model_path=path, description=f"started on a model file {change}"
    )


@when(parsers.parse("the worker is started on a text file named {name}"))
def start_on_text_file(
    name: str, harness: Harness, process_state: ProcessState, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text("This is not a model file.\n" * 64, encoding="utf-8")
    start_one_off(
        harness, process_state, request, model_path=path, description=f"started on a text file named {name}"
    )


@when("I send SIGTERM to the worker")
def send_sigterm(scenario_state: ScenarioState, process_state: ProcessState) -> None:
    worker = _spawned_worker(scenario_state)
    assert worker.process is not None
    os.kill(worker.process.pid, signal.SIGTERM)
    process_state.watched = WatchedProcess(worker, "after SIGTERM", probe_health=False)


# --- Then: exit, error output ----------------------------------------------------------------------


@then(parsers.parse("the worker exits with code {code:d} within {seconds:d} seconds"))
def exits_with(code: int, seconds: int, process_state: ProcessState, spec_ids: str) -> None:
    _wait_for_exit(process_state, seconds, spec_ids, f"exit code {code}", lambda status: status == code)


@then(parsers.parse("the worker exits with a non-zero code within {seconds:d} seconds"))
def exits_non_zero(seconds: int, process_state: ProcessState, spec_ids: str) -> None:
    """A usage error (a missing or malformed flag): the spec asks that every value be validated (M0-W-1100)
    and fixes exit code 1 only for initialisation and load failures (M0-W-1110, M0-W-1210); a CLI library
    that exits 2 on usage errors is as correct (ERRATA E-26)."""
    _wait_for_exit(process_state, seconds, spec_ids, "a non-zero exit code", lambda status: status != 0)


def _wait_for_exit(
    process_state: ProcessState, seconds: int, spec_ids: str, expected: str, accept: Callable[[int], bool]
) -> None:
    watched = _watched(process_state)
    process = watched.handle.process
    assert process is not None
    deadline = watched.since + seconds
    next_probe = time.monotonic() + 0.5
    while process.poll() is None and time.monotonic() < deadline:
        if watched.probe_health and time.monotonic() >= next_probe:
            require(
                not _answers_health(watched.handle),
                spec_ids,
                f"{watched.description}, the worker came up and answered GET /health 200 "
                f"instead of exiting with {expected}",
            )
            next_probe = time.monotonic() + 0.5
        time.sleep(0.05)
    status = process.poll()
    waited = time.monotonic() - watched.since
    require(
        status is not None,
        spec_ids,
        f"{watched.description}, the worker was still running after {seconds} s (expected {expected})",
    )
    require(
        accept(status),
        spec_ids,
        f"{watched.description}, the worker exited with code {status} after {waited:.1f} s, "
        f"not {expected}; output: {output_text(watched.handle)[-600:]!r}",
    )


def _flag_names(flag: str) -> tuple[str, ...]:
    bare = flag.lstrip("-")
    return (flag, bare, bare.replace("-", "_"))


@then(parsers.parse("the error output names the flag {flag}"))
def output_names_flag(flag: str, process_state: ProcessState, spec_ids: str) -> None:
    text = output_text(_watched(process_state).handle)
    require(
        any(name in text for name in _flag_names(flag)),
        spec_ids,
        f"the error output does not name {flag}: {text[-600:]!r}",
    )


@then("the worker printed no traceback")
def no_traceback(process_state: ProcessState, spec_ids: str) -> None:
    text = output_text(_watched(process_state).handle)
    for marker in TRACEBACK_MARKERS:
        require(
            marker not in text,
            spec_ids,
            f"the worker printed a traceback ({marker!r}) instead of a one-line error: "
            f"{text[text.index(marker) :][:800] if marker in text else ''!r}",
        )


def problem_lines(handle: WorkerHandle) -> list[str]:
    """stderr lines, and error-level log records flattened to text: where a startup error is reported."""
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
        if record["event"] == "error" or log_level(record) in ("error", "critical", "fatal"):
            lines.append(" ".join(f"{key}={value}" for key, value in record.items()))
    return [line for line in lines if line.strip()]


def names_file(line: str, path: Path) -> bool:
    return str(path) in line or path.name in line


@then(parsers.parse("a line of the error output names the model file and one of: {keywords}"))
def output_names_file_and_problem(keywords: str, process_state: ProcessState, spec_ids: str) -> None:
    watched = _watched(process_state)
    model_arg = _model_argument(watched.handle)
    words = [word.strip().lower() for word in keywords.split(",") if word.strip()]
    lines = problem_lines(watched.handle)
    naming = [line for line in lines if names_file(line, model_arg)]
    require(naming, spec_ids, f"no error line names the model file {model_arg.name}: {lines[-5:]}")
    for line in naming:
        rest = line.replace(str(model_arg), " ").replace(model_arg.name, " ").lower()
        if any(word in rest for word in words):
            return
    raise_text = "; ".join(naming[-3:])
    require(
        False, spec_ids, f"the error naming {model_arg.name} does not say {' or '.join(words)}: {raise_text}"
    )


def _model_argument(handle: WorkerHandle) -> Path:
    command = handle.command or []
    for index, token in enumerate(command):
        if token == "--model" and index + 1 < len(command):
            return Path(command[index + 1])
        if token.startswith("--model="):
            return Path(token.split("=", 1)[1])
    raise AssertionError(f"the worker command has no --model: {command}")


# --- Then: logs ------------------------------------------------------------------------------------


def _log_handle(process_state: ProcessState, scenario_state: ScenarioState) -> WorkerHandle:
    if process_state.watched is not None:
        return process_state.watched.handle
    return _spawned_worker(scenario_state)


@then(parsers.parse("the log has the events {names} in this order"))
def events_in_order(
    names: str, process_state: ProcessState, scenario_state: ScenarioState, spec_ids: str
) -> None:
    wanted = [name.strip() for name in names.split(",")]
    handle = _log_handle(process_state, scenario_state)
    records = wait_for_event(handle, wanted[-1])
    position = -1
    for name in wanted:
        found = [
            index for index, record in enumerate(records) if record["event"] == name and index > position
        ]
        require(
            found,
            spec_ids,
            f"no JSON log line with event {name!r}"
            + (f" after {wanted[wanted.index(name) - 1]!r}" if position >= 0 else "")
            + f"; logged events: {_event_listing(records)}",
        )
        position = found[0]


@then("every log event carries the worker's context: worker_id, model_ref, gpu_device")
def events_carry_context(process_state: ProcessState, scenario_state: ScenarioState, spec_ids: str) -> None:
    handle = _log_handle(process_state, scenario_state)
    records = log_records(handle)
    require(records, spec_ids, "the worker wrote no JSON log line with an `event` field")
    worker_id = handle.worker_id or _argument(handle, "--worker-id")
    gpu = handle.gpu if handle.gpu is not None else _argument(handle, "--gpu-device")
    for record in records:
        where = f"log event {record['event']!r}"
        require(
            record.get("worker_id") == worker_id,
            spec_ids,
            f"{where} has worker_id {record.get('worker_id')!r}, the worker was started with {worker_id!r}",
        )
        model_ref = record.get("model_ref")
        require(isinstance(model_ref, str) and model_ref, spec_ids, f"{where} has no model_ref: {record}")
        require(
            str(record.get("gpu_device")) == str(gpu),
            spec_ids,
            f"{where} has gpu_device {record.get('gpu_device')!r}, the worker was started with {gpu}",
        )


def _argument(handle: WorkerHandle, flag: str) -> str | None:
    command = handle.command or []
    for index, token in enumerate(command[:-1]):
        if token == flag:
            return command[index + 1]
    return None


@then("the job's execute_start and execute_end log events carry its job_id")
def job_events_carry_job_id(scenario_state: ScenarioState, spec_ids: str) -> None:
    handle = _spawned_worker(scenario_state)
    job_id = scenario_state.job_id
    assert job_id is not None, "no job ran in this scenario"
    records = wait_for_event(handle, "execute_end")
    for name in ("execute_start", "execute_end"):
        mine = [record for record in events_of(records, name) if record.get("job_id") == job_id]
        require(
            len(mine) == 1,
            spec_ids,
            f"expected one {name} log event with job_id {job_id!r}, found {len(mine)}; "
            f"job ids on {name}: {[record.get('job_id') for record in events_of(records, name)]}",
        )


@then(parsers.parse("the log has model_load_progress events at {percents} percent, in this order"))
def load_progress(percents: str, scenario_state: ScenarioState, spec_ids: str) -> None:
    wanted = [int(value) for value in re.findall(r"\d+", percents)]
    records = wait_for_event(_spawned_worker(scenario_state), "ready")
    progress = events_of(records, "model_load_progress")
    seen = [record.get("percent") for record in progress]
    require(progress, spec_ids, f"no model_load_progress log event; logged events: {_event_listing(records)}")
    numbers = [value for value in seen if isinstance(value, int | float) and not isinstance(value, bool)]
    require(
        len(numbers) == len(seen),
        spec_ids,
        f"model_load_progress `percent` values are not all numbers: {seen}",
    )
    require(numbers == sorted(numbers), spec_ids, f"model_load_progress percents go backwards: {seen}")
    missing = [value for value in wanted if value not in numbers]
    require(not missing, spec_ids, f"model_load_progress never reported {missing} percent; reported: {seen}")


@then("the log has a ready event with the worker id and vram_bytes")
def ready_event(scenario_state: ScenarioState, spec_ids: str, request: pytest.FixtureRequest) -> None:
    handle = _spawned_worker(scenario_state)
    records = wait_for_event(handle, "ready")
    ready = events_of(records, "ready")
    require(ready, spec_ids, f"no `ready` log event; logged events: {_event_listing(records)}")
    record = ready[0]
    if handle.worker_id is not None:
        require(
            record.get("worker_id") == handle.worker_id,
            spec_ids,
            f"ready has worker_id {record.get('worker_id')!r}, the worker was started with {handle.worker_id!r}",
        )
    vram = record.get("vram_bytes")
    require(
        isinstance(vram, int) and not isinstance(vram, bool) and vram >= 0,
        spec_ids,
        f"ready has vram_bytes {vram!r}, not a byte count: {record}",
    )
    if device_memory_judged(request.config) is None:  # 0 is the truth on a machine without a device
        require(vram > 0, spec_ids, f"ready has vram_bytes 0, yet the weights are in device memory: {record}")


@then(parsers.parse("the start-to-ready time is reported and is at most {seconds:d} seconds"))
def ready_in_time(seconds: int, scenario_state: ScenarioState, request: pytest.FixtureRequest) -> None:
    """M0-W-1120 is a SHOULD: the time is reported (user property `start_to_ready_s`); only > limit fails."""
    handle = _spawned_worker(scenario_state)
    took = handle.ready_after_s
    if took is None:
        not_applicable("the harness did not time this worker's start")
    request.node.user_properties.append(("start_to_ready_s", round(took, 2)))
    require(took <= seconds, "M0-W-1120", f"start to ready took {took:.1f} s (limit {seconds} s)")


@then("the log has an error event")
def error_event(process_state: ProcessState, scenario_state: ScenarioState, spec_ids: str) -> None:
    handle = _log_handle(process_state, scenario_state)
    records = log_records(handle)
    require(
        events_of(records, "error"),
        spec_ids,
        f"no `error` log event; logged events: {_event_listing(records)}",
    )


@then("the last log event is shutdown")
def shutdown_last(process_state: ProcessState, scenario_state: ScenarioState, spec_ids: str) -> None:
    records = log_records(_log_handle(process_state, scenario_state))
    require(
        records and records[-1]["event"] == "shutdown",
        spec_ids,
        f"the last JSON log event is not `shutdown`; logged events: {_event_listing(records)}",
    )


@then("the health body reports the architecture of the model file if it has such a field")
def health_architecture(scenario_state: ScenarioState) -> None:
    """ERRATA E-10: `architecture` is not a required field; when present it must be the file's."""
    body = scenario_state.body_json()
    assert scenario_state.model is not None
    expected = scenario_state.model.facts.architecture
    if isinstance(body, dict) and "architecture" in body:
        require(
            str(body["architecture"]).lower() == expected,
            "M0-W-1212",
            f"/health architecture is {body['architecture']!r}; general.architecture of "
            f"{scenario_state.model.path.name} is {expected!r}",
        )


# --- Then: performance fields and redaction (M1) ---------------------------------------------------

LEAK_MIN_CHARS = 8  # generated text shorter than this could appear in a log line by chance
PROMPT_WORD_MIN_CHARS = 10  # a prompt word this long is distinctive: a log line quoting it leaks the prompt
PROMPT_LENGTH_KEYS = ("prompt_chars", "prompt_length", "prompt_len", "prompt_bytes")


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _millis(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _check_tokens_in(value: object, stream: SSEStream) -> str | None:
    count = _count(value)
    if count is None or count < 1:
        return f"is {value!r}, not a positive integer (the prompt has tokens)"
    started = stream.of_type("started")
    counted = started[0].data.get("prompt_tokens") if started and started[0].data else None
    if _count(counted) is not None and counted != count:
        return f"is {count}, but the started event says prompt_tokens {counted}"
    return None


def _check_tokens_out(value: object, stream: SSEStream) -> str | None:
    streamed = len(stream.of_type("token"))
    if _count(value) != streamed:
        return f"is {value!r}, but the stream has {streamed} token events"
    return None


def _check_millis(value: object, stream: SSEStream) -> str | None:
    millis = _millis(value)
    return None if millis is not None and millis >= 0 else f"is {value!r}, not a non-negative number"


def _check_vram_bytes(value: object, stream: SSEStream) -> str | None:
    count = _count(value)
    return None if count is not None and count > 0 else f"is {value!r}, not a positive integer"


PERFORMANCE_FIELDS = {  # M0-W-1901: field -> check of its value against the job's stream
    "tokens_in": _check_tokens_in,
    "tokens_out": _check_tokens_out,
    "decode_time_ms": _check_millis,
    "first_token_ms": _check_millis,
    "vram_bytes": _check_vram_bytes,
}


def _job_stream(scenario_state: ScenarioState) -> SSEStream:
    stream = scenario_state.stream
    assert stream is not None and scenario_state.job_id is not None, "no job ran in this scenario"
    return stream


def _job_event(scenario_state: ScenarioState, event: str, spec_ids: str) -> dict:
    """The one `event` log record with the scenario's job_id."""
    job_id = scenario_state.job_id
    records = wait_for_event(_spawned_worker(scenario_state), "execute_end")
    mine = [record for record in events_of(records, event) if record.get("job_id") == job_id]
    require(
        len(mine) == 1,
        spec_ids,
        f"expected one {event} log event with job_id {job_id!r}, found {len(mine)}; "
        f"logged events: {_event_listing(records)}",
    )
    return mine[0]


def _job_prompt(scenario_state: ScenarioState) -> str:
    body = scenario_state.request_body
    assert isinstance(body, dict) and isinstance(body.get("prompt"), str), "no job with a prompt ran"
    return body["prompt"]


@then(parsers.parse("the job's execute_end log event has the performance fields {names}"))
def execute_end_performance_fields(names: str, scenario_state: ScenarioState, spec_ids: str) -> None:
    stream = _job_stream(scenario_state)
    record = _job_event(scenario_state, "execute_end", spec_ids)
    for name in (part.strip() for part in names.split(",")):
        assert name in PERFORMANCE_FIELDS, f"no check for {name!r}; known: {', '.join(PERFORMANCE_FIELDS)}"
        require(name in record, spec_ids, f"the job's execute_end log event has no {name}: {record}")
        problem = PERFORMANCE_FIELDS[name](record[name], stream)
        require(problem is None, spec_ids, f"execute_end {name} {problem}: {record}")


def _strings(value: object) -> list[str]:
    """Every string inside a JSON value: a log line's fields as written, escapes undone."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _output_lines(handle: WorkerHandle) -> list[tuple[str, list[str]]]:
    """Each line the worker printed (stdout, then stderr), with the texts to search in it: the line
    itself and, for a JSON line, each string value (so JSON escapes cannot hide a copy)."""
    lines = []
    for path in (handle.stdout_path, handle.stderr_path):
        if path is None or not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            texts = [line]
            if line.lstrip().startswith("{"):
                try:
                    texts += _strings(json.loads(line))
                except json.JSONDecodeError:
                    pass
            lines.append((line, texts))
    return lines


@then("no log line contains the job's prompt or its generated text")
def nothing_leaks(scenario_state: ScenarioState, spec_ids: str) -> None:
    stream = _job_stream(scenario_state)
    prompt = _job_prompt(scenario_state)
    secrets = {"the prompt": prompt}
    for word in prompt.split():
        if len(word) >= PROMPT_WORD_MIN_CHARS:
            secrets[f"the prompt's word {word!r}"] = word
    generated = "".join(str((event.data or {}).get("t", "")) for event in stream.of_type("token")).strip()
    if len(generated) >= LEAK_MIN_CHARS:
        secrets["the generated text"] = generated
    handle = _spawned_worker(scenario_state)
    wait_for_event(handle, "execute_end")
    for number, (line, texts) in enumerate(_output_lines(handle), start=1):
        for what, secret in secrets.items():
            require(
                not any(secret in text for text in texts),
                spec_ids,
                f"{what} ({secret[:80]!r}) is in output line {number}: {line[:300]!r}",
            )


@then("the job's execute_start log event carries the SHA-256 and the length of its prompt")
def execute_start_prompt_digest(scenario_state: ScenarioState, spec_ids: str) -> None:
    prompt = _job_prompt(scenario_state)
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    record = _job_event(scenario_state, "execute_start", spec_ids)
    hashes = [text.lower().removeprefix("sha256:") for text in _strings(record)]
    require(
        digest in hashes,
        spec_ids,
        f"the job's execute_start log event has no field with the prompt's SHA-256 {digest}: {record}",
    )
    lengths = {len(prompt), len(prompt.encode("utf-8"))}
    named = {key: record[key] for key in PROMPT_LENGTH_KEYS if key in record}
    require(
        any(_count(value) in lengths for value in named.values()),
        spec_ids,
        f"the job's execute_start log event has no prompt length ({' or '.join(PROMPT_LENGTH_KEYS)} "
        f"= {len(prompt)} characters or {len(prompt.encode('utf-8'))} bytes): {record}",
    )
