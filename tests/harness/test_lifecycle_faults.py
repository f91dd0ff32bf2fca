"""Black-box tests of the lifecycle scenarios: run them against the lifecycle stub through pytester.

The conforming stub passes every lifecycle scenario (the GPU ones through a stand-in nvidia-smi that lists
the stub's pretend device context); each stub fault fails the scenario of the broken rule, with the rule's
spec ID in the failure; without nvidia-smi the GPU scenarios are not applicable, with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.conftest import write_tiny_gguf

STUBS = Path(__file__).parent / "stubs"
LIFECYCLE_STUB = STUBS / "lifecycle_stub.py"
FAKE_NVIDIA_SMI = STUBS / "fake_nvidia_smi.py"
FEATURES = ("features/lifecycle", "features/performance/seams.feature")
# Of seams.feature only the pure decode loop: the flag-swap scenarios need worker flags the stub lacks.
SEAM_SWAPS = ["-k", "not allocator and not attention_kernel and not paged_kv_cache and not cuda_graph"]
# end to end x3, GPU context x2, load flow, one job at a time x2, workers side by side x3, pure decode loop
SCENARIOS = 12
GPU_SCENARIOS = 2
MODELS = {
    "tiny/qwen2-realvocab-q4_k_m.gguf": "qwen2",
    "tiny/phi3-realvocab-q4_k_m.gguf": "phi3",
    "tiny/gpt-oss-realvocab/gpt-oss-realvocab-mxfp4_moe.gguf": "gpt-oss",
    "tiny/qwen2-q4_k_m.gguf": "qwen2",
    "tiny/llama-q8_0.gguf": "llama",
}


@pytest.fixture(scope="module")
def lifecycle_fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle-fixtures")
    for relative, arch in MODELS.items():
        write_tiny_gguf(root / relative, arch=arch, context=512)
    return root


@pytest.fixture
def gpu_apps(tmp_path: Path) -> Iterator[Path]:
    """The stand-in driver's table of processes with a device context; leaked processes are ended after."""
    folder = tmp_path / "gpu-apps"
    folder.mkdir()
    yield folder
    for entry in folder.glob("[0-9]*"):
        try:
            os.kill(int(entry.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def lifecycle_dir(
    harness_dir: pytest.Pytester, lifecycle_fixtures: Path, gpu_apps: Path, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """The harness dir on the lifecycle fixtures, with `nvidia-smi` on PATH listing the stub's contexts."""
    bin_dir = harness_dir.path / "fake-bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "nvidia-smi"
    wrapper.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_NVIDIA_SMI))} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    monkeypatch.setenv("FAKE_GPU_APPS_DIR", str(gpu_apps))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("WORKER_ORCD_FIXTURES_DIR", str(lifecycle_fixtures))
    return harness_dir


