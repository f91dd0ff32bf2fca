"""Black-box tests of the process and memory scenarios: run them against the process stub through pytester.

The conforming stub must pass every scenario of features/process and features/memory; each stub fault
must fail the scenario that checks the broken rule, with the rule's spec ID in the failure message; a
capability the worker does not declare makes its scenarios not applicable, with the reason.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

PROCESS_STUB = Path(__file__).parent / "stubs" / "process_stub.py"
FEATURES = ("features/process", "features/memory")
SCENARIOS = 52
CAPABILITY_SCENARIOS = 3  # need memory_budget (2) or residency_fault (1)
OPTIONAL_FLAGS = (
    "--worker-flag",
    "optional_flags=--max-tokens-in {max_tokens_in} --max-tokens-out {max_tokens_out} "
    "--inference-timeout-sec {timeout_s} --kv-cache-size-mb {kv_cache_mb}",
)
CAPABILITIES = (
    "--worker-flag",
    "memory_budget=--vram-budget-mb {mb}",
    "--worker-flag",
    "residency_fault=--residency-fault",
    *OPTIONAL_FLAGS,
)
TINY_MODELS = {
    "tiny/qwen2-q4_k_m.gguf": ("qwen2", gguf.LlamaFileType.MOSTLY_Q4_K_M, 0),
    "tiny/qwen2-q8_0.gguf": ("qwen2", gguf.LlamaFileType.MOSTLY_Q8_0, 0),
    "tiny/llama-q4_k_m.gguf": ("llama", gguf.LlamaFileType.MOSTLY_Q4_K_M, 0),
    "tiny/phi3-q4_k_m.gguf": ("phi3", gguf.LlamaFileType.MOSTLY_Q4_K_M, 0),
    "tiny/gpt2-q4_k_m.gguf": ("gpt2", gguf.LlamaFileType.MOSTLY_Q4_K_M, 0),
    "tiny/gpt-oss-mxfp4_moe.gguf": ("gpt-oss", gguf.LlamaFileType.MOSTLY_MXFP4_MOE, 0),
    # The Qwen2.5 role's stand-in: >= 2 MiB of tensors, so half of it is a whole MiB budget.
    "tiny/qwen2-realvocab-q4_k_m.gguf": ("qwen2", gguf.LlamaFileType.MOSTLY_Q4_K_M, 3 << 20),
    # The small real model's place (the timeout scenario runs on it); the stub reads only its metadata.
    "real/SmolLM2-135M-Instruct.Q4_1.gguf": ("llama", gguf.LlamaFileType.MOSTLY_Q4_1, 0),
}


def write_model(path: Path, arch: str, file_type: int, extra_bytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    writer.add_context_length(512)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_tensor("token_embd.weight", np.ones((300, 64), dtype=np.float32))
    if extra_bytes:
        writer.add_tensor("output.weight", np.ones((extra_bytes // 256, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def process_fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("process-fixtures")
    for relative, (arch, file_type, extra) in TINY_MODELS.items():
        write_model(root / relative, arch, file_type, extra)
    return root


@pytest.fixture
def process_dir(
    harness_dir: pytest.Pytester, process_fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.setenv("WORKER_ORCD_FIXTURES_DIR", str(process_fixtures))
    return harness_dir


def stub(fault: str = "none", variant: str = "none") -> str:
    return shlex.join([sys.executable, str(PROCESS_STUB), "--fault", fault, "--variant", variant]) + (
        " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=300)


def test_conforming_stub_passes_every_process_and_memory_scenario(process_dir: pytest.Pytester):
    result = run(process_dir, *FEATURES, "--worker-cmd", stub(), *CAPABILITIES, "-q", "-rs")
    result.assert_outcomes(passed=SCENARIOS)


def test_undeclared_capabilities_make_their_scenarios_not_applicable(process_dir: pytest.Pytester):
    result = run(
        process_dir,
        "features/memory",
        "--worker-cmd",
        stub(),
        "-q",
        "-rs",
        "-k",
        "oom or fit or residency_check",
    )
    result.assert_outcomes(skipped=CAPABILITY_SCENARIOS)
    result.stdout.fnmatch_lines(
        [
            "*not applicable: needs a device-memory budget*--worker-flag memory_budget=*",
            "*not applicable: needs a failed residency check injected*--worker-flag residency_fault=*",
        ]
    )


def test_attach_mode_makes_process_scenarios_not_applicable(process_dir: pytest.Pytester):
    result = run(
        process_dir, "features/process/cli.feature", "--worker-url", "http://127.0.0.1:9", "-q", "-rs"
    )
    result.assert_outcomes(skipped=16)
    result.stdout.fnmatch_lines(["*not applicable: attach mode*"])


FAULTS = [
    # fault, features, -k selection, scenario that must fail, text its failure shows
    (
        "accept_bad_uuid",
        "features/process/cli.feature",
        "not-a-uuid",
        "bad_flag_value",
        "M0-W-1100: started with --worker-id set to not-a-uuid, the worker came up",
    ),
    (
        "usage_traceback",
        "features/process/cli.feature",
        "65536",
        "bad_flag_value",
        "M0-W-1100: the worker printed a traceback",
    ),
    (
        "accept_version_2",
        "features/process/model_files.feature",
        "version",
        "gguf_file",
        "M0-W-1200/M0-W-1210: started on a model file with GGUF version 2, the worker came up",
    ),
    (
        "accept_any_architecture",
        "features/process/model_files.feature",
        "mamba",
        "unsupported_architecture",
        "M0-W-1212: started on a model file with general.architecture set to mamba",
    ),
    (
        "log_without_worker_id",
        "features/process/logs.feature",
        "startup_and_a_job",
        "startup_and_a_job",
        "M0-W-1900: log event 'startup' has worker_id None",
    ),
    (
        "no_perf_fields",
        "features/process/log_fields.feature",
        "performance_fields",
        "performance_fields",
        "M0-W-1901: the job's execute_end log event has no tokens_in",
    ),
    (
        "log_prompt",
        "features/process/log_fields.feature",
        "generated_text",
        "generated_text",
        "M0-W-1902: the prompt ('The secret word is PERIWINKLE-7731') is in output line",
    ),
    (
        "log_output",
        "features/process/log_fields.feature",
        "generated_text",
        "generated_text",
        "M0-W-1902: the generated text ('Hello, 世界",
    ),
    (
        "sigterm_exit_1",
        "features/process/shutdown.feature",
        "30_seconds",
        "exit_code_0",
        "M0-W-1340: after SIGTERM, the worker exited with code 1",
    ),
    (
        "sigterm_cuts_stream",
        "features/process/shutdown.feature",
        "during_a_job",
        "during_a_job",
        "M0-W-1340: the job's stream closed without a terminal event",
    ),
    (
        "ignore_timeout",
        "features/process/timeout.feature",
        "inference_timeout",
        "inference_timeout",
        "M0-W-1101/M0-W-1500/M0-W-1510: the job ran",
    ),
    (
        "not_resident",
        "features/memory/residency.feature",
        "over_time",
        "stays_resident",
        "resident is False, not true",
    ),
    (
        "vram_inflated",
        "features/memory/accounting.feature",
        "qwen2 and Q4_K_M and tiny",
        "stored_types",
        "M0-W-1201: /health vram_bytes_used is",
    ),
    (
        "oom_exits",
        "features/memory/oom.feature",
        "vram_oom",
        "keeps_serving",
        "the worker process exited with code 3 after the error",
    ),
    (
        "insufficient_vague",
        "features/memory/oom.feature",
        "do_not_fit",
        "do_not_fit",
        "lacks the required bytes, the available bytes, GPU 0",
    ),
]


@pytest.mark.parametrize(
    ("fault", "features", "selection", "scenario", "message"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_each_fault_fails_the_scenario_of_its_requirement(
    process_dir: pytest.Pytester, fault: str, features: str, selection: str, scenario: str, message: str
):
    result = run(
        process_dir,
        features,
        "-k",
        selection,
        "--worker-cmd",
        stub(fault),
        *CAPABILITIES,
        "-q",
        "-rf",
        "--tb=short",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert any(scenario in line for line in failed), result.stdout.str()
    assert message in result.stdout.str(), result.stdout.str()


ADVISORY_FAULTS = [
    # fault of a SHOULD requirement: caught, named, shown as advisory, and the run still passes
    (
        "no_progress",
        "features/process/logs.feature",
        "progress",
        "M0-W-1621: no model_load_progress log event",
    ),
    (
        "ignore_residency_fault",
        "features/memory/residency.feature",
        "residency_check",
        "M0-W-1012: 30 s after a failed residency check",
    ),
]


@pytest.mark.parametrize(
    ("fault", "features", "selection", "message"), ADVISORY_FAULTS, ids=[f[0] for f in ADVISORY_FAULTS]
)
def test_a_should_fault_is_advisory(
    process_dir: pytest.Pytester, fault: str, features: str, selection: str, message: str
):
    result = run(
        process_dir, features, "-k", selection, "--worker-cmd", stub(fault), *CAPABILITIES, "-q", "-rx"
    )
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(
        ["*XFAIL*advisory: M0-W-* (SHOULD) not met; a SHOULD or MAY requirement never fails a run*"]
    )
    assert message in result.stdout.str(), result.stdout.str()


def test_usage_errors_may_exit_2(process_dir: pytest.Pytester):
    """ERRATA E-26: the spec fixes exit code 1 for start-up failures, not for usage errors."""
    result = run(
        process_dir,
        "features/process/cli.feature",
        "-k",
        "bad_flag_value or missing",
        "--worker-cmd",
        stub(variant="usage_exit_2"),
        "-q",
    )
    result.assert_outcomes(passed=15)


def test_truthful_host_memory_is_not_applicable_on_a_machine_without_a_gpu(
    process_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    """0 device bytes and resident false, with no GPU and no memory budget declared: nothing to judge."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = run(
        process_dir,
        "features/memory/residency.feature",
        "features/memory/accounting.feature",
        "features/process/logs.feature",
        "-k",
        "over_time or tiny or startup_and_a_job",
        "--worker-cmd",
        stub(variant="host_memory_truth"),
        "-q",
        "-rs",
    )
    result.assert_outcomes(passed=3, skipped=5)  # 3 log scenarios; residency 2, accounting 3
    result.stdout.fnmatch_lines(["*not applicable: *resident=False*no CUDA GPU is visible*memory_budget*"])


