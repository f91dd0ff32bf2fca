"""Timing scenarios (`@needs_full_shape`) run only on full-shape files (issue 12 item 5).

On the tiny stand-in they are not applicable with a reason that says how to get a full-shape file; with
the full-shape random-weight file built they run on it, spawned or attached, and a failure names the file
timed. The checks here assert verdicts and reasons, never a measured time: the fault stub's /health waits
for the running job (seconds against a 10 ms target), so the failure does not depend on machine load.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from tests.harness.conftest import STAND_IN, STUB, write_tiny_gguf
from tests.harness.test_attach import attached

SHAPED = "shaped/qwen2.5-0.5b-q4_k_m.gguf"  # what `fixtures prepare --shaped qwen2.5-0.5b` writes

TIMING = """\
@m1 @M0-W-1604
Feature: Timing scenarios without the GPU tag, so that they run here

  @needs_full_shape @model_qwen
  Scenario: Health timed while idle
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I GET /health 20 times
    Then the p99 /health latency is below 10 ms

  @needs_full_shape @model_qwen
  Scenario: Health timed while a job generates
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    And a job with prompt "Write a long story about GPUs" and max_tokens 2048 is streaming tokens
    When I GET /health 20 times while the job streams
    Then the p99 /health latency is below 10 ms
"""
NOT_FULL_SHAPE = (
    "not applicable: timing needs a full-shape file; qwen2-realvocab-q4_k_m.gguf is a tiny stand-in"
)


def _fixtures(root: Path, shaped: bool) -> Path:
    write_tiny_gguf(root / STAND_IN)
    if shaped:  # a small file in the shaped file's place: the harness goes by where it lies
        write_tiny_gguf(root / SHAPED)
    return root


def _run(pytester: pytest.Pytester, fixtures: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.setenv("WORKER_ORCD_FIXTURES_DIR", str(fixtures))
    pytester.makefile(".feature", **{"features/timing": TIMING})
    return pytester.runpytest_subprocess("features/timing.feature", *args, "-rfEs", "--tb=short", timeout=240)


def _stub(fault: str) -> str:
    return shlex.join([sys.executable, str(STUB), "--fault", fault]) + (
        " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
    )


def test_timing_is_not_applicable_on_a_tiny_stand_in(
    harness_dir: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fixtures = _fixtures(tmp_path / "fixtures", shaped=False)
    result = _run(harness_dir, fixtures, monkeypatch, "--worker-cmd", _stub("health_waits_for_job"))
    result.assert_outcomes(skipped=2)
    text = result.stdout.str()
    assert NOT_FULL_SHAPE in text, text
    assert "python -m fixtures prepare --shaped qwen2.5-0.5b" in text


def test_timing_runs_on_the_full_shape_file_and_names_it(
    harness_dir: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fixtures = _fixtures(tmp_path / "fixtures", shaped=True)
    args = ("--worker-cmd", _stub("health_waits_for_job"), "-k", "generates")
    result = _run(harness_dir, fixtures, monkeypatch, *args)
    result.assert_outcomes(failed=1, deselected=1)
    text = result.stdout.str()
    assert "M0-W-1604: p99 /health latency is" in text, text
    assert "while a job generated on qwen2.5-0.5b-q4_k_m.gguf (target 10 ms)" in text, text


def test_attached_timing_follows_the_file_named_with_worker_model(
    harness_dir: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fixtures = _fixtures(tmp_path / "fixtures", shaped=True)
    with attached(fixtures / STAND_IN) as url:
        stand_in = _run(harness_dir, fixtures, monkeypatch, "--worker-url", url, "-k", "idle")
    stand_in.assert_outcomes(skipped=1, deselected=1)
    assert "timing needs a full-shape file; the worker is judged as qwen2-realvocab" in stand_in.stdout.str()
    with attached(fixtures / SHAPED, "--fault", "health_waits_for_job", stub="stub_worker.py") as url:
        options = ("--worker-url", url, "--worker-model", str(fixtures / SHAPED), "-k", "generates")
        shaped = _run(harness_dir, fixtures, monkeypatch, *options)
    shaped.assert_outcomes(failed=1, deselected=1)
    assert "while a job generated on qwen2.5-0.5b-q4_k_m.gguf" in shaped.stdout.str(), shaped.stdout.str()
