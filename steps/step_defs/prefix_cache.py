"""Steps on the prefix cache (M1-PREFIX-CACHE): prompts that share a long prefix give the tokens they give
without the cache, and their first token sooner (`steps.prefix_reuse` has the prompts and the timing rule)."""

from __future__ import annotations

from pytest_bdd import then, when

from steps.jobs import finished_runs
from steps.prefix_reuse import QUESTIONS, SHARED_SETS, TIMED, PrefixJobs, check_prefix_saved, unshared_prompt
from steps.state import ScenarioState
from steps.verdicts import require

TIMED_QUESTIONS = range(1, TIMED + 1)


@when("I run the greedy jobs whose prompts share a prefix")
def run_shared_cold(scenario_state: ScenarioState, prefix_jobs: PrefixJobs) -> None:
    for name, prompt in SHARED_SETS.items():
        prefix_jobs.run(f"cold {name}", [prompt(q) for q in range(len(QUESTIONS))], scenario_state)


@when("I run the questions alone, prompts as long that share no prefix, and the shared-prefix jobs again")
def run_three_kinds(scenario_state: ScenarioState, prefix_jobs: PrefixJobs) -> None:
    prefix_jobs.run("questions", [QUESTIONS[q] for q in TIMED_QUESTIONS], scenario_state)
    prefix_jobs.run("unshared", [unshared_prompt(q) for q in TIMED_QUESTIONS], scenario_state)
    for name, prompt in SHARED_SETS.items():
        prefix_jobs.run(f"shared {name}", [prompt(q) for q in range(len(QUESTIONS))], scenario_state)


@then("each shared-prefix job streams the tokens it streamed without the cache")
def same_tokens(prefix_jobs: PrefixJobs, spec_ids: str) -> None:
    for name in SHARED_SETS:
        cold = finished_runs(prefix_jobs.runs[f"cold {name}"], spec_ids)
        warm = finished_runs(prefix_jobs.runs[f"shared {name}"], spec_ids)
        for question, (before, after) in enumerate(zip(cold, warm, strict=True)):
            require(
                after.tokens == before.tokens,
                spec_ids,
                f"question {question} ({QUESTIONS[question]!r}) after the {name} prefix streamed other tokens "
                f"with the prefix cache: {before.difference(after)}",
            )


@then("the shared-prefix jobs' first token comes sooner by at least half of the prefix's prefill")
def first_token_sooner(prefix_jobs: PrefixJobs, spec_ids: str) -> None:
    check_prefix_saved(prefix_jobs, spec_ids)
