"""Steps on device memory: residency, accounting, quantized weights, OOM (M0-SYS-2.2.1, M0-W-1001/1002,
M0-W-1010/1011/1012, M0-W-1020/1021, M0-W-1201, M0-W-1220, M0-W-1825).

The memory budget and the residency fault hook are worker capabilities (`steps/capabilities.py`).
Without a CUDA GPU, device residency and device bytes can be judged only for a worker that declares a
memory budget it enforces: a worker that truthfully reports 0 device bytes and `resident: false` on a
machine without a GPU is not wrong (`device_memory_judged`).
"""

from __future__ import annotations

import math
import re
import threading
import time

import httpx
import pytest
from pytest_bdd import given, parsers, then, when

from steps import verdicts
from steps.capabilities import capability_args, device_memory_judged
from steps.envelope import MIB, memory_envelope
from steps.jobs import send_job
from steps.logs import ERROR_LEVELS, command_argument, log_level, log_records, names_file, problem_lines
from steps.measures import HealthSample, MemoryState, byte_counts
from steps.plugin import Harness
from steps.processes import ProcessState, start_one_off
from steps.serving import serve_role
from steps.state import ScenarioState, new_job_id
from steps.verdicts import not_applicable, require

IDENTITY_FIELDS = ("model", "quant_kind", "vocab_size", "context_length", "tokenizer_kind", "architecture")


# --- Given / When ----------------------------------------------------------------------------------


@given(
    parsers.parse(
        "a worker serving the {model} model with a device-memory budget of its tensor bytes rounded up to a "
        "whole MiB"
    )
)
def worker_with_tight_budget(
    model: str,
    harness: Harness,
    scenario_state: ScenarioState,
    memory_state: MemoryState,
    request: pytest.FixtureRequest,
) -> None:
    """Room for the weights and a short job's KV cache, not for a long job's (M0-W-1021, M0-W-1825)."""
    path = harness.catalogue.resolve(model).path
    mb = math.ceil(memory_envelope(path).tensor_bytes / MIB)
    memory_state.budget_bytes = mb * MIB
    args = capability_args(request.config, "memory_budget", mb=mb, bytes=mb * MIB)
    serve_role(model, args, harness, scenario_state, request)


@given(parsers.parse("a worker serving the {model} model with a residency failure injected"))
def worker_with_residency_fault(
    model: str, harness: Harness, scenario_state: ScenarioState, request: pytest.FixtureRequest
) -> None:
    args = capability_args(request.config, "residency_fault")
    serve_role(model, args, harness, scenario_state, request)


@when("the worker is started with a device-memory budget of half its tensor bytes")
def start_with_half_budget(
    harness: Harness,
    process_state: ProcessState,
    memory_state: MemoryState,
    request: pytest.FixtureRequest,
) -> None:
    """M0-W-1020: the weights cannot fit; the budget is whole MiB, so the file needs >= 2 MiB of tensors."""
    assert process_state.model is not None, (
        "the scenario needs a 'Given the model file of the ... model' step"
    )
    path = process_state.model.path
    tensor_bytes = memory_envelope(path).tensor_bytes
    mb = tensor_bytes // 2 // MIB
    if mb < 1:
        pytest.fail(f"setup error: {path.name} has {tensor_bytes} tensor bytes; this check needs >= 2 MiB")
    memory_state.budget_bytes = mb * MIB
    args = capability_args(request.config, "memory_budget", mb=mb, bytes=mb * MIB)
    start_one_off(
        harness,
        process_state,
        request,
        model_path=path,
        description=f"started with a device-memory budget of {mb} MiB for {tensor_bytes} tensor bytes",
        extra_args=args,
    )


@when(parsers.parse("jobs run while I sample /health every {interval:f} seconds for {seconds:d} seconds"))
def sample_health_during_jobs(
    interval: float, seconds: int, scenario_state: ScenarioState, memory_state: MemoryState
) -> None:
    """M0-W-1002: the model stays resident over time and across requests."""
    stop = threading.Event()
    start = time.monotonic()
    url = scenario_state.url("/health")

    def sample() -> None:
        with httpx.Client(timeout=10.0) as client:
            while not stop.is_set():
                at = time.monotonic() - start
                try:
                    response = client.get(url)
                    body = response.json() if response.content else None
                    memory_state.samples.append(HealthSample(at, response.status_code, body))
                except (httpx.HTTPError, ValueError) as exc:
                    memory_state.samples.append(HealthSample(at, None, None, f"{type(exc).__name__}: {exc}"))
                stop.wait(interval)

    sampler = threading.Thread(target=sample, name="health-sampler", daemon=True)
    sampler.start()
    try:
        while not memory_state.jobs or time.monotonic() - start < seconds:
            scenario_state.job_id = new_job_id()
            body = {"job_id": scenario_state.job_id, "prompt": "Hello", "max_tokens": 8}
            memory_state.jobs.append(send_job(body, scenario_state))
            time.sleep(min(interval, 0.2))
    finally:
        stop.set()
        sampler.join(timeout=15)


