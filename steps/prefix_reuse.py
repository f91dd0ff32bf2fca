"""Prompts that share a long prefix, and the first-token times that show whether a worker reuses it
(M1-PREFIX-CACHE; fixture `prefix_jobs`).

Three kinds of greedy job, run on the same worker in this order:
- **questions**: a question alone (a few tokens): the first-token time of a prompt with almost nothing to
  prefill;
- **unshared**: the question after a long prefix that no job before it started with (the prefix's sentences
  rotated, so each starts with another sentence): a cold prefill of the whole prompt;
- **shared long**: the question after the same long prefix as the job before it (the first of them only fills
  the cache and is not timed).
A worker that reuses the prefix gives a shared job's first token about as soon as a question's alone; one that
does not, as late as an unshared one's. So the check asks the shared jobs' median to save at least
`SAVED_SHARE` of the prefix's prefill (unshared median minus questions median). Where that prefill takes less
than `JUDGED_PREFILL_MS` on the worker, a reuse cannot be told apart from timing noise: not applicable,
with the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from steps.jobs import JobRuns, Run, finished_runs, run_job
from steps.measures import percentile
from steps.state import ScenarioState
from steps.verdicts import not_applicable, require

# About 330 tokens of the tiny models' vocabulary (their context is 512 positions); plain sentences, so any
# tokenizer splits a rotation of them into about as many tokens.
PREFIX_SENTENCES = (
    "The river runs to the sea.",
    "A small bird sings at dawn.",
    "Old maps show the way home.",
    "Rain falls on the quiet town.",
    "The baker opens his shop early.",
    "Children walk to school in pairs.",
    "A cold wind moves the tall grass.",
    "The lamp in the window is still on.",
    "Two boats wait by the long pier.",
    "Snow covers the roofs of the village.",
    "The teacher writes a word on the board.",
    "A dog sleeps under the kitchen table.",
    "The market is busy on a Friday.",
    "Green hills rise behind the old church.",
    "The train leaves at nine every morning.",
    "A letter arrives from a distant friend.",
)
QUESTIONS = (
    "What comes next?",
    "Who wrote this?",
    "Where is the town?",
    "When does it rain?",
    "Why is it cold?",
    "How far is the sea?",
)
TIMED = len(QUESTIONS) - 1  # jobs of each kind that are timed (the first question only fills the cache)
MAX_TOKENS = 8
JUDGED_PREFILL_MS = 2.0
SAVED_SHARE = 0.5


# Long prefixes time the reuse; on the tiny random-weight models they hardly steer the tokens (attention
# spreads over hundreds of positions), so the tokens are also compared after a prefix of two sentences,
# where a position lost, added or taken from another prompt changes the greedy tokens.
STEERING_SENTENCES = 2


def shared_prompt(question: int) -> str:
    return " ".join(PREFIX_SENTENCES) + " " + QUESTIONS[question]


def steering_prompt(question: int) -> str:
    return " ".join(PREFIX_SENTENCES[:STEERING_SENTENCES]) + " " + QUESTIONS[question]


SHARED_SETS = {"long": shared_prompt, "short": steering_prompt}  # prompts sharing a prefix, by set


def unshared_prompt(question: int) -> str:
    """The prefix rotated by `question` sentences (1..TIMED): no other job's prompt starts like it."""
    rotated = PREFIX_SENTENCES[question:] + PREFIX_SENTENCES[:question]
    return " ".join(rotated) + " " + QUESTIONS[question]


@dataclass
class PrefixJobs:
    """The scenario's jobs by kind: "cold long" and "cold short" (the shared-prefix prompts of each set on
    the worker without the cache), then on the worker with it "questions", "unshared", "shared long" and
    "shared short"."""

    runs: dict[str, list[Run]] = field(default_factory=dict)

    def run(self, kind: str, prompts: list[str], state: ScenarioState) -> None:
        runs = JobRuns()
        for prompt in prompts:
            run_job({"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.0}, state, runs)
        self.runs[kind] = runs.runs


@pytest.fixture
def prefix_jobs() -> PrefixJobs:
    return PrefixJobs()


def first_token_ms(run: Run, spec_ids: str) -> float:
    tokens = run.stream.of_type("token")
    require(tokens, spec_ids, f"a job streamed no token: {run.describe()}")
    return tokens[0].arrived_s * 1000.0


def median_first_token_ms(runs: list[Run], spec_ids: str) -> float:
    return percentile([first_token_ms(run, spec_ids) for run in finished_runs(runs, spec_ids)], 0.5)


def check_prefix_saved(jobs: PrefixJobs, spec_ids: str) -> None:
    short = median_first_token_ms(jobs.runs["questions"], spec_ids)
    unshared = median_first_token_ms(jobs.runs["unshared"], spec_ids)
    shared = median_first_token_ms(jobs.runs["shared long"][1:], spec_ids)
    prefill = unshared - short
    figures = (
        f"median first token: short prompt {short:.1f} ms, unshared prefix {unshared:.1f} ms, "
        f"shared prefix {shared:.1f} ms ({TIMED} jobs each)"
    )
    if prefill < JUDGED_PREFILL_MS:
        not_applicable(
            f"the worker prefills the long prefix in {prefill:.1f} ms, under {JUDGED_PREFILL_MS} ms: a reused "
            f"prefix cannot be told apart from timing noise on this model ({figures})"
        )
    require(
        shared <= unshared - SAVED_SHARE * prefill,
        spec_ids,
        f"the shared prefix saved {unshared - shared:.1f} ms of its {prefill:.1f} ms prefill, less than "
        f"{SAVED_SHARE:.0%}: the prefix was not reused ({figures})",
    )
