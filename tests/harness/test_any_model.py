"""Scenarios of any model (`Given a worker serving any model`) run against whatever an attached worker
serves, judged against that file; a fault stub serving a non-Qwen model fails them with the right ID, and a
served file the harness cannot identify makes them not applicable with the way out (--worker-model).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from tests.harness.conftest import write_tiny_gguf
from tests.harness.test_attach import SMOLLM2, attached, model_dir, run  # noqa: F401 (model_dir: fixture)

NEEDS_ANOTHER = "this scenario needs"


def test_http_contract_runs_on_a_smollm2_worker(harness_dir: pytest.Pytester, model_dir: Path):  # noqa: F811
    with attached(model_dir / SMOLLM2) as url:
        result = run(harness_dir, "features/http", "--worker-url", url)
    outcomes = result.parseoutcomes()
    text = result.stdout.str()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, text
    assert outcomes["passed"] >= 30, text
    assert NEEDS_ANOTHER not in text, text


@pytest.mark.parametrize(
    ("fault", "feature", "message"),
    [
        ("two_terminals", "features/http/events.feature", "M0-W-1311"),
        ("accept_invalid", "features/http/validation.feature", "M0-W-1302"),
        ("health_missing_field", "features/http/health.feature", "M0-W-1320"),
    ],
)
def test_a_fault_fails_the_contract_on_a_smollm2_worker(
    harness_dir: pytest.Pytester,
    model_dir: Path,  # noqa: F811
    fault: str,
    feature: str,
    message: str,
):
    with attached(model_dir / SMOLLM2, "--fault", fault, stub="stub_worker.py") as url:
        result = run(harness_dir, feature, "--worker-url", url)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failures = [line for line in result.outlines if "RequirementViolation: " in line]
    assert any(f"RequirementViolation: {message}" in line for line in failures), result.stdout.str()
    assert NEEDS_ANOTHER not in result.stdout.str()


def test_an_unknown_served_file_needs_worker_model(harness_dir: pytest.Pytester, tmp_path: Path):
    unknown = write_tiny_gguf(
        tmp_path / "other-model.gguf",
        arch="llama",
        vocab=321,
        context=4096,
        file_type=gguf.LlamaFileType.MOSTLY_Q8_0,
    )
    with attached(unknown) as url:
        unnamed = run(harness_dir, "features/http/cancel.feature", "--worker-url", url)
        named = run(
            harness_dir, "features/http/cancel.feature", "--worker-url", url, "--worker-model", str(unknown)
        )
    # Three scenarios of any model; two rows on real files (SmolLM2, the real Qwen) that this worker is not.
    unnamed.assert_outcomes(skipped=5)
    assert "a file the harness does not know; name it with --worker-model" in unnamed.stdout.str()
    named.assert_outcomes(passed=3, skipped=2)
