"""Steps on the prefix cache (M1-PREFIX-CACHE): prompts that share a prefix give the tokens they give
without the cache, and their first token sooner (`steps.prefix_reuse` has the prompts, the order of the
jobs and the timing rule)."""

from __future__ import annotations

from pytest_bdd import then, when

from steps.prefix_reuse import PrefixJobs, check_prefix_saved, check_same_tokens
from steps.state import ScenarioState


@when("I run the greedy jobs whose prompts share a prefix")
def run_cold(scenario_state: ScenarioState, prefix_jobs: PrefixJobs) -> None:
    prefix_jobs.run_cold(scenario_state)


@when("I run them again, each beside the question alone and a prompt as long that shares no prefix")
def run_cached(scenario_state: ScenarioState, prefix_jobs: PrefixJobs) -> None:
    prefix_jobs.run_cached(scenario_state)


@then("each shared-prefix job streams the tokens it streamed without the cache")
def same_tokens(prefix_jobs: PrefixJobs, spec_ids: str) -> None:
    check_same_tokens(prefix_jobs, spec_ids)


@then("the shared-prefix jobs' first token comes sooner by at least half of the prefix's prefill")
def first_token_sooner(prefix_jobs: PrefixJobs, spec_ids: str) -> None:
    check_prefix_saved(prefix_jobs, spec_ids)
