"""Steps on the worker's lifecycle: a fresh start, the GPU context, the load flow, one job at a time and
the pure decode loop (M0-W-1820, M0-W-1400, M0-W-1010, M0-W-1401, M0-W-1410, M0-W-1301, M0-SEAM-PURE-LOOP).

Everything is judged from outside the worker:
- the GPU context through `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader`: the
  worker's process (or one of its children) holds device memory while it serves, and none does once it
  has exited. When nvidia-smi cannot see the processes of this machine's PID namespace (containers), the
  check is not applicable, with that reason;
- the load flow through the `model_load_progress` log events (bytes copied, where the worker reports them);
- one job at a time through the arrival times of two concurrent streams;
- the pure decode loop through the number of log lines a short and a long job add.
"""

from __future__ import annotations

import re
import time

from pytest_bdd import given, parsers, then, when

from steps import verdicts
from steps.contention import check_clients, client_job, send_at_once
from steps.envelope import memory_envelope
from steps.jobs import (
    READ_TIMEOUT_S,
    ClockedJob,
    JobRuns,
    busy_refusal,
    clocked_job,
    finished_runs,
    run_job,
    send_job,
    settle_after_own_jobs,
)
from steps.logs import settled_lines, wait_for_event
from steps.measures import LoggedJob, LogState
from steps.nvidia_smi import compute_apps, worker_apps
from steps.plugin import Harness
from steps.processes import spawn_target, spawned_worker
from steps.serving import serve_role
from steps.state import ScenarioState, new_job_id
from steps.verdicts import is_number, not_applicable, require

# --- A fresh worker --------------------------------------------------------------------------------


@given(parsers.parse("a freshly started worker serving the {model} model"))
def fresh_worker(model: str, harness: Harness, scenario_state: ScenarioState, request) -> None:
    """Stops the workers the harness runs, then starts one for this scenario: the start is part of it."""
    spawn_target(harness).close()
    serve_role(model, (), harness, scenario_state, request)


# --- The GPU context seen by nvidia-smi (M0-W-1400, M0-W-1010, M0-W-1401) ----------------------------


@then("/health reports the CUDA device the worker was started on, where it reports a device")
def health_reports_cuda(scenario_state: ScenarioState, spec_ids: str, request) -> None:
    """M0-W-1400. `device`, `sm` and `cuda_runtime_version` are optional /health fields: an absent one is
    not judged (listed in the user property `not_reported`); a present one must describe the CUDA device."""
    worker = spawned_worker(scenario_state)
    body = scenario_state.get_health(spec_ids)
    absent = [name for name in ("device", "sm", "cuda_runtime_version") if body.get(name) is None]
    if absent:
        request.node.user_properties.append(("not_reported", ", ".join(absent)))
    device = body.get("device")
    if device is not None:
        text = str(device).lower()
        require(text.startswith("cuda"), spec_ids, f"/health device is {device!r}, not a CUDA device")
        index = text.partition(":")[2]
        if index.isdigit() and worker.gpu is not None:
            require(
                int(index) == int(worker.gpu),
                spec_ids,
                f"/health device is {device!r}; the worker was started with --gpu-device {worker.gpu}",
            )
    for name in ("sm", "cuda_runtime_version"):
        value = body.get(name)
        if value is not None:
            require(
                isinstance(value, str) and re.search(r"\d", value),
                spec_ids,
                f"/health {name} is {value!r}, not a version such as '9.0' or '12.4'",
            )


@then("nvidia-smi lists the worker's process holding at least the model's tensor bytes")
def context_holds_weights(scenario_state: ScenarioState, spec_ids: str) -> None:
    """M0-W-1010: the weights are in device memory, so the worker's CUDA context holds at least their bytes.
    A CUDA context alone takes hundreds of MiB: this only has teeth for real model files (--model-dir)."""
    worker = spawned_worker(scenario_state)
    assert scenario_state.model is not None
    mine = worker_apps(worker, spec_ids)
    sizes = [app.used_bytes for app in mine if app.used_bytes is not None]
    if not sizes:
        not_applicable("nvidia-smi does not report the used memory of the worker's process here")
    tensor_bytes = memory_envelope(scenario_state.model.path).tensor_bytes
    require(
        sum(sizes) >= tensor_bytes,
        spec_ids,
        f"the worker's CUDA context holds {sum(sizes)} bytes (nvidia-smi), less than the "
        f"{tensor_bytes} tensor bytes of {scenario_state.model.path.name}: the weights are not all in "
        "device memory",
    )


@when("I note the worker's processes that hold a CUDA context", target_fixture="context_pids")
def note_context(scenario_state: ScenarioState, spec_ids: str) -> set[int]:
    return {app.pid for app in worker_apps(spawned_worker(scenario_state), spec_ids)}


