"""Decode parity with llama.cpp (features/performance/parity.feature, M1-PARITY-LLAMACPP) without a GPU.

The scenario's own file carries `@needs_gpu`; here the same steps run in a feature without it, against the
stub worker (5 ms a token, ~200 tokens/s) and a stand-in llama-bench (a script printing llama-bench's JSON
with the rate it is told, and noting how it was called). A yardstick slower than the stub passes, a faster
one fails with both rates and the ratio, no llama-bench is not applicable with the option to pass, and a
llama-bench that fails is a setup error, never a verdict on the worker.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from steps.llama_bench import on_this_machine, parse_llama_bench
from tests.harness.conftest import STAND_IN, STUB, write_tiny_gguf
from tests.harness.test_attach import attached

SHAPED = "shaped/qwen2.5-0.5b-q4_k_m.gguf"

PARITY = """\
@m1 @M1-PARITY-LLAMACPP @needs_full_shape @model_qwen @q4_k_m
Feature: Parity without the GPU tag, so that it runs here

  Scenario: Qwen decodes at least as fast as llama.cpp
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    And one job with prompt "Hello" and max_tokens 2 has run
    When I run 3 greedy jobs with prompt "Write a long story about GPUs" and max_tokens 32
    And llama.cpp decodes 128 tokens of the same file on the same GPU
    Then the median decode rate is at least llama.cpp's
"""

FAKE_LLAMA_BENCH = """\
import json, os, sys
rate = float(os.environ["FAKE_TG_RATE"])
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps({"argv": sys.argv[1:], "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
if rate < 0:
    print("ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected", file=sys.stderr)
    sys.exit(1)
n_gen = int(sys.argv[sys.argv.index("-n") + 1])
print(json.dumps([{"n_prompt": 0, "n_gen": n_gen, "avg_ts": rate, "stddev_ts": 1.5, "model_type": "qwen2 1B"}]))
"""


@pytest.fixture
def parity_dir(
    harness_dir: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[pytest.Pytester, Path]:
    fixtures = tmp_path / "fixtures"
    write_tiny_gguf(fixtures / STAND_IN)
    write_tiny_gguf(fixtures / SHAPED)  # a small file in the shaped file's place: the harness goes by where
    monkeypatch.setenv("WORKER_ORCD_FIXTURES_DIR", str(fixtures))
    harness_dir.makefile(".feature", **{"features/parity": PARITY})
    bench = tmp_path / "llama-bench"
    bench.write_text(f"#!{sys.executable}\n{FAKE_LLAMA_BENCH}")
    bench.chmod(0o755)
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    return harness_dir, fixtures


def _stub() -> str:
    return shlex.join([sys.executable, str(STUB)]) + (
        " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
    )


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("features/parity.feature", *args, "-rfEs", "-s", timeout=240)


def _calls(tmp_path: Path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.parametrize(
    ("rate", "verdict"), [(20.0, "passed"), (100000.0, "failed")], ids=["slower", "faster"]
)
def test_the_worker_is_judged_against_llama_benchs_rate_on_the_same_file(
    parity_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rate: float, verdict: str
):
    pytester, fixtures = parity_dir
    monkeypatch.setenv("FAKE_TG_RATE", str(rate))
    result = _run(pytester, "--worker-cmd", _stub(), "--llama-bench", str(tmp_path / "llama-bench"))
    result.assert_outcomes(**{verdict: 1})
    text = result.stdout.str()
    assert f"x llama.cpp's {rate:.1f} ± 1.5 tokens/s" in text, text
    assert "median decode rate" in text and "on qwen2.5-0.5b-q4_k_m.gguf" in text, text
    if verdict == "failed":
        assert "M1-PARITY-LLAMACPP: median decode rate" in text, text
    (call,) = _calls(tmp_path)  # once, on the file the worker was judged as, on the harness's GPU
    assert call["gpu"] == "0"
    argv = call["argv"]
    assert argv[argv.index("-m") + 1] == str(fixtures / SHAPED)
    assert argv[argv.index("-n") + 1] == "128" and argv[argv.index("-p") + 1] == "0"
    assert argv[argv.index("-ngl") + 1] == "99" and argv[argv.index("-fa") + 1] == "1"


def test_without_llama_bench_parity_is_not_applicable(parity_dir, monkeypatch: pytest.MonkeyPatch):
    pytester, _ = parity_dir
    monkeypatch.delenv("WORKER_ORCD_LLAMA_BENCH", raising=False)
    result = _run(pytester, "--worker-cmd", _stub())
    result.assert_outcomes(skipped=1)
    assert "not applicable: needs llama.cpp's llama-bench as the yardstick (pass --llama-bench PATH" in (
        result.stdout.str()
    )


def test_a_failing_llama_bench_is_a_setup_error_not_a_verdict(
    parity_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytester, _ = parity_dir
    monkeypatch.setenv("FAKE_TG_RATE", "-1")
    result = _run(pytester, "--worker-cmd", _stub(), "--llama-bench", str(tmp_path / "llama-bench"))
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "setup error:" in text and "llama-bench exited 1" in text and "no CUDA-capable device" in text, (
        text
    )
    assert "M1-PARITY-LLAMACPP:" not in text, text


def test_an_attached_worker_on_this_machine_is_compared(
    parity_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytester, fixtures = parity_dir
    monkeypatch.setenv("FAKE_TG_RATE", "20")
    with attached(fixtures / SHAPED, stub="stub_worker.py") as url:
        options = ("--worker-url", url, "--worker-model", str(fixtures / SHAPED))
        result = _run(pytester, *options, "--llama-bench", str(tmp_path / "llama-bench"))
    result.assert_outcomes(passed=1)


def test_a_worker_url_is_on_this_machine_only_at_a_loopback_address_or_this_hosts_name():
    assert on_this_machine("http://127.0.0.1:8080/")
    assert on_this_machine("http://localhost:8080")
    assert on_this_machine("http://[::1]:8080/")
    assert not on_this_machine("http://gpu-box.example:8080")


def test_llama_bench_json_is_read_per_test():
    rows = [
        {"n_prompt": 512, "n_gen": 0, "avg_ts": 9913.0, "stddev_ts": 40.0, "build_commit": "abc"},
        {"n_prompt": 0, "n_gen": 128, "avg_ts": 326.6, "stddev_ts": 0.4},
    ]
    parsed = parse_llama_bench(json.dumps(rows))
    assert parsed["tests"]["pp512"]["avg_ts"] == 9913.0 and parsed["tests"]["tg128"]["avg_ts"] == 326.6
    assert parsed["build_commit"] == "abc"
