"""Steps on what a worker generates: per-model streams, reproducibility, seeds, sampling parameters, stop
strings, max_tokens, UTF-8 text, coherent text on real weights and golden continuations (M0-W-1030..1032,
M0-W-1420..1422, M0-W-1800, M0-W-1824, M0-W-1826, M0-SYS-2.3.1, M0-W-1213..1215, M0-W-1360..1364).

A scenario runs one job, then variations of it ("the same job with temperature set to 0.7"); every run is
kept in `job_runs`, in order, so the checks can compare runs. Token texts are compared, not token ids:
the M0 stream carries only texts (`token{t, i}`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pytest_bdd import parsers, then, when

from steps import verdicts
from steps.capabilities import device_memory_judged
from steps.coherence import coherence_problems
from steps.jobs import JobRuns, choose_stop_string, run_job, step_value
from steps.state import ScenarioState
from steps.verdicts import not_applicable, require

GOLDENS_DIR = Path("fixtures") / "goldens" / "continuations"
GOLDENS_COMMAND = "python -m fixtures.continuations"
UINT64_MAX = (1 << 64) - 1


@when("I run a job with:")
def run_job_table(datatable: list[list[str]], scenario_state: ScenarioState, job_runs: JobRuns) -> None:
    header, *rows = datatable
    assert header[:2] == ["field", "value"], "the table needs the columns | field | value |"
    run_job({name: step_value(value) for name, value, *_ in rows}, scenario_state, job_runs)


@when("I run the same job again")
def run_again(scenario_state: ScenarioState, job_runs: JobRuns) -> None:
    run_job(job_runs.first.body, scenario_state, job_runs)


@when(parsers.parse("I run the same job {count:d} more times"))
def run_more(count: int, scenario_state: ScenarioState, job_runs: JobRuns) -> None:
    for _ in range(count):
        run_job(job_runs.first.body, scenario_state, job_runs)


_SETTING = re.compile(r"^(?P<field>[a-z_]+) set to (?P<value>.+)$")


@when(parsers.parse("I run the same job with {settings}"))
def run_with(settings: str, scenario_state: ScenarioState, job_runs: JobRuns) -> None:
    """`top_k set to 1 and temperature set to 1.5`; also the two named variations below."""
    body = dict(job_runs.first.body)
    if settings == "the seed the worker reported":
        reported = job_runs.first.reported_seeds()
        assert reported, (
            "no seed was reported: the scenario needs 'Then the worker reports the seed it chose'"
        )
        body["seed"] = reported[0][1]
    elif settings == "a stop string taken from its output":
        job_runs.stop = choose_stop_string(job_runs.first)
        body["stop"] = [job_runs.stop]
    else:
        for part in settings.split(" and "):
            match = _SETTING.match(part.strip())
            assert match, f"cannot read {part!r}: write '<field> set to <JSON value>'"
            body[match["field"]] = step_value(match["value"])
    run_job(body, scenario_state, job_runs)


# --- Every run is a well-formed job --------------------------------------------------------------


@then("every run finishes with an end event")
def every_run_ends(job_runs: JobRuns) -> None:
    for run in job_runs.runs or [job_runs.first]:
        verdicts.check_well_formed_job(run.stream, run.body["job_id"])
        verdicts.check_ended_with_end(run.stream)


@then(parsers.parse("every run streams at least {count:d} token"))
@then(parsers.parse("every run streams at least {count:d} tokens"))
def at_least_tokens(count: int, job_runs: JobRuns, spec_ids: str) -> None:
    for run in job_runs.runs:
        got = len(run.stream.of_type("token"))
        require(
            got >= count,
            spec_ids,
            f"the job streamed {got} token events, fewer than {count}: {run.describe()}",
        )


# --- Comparing runs --------------------------------------------------------------------------------


@then("every run streams the same tokens as the first")
def all_same(job_runs: JobRuns, spec_ids: str) -> None:
    first = job_runs.first
    for number, run in enumerate(job_runs.runs[1:], start=2):
        require(
            run.tokens == first.tokens,
            spec_ids,
            f"run {number} differs from run 1 ({first.difference(run)}):\n"
            f"  run 1: {first.describe()}\n  run {number}: {run.describe()}",
        )


@then(parsers.re(r"the last run streams the same tokens as (?:the first|run (?P<number>\d+))"))
def last_same(number: str | None, job_runs: JobRuns, spec_ids: str) -> None:
    first, last = job_runs.runs[int(number or 1) - 1], job_runs.last
    require(
        last.tokens == first.tokens,
        spec_ids,
        f"the runs differ ({first.difference(last)}):\n  first: {first.describe()}\n  last: {last.describe()}",
    )


@then("the last run streams different tokens from the first")
def last_differs(job_runs: JobRuns, spec_ids: str) -> None:
    first, last = job_runs.first, job_runs.last
    require(
        last.tokens != first.tokens,
        spec_ids,
        f"the setting had no effect: both runs streamed the same tokens\n  first: {first.describe()}\n"
        f"  last: {last.describe()}",
    )


@then("at least two of the sampled runs stream different tokens")
def some_differ(job_runs: JobRuns, spec_ids: str) -> None:
    sampled = job_runs.runs[1:]
    outputs = {tuple(run.tokens) for run in sampled}
    require(
        len(outputs) > 1,
        spec_ids,
        f"{len(sampled)} runs with different seeds all streamed the same tokens: {sampled[0].describe()}",
    )


@then("the first run repeats a token")
def first_repeats(job_runs: JobRuns) -> None:
    counts = Counter(piece for piece in job_runs.first.tokens if piece.strip())
    if not counts or counts.most_common(1)[0][1] < 2:
        not_applicable(
            f"the greedy output repeats no token, so a repetition penalty has nothing to act on: "
            f"{job_runs.first.describe()}"
        )


# --- Seeds (M0-W-1030, ERRATA E-22) ----------------------------------------------------------------


@then("the worker reports the seed it chose")
def seed_reported(job_runs: JobRuns, spec_ids: str) -> None:
    run = job_runs.first
    require("seed" not in run.body, spec_ids, "the scenario's job must be sent without a seed")
    found = run.reported_seeds()
    require(
        found,
        spec_ids,
        "a job without a seed must get one from the worker, returned in the response (a `seed` field "
        f"on the started or end event, ERRATA E-22); started: {run.payload('started')}, end: {run.payload('end')}",
    )
    values = {value for _, value in found}
    require(len(values) == 1, spec_ids, f"started and end report different seeds: {found}")
    seed = found[0][1]
    require(
        isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= UINT64_MAX,
        spec_ids,
        f"the reported seed {seed!r} is not an unsigned 64-bit integer",
    )


# --- Stop strings and max_tokens (M0-W-1422, M0-W-1300) --------------------------------------------


@then("the job stops where the stop string first appears")
def stops_at_stop_string(job_runs: JobRuns, spec_ids: str) -> None:
    """ERRATA E-06: generation ends with `end` once the stop string is complete; nothing after the stop
    string is streamed. A worker may hold the stop string back or stream it (whole or in part, as its
    tokens arrived): any prefix of the greedy text from "up to the stop" to "up to its end" passes."""
    stop, full, run = job_runs.stop, job_runs.first.text, job_runs.last
    assert stop is not None, "no stop string was chosen"
    verdicts.check_well_formed_job(run.stream, run.body["job_id"])
    require(run.stream.events[-1].type == "end", spec_ids, f"the job did not end with end: {run.describe()}")
    at = full.find(stop)
    require(
        full.startswith(run.text) and at <= len(run.text) <= at + len(stop),
        spec_ids,
        f"with stop {stop!r} the text must end where {stop!r} first appears in the greedy output "
        f"{full!r} (between character {at} and {at + len(stop)}); streamed {run.text!r}",
    )
    reason = run.payload("end").get("stop_reason")
    require(
        reason in (None, "STOP_SEQUENCE"),
        spec_ids,
        f"end.stop_reason is {reason!r}; generation ended on the stop string {stop!r}",
    )


@then(parsers.parse("the job streams at most {limit:d} tokens and says why it stopped"))
def max_tokens_honoured(limit: int, job_runs: JobRuns, spec_ids: str) -> None:
    run = job_runs.last
    verdicts.check_well_formed_job(run.stream, run.body["job_id"])
    count = len(run.stream.of_type("token"))
    require(count <= limit, spec_ids, f"max_tokens is {limit} but the job streamed {count} tokens")
    reason = run.payload("end").get("stop_reason")
    if reason is not None:
        expected = ("MAX_TOKENS",) if count == limit else ("EOS", "STOP_SEQUENCE")
        require(
            reason in expected,
            spec_ids,
            f"{count} of max_tokens {limit} tokens were streamed, but end.stop_reason is {reason!r} "
            f"(expected {' or '.join(expected)})",
        )


# --- UTF-8 (M0-W-1824) ---------------------------------------------------------------------------


@then("every run's text is valid UTF-8, with characters split across tokens rejoined")
def runs_utf8(job_runs: JobRuns, scenario_state: ScenarioState) -> None:
    """M0-W-1824, ERRATA E-28: every stream is valid UTF-8; on real weights (bytes known to be valid) the
    concatenated text also holds no U+FFFD. A synthetic stand-in's random weights emit byte sequences that
    are invalid in themselves, which a worker may replace with U+FFFD or drop."""
    real_weights = scenario_state.model is not None and not scenario_state.model.synthetic
    for run in job_runs.runs:
        verdicts.check_utf8(run.stream)
        if real_weights:
            verdicts.check_text_rejoined(run.text)
        else:
            verdicts.check_text_utf8(run.text)


# --- Coherent text on real weights (M0-W-1800) -----------------------------------------------------


@then("the text of every run is coherent English")
def coherent(job_runs: JobRuns, spec_ids: str) -> None:
    for run in job_runs.runs:
        problems = coherence_problems(run.text)
        require(not problems, spec_ids, f"the text is not coherent: {'; '.join(problems)}: {run.text!r}")


# --- Golden continuations computed by llama.cpp ----------------------------------------------------


@when(parsers.parse('I run the golden prompt of "{name}" greedily'))
def run_golden(name: str, scenario_state: ScenarioState, job_runs: JobRuns, request) -> None:
    path = request.config.rootpath / GOLDENS_DIR / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"setup error: no golden {path}; make it with `{GOLDENS_COMMAND}`", pytrace=False)
    golden = json.loads(path.read_text(encoding="utf-8"))
    model = scenario_state.model
    assert model is not None, "the scenario needs a 'Given a worker serving ...' step"
    if model.sha256 != golden["sha256"]:
        pytest.fail(
            f"setup error: golden {path.name} was computed from another {golden['fixture']} "
            f"(sha256 {golden['sha256'][:12]}..., served file {model.sha256[:12]}...); "
            f"rebuild it with `{GOLDENS_COMMAND}`",
            pytrace=False,
        )
    job_runs.golden = golden
    body = {"prompt": golden["prompt"], "max_tokens": golden["max_tokens"], "temperature": 0.0, "seed": 1}
    run_job(body, scenario_state, job_runs)


@then("the streamed text equals the golden continuation")
def equals_golden(job_runs: JobRuns, spec_ids: str) -> None:
    golden, run = job_runs.golden, job_runs.last
    assert golden is not None, "no golden prompt was run"
    verdicts.check_well_formed_job(run.stream, run.body["job_id"])
    count = len(run.stream.of_type("token"))
    require(
        run.text == golden["text"] and count == len(golden["token_ids"]),
        spec_ids,
        f"greedy continuation of {golden['prompt']!r} differs from {golden['oracle']}:\n"
        f"  expected {len(golden['token_ids'])} tokens: {golden['text']!r}\n"
        f"  streamed {count} tokens: {run.text!r}",
    )


# --- /health facts of the served file ---------------------------------------------------------------


@then("/health reports the architecture of the model file")
def health_architecture(scenario_state: ScenarioState, spec_ids: str) -> None:
    body = scenario_state.get_health(spec_ids)
    assert scenario_state.model is not None
    expected = scenario_state.model.facts.architecture
    if "architecture" not in body:
        not_applicable(
            "the worker does not report an `architecture` on /health (optional, ERRATA E-10); the adapter "
            "choice is judged by the generation and golden-continuation scenarios"
        )
    got = str(body["architecture"]).lower()
    require(
        got == expected,
        spec_ids,
        f"/health architecture is {body['architecture']!r}; general.architecture of "
        f"{scenario_state.model.path.name} is {expected!r} (the adapter must follow the file, ERRATA E-01)",
    )


@then("/health reports the tokenizer of the model file")
def health_tokenizer(scenario_state: ScenarioState, spec_ids: str) -> None:
    body = scenario_state.get_health(spec_ids)
    model = scenario_state.model
    assert model is not None
    facts = model.facts
    source = (
        "a tokenizer.json next to it" if facts.tokenizer_json_vocab_size is not None else "no tokenizer.json"
    )
    require(
        body.get("tokenizer_kind") == facts.tokenizer_kind,
        spec_ids,
        f"/health tokenizer_kind is {body.get('tokenizer_kind')!r}; {model.path.name} has {source}, "
        f"so the backend is {facts.tokenizer_kind!r}",
    )
    require(
        body.get("vocab_size") in facts.accepted_vocab_sizes,
        spec_ids,
        f"/health vocab_size is {body.get('vocab_size')!r}; {model.path.name} has "
        f"{' or '.join(str(size) for size in sorted(facts.accepted_vocab_sizes))} tokens (read with gguf-py)",
    )


@then(parsers.parse("/health reports quant_kind {kind}"))
def health_quant_kind(kind: str, scenario_state: ScenarioState, spec_ids: str) -> None:
    body = scenario_state.get_health(spec_ids)
    require(
        body.get("quant_kind") == kind,
        spec_ids,
        f"/health quant_kind is {body.get('quant_kind')!r}, not {kind!r}",
    )


@then("/health reports the model resident and the worker healthy")
def health_resident(scenario_state: ScenarioState, spec_ids: str, request: pytest.FixtureRequest) -> None:
    body = scenario_state.get_health(spec_ids)
    require(
        body.get("status") == "healthy",
        spec_ids,
        f"/health says status={body.get('status')!r}, resident={body.get('resident')!r}",
    )
    if body.get("resident") is not True and (unjudged := device_memory_judged(request.config)):
        not_applicable(f"/health says resident={body.get('resident')!r}; {unjudged}")
    require(
        body.get("resident") is True,
        spec_ids,
        f"/health says resident={body.get('resident')!r}, status={body.get('status')!r}",
    )
