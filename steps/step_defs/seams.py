"""Steps on the seams and the performance milestones: implementations swapped by a worker flag, the
per-token step function seen on the wire, timing, metrics hooks and GET /metrics, baseline benchmarks and
the M1 performance targets (M0-SEAM-*, M05-*, M1-*, M0-W-1350, M0-W-1600..1630, M0-W-1830).

Seams live inside a worker; each check here is something observable instead: the same greedy tokens with a
flag that swaps an implementation (`--worker-flag kv_cache_paged=...`, `attention_sdpa=...`; the reference
worker's are built in), token events arriving one by one, counters on /metrics, latencies measured from
the client side.
"""

from __future__ import annotations

import json
import time

import pytest
from pytest_bdd import given, parsers, then, when

from steps.capabilities import capability_args
from steps.jobs import JobRuns, RunningJob, finished_runs, run_job
from steps.llama_bench import (
    DECODE_TOKENS,
    LLAMA_BENCH_ENV,
    LLAMA_BENCH_OPTION,
    DecodeRate,
    LlamaBenchError,
    llama_bench_exe,
    llama_cpp_decode_rate,
    on_this_machine,
)
from steps.measures import Measures, has_fields, median_decode_rate, percentile, timed_on
from steps.plugin import Harness
from steps.serving import serve_role
from steps.sse import open_event_stream
from steps.state import ScenarioState, new_job_id
from steps.verdicts import not_applicable, require

BENCHMARK_FIELDS = ("first_token_ms", "per_token_ms", "tokens_per_s", "load_s")
HOOK_COUNTERS = ("worker_requests_total", "worker_inference_duration_ms")  # each grows by 1 per job
HOOK_TOKEN_COUNTER = "worker_tokens_generated_total"  # grows by the tokens a job streamed
DISCONNECT_GIVE_UP_S = 10.0
DISCONNECT_RETRY_S = 0.005
CANCEL_GIVE_UP_S = 30.0


# --- Implementations swapped by a flag -----------------------------------------------------------------


@when(parsers.parse("the same model is served with the worker flag {flag}"))
def serve_with_flag(flag: str, harness: Harness, scenario_state: ScenarioState, request) -> None:
    assert scenario_state.model is not None, "the scenario needs a 'Given a worker serving ...' step"
    serve_role(
        scenario_state.model.role, capability_args(request.config, flag), harness, scenario_state, request
    )


# --- The step function seen on the wire, and timing ----------------------------------------------------


@then("the tokens of every run arrive one by one, not all at once")
def tokens_arrive_spread(job_runs: JobRuns, spec_ids: str) -> None:
    """A worker that generates the whole answer before streaming sends every event within moments; a
    prefill-then-step loop spreads the token events over the decode (here: over a quarter of the time from
    `started` to `end` at least)."""
    for run in job_runs.runs:
        tokens = run.stream.of_type("token")
        terminals = run.stream.of_type("end")
        started = run.stream.of_type("started")
        require(len(tokens) >= 4 and terminals and started, spec_ids, f"too short to judge: {run.describe()}")
        spread = tokens[-1].arrived_s - tokens[0].arrived_s
        total = terminals[-1].arrived_s - started[0].arrived_s
        require(
            spread >= 0.25 * total,
            spec_ids,
            f"the {len(tokens)} token events arrived within {spread * 1000:.1f} ms of a {total * 1000:.1f} ms job: "
            "the tokens were not streamed as they were generated",
        )


@then("end.decode_time_ms of every run is positive and within the time the job took")
def decode_time_plausible(job_runs: JobRuns, spec_ids: str) -> None:
    for run in job_runs.runs:
        ends = run.stream.of_type("end")
        require(ends, spec_ids, f"no end event: {run.describe()}")
        decode_ms = (ends[-1].data or {}).get("decode_time_ms")
        elapsed_ms = ends[-1].arrived_s * 1000.0
        require(
            isinstance(decode_ms, int | float) and 0 < decode_ms <= elapsed_ms + 5.0,
            spec_ids,
            f"end.decode_time_ms is {decode_ms!r}; the job took {elapsed_ms:.1f} ms from the request to its "
            "end event, and decoding cannot take no time",
        )


# --- GET /metrics (M0-W-1350, M1-METRICS, M05-HOOKS) ---------------------------------------------------


@when("I scrape /metrics")
def scrape(scenario_state: ScenarioState, measures: Measures) -> None:
    response = scenario_state.client.get(scenario_state.url("/metrics"))
    measures.scrapes.append((response.status_code, response.headers.get("content-type", ""), response.text))


