"""Steps on a worker's processes: workers side by side are isolated, and the worker tokenizes without
starting a helper process. Judged through the operating system's view of the processes
(`steps/process_tree.py`) and the workers' streams."""

from __future__ import annotations

import os

import psutil
from pytest_bdd import given, parsers, then, when

from steps import verdicts
from steps.jobs import JobRuns, run_job
from steps.nvidia_smi import worker_apps
from steps.plugin import Harness, record_worker
from steps.process_tree import HelperWatch, describe, listening_pids, tree_of, worker_process
from steps.processes import spawned_worker
from steps.serving import resolve_role
from steps.side_by_side import (
    PORT_SERVED_BY,
    SideBySide,
    kill_first,
    port_of,
    start_side_by_side,
    stream_on_both,
)
from steps.state import READ_TIMEOUT_S, ScenarioState, new_job_id
from steps.verdicts import RequirementViolation, not_applicable, require

# --- Two workers side by side ------------------------------------------------------------------------


@given(parsers.parse("two workers serving the {model} model side by side on one device"))
def two_workers(
    model: str, harness: Harness, scenario_state: ScenarioState, side_by_side: SideBySide, request
) -> None:
    model_file = resolve_role(model, harness)
    start_side_by_side(harness, model_file, side_by_side)
    for worker in side_by_side.workers:
        record_worker(request.node, worker)
    scenario_state.worker, scenario_state.model = side_by_side.workers[1], model_file


@then("each worker's port is served by a process of its own, apart from the harness and the other worker")
def own_processes(side_by_side: SideBySide, spec_ids: str) -> None:
    trees = [tree_of(worker_process(worker)) for worker in side_by_side.pair()]
    for number, (worker, tree) in enumerate(zip(side_by_side.pair(), trees, strict=True), start=1):
        port = port_of(worker)
        listening = listening_pids(port)
        require(listening, spec_ids, f"no process listens on worker #{number}'s port {port}")
        other = trees[2 - number]
        for pid in listening - tree:
            who = describe(psutil.Process(pid)) if psutil.pid_exists(pid) else f"pid {pid}"
            holder = "harness" if pid == os.getpid() else "other worker" if pid in other else "outside"
            requirement, whose = PORT_SERVED_BY[holder]
            raise RequirementViolation(
                requirement,
                f"worker #{number}'s port {port} is served by {who}, {whose}; its own: {sorted(tree)}",
            )


@when(
    parsers.parse(
        'the second worker runs a greedy job with prompt "{prompt}" and max_tokens {max_tokens:d} alone'
    )
)
def second_alone(
    prompt: str, max_tokens: int, scenario_state: ScenarioState, side_by_side: SideBySide, job_runs: JobRuns
) -> None:
    scenario_state.worker = side_by_side.pair()[1]
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
    side_by_side.alone = run_job(body, scenario_state, job_runs)
    verdicts.check_well_formed_job(side_by_side.alone.stream, side_by_side.alone.body["job_id"])


@when("both workers stream that job and the first is killed with SIGKILL")
def both_stream_first_killed(side_by_side: SideBySide) -> None:
    assert side_by_side.alone is not None, "the scenario needs the job run alone first"
    body = {key: value for key, value in side_by_side.alone.body.items() if key != "job_id"}
    stream_on_both(side_by_side, body)
    kill_first(side_by_side)


@then("the second worker's job ends with an end event and the tokens of its run alone")
def second_unaffected(side_by_side: SideBySide, spec_ids: str) -> None:
    alone = side_by_side.alone
    assert alone is not None and len(side_by_side.streams) == 2, "the scenario needs both jobs streaming"
    if side_by_side.second_ended_before_kill:
        not_applicable("the second worker's job had ended before the first worker was killed")
    running = side_by_side.streams[1]
    running.wait_done(READ_TIMEOUT_S)
    stream = running.stream
    require(stream is not None, spec_ids, f"the second worker gave no answer: {running.failure}")
    require(
        stream.ended,
        spec_ids,
        f"the second worker's stream broke off when the first worker was killed, after "
        f"{len(stream.of_type('token'))} tokens ({running.failure or 'closed'}; events: [{stream.summary()}])",
    )
    verdicts.check_well_formed_job(stream, None)
    last = stream.events[-1]
    require(
        last.type == "end",
        spec_ids,
        f"the second worker's job ended with {last.describe()} when the first was killed: {last.raw[:200]!r}",
    )
    tokens = [str((event.data or {}).get("t", "")) for event in stream.of_type("token")]
    require(
        tokens == alone.tokens,
        spec_ids,
        f"the second worker's tokens changed when the first was killed: {''.join(tokens)[:120]!r}, alone "
        f"{alone.text[:120]!r}",
    )


@then("the second worker still answers GET /health")
def second_healthy(scenario_state: ScenarioState, spec_ids: str) -> None:
    # The Given made the second worker the scenario's worker (`two_workers`).
    scenario_state.get_health(spec_ids)


@then("nvidia-smi lists a CUDA context for each worker's own processes")
def own_contexts(side_by_side: SideBySide, spec_ids: str) -> None:
    first, second = ({app.pid for app in worker_apps(worker, spec_ids)} for worker in side_by_side.pair())
    require(
        not first & second,
        spec_ids,
        f"the two workers share CUDA contexts: pids {sorted(first & second)}",
    )


# --- No helper process --------------------------------------------------------------------------------


@when(
    parsers.parse(
        'I execute a job with prompt "{prompt}" and max_tokens {max_tokens:d}, watching the worker\'s processes'
    ),
    target_fixture="helper_watch",
)
def job_watched(prompt: str, max_tokens: int, scenario_state: ScenarioState) -> HelperWatch:
    watch = HelperWatch(worker_process(spawned_worker(scenario_state)))
    scenario_state.job_id = new_job_id()
    watch.start()
    try:
        body = {"job_id": scenario_state.job_id, "prompt": prompt, "max_tokens": max_tokens}
        scenario_state.post_stream("/execute", json_body=body)
    finally:
        watch.stop()
    return watch


@then("the worker started no other process")
def no_helper_process(helper_watch: HelperWatch, spec_ids: str) -> None:
    """M0-W-1365: tokenization is self-contained, so no helper process (a tokenizer server, an external
    binary) runs beside the worker while it tokenizes the prompt and decodes the tokens."""
    require(
        not helper_watch.seen,
        spec_ids,
        f"the worker ({describe(helper_watch.worker)}) had {len(helper_watch.seen)} child processes while it ran the job "
        f"({helper_watch.samples} samples): {'; '.join(helper_watch.seen.values())}",
    )
