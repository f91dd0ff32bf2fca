"""Black-box tests of the harness plugin: run the HTTP features against stub workers through pytester.

The conforming stub must pass every scenario; each stub fault must fail the scenario that checks the
broken rule, with the rule's spec ID in the failure message.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

StubCommand = Callable[..., str]


HTTP_SCENARIOS = 42
# Rows on the real Qwen file (`real_qwen`): not applicable without --real-qwen, whatever the worker.
HTTP_REAL_QWEN_ROWS = 1


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=240)


@pytest.mark.parametrize("framing", ["event", "data"])
def test_conforming_stub_passes_every_http_scenario(
    harness_dir: pytest.Pytester, stub_command: StubCommand, framing: str
):
    result = run(harness_dir, "features/http", "--worker-cmd", stub_command(framing=framing), "-q")
    result.assert_outcomes(passed=HTTP_SCENARIOS - HTTP_REAL_QWEN_ROWS, skipped=HTTP_REAL_QWEN_ROWS)


FAULTS = [
    # fault, features to run, scenario that must fail, spec ID its failure names
    (
        "no_terminal",
        "features/http/events.feature",
        "test_a_finished_job_streams",
        "M0-W-1311: stream has 0 terminal",
    ),
    (
        "two_terminals",
        "features/http/events.feature",
        "test_a_finished_job_streams",
        "M0-W-1311: stream has 2 terminal",
    ),
    (
        "tokens_before_started",
        "features/http/events.feature",
        "test_a_finished_job_streams",
        "M0-W-1311: first event",
    ),
    (
        "accept_invalid",
        "features/http/validation.feature",
        "test_a_job_with_a_bad_field_is_refused",
        "M0-W-1302",
    ),
    (
        "health_missing_field",
        "features/http/health.feature",
        "test_health_answers_with_the_required",
        "resident",
    ),
    (
        "cancel_noop",
        "features/http/cancel.feature",
        "test_cancelling_a_running_job",
        "M0-W-1330: no terminal event",
    ),
    ("invalid_utf8", "features/http/events.feature", "test_token_texts_stay_valid_utf8", "M0-W-1824"),
    (
        "crash_on_boolean",
        "features/http/validation.feature",
        "test_a_sample_of_malformed_bodies",
        "malformed bodies were not refused with 400 (the sample stopped after 3 such answers): ",
    ),
]


@pytest.mark.parametrize(("fault", "features", "scenario", "message"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_fails_the_scenario_of_its_requirement(
    harness_dir: pytest.Pytester,
    stub_command: StubCommand,
    fault: str,
    features: str,
    scenario: str,
    message: str,
):
    selection = ["-k", "running_job"] if fault == "cancel_noop" else []
    result = run(
        harness_dir, features, *selection, "--worker-cmd", stub_command(fault), "-q", "-rf", "--tb=short"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert any(scenario in line for line in failed), result.stdout.str()
    assert message in result.stdout.str()
    if fault == "health_missing_field":
        assert "M0-W-1320" in result.stdout.str()


def test_failing_scenarios_carry_the_worker_log(harness_dir: pytest.Pytester, stub_command: StubCommand):
    result = run(
        harness_dir,
        "features/http/health.feature",
        "--worker-cmd",
        stub_command("health_missing_field"),
        "-q",
    )
    result.stdout.fnmatch_lines(["*worker stdout (tail)*", "*stub worker ready*"])


def test_collect_only_lists_spec_ids_and_gates(harness_dir: pytest.Pytester):
    result = run(harness_dir, "features/http", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "*cancel.feature::test_cancelling_a_running_job*[[]M0-SYS-6.3.5 M0-W-1330 gate_foundation_w4 gate_m0_complete[]]",
            "*validation.feature::test_a_job_with_a_bad_field_is_refused*[[]M0-W-1302 gate_foundation gate_m0_complete[]]",
        ]
    )
    assert f"{HTTP_SCENARIOS} tests collected" in result.stdout.str()


GPT_OSS = """\
@m0 @model_gpt_oss @mxfp4
Feature: A feature about the MXFP4 model

  @M0-W-1320 @gate_foundation
  Scenario: Health of the MXFP4 model
    Given a worker serving the gpt-oss-20b MXFP4 model
    When I GET /health
    Then the response status is 200