# --- Then ------------------------------------------------------------------------------------------


@then("every /health sample shows the model resident and the worker healthy")
def samples_resident(
    memory_state: MemoryState, scenario_state: ScenarioState, spec_ids: str, request: pytest.FixtureRequest
) -> None:
    samples = memory_state.samples
    require(len(samples) >= 2, spec_ids, f"only {len(samples)} /health samples were taken")
    for job in memory_state.jobs:
        verdicts.check_well_formed_job(job, None)
        require(job.events[-1].type == "end", spec_ids, f"a job ended with {job.events[-1].describe()}")
    envelope = memory_envelope(scenario_state.model.path) if scenario_state.model else None
    for sample in samples:
        where = f"/health at {sample.at_s:.1f} s"
        require(
            sample.status_code == 200 and isinstance(sample.body, dict),
            spec_ids,
            f"{where} answered {sample.status_code} {sample.problem or sample.body!r}",
        )
        body = sample.body
        require(body.get("status") == "healthy", spec_ids, f"{where}: status is {body.get('status')!r}")
    unjudged = device_memory_judged(request.config)
    for sample in samples:
        where, body = f"/health at {sample.at_s:.1f} s", sample.body
        used = body.get("vram_bytes_used")
        floor = envelope.lower if envelope else 1
        resident = body.get("resident") is True and isinstance(used, int) and used >= floor
        if not resident and unjudged:
            not_applicable(
                f"{where} reports resident={body.get('resident')!r}, vram_bytes_used={used!r}; {unjudged}"
            )
        require(
            body.get("resident") is True, spec_ids, f"{where}: resident is {body.get('resident')!r}, not true"
        )
        require(
            isinstance(used, int) and used >= floor,
            spec_ids,
            f"{where}: vram_bytes_used is {used!r}, less than the model's weights ({floor} bytes)",
        )


@then("every /health sample describes the same model")
def samples_same_model(memory_state: MemoryState, spec_ids: str) -> None:
    bodies = [sample.body for sample in memory_state.samples if isinstance(sample.body, dict)]
    require(bodies, spec_ids, "no /health sample has a JSON body")
    first = bodies[0]
    for body in bodies[1:]:
        for name in IDENTITY_FIELDS:
            require(
                body.get(name) == first.get(name),
                spec_ids,
                f"/health `{name}` changed from {first.get(name)!r} to {body.get(name)!r}: the model was "
                f"swapped or reloaded",
            )


@then("vram_bytes_used holds the model's tensors in their stored types")
def vram_within_envelope(
    scenario_state: ScenarioState, spec_ids: str, request: pytest.FixtureRequest
) -> None:
    body = scenario_state.body_json()
    require(
        isinstance(body, dict),
        spec_ids,
        f"/health body is not a JSON object: {scenario_state.body[:200]!r}",
    )
    model = scenario_state.model
    assert model is not None
    envelope = memory_envelope(model.path)
    used = body.get("vram_bytes_used")
    require(
        isinstance(used, int) and not isinstance(used, bool),
        spec_ids,
        f"/health vram_bytes_used is {used!r}, not an integer",
    )
    require(
        used <= envelope.upper,
        spec_ids,
        f"/health vram_bytes_used is {used}, more than the quantized weights plus KV cache and scratch "
        f"allow for {model.path.name} ({envelope.describe()}): weights held in a wider type?",
    )
    if used < envelope.lower and (unjudged := device_memory_judged(request.config)):
        not_applicable(
            f"/health vram_bytes_used is {used}, below the tensors of {model.path.name}; {unjudged}"
        )
    require(
        used >= envelope.lower,
        spec_ids,
        f"/health vram_bytes_used is {used}, less than the tensors of {model.path.name} "
        f"({envelope.describe()}): the weights are not all in device memory, or not counted",
    )


@then("the health quant_kind is the file type of the model file")
def quant_kind_is_file_type(scenario_state: ScenarioState, spec_ids: str) -> None:
    body = scenario_state.body_json()
    model = scenario_state.model
    assert model is not None
    expected = model.facts.quant_kind
    got = body.get("quant_kind") if isinstance(body, dict) else None
    require(
        got == expected,
        spec_ids,
        f"/health quant_kind is {got!r}; general.file_type of {model.path.name} says {expected!r} (ERRATA E-04)",
    )


