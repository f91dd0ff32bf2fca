"""Attach mode (`--worker-url`) against stub workers started by hand, as a user attaches to a live worker.

A worker serving model X makes the scenarios of model Y not applicable, never failed, with the reason
naming both; the served model is detected from /health (by name, else by facts) or named with
`--worker-model`, and the report's provenance says which and how; fault stubs still fail the scenario of
their requirement; teardown cancels what a scenario left running, and a worker that stays busy is
reported against the scenario that left it so.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from steps.targets import free_port
from tests.harness.conftest import SMOLLM2, STAND_IN, write_tiny_gguf
from tests.harness.test_generation_faults import write_gpt_oss

STUBS = Path(__file__).parent / "stubs"
GPT_OSS = "tiny/gpt-oss-realvocab/gpt-oss-realvocab-mxfp4_moe.gguf"
QWEN = "Qwen2.5-0.5B-Instruct Q4_K_M"

MODELS = """\
@m0
Feature: One scenario per model role

  @M0-W-1320 @M0-W-1364 @model_qwen
  Scenario: Health of the Qwen model
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I GET /health
    Then the health body describes the model file the worker serves

  @M0-W-1320 @model_smollm2
  Scenario: Health of the SmolLM2 model
    Given a worker serving the SmolLM2-135M-Instruct Q4_1 model
    When I GET /health
    Then the health body describes the model file the worker serves

  @M0-W-1320 @model_gpt_oss
  Scenario: Health of the GPT-OSS model
    Given a worker serving the gpt-oss-20b MXFP4 model
    When I GET /health
    Then the response status is 200
"""

LEFT_RUNNING = """\
@m0 @model_qwen
Feature: A scenario that leaves its job running, then one that needs the worker

  @M0-W-1330
  Scenario: A long job nobody cancels
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    And a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens

  @M0-W-1300
  Scenario: The next job
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
"""


@pytest.fixture(scope="module")
def model_dir(fixtures_dir: Path) -> Path:
    """The Qwen and SmolLM2 stand-ins of the harness fixtures plus a GPT-OSS file."""
    if not (fixtures_dir / GPT_OSS).is_file():
        write_gpt_oss(fixtures_dir / GPT_OSS)  # as the generation self-tests write it (shared fixtures dir)
    return fixtures_dir


@contextmanager
def attached(model: Path, *options: str, stub: str = "attach_stub.py") -> Iterator[str]:
    """A stub worker started by hand on `model`; yields its URL."""
    port = free_port()
    command = [sys.executable, str(STUBS / stub), "--worker-id", "w", "--model", str(model)]
    process = subprocess.Popen(
        [*command, "--gpu-device", "0", "--port", str(port), *options], stdout=subprocess.DEVNULL
    )
    try:
        _wait_for_health(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_health(url: str, timeout_s: float = 30.0) -> None:
    """With urllib: pytester's module snapshots can leave httpx and httpcore with two copies of a class."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"stub at {url} did not start")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, "-rfEs", "--tb=short", timeout=240)


def test_scenarios_of_another_model_are_not_applicable(harness_dir: pytest.Pytester, model_dir: Path):
    harness_dir.makefile(".feature", **{"features/models": MODELS})
    with attached(model_dir / SMOLLM2) as url:
        result = run(harness_dir, "features/models.feature", "--worker-url", url)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] == 1, result.stdout.str()  # the SmolLM2 scenario
    text = result.stdout.str()
    served = "not applicable: the attached worker serves SmolLM2-135M-Instruct.Q4_1.gguf"
    assert f"{served}; this scenario needs {QWEN}" in text
    assert f"{served}; this scenario needs gpt-oss-20b MXFP4" in text


def test_detection_by_facts_when_the_name_says_nothing(harness_dir: pytest.Pytester, model_dir: Path):
    harness_dir.makefile(".feature", **{"features/models": MODELS})
    with attached(model_dir / STAND_IN, "--report-model", "my-model") as url:
        result = run(
            harness_dir,
            "features/models.feature",
            "--worker-url",
            url,
            "-p",
            "steps.report.plugin",
            "--conformance-reports",
            "reports",
        )
    result.assert_outcomes(passed=1, skipped=2)
    assert "the attached worker serves my-model; this scenario needs SmolLM2-135M-Instruct Q4_1" in (
        result.stdout.str()
    )
    worker = json.loads((harness_dir.path / "reports" / "verdicts.json").read_text())["run"]["worker"]
    assert worker["served model"] == "my-model"
    assert "matches the facts of qwen2-realvocab-q4_k_m.gguf" in worker["served model determined by"]


def test_worker_model_gives_expectations_and_provenance(
    harness_dir: pytest.Pytester, model_dir: Path, tmp_path: Path
):
    harness_dir.makefile(".feature", **{"features/models": MODELS})
    real = tmp_path / "models" / "qwen2.5-0.5b-instruct-q4_k_m.gguf"  # the role's real file name
    real.parent.mkdir()
    write_tiny_gguf(real, vocab=320)  # not the stand-in: its own vocabulary size
    with attached(real, "--report-model", "Qwen2.5 0.5B Instruct") as url:
        result = run(
            harness_dir,
            "features/models.feature",
            "--worker-url",
            url,
            "--worker-model",
            str(real),
            "-p",
            "steps.report.plugin",
            "--conformance-reports",
            "reports",
        )
    result.assert_outcomes(passed=1, skipped=2)
    provenance = json.loads((harness_dir.path / "reports" / "verdicts.json").read_text())["run"]
    worker = provenance["worker"]
    assert worker["served model file"] == str(real.resolve())
    assert worker["served model sha256"] == hashlib.sha256(real.read_bytes()).hexdigest()
    assert worker["served model determined by"].startswith(f"--worker-model {real.resolve()}")
    assert str(real.resolve()) in [model["path"] for model in provenance["models"]]