@then(parsers.parse("within {seconds:d} seconds nvidia-smi lists none of those processes"))
def context_released(seconds: int, context_pids: set[int], spec_ids: str) -> None:
    """M0-W-1401: once the worker has exited, no process of it holds a CUDA context."""
    assert context_pids, "no CUDA context was noted before the worker stopped"
    deadline = time.monotonic() + seconds
    while True:
        left = [app for app in compute_apps() if app.pid in context_pids]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    require(
        not left,
        spec_ids,
        f"{seconds} s after the worker exited nvidia-smi still lists a CUDA context of it: "
        f"{[(app.pid, app.used_bytes) for app in left]}",
    )


# --- The load flow (M0-W-1410) ------------------------------------------------------------------------


@then("the model_load_progress events count the bytes copied up to the total, where they report bytes")
def progress_counts_bytes(scenario_state: ScenarioState, spec_ids: str, request) -> None:
    """M0-W-1410: one pass mmap -> parse -> allocate -> copy; the progress events are its outside view.
    Percent never goes back; where the events carry `bytes_loaded`/`bytes_total` (extra fields the spec
    allows), the bytes only grow, never run ahead of or past the total, end at the total, and the total
    lies between the file's tensor bytes and its size. Without byte fields only the percent order counts
    (user property `not_reported`)."""
    worker = spawned_worker(scenario_state)
    assert scenario_state.model is not None
    progress = [
        record
        for record in wait_for_event(worker, "ready", timeout_s=10.0)
        if record["event"] == "model_load_progress"
    ]
    require(progress, spec_ids, "no model_load_progress log event: the load flow is not visible")
    percents = [record.get("percent") for record in progress]
    require(
        all(is_number(p) for p in percents) and percents == sorted(percents),
        spec_ids,
        f"model_load_progress percents are not numbers in order: {percents}",
    )
    with_bytes = [record for record in progress if "bytes_loaded" in record or "bytes_total" in record]
    if not with_bytes:
        request.node.user_properties.append(("not_reported", "bytes_loaded, bytes_total"))
        return
    loaded = [record.get("bytes_loaded") for record in with_bytes]
    totals = {record.get("bytes_total") for record in with_bytes}
    listing = [
        (record.get("percent"), record.get("bytes_loaded"), record.get("bytes_total"))
        for record in with_bytes
    ]
    require(
        all(is_number(value) for value in loaded) and len(totals) == 1 and is_number(next(iter(totals))),
        spec_ids,
        f"model_load_progress (percent, bytes_loaded, bytes_total) are not numbers with one total: {listing}",
    )
    total = next(iter(totals))
    require(loaded == sorted(loaded), spec_ids, f"bytes_loaded goes backwards: {listing}")
    require(
        loaded[-1] == total and all(0 <= value <= total for value in loaded),
        spec_ids,
        f"bytes_loaded must stay within 0..bytes_total and end at it: {listing}",
    )
    for record in with_bytes:
        require(
            record["bytes_loaded"] * 100 >= (record["percent"] - 1) * total,
            spec_ids,
            f"progress reports {record['percent']} % with only {record['bytes_loaded']} of {total} bytes "
            f"copied: {listing}",
        )
    path = scenario_state.model.path
    tensor_bytes = memory_envelope(path).tensor_bytes
    require(
        tensor_bytes <= total <= path.stat().st_size,
        spec_ids,
        f"bytes_total is {total}; {path.name} holds {tensor_bytes} tensor bytes in a file of "
        f"{path.stat().st_size} bytes, so the load did not copy the file's tensors once",
    )


# --- One job at a time (M0-W-1301) -------------------------------------------------------------------


@given(
    parsers.parse('a first job with prompt "{prompt}" and max_tokens {max_tokens:d} is streaming tokens'),
    target_fixture="first_job",
)
def first_job_streaming(prompt: str, max_tokens: int, scenario_state: ScenarioState) -> ClockedJob:
    first = clocked_job(scenario_state, prompt, max_tokens)
    first.wait(lambda: bool(first.of_type("token", "end", "error")), READ_TIMEOUT_S)
    verdicts.check_streaming(first.stream, first.failure)
    return first


@when(
    parsers.parse('a second job with prompt "{prompt}" and max_tokens {max_tokens:d} is sent'),
    target_fixture="second_job",
)
def send_second_job(
    prompt: str, max_tokens: int, first_job: ClockedJob, scenario_state: ScenarioState, spec_ids: str
) -> ClockedJob:
    second = clocked_job(scenario_state, prompt, max_tokens)
    for job in (second, first_job):
        require(job.join(READ_TIMEOUT_S * 2), spec_ids, f"a job did not finish: {job.describe()}")
    return second


