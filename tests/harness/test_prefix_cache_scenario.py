"""The prefix-cache scenario (features/performance/prefix_cache.feature, M1-PREFIX-CACHE) against workers
that break it, and one that declares no cache.

The reference worker with `--prefix-cache` passes. Without a cache, though declared (an empty template: "it
always reuses prefixes"), the timing check fails: the shared prefix saves nothing of its prefill. A cache that
reuses positions whatever tokens they hold (`stubs/prefix_fault_worker.py`) fails the token check. A worker
that declares no cache is not applicable, and the reason names the option to pass. The jobs run on the
prepared tiny fixture (a stand-in GGUF has no weights to prefill).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from fixtures.paths import fixtures_dir

FEATURE = "features/performance/prefix_cache.feature"
MODEL = "tiny/llama-q8_0.gguf"
WORKER_ARGS = " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port} --device cpu"
FAULT_WORKER = Path(__file__).parent / "stubs" / "prefix_fault_worker.py"


@pytest.fixture(scope="module")
def built() -> Path:
    """The prepared fixtures, read before `harness_dir` points the variable at its stand-ins."""
    return fixtures_dir()


@pytest.fixture
def prepared(built: Path, harness_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    if not (built / MODEL).is_file():
        pytest.skip(f"{MODEL} is not built in {built}: run `python -m fixtures prepare --tiny`")
    monkeypatch.setenv("WORKER_ORCD_FIXTURES_DIR", str(built))
    return harness_dir


def _run(harness: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, str]:
    result = harness.runpytest_subprocess(FEATURE, *args, "-rfEs", "--tb=line", timeout=300)
    return result, result.stdout.str()


def _reference(*extra: str) -> str:
    return (
        shlex.join([sys.executable, "-m", "reference_worker"]) + WORKER_ARGS + "".join(f" {a}" for a in extra)
    )


def test_the_reference_worker_with_its_prefix_cache_passes(prepared: pytest.Pytester):
    result, output = _run(prepared)  # spawned as the reference worker: --prefix-cache is built in
    result.assert_outcomes(passed=1)


def test_a_worker_that_does_not_reuse_the_prefix_fails_on_time(prepared: pytest.Pytester):
    result, output = _run(prepared, "--worker-cmd", _reference(), "--worker-flag", "prefix_cache=")
    result.assert_outcomes(failed=1)
    assert "M1-PREFIX-CACHE: the shared prefix saved" in output and "the prefix was not reused" in output, (
        output
    )


def test_a_cache_that_ignores_the_tokens_fails_on_the_tokens(prepared: pytest.Pytester):
    faulty = shlex.join([sys.executable, str(FAULT_WORKER), "--fault", "ignores-tokens"]) + WORKER_ARGS
    result, output = _run(prepared, "--worker-cmd", faulty, "--worker-flag", "prefix_cache=--prefix-cache")
    result.assert_outcomes(failed=1)
    assert "streamed other tokens with the prefix cache" in output, output


def test_a_worker_that_declares_no_prefix_cache_is_not_applicable(prepared: pytest.Pytester):
    result, output = _run(prepared, "--worker-cmd", _reference())
    result.assert_outcomes(skipped=1)
    assert "not applicable: needs a prefix cache" in output, output
    assert '--worker-flag prefix_cache="<the worker' in output, output
