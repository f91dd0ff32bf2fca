"""Prompts that share a prefix, and the first-token times that show whether a worker reuses it
(M1-PREFIX-CACHE; fixture `prefix_jobs`).

Every prompt is a short question after a prefix. The shared-prefix prompts run first on the worker
without the cache ("cold"), then on the worker with it, in rounds of four greedy jobs, one per question:
- **question**: the question alone (a few tokens): a first token with almost nothing to prefill;
- **unshared**: the question after the long prefix's sentences rotated (as long, but starting like no job
  before it): a cold prefill of the whole prompt;
- **fill**: the first question after the long prefix, which the cache may now keep;
- **shared**: this round's question after the same long prefix: the prefix reused, if the worker does.
A worker that reuses the prefix gives a shared job's first token about as soon as a lone question's; one that
does not, as late as an unshared one's. So the check asks the shared jobs' median to save at least
`SAVED_SHARE` of the prefix's prefill (the unshared median minus the question median). Each round's four
jobs run back to back, so a slow moment of a loaded machine weighs on every kind alike. Where the prefill
takes less than `JUDGED_PREFILL_MS` on the worker, a reuse cannot be told apart from timing noise: not
applicable, with the figures.

Then the questions after a prefix of two sentences, one after another: on the tiny random-weight models a
long prefix hardly steers the greedy tokens (attention spreads over hundreds of positions), a short one does,
so a position the cache loses, adds or takes from another prompt shows in their tokens.
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
STEERING_SENTENCES = 2
QUESTIONS = (
    "What comes next?",
    "Who wrote this?",
    "Where is the town?",
    "When does it rain?",
    "Why is it cold?",
    "How far is the sea?",
)
TIMED = range(1, len(QUESTIONS))  # the rounds' questions; the first one fills the cache in each round
MAX_TOKENS = 8
JUDGED_PREFILL_MS = 2.0
SAVED_SHARE = 0.5


def long_prompt(question: int) -> str:
    return " ".join(PREFIX_SENTENCES) + " " + QUESTIONS[question]


def steering_prompt(question: int) -> str:
    return " ".join(PREFIX_SENTENCES[:STEERING_SENTENCES]) + " " + QUESTIONS[question]


def unshared_prompt(question: int) -> str:
    """The long prefix rotated by `question` sentences (1..5): no other job's prompt starts like it."""
    rotated = PREFIX_SENTENCES[question:] + PREFIX_SENTENCES[:question]
    return " ".join(rotated) + " " + QUESTIONS[question]


PREFIXES = {"long": long_prompt, "short": steering_prompt}  # the shared-prefix prompts, by prefix


@dataclass
class PrefixJobs:
    """The scenario's finished jobs by kind, in order: "cold long" and "cold short" (each prefix's prompts,
    on the worker without the cache), then on the worker with it "question", "unshared", "fill", "shared"
    (the rounds) and "shared short"."""

    runs: dict[str, list[Run]] = field(default_factory=dict)

    def run(self, kind: str, prompt: str, state: ScenarioState) -> None:
        job = JobRuns()
        run_job({"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.0}, state, job)
        self.runs.setdefault(kind, []).extend(job.runs)

    def run_cold(self, state: ScenarioState) -> None:
        for name, prompt in PREFIXES.items():
            for question in range(len(QUESTIONS)):
                self.run(f"cold {name}", prompt(question), state)

    def run_cached(self, state: ScenarioState) -> None:
        for question in TIMED:
            self.run("question", QUESTIONS[question], state)
            self.run("unshared", unshared_prompt(question), state)
            self.run("fill", long_prompt(0), state)
            self.run("shared", long_prompt(question), state)
        for question in range(len(QUESTIONS)):
            self.run("shared short", steering_prompt(question), state)

    def pairs(self, prefix: str) -> list[tuple[int, Run, Run]]:
        """(question, cold run, cached run) of each prompt with this prefix that ran with the cache."""
        cold = self.runs[f"cold {prefix}"]
        if prefix == "short":
            return [(q, cold[q], run) for q, run in enumerate(self.runs["shared short"])]
        return [(0, cold[0], self.runs["fill"][-1])] + [
            (q, cold[q], run) for q, run in zip(TIMED, self.runs["shared"], strict=True)
        ]


@pytest.fixture
def prefix_jobs() -> PrefixJobs:
    return PrefixJobs()


def first_token_ms(run: Run, spec_ids: str) -> float:
    tokens = run.stream.of_type("token")
    require(tokens, spec_ids, f"a job streamed no token: {run.describe()}")
    return tokens[0].arrived_s * 1000.0


def median_first_token_ms(runs: list[Run], spec_ids: str) -> float:
    return percentile([first_token_ms(run, spec_ids) for run in finished_runs(runs, spec_ids)], 0.5)


def check_same_tokens(jobs: PrefixJobs, spec_ids: str) -> None:
    for prefix in PREFIXES:
        for question, cold, cached in jobs.pairs(prefix):
            finished_runs([cold, cached], spec_ids)
            require(
                cached.tokens == cold.tokens,
                spec_ids,
                f"question {question} ({QUESTIONS[question]!r}) after the {prefix} prefix streamed other "
                f"tokens with the prefix cache: {cold.difference(cached)}",
            )


def check_prefix_saved(jobs: PrefixJobs, spec_ids: str) -> None:
    question = median_first_token_ms(jobs.runs["question"], spec_ids)
    unshared = median_first_token_ms(jobs.runs["unshared"], spec_ids)
    shared = median_first_token_ms(jobs.runs["shared"], spec_ids)
    prefill = unshared - question
    figures = (
        f"median first token: the question alone {question:.1f} ms, after an unshared prefix {unshared:.1f} "
        f"ms, after the shared prefix {shared:.1f} ms ({len(TIMED)} jobs each)"
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