@then("/metrics serves Prometheus text with the metrics:")
def metrics_listed(datatable: list[list[str]], measures: Measures, spec_ids: str) -> None:
    totals = measures.last_totals(spec_ids)
    header, *rows = datatable
    assert header[:1] == ["metric"], "the table needs the column | metric |"
    for name, *_ in rows:
        present = any(key == name or key in (f"{name}_count", f"{name}_sum") for key in totals)
        require(present, spec_ids, f"/metrics has no {name}; it has {', '.join(sorted(totals)) or 'nothing'}")


@then(parsers.parse("{name} grew by {count:d} between the scrapes"))
def metric_grew(name: str, count: int, measures: Measures, spec_ids: str) -> None:
    grown = measures.growth(name, spec_ids)
    require(grown == count, spec_ids, f"{name} grew by {grown:g} over one job, not {count}")


@then(parsers.parse("{name} grew by the tokens the job streamed"))
def metric_grew_by_tokens(name: str, measures: Measures, job_runs: JobRuns, spec_ids: str) -> None:
    grown = measures.growth(name, spec_ids)
    tokens = sum(len(run.stream.of_type("token")) for run in job_runs.runs)
    require(grown == tokens, spec_ids, f"{name} grew by {grown:g}; the job streamed {tokens} tokens")


@then("the metrics hooks of the job show on /metrics")
def hooks_visible(measures: Measures, job_runs: JobRuns, spec_ids: str) -> None:
    """M0.5 hooks are no-ops by design; the only outside view of them is /metrics (M1)."""
    if not measures.scrapes or measures.scrapes[-1][0] == 404:
        not_applicable(
            "metrics hooks are no-ops until GET /metrics (M1) exposes them, and the worker serves no /metrics: "
            "nothing about them is observable over HTTP"
        )
    for name in HOOK_COUNTERS:
        grown = measures.growth(name, spec_ids)
        require(grown == 1, spec_ids, f"{name} grew by {grown:g} over one job, not 1")
    grown = measures.growth(HOOK_TOKEN_COUNTER, spec_ids)
    tokens = sum(len(run.stream.of_type("token")) for run in job_runs.runs)
    require(
        grown == tokens, spec_ids, f"{HOOK_TOKEN_COUNTER} grew by {grown:g}; the job streamed {tokens} tokens"
    )


# --- Baseline benchmarks (M05-BENCH) ---------------------------------------------------------------------


@then(
    "a baseline benchmark record lists first-token latency, per-token latency, tokens per second and load time"
)
def baseline_recorded(request, spec_ids: str) -> None:
    config = request.config
    if config.getoption("worker_cmd") is not None or config.getoption("worker_url") is not None:
        not_applicable(
            "the baseline benchmarks of another worker live in its own repository, not in this one"
        )
    folder = config.rootpath / "benchmarks"
    records = []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            records.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    found = [path for path, data in records if has_fields(data, BENCHMARK_FIELDS)]
    require(
        found,
        spec_ids,
        f"no JSON record in {folder} has the baseline fields {', '.join(BENCHMARK_FIELDS)} "
        f"({len(records)} JSON files there)",
    )


# --- Latency targets (M0-W-1600..1630, M0-W-1830, M1-PERF-SUITE) -----------------------------------------


@given(parsers.parse('one job with prompt "{prompt}" and max_tokens {max_tokens:d} has run'))
def warm_up_job(prompt: str, max_tokens: int, scenario_state: ScenarioState) -> None:
    """A first job of the scenario's shape, outside its measures: what a worker builds once for a shape and
    keeps (a captured prefill graph and its cache, compiled kernels) is then in place before the count
    starts, and only what the later jobs leave behind is counted (M0-W-1830)."""
    run_job({"prompt": prompt, "max_tokens": max_tokens, "seed": 0}, scenario_state, JobRuns())


@when(
    parsers.re(
        r'I run (?P<count>\d+) (?P<greedy>greedy )?jobs with prompt "(?P<prompt>[^"]+)" and '
        r"max_tokens (?P<max_tokens>\d+)"
    ),
    converters={"count": int, "max_tokens": int},
)
def run_jobs(
    count: int,
    greedy: str | None,
    prompt: str,
    max_tokens: int,
    scenario_state: ScenarioState,
    job_runs: JobRuns,
) -> None:
    """Sampled jobs (the default temperature), a seed each; greedy ones at temperature 0."""
    for seed in range(count):
        body: dict = {"prompt": prompt, "max_tokens": max_tokens, "seed": seed}
        if greedy:
            body["temperature"] = 0.0
        run_job(body, scenario_state, job_runs)


