"""The CUDA-graph scenario (features/performance/seams.feature, M1-CUDA-GRAPHS) without a GPU.

The scenario carries `@needs_gpu`; here its steps run in a feature without it against the stub worker,
whose `--decode-graphs on|off` stands for a worker's graph and kernel-by-kernel decode. The same tokens
both ways pass; a worker whose graph changes a token fails with the differing runs; a worker that declares
neither way is not applicable, and the reason names the option to pass.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import gguf
import pytest

from tests.harness.conftest import STUB, write_tiny_gguf

GRAPHS = """\
@m1 @M1-CUDA-GRAPHS @model_tiny @q8_0 @needs_spawn
Feature: The CUDA-graph scenario without the GPU tag, so that it runs here

  Background:
    Given a worker serving the tiny llama Q8_0 model

  Scenario: The decode step replayed as a CUDA graph gives the same tokens as launched kernel by kernel
    When the same model is served with the worker flag cuda_graphs
    And I run a job with:
      | field       | value                                                        |
      | prompt      | Once upon a time there was a GPU that computed all day long |
      | max_tokens  | 12                                                           |
      | temperature | 0.7                                                          |
      | seed        | 5                                                            |
    And the same model is served with the worker flag eager_decode
    And I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first
"""
DECLARED = (
    "--worker-flag",
    "cuda_graphs=--decode-graphs on",
    "--worker-flag",
    "eager_decode=--decode-graphs off",
)


def _stub(fault: str) -> str:
    return shlex.join([sys.executable, str(STUB), "--fault", fault]) + (
        " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
    )


def _run(harness_dir: pytest.Pytester, fixtures_dir: Path, *args: str) -> pytest.RunResult:
    model = fixtures_dir / "tiny" / "llama-q8_0.gguf"
    if not model.is_file():
        write_tiny_gguf(model, arch="llama", file_type=gguf.LlamaFileType.MOSTLY_Q8_0)
    harness_dir.makefile(".feature", **{"features/graphs": GRAPHS})
    return harness_dir.runpytest_subprocess("features/graphs.feature", *args, "-rfEs", timeout=240)


@pytest.mark.parametrize(("fault", "verdict"), [("none", "passed"), ("graphs_change_tokens", "failed")])
def test_graph_and_kernel_by_kernel_decode_must_give_the_same_tokens(
    harness_dir: pytest.Pytester, fixtures_dir: Path, fault: str, verdict: str
):
    result = _run(harness_dir, fixtures_dir, "--worker-cmd", _stub(fault), *DECLARED)
    result.assert_outcomes(**{verdict: 1})
    if verdict == "failed":
        assert "M1-CUDA-GRAPHS: run 2 differs from run 1" in result.stdout.str(), result.stdout.str()


def test_a_worker_without_the_two_ways_is_not_applicable(harness_dir: pytest.Pytester, fixtures_dir: Path):
    result = _run(harness_dir, fixtures_dir, "--worker-cmd", _stub("none"))
    result.assert_outcomes(skipped=1)
    assert (
        "not applicable: needs the decode step captured and replayed as a CUDA graph" in result.stdout.str()
    )
    assert '--worker-flag cuda_graphs="<the worker' in result.stdout.str()