def test_optional_flags_are_a_declared_capability(process_dir: pytest.Pytester):
    """M0-W-1101 is a MAY: without `optional_flags` declared, the scenario is not applicable."""
    result = run(
        process_dir, "features/process/cli.feature", "-k", "optional", "--worker-cmd", stub(), "-q", "-rs"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*not applicable: needs the optional flags of M0-W-1101*--worker-flag optional_flags=*"]
    )


def test_a_job_whose_first_draw_is_eos_is_drawn_again_before_sigterm(process_dir: pytest.Pytester):
    """A conforming worker whose model's first sampled token is EOS (a job of `started, end`, no token: a
    tiny random-weight model does so now and then) is not failed for it: the job streaming when SIGTERM
    comes is drawn again (another seed), and the scenario judges the worker's shutdown (passed)."""
    result = run(
        process_dir,
        "features/process/shutdown.feature",
        "-k",
        "during_a_job",
        "--worker-cmd",
        stub("eos_at_once_first_jobs"),
        "-q",
        "-rs",
    )
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("fault", "outcomes"),
    [("eos_first_jobs", {"passed": 1}), ("eos_every_job", {"skipped": 1})],
    ids=["eos-then-long", "eos-always"],
)
def test_a_job_that_stops_by_eos_within_the_timeout_is_drawn_again(
    process_dir: pytest.Pytester, fault: str, outcomes: dict
):
    """A conforming worker whose model answers the timeout scenario's prompt briefly and stops by EOS within
    the second: the job is drawn again (another seed), so a worker whose first two jobs stop early is still
    judged on its timeout (passed); one whose every job stops early is not applicable, never failed."""
    result = run(
        process_dir,
        "features/process/timeout.feature",
        "--worker-cmd",
        stub(fault),
        *OPTIONAL_FLAGS,
        "-q",
        "-rs",
    )
    result.assert_outcomes(**outcomes)
    if fault == "eos_every_job":
        result.stdout.fnmatch_lines(
            ["*not applicable: the job ended by itself after *, within its timeout of 1 s*"]
        )
