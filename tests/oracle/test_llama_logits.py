"""Logits of the Llama-family adapter against llama.cpp (llama-cpp-python 0.3.36), position by position.

llama.cpp runs with an F32 KV cache (`type_k=type_v=0`; its default F16 cache moves logits by ~1e-3) and
without its extra weight buffer types (`use_extra_bufts=False`): the repacked/AMX matmuls are CPU-specific
alternatives, and the AMX one crashes on some virtual machines. One thread: OpenMP's spinning barriers make
two threads ~20x slower on a busy two-core machine. Token ids come from llama.cpp's own
tokenizer; the worker's tokenizer is tested separately.

Tolerances (measured values in docs/models.md):
- F32 files: relative RMS < 1e-5 at every position (both sides compute in float32; only summation order
  differs).
- F16 files: relative RMS < 2e-3 (llama.cpp rounds the activations to F16 for F16 weights).
- Quantized files: llama.cpp quantizes the activations to Q8 inside quantized matmuls, we multiply by the
  exactly dequantized weights in float32; the tiny random nets amplify that (measured 1.0-1.6e-2), so
  relative RMS < 3e-2. Their top-2 logits are often within 0.01 of each other, so the argmax must agree
  except at near ties (llama.cpp's own logits of the two tokens within 0.05), and at >= 85 % of positions.

The real files (SmolLM2 Q4_1, Qwen2.5-Coder Q4_K_M) are compared in test_real_weights_logits.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.paths import fixture_path
from tests.oracle.llama_cpp_oracle import llama_cpp_logits, relative_rms
from tests.worker.llama_helpers import load_model

pytestmark = pytest.mark.oracle

IDS = [5, 17, 200, 33, 1, 99, 150, 7, 64, 300, 12, 3, 250, 8, 77, 410]


def our_logits(name: str, ids: list[int], *, weight_cache: bool = False) -> np.ndarray:
    model, _, _ = load_model(name, weight_cache=weight_cache)
    cache = model.new_cache(len(ids))
    with torch.inference_mode():
        return model.forward(torch.tensor(ids), cache).double().numpy()


def compare(
    name: str, ids: list[int], *, weight_cache: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ours = our_logits(name, ids, weight_cache=weight_cache)
    ref = llama_cpp_logits(fixture_path(name), ids)
    assert ours.shape == ref.shape
    return ours, ref, relative_rms(ours, ref)


def check_top1(ours: np.ndarray, ref: np.ndarray, near_tie: float, record_property) -> None:
    """Argmax agrees, except where llama.cpp's own logits of the two choices differ by < `near_tie`."""
    ours_top, ref_top = ours.argmax(-1), ref.argmax(-1)
    record_property("top1", float((ours_top == ref_top).mean()))
    gap = ref.max(-1) - ref[np.arange(len(ref)), ours_top]
    assert (gap < near_tie).all(), (
        f"argmax differs beyond a near tie at positions {np.where(gap >= near_tie)[0]}"
    )
    assert (ours_top == ref_top).mean() >= 0.85


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
def test_f32_logits_match_llama_cpp_at_every_position(arch, record_property):
    ours, ref, rel = compare(f"tiny/{arch}-f32.gguf", IDS)
    record_property("max_rel_rms", float(rel.max()))
    assert rel.max() < 1e-5, rel
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
@pytest.mark.parametrize("qtype", ["f16", "q8_0", "q4_0", "q4_1", "q5_0", "q4_k_m"])
def test_quantized_logits_agree_with_llama_cpp(arch, qtype, record_property):
    ours, ref, rel = compare(f"tiny/{arch}-{qtype}.gguf", IDS)
    record_property("max_rel_rms", float(rel.max()))
    assert rel.max() < (2e-3 if qtype == "f16" else 3e-2), rel
    check_top1(ours, ref, near_tie=0.05, record_property=record_property)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_1", "q5_0", "q4_k_m"])
def test_quantized_logits_through_the_cpu_weight_cache_agree_with_llama_cpp(arch, qtype, record_property):
    """The CPU fast path (float16 copies of the dequantized weights, kernels/cpu_dense.py) keeps the
    quantized files within the same tolerances as the reference path."""
    ours, ref, rel = compare(f"tiny/{arch}-{qtype}.gguf", IDS, weight_cache=True)
    record_property("max_rel_rms", float(rel.max()))
    assert rel.max() < 3e-2, rel
    check_top1(ours, ref, near_tie=0.05, record_property=record_property)