"""


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (["-k", "M0-W-1300"], 4),
        (["-k", "M0-W-1330"], 5),
        (["-k", "mxfp4"], 1),
        (["-m", "gate_foundation"], 37),  # gates.toml: the UTF-8 rows of events.feature count too
        (["-m", "M0-W-1302"], 24),
        # all but the dropped client (an M1 item) and the real-weights rows of cancel
        (["-m", "model_any and m0"], HTTP_SCENARIOS - 3),
        (["-m", "needs_real_weights"], 2),
        (["-m", "gate_m0_complete and not M0-W-1302"], 14),  # with the MXFP4 /health (M0-W-1320)
    ],
)
def test_tags_select_scenarios(harness_dir: pytest.Pytester, selection: list[str], expected: int):
    harness_dir.makefile(".feature", **{"features/gpt_oss": GPT_OSS})
    # The HTTP features plus one MXFP4 feature: counts stay fixed as other feature areas grow.
    paths = ["features/http", "features/gpt_oss.feature"]
    result = run(harness_dir, *paths, "--collect-only", "-q", *selection)
    assert f"{expected}/{HTTP_SCENARIOS + 1} tests collected" in result.stdout.str(), result.stdout.str()


def test_attach_and_spawn_options_exclude_each_other(harness_dir: pytest.Pytester):
    result = run(harness_dir, "features/http", "--worker-url", "http://127.0.0.1:1", "--worker-cmd", "x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--worker-url and --worker-cmd exclude each other*"])


UNKNOWN_TAGS = """\
@m0 @modle_qwen
Feature: A feature with typos in its tags

  @M0-W-1300 @M0-W-9999
  Scenario: Anything
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
"""


def test_unknown_tags_are_a_collection_error_naming_file_line_and_tag(harness_dir: pytest.Pytester):
    harness_dir.makefile(".feature", **{"features/typos": UNKNOWN_TAGS})
    result = run(harness_dir, "features/typos.feature", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*typos.feature:1: unknown tag @modle_qwen*", "*typos.feature:4: unknown tag @M0-W-9999*"]
    )
    assert "@M0-W-1300" not in result.stdout.str()


CAPABILITIES = """\
@m0 @model_qwen
Feature: Capability tags

  @M0-W-1320 @needs_spawn
  Scenario: Needs to start the worker
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I GET /health
    Then the response status is 200

  @M0-W-1320 @needs_real_weights
  Scenario: Needs real weights
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I GET /health
    Then the response status is 200

  @M0-W-1320 @model_smollm2
  Scenario: A model whose file is missing
    Given a worker serving the tiny llama Q4_0 model
"""


def test_attach_mode_and_capabilities(harness_dir: pytest.Pytester, fixtures_dir: Path, stub_path: Path):
    harness_dir.makefile(".feature", **{"features/capabilities": CAPABILITIES})
    port = 18000 + (int(time.time() * 1000) % 2000)
    model = fixtures_dir / "tiny/qwen2-realvocab-q4_k_m.gguf"
    stub = subprocess.Popen(
        [
            sys.executable,
            str(stub_path),
            "--worker-id",
            "w",
            "--model",
            str(model),
            "--gpu-device",
            "0",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_health(f"http://127.0.0.1:{port}")
        result = run(
            harness_dir,
            "features/capabilities.feature",
            "features/http/health.feature",
            "--worker-url",
            f"http://127.0.0.1:{port}",
            "-rsf",
            "--tb=line",
        )
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    result.assert_outcomes(passed=2, skipped=2, failed=1)
    text = result.stdout.str()
    assert "not applicable: attach mode (--worker-url)" in text
    assert "not applicable: needs real weights; qwen2-realvocab-q4_k_m.gguf is a synthetic stand-in" in text
    assert "setup error: model file for 'tiny-llama-q4_0' is missing" in text
    assert "python -m fixtures prepare" in text


def wait_for_health(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"stub at {url} did not start")


def _workers_serving(model_root: Path) -> list[psutil.Process]:
    """Stub workers started on a model of this test session's fixtures dir."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(model_root) in arg for arg in cmdline) and any("stub_worker.py" in arg for arg in cmdline):
            found.append(process)
    return found


def test_no_worker_outlives_a_failing_session(
    harness_dir: pytest.Pytester, fixtures_dir: Path, stub_command: StubCommand
):
    result = run(
        harness_dir, "features/http/health.feature", "--worker-cmd", stub_command("health_missing_field")
    )
    result.assert_outcomes(passed=1, failed=1)
    assert _workers_serving(fixtures_dir) == []


def test_no_worker_outlives_an_interrupted_session(
    harness_dir: pytest.Pytester, fixtures_dir: Path, stub_command: StubCommand
):
    """Ctrl-C in the middle of a scenario: the session still stops the worker."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "features/http/cancel.feature",
        "-k",
        "running_job",
        "--worker-cmd",
        stub_command("cancel_noop"),
    ]
    session = subprocess.Popen(
        command, cwd=harness_dir.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not _workers_serving(fixtures_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workers_serving(fixtures_dir), "the worker never started"
    time.sleep(1.0)
    session.send_signal(2)  # SIGINT, as Ctrl-C
    session.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _workers_serving(fixtures_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workers_serving(fixtures_dir) == []


@pytest.mark.parametrize(
    ("behaviour", "outcomes"),
    [
        ("eos_first_jobs", {"passed": 1}),
        ("eos_at_once_first_jobs", {"passed": 1}),
        ("eos_every_job", {"skipped": 1}),
    ],
    ids=["eos-then-long", "eos-before-any-token-then-long", "eos-always"],
)
def test_a_job_that_stops_by_eos_before_the_cancel_is_drawn_again(
    harness_dir: pytest.Pytester, stub_command: StubCommand, behaviour: str, outcomes: dict
):
    """A conforming worker whose model answers the cancel scenarios' prompt briefly and stops by EOS (a
    chat model may): the scenario draws the prompt again (another seed) until a job still streams, so a
    worker whose first two jobs stop early is still judged on its cancel (passed, not "not applicable");
    one whose every job stops early is not applicable, with the reason, never failed."""
    result = run(
        harness_dir,
        "features/http/cancel.feature",
        "-k",
        "test_cancelling_a_running_job",
        "--worker-cmd",
        stub_command(behaviour),
        "-q",
        "-rs",
    )
    result.assert_outcomes(**outcomes)
    if behaviour == "eos_every_job":
        assert "not applicable: the job ended by itself (stop_reason EOS) before the cancel took effect" in (
            result.stdout.str()
        )