def test_worker_model_without_worker_url_is_a_usage_error(harness_dir: pytest.Pytester, model_dir: Path):
    result = run(harness_dir, "features/http", "--worker-model", str(model_dir / STAND_IN))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--worker-model names the file of an attached worker: give --worker-url too*"]
    )


def test_a_wrong_fact_fails_when_the_file_is_named(
    harness_dir: pytest.Pytester, model_dir: Path, tmp_path: Path
):
    """Detection cannot judge the facts it detects by; --worker-model can: a wrong vocab_size fails."""
    harness_dir.makefile(".feature", **{"features/models": MODELS})
    served = tmp_path / "served.gguf"
    shutil.copy(model_dir / STAND_IN, served)
    wrong = tmp_path / "wrong-vocab.gguf"
    write_tiny_gguf(wrong, vocab=301)  # the stub reports what this file says, for the served one
    with attached(wrong, "--report-model", "served.gguf") as url:
        result = run(
            harness_dir,
            "features/models.feature",
            "-k",
            "Qwen",
            "--worker-url",
            url,
            "--worker-model",
            str(served),
        )
    result.assert_outcomes(failed=1, deselected=2)
    assert "M0-W-1364: /health vocab_size is 301" in result.stdout.str()


FAULTS = [
    # fault, feature, -k selection, failing scenario, text of the failure
    (
        "two_terminals",
        "features/http/events.feature",
        "",
        "test_a_finished_job_streams",
        "M0-W-1311: stream has 2",
    ),
    ("health_missing_field", "features/http/health.feature", "", "test_health_answers", "M0-W-1320"),
    (
        "cancel_noop",
        "features/http/cancel.feature",
        "running_job",
        "test_cancelling_a_running_job",
        "M0-W-1330",
    ),
    ("accept_invalid", "features/http/validation.feature", "", "test_a_job_with_a_bad_field", "M0-W-1302"),
]


@pytest.mark.parametrize(
    ("fault", "feature", "selection", "scenario", "message"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_faults_fail_their_scenario_in_attach_mode(
    harness_dir: pytest.Pytester,
    model_dir: Path,
    fault: str,
    feature: str,
    selection: str,
    scenario: str,
    message: str,
):
    with attached(model_dir / STAND_IN, "--fault", fault, stub="stub_worker.py") as url:
        result = run(harness_dir, feature, *(["-k", selection] if selection else []), "--worker-url", url)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert any(scenario in line for line in failed), result.stdout.str()
    assert message in result.stdout.str()


@pytest.mark.parametrize("busy_flag", [True, False], ids=["health-busy", "probe-job"])
def test_a_job_left_running_is_cancelled_before_the_next_scenario(
    harness_dir: pytest.Pytester, model_dir: Path, busy_flag: bool
):
    harness_dir.makefile(".feature", **{"features/left_running": LEFT_RUNNING})
    flags = ["--one-job", "--token-delay-ms", "50", *(["--busy-flag"] if busy_flag else [])]
    with attached(model_dir / STAND_IN, *flags) as url:
        result = run(harness_dir, "features/left_running.feature", "--worker-url", url)
    result.assert_outcomes(passed=2)


def test_without_cleanup_the_next_scenario_would_find_the_worker_busy(
    harness_dir: pytest.Pytester, model_dir: Path
):
    """The stub really refuses a second job while one runs: the cleanup above is what makes the run pass."""
    feature = LEFT_RUNNING.replace(
        '    When I execute a job with prompt "Hello" and max_tokens 4',
        '    And a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens\n'
        '    When I execute a job with prompt "Hello" and max_tokens 4',
    )
    harness_dir.makefile(".feature", **{"features/left_running": feature})
    with attached(model_dir / STAND_IN, "--one-job", "--token-delay-ms", "50") as url:
        result = run(harness_dir, "features/left_running.feature", "-k", "next_job", "--worker-url", url)
    result.assert_outcomes(failed=1)
    assert "POST /execute answered 503" in result.stdout.str()


def test_a_worker_that_stays_busy_is_reported_with_the_scenario_that_left_it(
    harness_dir: pytest.Pytester, model_dir: Path
):
    harness_dir.makefile(".feature", **{"features/left_running": LEFT_RUNNING})
    flags = ["--one-job", "--busy-flag", "--stuck", "--token-delay-ms", "50"]
    with attached(model_dir / STAND_IN, *flags) as url:
        result = run(harness_dir, "features/left_running.feature", "--worker-url", url, "--idle-wait", "1")
    result.assert_outcomes(passed=1, errors=1, skipped=1)
    text = result.stdout.str()
    assert "ERROR at teardown of test_a_long_job_nobody_cancels" in text
    assert "M0-W-1330: the worker is still busy" in text
    assert "not applicable: the worker is still busy (GET /health busy true) with what " in text
    assert "left_running.feature::test_a_long_job_nobody_cancels left running" in text


def test_a_spawned_worker_shared_by_scenarios_is_cleaned_up_too(
    harness_dir: pytest.Pytester, model_dir: Path
):
    """The same hygiene holds for a spawned worker, which every scenario of its model shares."""
    harness_dir.makefile(".feature", **{"features/left_running": LEFT_RUNNING})
    command = shlex.join(
        [sys.executable, str(STUBS / "attach_stub.py"), "--one-job", "--token-delay-ms", "50"]
    )
    result = run(harness_dir, "features/left_running.feature", "--worker-cmd", command)
    result.assert_outcomes(passed=2)
