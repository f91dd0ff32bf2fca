"""The Triton GEMV's numbers on a machine without a GPU: `tests/kernels/interpreted_gemv.py` run in a fresh
process under Triton's interpreter (`TRITON_INTERPRET=1`), every format the GEMV reads: the plain product
with a bias, two expert tensors in one segmented launch, and the dequantizer, against gguf-py's values in
float64; `tests/kernels/interpreted_qgemm.py`, the prefill GEMM of every format, dense and by expert;
`tests/kernels/interpreted_attention.py`, the fused RoPE + attention, split or not; and
`tests/kernels/interpreted_model.py`, the decode step and a 40-token prefill of the tiny files (and of two
with each of `benchmarks.step_ab`'s kernel variants) through the CUDA kernel set on CPU against the
reference logits. Runs wherever Triton is importable (skipped in CI, which has no Triton); the GEMV and
attention checks take a few minutes, the model check about 15, each variant's about 2."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

ROOT = Path(__file__).resolve().parents[2]


def interpreted(module: str, timeout_s: int, args: list[str] | None = None) -> str:
    """Runs `python -m <module> [args]` in a fresh process under Triton's interpreter (it must be chosen
    before the kernels are defined); its report (stdout and the end of stderr), asserted to have exited 0."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-m", module, *(args or [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    report = run.stdout + run.stderr[-4000:]
    assert run.returncode == 0, report
    return report


def test_every_gemv_format_gives_the_oracles_numbers_under_the_interpreter() -> None:
    report = interpreted("tests.kernels.interpreted_gemv", 1800)
    # 23 checks for each of the 12 formats (plain, the norms inside the GEMV: 4, a bias and the residual:
    # 2, gate/up/SiLU: 8, experts plain and rms-normed, the experts' gate/up/SwiGLU-OAI: 4, dequantize,
    # embedding rows); the loops that load ahead or take a step's activations with the words against the
    # plain loop, bit for bit, 35 for each of the five formats of AHEAD_FORMATS read in file order (one and
    # two splits, the dequantizer, then q/k/v, the residual forms, gate/up and the experts at 1-3 splits);
    # five for MXFP4 regrouped; 17 each for regrouped Q8_0 and Q6_K (every epilogue, their loop forms, the
    # dequantizer); five for the MoE's routed sum in the down GEMV's epilogue (plain and scaled, one and
    # two splits, the counters back at zero).
    assert report.count("ok  ") == 23 * 12 + 35 * 5 + 5 + 17 * 2 + 5, report


def test_the_prefill_gemm_gives_the_oracles_numbers_under_the_interpreter() -> None:
    """`tests/kernels/interpreted_qgemm.py`: every format through the prefill GEMM that decodes the packed
    tiles itself, dense and grouped by expert, against gguf-py's weights in float64."""
    report = interpreted("tests.kernels.interpreted_qgemm", 900)
    # The activations' scaling (two layouts) and the device-side expert sort; per 32-block format two
    # dense widths and the experts (Q8_0 and MXFP4 regrouped too); per K-quant one dense width and the
    # experts (Q6_K regrouped too).
    assert report.count("ok  ") == 2 + 1 + 8 * 3 + 2 * 3 + 3 * 2 + 2, report


def test_the_fused_rope_attention_gives_the_references_numbers_under_the_interpreter() -> None:
    """`tests/kernels/interpreted_attention.py`: RoPE + KV store + attention, one program per KV head and
    the positions split among several, against the reference RoPE and attention."""
    report = interpreted("tests.kernels.interpreted_attention", 900)
    # 8 head layouts x 3 split counts, x 2 with the re-tiled attention (`attention_tile(retiled=True)`) and
    # x 3 with the splits sharing the step's positions (`by_position=True`) and x 2 with the merge unrolled
    # (`unrolled_merge=True`, 4 and 16 splits: the looped merge's bits) and x 3 with grouped heads two a
    # program (`heads_apart=True`: 1 and 16 splits, and 16 with the merge unrolled)
    assert report.count("ok  ") == 8 * (3 + 2 + 3 + 2 + 3), report


def test_every_llama_family_and_gpt_oss_step_gives_the_reference_logits_through_the_cuda_kernel_set() -> None:
    """`tests/kernels/interpreted_model.py`: the decode step and a 40-token prefill of the tiny files
    through the CUDA kernel set moved to the CPU (norms inside the GEMVs, gate/up/SiLU, split-KV attention,
    MoE paths, the prefill GEMM dense and by expert), against the reference kernels' logits, and each
    file's fused forms were served (not silently declined)."""
    report = interpreted("tests.kernels.interpreted_model", 3000)
    assert report.count("ok  ") == 10 and "no fused form" not in report, report


@pytest.mark.parametrize(
    "variant",
    [
        "ahead",
        "with-words",
        "round-trip-free",
        "retiled",
        "by-position",
        "merge-looped",
        "heads-apart",
        "router-before",
        "router-apart",
        "combine-in-down",
    ],
)
def test_each_kernel_variant_gives_the_reference_logits_through_the_model(variant: str) -> None:
    """`interpreted_model --variant`: `benchmarks.step_ab`'s kernel variants (the GEMVs loading ahead, with
    the activations with the words, the Q5_0/Q8_0 tiles without round trips, the re-tiled attention, the
    attention split by position, its merge as runtime loops, grouped heads two a program, the router's
    first weights before the wait, the router's product and top-k apart) wired
    through a llama and the GPT-OSS tiny file, held to the same bounds as the default kernels before the
    device times them."""
    files = ["tiny/llama-q8_0.gguf", "tiny/gpt-oss-mxfp4_moe.gguf"]
    report = interpreted("tests.kernels.interpreted_model", 1500, ["--variant", variant, "--files", *files])
    assert report.count("ok  ") == 2 and "no fused form" not in report, report


def test_regrouped_matrices_give_the_file_orders_logits_through_the_model() -> None:
    """`interpreted_model --regroup q8_0 q6_k`: the 2-D Q8_0 and Q6_K matrices stored codes, then scales
    (the worker's `--regroup`) through the decode step, the prefill GEMM and the embedding lookup: the
    same bounds as the file order, and its logits bit for bit."""
    files = ["tiny/llama-q8_0.gguf", "tiny/phi3-q4_k_m.gguf"]
    report = interpreted(
        "tests.kernels.interpreted_model", 1500, ["--regroup", "q8_0", "q6_k", "--files", *files]
    )
    assert report.count("ok  ") == 2 and report.count("the file order's logits bit for bit") == 2, report
