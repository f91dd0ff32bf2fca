"""Black-box tests of the generation, tokenizer and GPT features against stub workers (pytester).

The conforming generation stub passes the scenarios its fake model can play; each fault makes the
scenario of the broken rule fail, naming the rule's spec ID. The self-check scenarios run a stub
self-check command that reports a failing case or too few cases.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.harness.conftest import SMOLLM2, write_tiny_gguf

STUBS = Path(__file__).parent / "stubs"
GENERATION_STUB = STUBS / "generation_stub.py"
SELFCHECK_STUB = STUBS / "selfcheck_stub.py"
GPT_OSS = "tiny/gpt-oss-realvocab/gpt-oss-realvocab-mxfp4_moe.gguf"
GPT2 = "tiny/gpt2-f32.gguf"
GOLDEN_TEXT = " kernels run fast"


def write_gpt_oss(path: Path) -> None:
    """A metadata-complete gpt-oss file of type MXFP4_MOE with a tokenizer.json next to it (hf-json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "gpt-oss")
    writer.add_context_length(4096)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_MXFP4_MOE)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_tensor("token_embd.weight", np.zeros((300, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    vocab = {f"tok{i}": i for i in range(310)}
    added = [{"id": 310, "content": "<|end|>", "special": True}]
    tokenizer = {"model": {"type": "BPE", "vocab": vocab, "merges": []}, "added_tokens": added}
    path.with_name("tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")


@pytest.fixture(scope="module")
def model_files(fixtures_dir: Path) -> Path:
    if not (fixtures_dir / GPT_OSS).is_file():
        write_gpt_oss(fixtures_dir / GPT_OSS)
    if not (fixtures_dir / GPT2).is_file():
        write_tiny_gguf(fixtures_dir / GPT2, arch="gpt2", vocab=64, context=512)
    assert (fixtures_dir / SMOLLM2).is_file()  # the role's file counts as real weights
    return fixtures_dir


@pytest.fixture
def generation_dir(harness_dir: pytest.Pytester, model_files: Path) -> pytest.Pytester:
    """The harness dir plus a golden continuation computed "by llama.cpp" for its tiny gpt2 file."""
    sha = hashlib.sha256((model_files / GPT2).read_bytes()).hexdigest()
    golden = {
        "model": "tiny-gpt2-f32",
        "fixture": GPT2,
        "sha256": sha,
        "oracle": "a hand-written golden",
        "prompt": "The golden prompt",
        "max_tokens": 3,
        "token_ids": [5, 6, 7],
        "text": GOLDEN_TEXT,
    }
    folder = harness_dir.path / "fixtures" / "goldens" / "continuations"
    folder.mkdir(parents=True)
    (folder / "tiny-gpt2-f32.json").write_text(json.dumps(golden), encoding="utf-8")
    return harness_dir


def stub(harness: pytest.Pytester, fault: str = "none", variant: str = "none") -> str:
    goldens = harness.path / "fixtures" / "goldens" / "continuations"
    command = [sys.executable, str(GENERATION_STUB), "--fault", fault, "--variant", variant]
    return shlex.join([*command, "--goldens", str(goldens)]) + (
        " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
    )


def run(harness: pytest.Pytester, *args: str) -> pytest.RunResult:
    return harness.runpytest_subprocess(*args, "-q", "-rfs", "--tb=short", timeout=240)


CONFORMING = [
    "features/generation/sampling.feature",
    "features/generation/stops.feature",
    "features/generation/seed.feature",
    "features/generation/reproducibility.feature",
    "features/generation/utf8.feature",
    "features/generation/models.feature",
    "features/tokenizer/backends.feature",
    "features/gpt/gpt_oss.feature",
    "features/gpt/gpt2.feature",
]
NOT_PLAYED = "not Phi and not SmolLM2 and not runs_on"  # files the stub fixtures dir does not hold


def test_conforming_generation_stub_passes(generation_dir: pytest.Pytester):
    result = run(generation_dir, *CONFORMING, "-k", NOT_PLAYED, "--worker-cmd", stub(generation_dir))
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 25, result.stdout.str()


FAULTS = [
    # fault, feature, -k selection, failing scenario, text of the failure
    (
        "ignore_seed",
        "generation/seed.feature",
        "seed",
        "test_the_seed_the_worker_chose",
        "M0-W-1030: the runs differ",
    ),
    (
        "ignore_seed",
        "generation/reproducibility.feature",
        "temperature_07",
        "test_sampling_at_temperature_07",
        "M0-SYS-2.3.1/M0-W-1030/M0-W-1826: run 2 differs from run 1",
    ),
    ("ignore_stop", "generation/stops.feature", "stop_string", "test_a_stop_string", "M0-W-1422: with stop"),
    (
        "replacement_char",
        "generation/utf8.feature",
        "SmolLM2",
        "test_the_specs_prompts",
        "M0-W-1824: the concatenated token texts hold U+FFFD although the model's bytes are valid UTF-8",
    ),
    ("split_utf8", "generation/utf8.feature", "Qwen", "test_the_specs_prompts", "lone surrogate"),
    (
        "exceed_max_tokens",
        "generation/stops.feature",
        "max_tokens and 5",
        "test_max_tokens_max_tokens_bounds",
        "M0-W-1300: max_tokens is 5 but the job streamed 6 tokens",
    ),
    (
        "wrong_vocab_size",
        "tokenizer/backends.feature",
        "Qwen",
        "test_health_reports_the_tokenizer",
        "M0-W-1360/M0-W-1362/M0-W-1364: /health vocab_size is 301",
    ),
    (
        "wrong_tokenizer",
        "tokenizer/backends.feature",
        "gpt-oss",
        "test_health_reports_the_tokenizer",
        "M0-W-1360/M0-W-1361/M0-W-1364: /health tokenizer_kind is 'gguf-bpe'",
    ),
    (
        "wrong_continuation",
        "gpt/gpt2.feature",
        "greedy",
        "test_greedy_continuation",
        "M0-W-1215/M0-W-1432/M0-W-1433/M0-W-1434: greedy continuation of 'The golden prompt' differs",
    ),
    (
        "quant_q8_0",
        "gpt/gpt_oss.feature",
        "health_shows",
        "test_health_shows_the_mxfp4_model",
        "M0-W-1230/M0-W-1320/M0-W-1823: /health quant_kind is 'Q8_0', not 'MXFP4'",
    ),
]


@pytest.mark.parametrize(
    ("fault", "feature", "selection", "scenario", "message"),
    FAULTS,
    ids=[f"{fault[0]}-{fault[1].split('/')[1].split('.')[0]}" for fault in FAULTS],
)
def test_each_generation_fault_fails_its_scenario(
    generation_dir: pytest.Pytester, fault: str, feature: str, selection: str, scenario: str, message: str
):
    result = run(
        generation_dir, f"features/{feature}", "-k", selection, "--worker-cmd", stub(generation_dir, fault)
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert any(scenario in line for line in failed), result.stdout.str()
    assert message in result.stdout.str(), result.stdout.str()


ALLOWED_VARIANTS = [
    # variant, feature, -k selection: the scenario its other allowed behaviour must pass
    ("replace_invalid", "generation/utf8.feature", "Qwen or SmolLM2"),
    ("replace_invalid", "generation/models.feature", "Qwen"),
    ("stream_stop", "generation/stops.feature", "stop_string"),
]


@pytest.mark.parametrize(("variant", "feature", "selection"), ALLOWED_VARIANTS)
def test_each_allowed_variant_passes(
    generation_dir: pytest.Pytester, variant: str, feature: str, selection: str
):
    """A worker that behaves in another way the spec allows passes: U+FFFD for invalid bytes of random
    weights (ERRATA E-28), the stop string streamed (ERRATA E-06)."""
    result = run(
        generation_dir,
        f"features/{feature}",
        "-k",
        selection,
        "--worker-cmd",
        stub(generation_dir, variant=variant),
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) >= 1, result.stdout.str()


def selfcheck_command(verdict: str) -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(SELFCHECK_STUB))} {verdict} {{check}} {{args}}"


@pytest.mark.parametrize(
    ("verdict", "message"),
    [
        ("pass", None),
        (
            "fail",
            "M0-W-1360/M0-W-1362/M0-W-1363: 1 of 25 cases fail: 03 BOS/EOS as the vocabulary adds them: encode gave [1]",
        ),
        ("short", "M0-W-1360/M0-W-1362/M0-W-1363: the self-check reported 24 cases for 25 vectors"),
        ("crash", "M0-W-1360/M0-W-1362/M0-W-1363: `"),
    ],
)
def test_selfcheck_verdicts(generation_dir: pytest.Pytester, verdict: str, message: str | None):
    shutil_copy_vectors(generation_dir)
    result = run(
        generation_dir,
        "features/tokenizer/vectors.feature",
        "-k",
        "Qwen",
        "--worker-cmd",
        stub(generation_dir),
        "--selfcheck-cmd",
        selfcheck_command(verdict),
    )
    if message is None:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(failed=1)
        assert message in result.stdout.str(), result.stdout.str()


def test_selfcheck_not_applicable_without_a_declared_command(generation_dir: pytest.Pytester):
    result = run(
        generation_dir,
        "features/tokenizer/vectors.feature",
        "-k",
        "Qwen",
        "--worker-cmd",
        stub(generation_dir),
    )
    result.assert_outcomes(skipped=1)
    assert "not applicable: the worker under test declares no self-check command" in result.stdout.str()


def shutil_copy_vectors(harness: pytest.Pytester) -> None:
    source = Path(__file__).resolve().parents[2] / "fixtures" / "vectors" / "qwen2.json"
    target = harness.path / "fixtures" / "vectors"
    target.mkdir(parents=True, exist_ok=True)
    (target / "qwen2.json").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