@then("the second job was refused as busy or ran only after the first had ended")
def one_job_at_a_time(first_job: ClockedJob, second_job: ClockedJob, spec_ids: str) -> None:
    """M0-W-1301: batch 1, no concurrent inference. A second job is refused with a retriable error (503, or
    a stream holding only a retriable error event), or queued: none of its tokens arrives before the first
    job's terminal event."""
    first, second = first_job, second_job
    require(first.stream is not None, spec_ids, f"the first job got no response: {first.failure}")
    verdicts.check_well_formed_job(first.stream, first.body["job_id"])
    first_end = first.of_type("end", "error")[-1].at
    if first_end <= second.sent_at:
        not_applicable(
            f"the first job ended ({first.describe()}) before the second was sent, so they never overlapped"
        )
    require(second.stream is not None, spec_ids, f"the second job got no response: {second.failure}")
    if busy_refusal(second) is not None:
        return
    require(
        second.stream.status_code == 200,
        spec_ids,
        f"the second job was answered {second.describe()}: neither a busy refusal (503) nor a stream",
    )
    verdicts.check_well_formed_job(second.stream, second.body["job_id"])
    tokens = second.of_type("token")
    overlap = [timed for timed in tokens if timed.at < first_end]
    if overlap:
        raise verdicts.RequirementViolation(
            spec_ids,
            f"{len(overlap)} of the second job's {len(tokens)} tokens arrived while the first job was still "
            f"streaming (the first of them {(first_end - overlap[0].at) * 1000:.0f} ms before its terminal "
            f"event): two generations ran at once; first: {first.describe()}, second: {second.describe()}",
        )


@when(
    parsers.parse(
        "{count:d} greedy jobs with prompts of their own and max_tokens {max_tokens:d} are run one after another"
    )
)
def jobs_run_alone(count: int, max_tokens: int, scenario_state: ScenarioState, job_runs: JobRuns) -> None:
    for index in range(count):
        run_job(client_job(index, max_tokens), scenario_state, job_runs)


@when("the same jobs are sent by as many clients at once", target_fixture="client_jobs")
def jobs_sent_at_once(scenario_state: ScenarioState, job_runs: JobRuns, spec_ids: str) -> list[ClockedJob]:
    alone = finished_runs(job_runs.runs, spec_ids)
    bodies = [{key: value for key, value in run.body.items() if key != "job_id"} for run in alone]
    clients = send_at_once(scenario_state, bodies)
    for job in clients:
        require(job.join(READ_TIMEOUT_S * 2), spec_ids, f"a client's job did not finish: {job.describe()}")
    return clients


@then("each client got its job's whole stream, with the tokens of its run alone, or a busy refusal")
def clients_whole_or_refused(job_runs: JobRuns, client_jobs: list[ClockedJob], spec_ids: str) -> None:
    check_clients(job_runs.runs, client_jobs, spec_ids)


# --- The pure decode loop (M0-SEAM-PURE-LOOP) ---------------------------------------------------------


@when(parsers.parse("I run a greedy job with max_tokens {max_tokens:d} and count the log lines it adds"))
def logged_job(max_tokens: int, scenario_state: ScenarioState, log_state: LogState) -> None:
    worker = scenario_state.worker
    if worker is None or not worker.spawned:
        not_applicable("the worker's logs are only visible when the harness starts it")
    after_own_jobs = settle_after_own_jobs(scenario_state)  # its /health polls stay out of the count
    before = len(settled_lines(worker))
    scenario_state.job_id = new_job_id()
    body = {
        "job_id": scenario_state.job_id,
        "prompt": "Once upon a time there was a GPU that computed all day long",
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    stream = send_job(body, scenario_state, after_own_jobs=after_own_jobs)
    verdicts.check_well_formed_job(stream, scenario_state.job_id)
    after = settled_lines(worker)
    log_state.jobs.append(LoggedJob(max_tokens, len(stream.of_type("token")), after[before:]))


@then("both jobs added the same number of log lines")
def same_log_lines(log_state: LogState, spec_ids: str) -> None:
    """M0-SEAM-PURE-LOOP: nothing is logged per token, so a long job logs no more than a short one."""
    assert len(log_state.jobs) == 2, "the scenario needs a short and a long logged job"
    short, long = sorted(log_state.jobs, key=lambda job: job.tokens)
    if long.tokens - short.tokens < 16:
        not_applicable(
            f"the jobs streamed {short.tokens} and {long.tokens} tokens (the model stopped early): too close "
            "to tell per-token logging apart"
        )
    extra = long.new_lines[len(short.new_lines) :]
    require(
        len(long.new_lines) == len(short.new_lines),
        spec_ids,
        f"a {short.tokens}-token job added {len(short.new_lines)} log lines, a {long.tokens}-token job "
        f"{len(long.new_lines)}: the decode loop logs per token; extra lines: {extra[:3]}",
    )