@then(parsers.parse("the job ends with a retriable error event with code {code} after started"))
def job_ends_with_error(code: str, scenario_state: ScenarioState, spec_ids: str) -> None:
    stream = scenario_state.stream
    assert stream is not None, "no job ran in this scenario"
    verdicts.check_well_formed_job(stream, scenario_state.job_id)
    last = stream.events[-1]
    data = last.data or {}
    require(
        last.type == "error" and data.get("code") == code,
        spec_ids,
        f"the job should end with an error event with code {code}; it ended with {last.describe()}: "
        f"{last.raw[:300]!r}; events: [{stream.summary()}]",
    )
    require(
        data.get("retriable") is True,
        spec_ids,
        f"the {code} error has retriable={data.get('retriable')!r}; the worker keeps serving, so a retry can work",
    )


@then("the worker process is still running")
def still_running(scenario_state: ScenarioState, spec_ids: str) -> None:
    worker = scenario_state.worker
    assert worker is not None
    if worker.process is not None:
        time.sleep(0.5)  # a worker that dies after the error gets the moment to do so
        require(
            worker.process.poll() is None,
            spec_ids,
            f"the worker process exited with code {worker.process.poll()} after the error",
        )
    response = httpx.get(scenario_state.url("/health"), timeout=10.0)
    require(
        response.status_code == 200, spec_ids, f"GET /health answered {response.status_code} after the error"
    )


@then(parsers.parse("within {seconds:d} seconds /health reports status unhealthy and resident false"))
def becomes_unhealthy(seconds: int, scenario_state: ScenarioState, spec_ids: str) -> None:
    deadline = time.monotonic() + seconds
    body: object = None
    while time.monotonic() < deadline:
        try:
            body = httpx.get(scenario_state.url("/health"), timeout=5.0).json()
        except (httpx.HTTPError, ValueError) as exc:
            body = f"{type(exc).__name__}: {exc}"
        if isinstance(body, dict) and body.get("status") == "unhealthy" and body.get("resident") is False:
            return
        time.sleep(0.25)
    require(
        False,
        spec_ids,
        f"{seconds} s after a failed residency check /health still says {body!r} "
        f"(expected status unhealthy and resident false)",
    )


@then("the log has a critical error about residency")
def residency_logged(scenario_state: ScenarioState, spec_ids: str) -> None:
    worker = scenario_state.worker
    if worker is None or not worker.spawned:
        not_applicable("the worker's logs are not visible (attach mode)")
    records = log_records(worker)
    critical = [
        record
        for record in records
        if log_level(record) in ERROR_LEVELS
        and "residen" in " ".join(str(value) for value in record.values()).lower()
    ]
    require(
        critical,
        spec_ids,
        f"no critical log line about residency; logged events: {[record['event'] for record in records][-12:]}",
    )


@then("the error output gives the required and available bytes, the GPU id and the model path")
def insufficient_vram_message(process_state: ProcessState, memory_state: MemoryState, spec_ids: str) -> None:
    """M0-W-1020: required bytes, available bytes, GPU id and model path, in one error line or log record."""
    watched = process_state.watched
    assert watched is not None and process_state.model is not None and memory_state.budget_bytes is not None
    path = process_state.model.path
    tensor_bytes = memory_envelope(path).tensor_bytes
    budget = memory_state.budget_bytes
    gpu = watched.handle.gpu
    if gpu is None:
        gpu = command_argument(watched.handle.command, "--gpu-device") or "0"
    gpu_pattern = re.compile(rf"(gpu|cuda|device)[^\d\n]{{0,12}}{re.escape(str(gpu))}\b", re.IGNORECASE)
    lines = problem_lines(watched.handle)
    problems = []
    for line in lines:
        if not names_file(line, path):
            continue
        rest = line.replace(str(path), " ").replace(path.name, " ")
        sizes = byte_counts(rest)
        required = [size for size in sizes if 0.9 * tensor_bytes <= size <= 3 * tensor_bytes]
        available = [size for size in sizes if 0.5 * budget <= size <= 1.05 * budget and size not in required]
        missing = [
            what
            for what, ok in (
                ("the required bytes", required),
                ("the available bytes", available),
                (f"GPU {gpu}", gpu_pattern.search(rest)),
            )
            if not ok
        ]
        if not missing:
            return
        problems.append(f"{line[:300]!r} lacks {', '.join(missing)}")
    require(
        False,
        spec_ids,
        f"no error line names {path.name} with the required ({tensor_bytes}) and available ({budget}) bytes "
        f"and GPU {gpu}: " + ("; ".join(problems[-3:]) or f"lines: {lines[-5:]}"),
    )