@then(parsers.parse("the p95 time to the first token is below {limit:d} ms"))
def first_token_p95(limit: int, job_runs: JobRuns, scenario_state: ScenarioState, spec_ids: str) -> None:
    times = [
        run.stream.of_type("token")[0].arrived_s * 1000 for run in finished_runs(job_runs.runs, spec_ids)
    ]
    p95 = percentile(times, 0.95)
    require(
        p95 < limit,
        spec_ids,
        f"p95 first-token latency is {p95:.1f} ms over {len(times)} jobs{timed_on(scenario_state)} "
        f"(target {limit} ms)",
    )


@then(parsers.parse("the p95 gap between tokens is at most {limit:d} ms"))
def token_gap_p95(limit: int, job_runs: JobRuns, scenario_state: ScenarioState, spec_ids: str) -> None:
    gaps = []
    for run in finished_runs(job_runs.runs, spec_ids):
        arrivals = [event.arrived_s * 1000 for event in run.stream.of_type("token")]
        gaps += [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    require(gaps, spec_ids, "the jobs streamed too few tokens to measure the gap between them")
    p95 = percentile(gaps, 0.95)
    require(
        p95 <= limit,
        spec_ids,
        f"p95 gap between tokens is {p95:.1f} ms over {len(gaps)} gaps{timed_on(scenario_state)} "
        f"(target {limit} ms)",
    )


@then(parsers.parse("the median decode rate is at least {rate:d} tokens per second"))
def decode_rate(rate: int, job_runs: JobRuns, scenario_state: ScenarioState, spec_ids: str) -> None:
    median = median_decode_rate(job_runs, spec_ids)
    require(
        median >= rate,
        spec_ids,
        f"median decode rate is {median:.1f} tokens/s{timed_on(scenario_state)} (target {rate})",
    )


# --- Parity with llama.cpp (M1-PARITY-LLAMACPP) ----------------------------------------------------------


@when(
    parsers.parse("llama.cpp decodes {tokens:d} tokens of the same file on the same GPU"),
    target_fixture="llama_cpp_rate",
)
def llama_cpp_decodes(
    tokens: int, harness: Harness, scenario_state: ScenarioState, request: pytest.FixtureRequest
) -> DecodeRate:
    """llama-bench's tg<tokens> on the file the worker is judged as, on the GPU the harness gives its
    workers: not applicable without a llama-bench, or when the worker runs on another machine."""
    assert scenario_state.model is not None, "the scenario needs a 'Given a worker serving ...' step"
    exe = llama_bench_exe(request.config)
    if exe is None:
        not_applicable(
            f"needs llama.cpp's llama-bench as the yardstick (pass {LLAMA_BENCH_OPTION} PATH or set "
            f"{LLAMA_BENCH_ENV})"
        )
    if harness.attached and not on_this_machine(scenario_state.url("/")):
        not_applicable(
            f"the worker at {scenario_state.url('/')} may run on another machine; llama-bench would run on "
            "this one (attach to a worker on this machine to compare)"
        )
    if tokens != DECODE_TOKENS:
        pytest.fail(
            f"setup error: llama-bench's yardstick is tg{DECODE_TOKENS}, not tg{tokens}", pytrace=False
        )
    from steps.shards import shard_gpu  # imported here: pytest_plugins loads (and rewrites) it as a plugin

    try:
        return llama_cpp_decode_rate(
            exe, scenario_state.model.path, shard_gpu(request.config), request.config
        )
    except LlamaBenchError as exc:
        pytest.fail(f"setup error: {exc}", pytrace=False)


@then("the median decode rate is at least llama.cpp's")
def decode_rate_at_least_llama_cpp(
    job_runs: JobRuns, scenario_state: ScenarioState, spec_ids: str, llama_cpp_rate: DecodeRate
) -> None:
    median = median_decode_rate(job_runs, spec_ids)
    ratio = median / llama_cpp_rate.tokens_per_s
    measured = (
        f"median decode rate {median:.1f} tokens/s{timed_on(scenario_state)}, {ratio:.3f}x llama.cpp's "
        f"{llama_cpp_rate.describe()}"
    )
    require(ratio >= 1.0, spec_ids, measured)
    print(measured)  # in the report's captured output of a passed scenario too


@when(
    parsers.re(r"I GET /health (?P<count>\d+) times(?P<while_streaming> while the job streams)?"),
    converters={"count": int},
)
def health_many(
    count: int,
    while_streaming: str | None,
    scenario_state: ScenarioState,
    measures: Measures,
    spec_ids: str,
    request: pytest.FixtureRequest,
) -> None:
    """M0-W-1604 "from cached state": a job generating must not slow /health down. While a job streams,
    only calls sent before it ended count; a /health that waits for the job shows as one slow call."""
    running: RunningJob | None = request.getfixturevalue("running_job") if while_streaming else None
    if running is not None:
        measures.health_while = "while a job generated"
    for _ in range(count):
        if running is not None and running.reader.done:
            break
        measures.time_health(scenario_state, spec_ids)
    if running is not None and not measures.health_ms:
        not_applicable("the job ended before /health could be timed while it generated")


@then(parsers.parse("the p99 /health latency is below {limit:d} ms"))
def health_p99(limit: int, measures: Measures, scenario_state: ScenarioState, spec_ids: str) -> None:
    p99 = percentile(measures.health_ms, 0.99)
    require(
        p99 < limit,
        spec_ids,
        f"p99 /health latency is {p99:.2f} ms over {len(measures.health_ms)} calls {measures.health_while}"
        f"{timed_on(scenario_state)} (target {limit} ms)",
    )


@when("I cancel the job and wait for its stream to end")
def cancel_and_wait(running_job: RunningJob, scenario_state: ScenarioState, measures: Measures) -> None:
    sent = time.monotonic()
    scenario_state.client.post(scenario_state.url("/cancel"), json={"job_id": running_job.job_id})
    if running_job.reader.wait_done(CANCEL_GIVE_UP_S):
        measures.cancel_to_end_ms = (time.monotonic() - sent) * 1000


@then(parsers.parse("the stream ended within {limit:d} ms of the cancel"))
def cancel_latency(limit: int, measures: Measures, spec_ids: str) -> None:
    elapsed = measures.cancel_to_end_ms
    require(
        elapsed is not None, spec_ids, f"the stream did not end within {CANCEL_GIVE_UP_S:.0f} s of the cancel"
    )
    require(
        elapsed <= limit, spec_ids, f"the stream ended {elapsed:.0f} ms after the cancel (target {limit} ms)"
    )


@when("I drop the connection of the streaming job and start a new job")
def disconnect_then_new_job(
    running_job: RunningJob, scenario_state: ScenarioState, measures: Measures
) -> None:
    """Client disconnect (M0-W-1611): the worker must abort the job; measured as the time until a new job
    is started (a single-slot worker refuses or queues it while the old one still runs)."""
    dropped = time.monotonic()
    running_job.reader.close()
    deadline = dropped + DISCONNECT_GIVE_UP_S
    while time.monotonic() < deadline:
        body = {"job_id": new_job_id(), "prompt": "Hello", "max_tokens": 1}
        with open_event_stream(
            scenario_state.client, scenario_state.url("/execute"), json_body=body
        ) as reader:
            if reader.stream.status_code == 200 and reader.read_until("started") is not None:
                measures.disconnect_to_start_ms = (time.monotonic() - dropped) * 1000
                reader.read_all()
                return
        time.sleep(DISCONNECT_RETRY_S)


@then(parsers.parse("the new job started within {limit:d} ms of the disconnect"))
def disconnect_latency(limit: int, measures: Measures, spec_ids: str) -> None:
    elapsed = measures.disconnect_to_start_ms
    require(
        elapsed is not None,
        spec_ids,
        f"no new job started within {DISCONNECT_GIVE_UP_S:.0f} s of the disconnect",
    )
    require(
        elapsed <= limit,
        spec_ids,
        f"a new job started {elapsed:.0f} ms after the disconnect (target {limit} ms)",
    )


@then(parsers.parse("the worker became ready within {limit:d} seconds of its start"))
def load_time(limit: int, scenario_state: ScenarioState, spec_ids: str) -> None:
    worker = scenario_state.worker
    assert worker is not None
    if worker.ready_after_s is None:
        not_applicable("the harness did not start this worker, so its start-up time is unknown")
    require(
        worker.ready_after_s <= limit,
        spec_ids,
        f"the worker took {worker.ready_after_s:.1f} s from process start to a 200 from /health (target {limit} s)",
    )


@given("I note the worker's vram_bytes_used")
@when("I note the worker's vram_bytes_used")
def note_vram(scenario_state: ScenarioState, measures: Measures) -> None:
    scenario_state.get("/health")
    body = scenario_state.body_json()
    measures.vram_before = body.get("vram_bytes_used") if isinstance(body, dict) else None


@then("vram_bytes_used is what it was before the jobs")
def vram_unchanged(scenario_state: ScenarioState, measures: Measures, spec_ids: str) -> None:
    scenario_state.get("/health")
    body = scenario_state.body_json()
    after = body.get("vram_bytes_used") if isinstance(body, dict) else None
    require(
        isinstance(measures.vram_before, int) and after == measures.vram_before,
        spec_ids,
        f"/health vram_bytes_used was {measures.vram_before!r} before the jobs and is {after!r} after them",
    )
