"""The device-memory scenario (M0-W-1830) against stub workers: memory left behind by every job fails it,
a buffer the first job of a shape builds and keeps does not (the spec does not ask a worker to allocate
everything before its first request)."""

from __future__ import annotations

import shlex
import sys

import pytest

from tests.harness.conftest import STUB

SCENARIO = "leave_no_device_memory_behind"


def _run(harness: pytest.Pytester, fault: str) -> pytest.RunResult:
    command = shlex.join([sys.executable, str(STUB), "--fault", fault])
    command += " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
    return harness.runpytest_subprocess(
        "features/performance/targets.feature", "-k", SCENARIO, "--worker-cmd", command, "-rfEs",
        "--tb=short", timeout=240,
    )  # fmt: skip


def test_memory_left_behind_by_every_job_fails_the_scenario(harness_dir: pytest.Pytester) -> None:
    result = _run(harness_dir, "vram_grows_each_job")
    result.assert_outcomes(failed=1, deselected=result.parseoutcomes().get("deselected", 0))
    assert "M0-W-1830" in result.stdout.str() and "vram_bytes_used was" in result.stdout.str()


@pytest.mark.parametrize("fault", ["none", "vram_built_by_first_job"])
def test_a_worker_that_keeps_what_its_first_job_built_passes(
    harness_dir: pytest.Pytester, fault: str
) -> None:
    result = _run(harness_dir, fault)
    result.assert_outcomes(passed=1, deselected=result.parseoutcomes().get("deselected", 0))