def stub(fault: str = "none", busy: str = "refuse", first_token_delay_s: float = 0.0) -> str:
    options = ["--fault", fault, "--busy", busy, "--first-token-delay-s", str(first_token_delay_s)]
    return shlex.join([sys.executable, str(LIFECYCLE_STUB), *options]) + (
        " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, "-q", "-rfs", "--tb=short", timeout=300)


def test_conforming_stub_passes_every_lifecycle_scenario(lifecycle_dir: pytest.Pytester):
    result = run(lifecycle_dir, *FEATURES, *SEAM_SWAPS, "--worker-cmd", stub())
    result.assert_outcomes(passed=SCENARIOS)


def test_a_queued_second_job_passes_too(lifecycle_dir: pytest.Pytester):
    result = run(
        lifecycle_dir, "features/lifecycle/one_job_at_a_time.feature", "--worker-cmd", stub(busy="queue")
    )
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("busy", ["refuse", "queue"])
def test_a_dropped_client_frees_the_worker(lifecycle_dir: pytest.Pytester, busy: str):
    result = run(lifecycle_dir, "features/http/disconnect.feature", "--worker-cmd", stub(busy=busy))
    result.assert_outcomes(passed=1)


def test_a_worker_slow_to_its_first_token_still_gets_the_isolation_verdict(lifecycle_dir: pytest.Pytester):
    """A correct worker whose first job takes seconds to its first token (a CUDA graph captured on the
    first job) is killed once its job has begun, while the warm second worker still streams: the
    scenario applies and passes (waiting for the first worker's tokens let the second finish first)."""
    result = run(
        lifecycle_dir,
        "features/lifecycle/isolation.feature",
        "-k",
        "killing",
        "--worker-cmd",
        stub(first_token_delay_s=8.0),  # longer than the second worker's 480 tokens at 10 ms
    )
    result.assert_outcomes(passed=1)


def test_without_nvidia_smi_the_gpu_scenarios_are_not_applicable(
    lifecycle_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    result = run(lifecycle_dir, "features/lifecycle/gpu_context.feature", "--worker-cmd", stub())
    result.assert_outcomes(skipped=GPU_SCENARIOS)
    result.stdout.fnmatch_lines(["*not applicable: no CUDA GPU visible*"])


FAULTS = [
    # fault, feature, -k selection, scenario that must fail, text its failure shows
    ("greedy_drift", "lifecycle/end_to_end.feature", "Qwen", "test_end_to_end", "M0-W-1820: run 2 differs"),
    (
        "progress_backwards",
        "lifecycle/loading.feature",
        "loading",
        "test_loading_the_qwen25",
        "M0-W-1410: bytes_loaded goes backwards",
    ),
    (
        "log_per_token",
        "performance/seams.feature",
        "logs_nothing",
        "test_the_decode_loop_logs_nothing",
        "M0-SEAM-PURE-LOOP: a 4-token job added",
    ),
    (
        "concurrent_jobs",
        "lifecycle/one_job_at_a_time.feature",
        "second_job",
        "test_a_second_job",
        "M0-W-1301: 4 of the second job's 4 tokens arrived while the first job was still streaming",
    ),
    (
        "mixed_streams",
        "lifecycle/one_job_at_a_time.feature",
        "at_once",
        "test_clients_sending",
        "differs from the same job run alone",
    ),
    (
        "busy_cut_short",
        "lifecycle/one_job_at_a_time.feature",
        "at_once",
        "test_clients_sending",
        "M0-W-1311: ",
    ),
    (
        "ignore_disconnect",
        "http/disconnect.feature",
        "drops",
        "test_a_job_whose_client_drops",
        "M0-W-1611: the client dropped its stream after",
    ),
    (
        "die_with_sibling",
        "lifecycle/isolation.feature",
        "killing",
        "test_killing_one_worker",
        "M0-SYS-6.3.2: the second worker's stream broke off",
    ),
    (
        "shared_server",
        "lifecycle/isolation.feature",
        "process_of_its_own",
        "test_each_worker_answers",
        # Either stub may win the race to be the shared server, so either worker's port is the one named.
        re.compile(r"M0-SYS-2\.4\.2: worker #[12]'s port \d+ is served by .*, a process of the other worker"),
    ),
    (
        "health_device_cpu",
        "lifecycle/gpu_context.feature",
        "holds_the_weights",
        "test_the_workers_cuda_context",
        "M0-W-1400: /health device is 'cpu', not a CUDA device",
    ),
    (
        "weights_in_host_memory",
        "lifecycle/gpu_context.feature",
        "holds_the_weights",
        "test_the_workers_cuda_context",
        "M0-W-1010/M0-W-1400: the worker's CUDA context holds 0 bytes (nvidia-smi)",
    ),
    (
        "context_leak",
        "lifecycle/gpu_context.feature",
        "released",
        "test_the_cuda_context_is_released",
        "M0-W-1401: 5 s after the worker exited nvidia-smi still lists a CUDA context of it",
    ),
]


@pytest.mark.parametrize(
    ("fault", "feature", "selection", "scenario", "message"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_each_fault_fails_the_scenario_of_its_requirement(
    lifecycle_dir: pytest.Pytester,
    fault: str,
    feature: str,
    selection: str,
    scenario: str,
    message: str | re.Pattern[str],
):
    result = run(lifecycle_dir, f"features/{feature}", "-k", selection, "--worker-cmd", stub(fault))
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert any(scenario in line for line in failed), result.stdout.str()
    pattern = message if isinstance(message, re.Pattern) else re.compile(re.escape(message))
    assert pattern.search(result.stdout.str()), result.stdout.str()
