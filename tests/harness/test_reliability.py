"""Self-tests of the harness's reliability checks that are not one stub area's: a worker killed under the
harness, the worker's README (M0-W-1040), and no helper process while tokenizing (M0-W-1365)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.test_plugin import _workers_serving, run

StubCommand = Callable[..., str]


def test_a_worker_killed_under_the_harness_is_reported_and_replaced(
    harness_dir: pytest.Pytester,
    fixtures_dir: Path,
    stub_command: StubCommand,
    monkeypatch: pytest.MonkeyPatch,
):
    """The stub SIGKILLs itself on its first job: that scenario fails naming the worker and the signal,
    the next scenario gets a fresh worker and passes, and no worker outlives the session."""
    monkeypatch.setenv("STUB_SIGKILL_MARKER", str(harness_dir.path / "killed-once"))
    logs = harness_dir.path / "worker-logs"
    result = run(
        harness_dir,
        "features/http/events.feature",
        "-k",
        "finished_job or fields",
        "--worker-cmd",
        stub_command("sigkill_once"),
        "--worker-log-dir",
        str(logs),
        "-q",
        "-rf",
        "--tb=short",
    )
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "was killed by signal SIGKILL during this scenario" in text, text
    assert "harness: the worker" in text and "(pid " in text and "serving qwen2-realvocab-q4_k_m.gguf" in text
    assert "The next scenario that needs this worker starts a fresh one" in text
    assert len(list(logs.glob("*.stdout.log"))) == 2, "the second scenario did not get a fresh worker"
    assert _workers_serving(fixtures_dir) == []


README_WITH_SECTION = """\
# my-worker

## Determinism

Runs are reproducible on one machine only; engines and GPUs are non-deterministic, so other GPUs may
differ. Verified: Qwen2.5-0.5B-Instruct (qwen2.5-0.5b-instruct-q4_k_m.gguf) and Phi-3-mini.
"""
README_NO_MODELS = """\
# my-worker

## Reproducibility

Seeded runs are reproducible; results on other GPUs are not guaranteed.
"""
README_NO_SECTION = """\
# my-worker

Serves GGUF models over HTTP.
"""


@pytest.mark.parametrize(
    ("readme", "outcome", "message"),
    [
        (README_WITH_SECTION, "passed", ""),
        (README_NO_MODELS, "failed", "M0-W-1040: the reproducibility section of"),
        (README_NO_SECTION, "failed", "has no section on reproducibility"),
    ],
    ids=["another-wording", "no-models", "no-section"],
)
def test_the_worker_readme_lists_its_reproducible_models(
    harness_dir: pytest.Pytester, stub_command: StubCommand, readme: str, outcome: str, message: str
):
    path = harness_dir.path / "WORKER-README.md"
    path.write_text(readme, encoding="utf-8")
    result = run(
        harness_dir,
        "features/docs",
        "--worker-cmd",
        stub_command(),
        "--worker-readme",
        str(path),
        "-q",
        "-rf",
        "--tb=short",
    )
    result.assert_outcomes(**{outcome: 1})
    assert message in result.stdout.str(), result.stdout.str()


def test_without_a_readme_the_scenario_is_not_applicable(
    harness_dir: pytest.Pytester, stub_command: StubCommand
):
    result = run(harness_dir, "features/docs", "--worker-cmd", stub_command(), "-q", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*not applicable: the harness does not know the worker's README*--worker-readme*"]
    )


@pytest.mark.parametrize(("fault", "outcome"), [("none", "passed"), ("tokenizer_process", "failed")])
def test_a_helper_process_fails_the_self_contained_tokenizer(
    harness_dir: pytest.Pytester, stub_command: StubCommand, fault: str, outcome: str
):
    result = run(
        harness_dir,
        "features/tokenizer/self_contained.feature",
        "-k",
        "gguf",
        "--worker-cmd",
        stub_command(fault),
        "-q",
        "-rf",
        "--tb=short",
    )
    result.assert_outcomes(**{outcome: 1})
    if fault != "none":
        assert "M0-W-1365: the worker (pid" in result.stdout.str(), result.stdout.str()
        assert "import time; time.sleep(30)" in result.stdout.str()
