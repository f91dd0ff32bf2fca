"""The worker model on real quantized files against llama.cpp, teacher-forced along llama.cpp's greedy
continuations of 12 prompts x 32 tokens (prose, code, a list, a French prompt; `teacher_forced.PROMPTS`).

Files: SmolLM2-135M-Instruct Q4_1 (llama architecture) and Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2, the
Q4_K_M mix of a 0.5B Qwen). References, both llama.cpp 0.3.36 with an F32 KV cache:

- the exact oracle: llama.cpp on the same weights dequantized to F32 by its own quantizer
  (`fixtures.dequantized`, cached in the build directory). The worker's reference path
  (`--kernels reference`) must agree in argmax at >= 99.5 % of positions and within a relative logit RMS
  set from the measurement with a margin (`RealModel.exact_rel_rms`); the CPU fast path (float16 copies
  of the dequantized matrices), built as the worker builds it, within float16 rounding (`FAST_REL_RMS`),
  with argmax flips only at near ties, both in one forward per sequence and in the engine's prefill and
  decode steps (on CPU the step form with its float16 GEMV);
- llama.cpp on the quantized file: it quantizes the activations to Q8 inside its quantized matmuls, so
  near ties flip. Both paths must agree in argmax at >= `RealModel.quantized_top1` of positions and differ
  from it by as much as llama.cpp's own F32 copy does.

Measured figures, per prompt and path, and the time of each part: tests/oracle/README.md.
SmolLM2 runs by default; Qwen (about 2.5 GB F32 copy, minutes on two cores) only with
WORKER_ORCD_REAL_QWEN=1, the switch of the real-Qwen conformance scenarios.
`pytest tests/oracle/test_real_weights_logits.py -s` prints the tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import gguf
import numpy as np
import pytest
import torch

from fixtures.dequantized import dequantized_f32
from fixtures.paths import fixture_path
from reference_worker.gguf import GGUFFile
from tests.oracle.teacher_forced import (
    Continuation,
    Summary,
    agreements,
    fast_logits_along,
    fast_step_logits_along,
    llama_cpp_continuations,
    reference_logits_along,
    table,
    worker_engine,
)
from tests.worker.llama_helpers import read_weights

REAL_QWEN_ENV = "WORKER_ORCD_REAL_QWEN"
EXACT_TOP1 = 0.995
# The fast path's float16 rounding moves single logits by up to ~0.07 (max abs diff measured on SmolLM2:
# 0.057 in one forward, 0.071 in the decode steps) but the gap between two of them far less, so its argmax
# may differ from the exact one only where the exact top two are within this.
FAST_NEAR_TIE = 0.05
# The one bound of the CPU fast path, both forms: float16 rounding of the weights (and, in the decode GEMV,
# of its input row and output). Measured max in one forward per sequence 5.0e-3 (SmolLM2), 5.1e-4 (Qwen);
# in the engine's decode steps 7.6e-3 (SmolLM2), 1.2e-3 (Qwen).
FAST_REL_RMS = 1e-2
# The two forms of the CPU fast path (`--kernels fast`, the worker's default on CPU), by fixture name.
FAST_FORMS = {
    "fast": "CPU fast path, one forward per sequence",
    "fast_step": "CPU fast path, the engine's prefill and decode steps",
}
# Our relative RMS against llama.cpp's quantized path equals llama.cpp's own (quantized vs its F32 copy)
# to within this fraction of it: the difference is llama.cpp's activation quantization, not ours.
SAME_AS_LLAMA_CPP_OWN = 0.05


@dataclass(frozen=True)
class RealModel:
    fixture: str
    exact_rel_rms: float  # bound on every position's relative RMS against the F32 copy (reference path)
    exact_rel_rms_mean: float  # bound on the mean over all positions
    quantized_top1: float  # argmax agreement with llama.cpp on the quantized file
    opt_in: str | None = None  # environment variable that must be "1" for the model to run

    @property
    def label(self) -> str:
        return self.fixture.split("/")[-1].removesuffix(".gguf")


MODELS = [
    # Measured (reference path vs F32 copy): max 8.1e-6, mean 1.5e-6; bounds leave a factor of three.
    # llama.cpp's own Q4_1 path agrees with its own F32 copy at 97.1 % of these positions (near ties
    # flip at gaps up to 0.31 logits), so 97 % would ask more of an exact implementation than llama.cpp's
    # exact arithmetic gives; 96 % leaves room for four more flips.
    RealModel("real/SmolLM2-135M-Instruct.Q4_1.gguf", 2.5e-5, 5e-6, quantized_top1=0.96),
    # Measured: max 3.5e-6, mean 6.7e-7; bounds leave a factor of three. Q4_K_M agreement measured 99.2 %.
    RealModel(
        "real/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 1e-5, 2e-6, quantized_top1=0.97, opt_in=REAL_QWEN_ENV
    ),
]

pytestmark = [pytest.mark.oracle, pytest.mark.slow]


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: m.label)
def model(request) -> RealModel:
    m: RealModel = request.param
    if m.opt_in and os.environ.get(m.opt_in) != "1":
        pytest.skip(f"{m.label} oracle is opt-in (minutes on two cores, 2.5 GB F32 copy): {m.opt_in}=1")
    return m


@pytest.fixture(scope="module")
def continuations(model) -> list[Continuation]:
    return llama_cpp_continuations(model.fixture)


@pytest.fixture(scope="module")
def reference_path(model, continuations) -> list[np.ndarray]:
    return reference_logits_along(model.fixture, continuations)


@pytest.fixture(scope="module")
def engine(model):
    return worker_engine(model.fixture)


@pytest.fixture(scope="module")
def fast_path(engine, continuations) -> list[np.ndarray]:
    return fast_logits_along(engine, continuations)


@pytest.fixture(scope="module")
def fast_step_path(engine, continuations) -> list[np.ndarray]:
    return fast_step_logits_along(engine, continuations)


def _report(title: str, continuations, ours, reference: str, record_property) -> Summary:
    rows = agreements(continuations, ours, reference)
    print("\n" + table(title, rows))
    s = Summary.of(rows)
    for key, value in vars(s).items():
        record_property(key, value)
    return s


def test_f32_copy_holds_the_values_the_worker_dequantizes(model):
    """Bit for bit: llama.cpp's quantizer (ggml's to_float) and the worker's dequantizers give the same
    float32 weights, so the F32 copy is the exact function of the quantized file."""
    source = GGUFFile.open(fixture_path(model.fixture))
    copy = {t.name: t for t in gguf.GGUFReader(dequantized_f32(model.fixture)).tensors}
    ours = read_weights(source)
    source.close()
    assert set(copy) == set(ours)
    for name, w in ours.items():
        theirs = copy[name]
        assert theirs.tensor_type == gguf.GGMLQuantizationType.F32, name
        values = torch.from_numpy(np.array(theirs.data).reshape(w.shape))
        assert torch.equal(w.dequantize().view(torch.int32), values.view(torch.int32)), name


def test_reference_path_equals_llama_cpp_on_the_f32_copy(
    model, continuations, reference_path, record_property
):
    s = _report(
        f"{model.label}: reference path vs llama.cpp on the F32 copy",
        continuations,
        reference_path,
        "dequantized",
        record_property,
    )
    assert s.top1 >= EXACT_TOP1
    assert s.rel_rms_max < model.exact_rel_rms
    assert s.rel_rms_mean < model.exact_rel_rms_mean


@pytest.mark.parametrize("path", FAST_FORMS)
def test_fast_path_equals_llama_cpp_on_the_f32_copy_within_float16(
    path, model, continuations, engine, request, record_property
):
    """Both forms of the CPU fast path: whole sequences in one forward, and the engine's decode, one step
    per token (on CPU its step form, whose one-row products read the float16 copies with a float16
    GEMV)."""
    ours = request.getfixturevalue(f"{path}_path")
    record_property("kernels", engine.model.kernels.name)
    record_property("static_decode_step", engine.static_step)
    s = _report(
        f"{model.label}: {FAST_FORMS[path]} ({engine.model.kernels.name}) vs llama.cpp on the F32 copy",
        continuations,
        ours,
        "dequantized",
        record_property,
    )
    assert s.top1 >= EXACT_TOP1
    assert s.rel_rms_max < FAST_REL_RMS
    for row in agreements(continuations, ours, "dequantized"):
        assert row.worst_flip_gap < FAST_NEAR_TIE, row


@pytest.mark.parametrize("path", ["reference", *FAST_FORMS])
def test_follows_llama_cpp_greedy_on_the_quantized_file(path, model, continuations, request, record_property):
    ours = request.getfixturevalue(f"{path}_path")
    s = _report(
        f"{model.label}: {path} path vs llama.cpp on the quantized file (its greedy tokens)",
        continuations,
        ours,
        "quantized",
        record_property,
    )
    own = Summary.of(agreements(continuations, [c.dequantized for c in continuations], "quantized"))
    record_property("llama_cpp_quantized_vs_f32_copy_rel_rms_mean", own.rel_rms_mean)
    record_property("llama_cpp_quantized_vs_f32_copy_top1", own.top1)
    assert s.top1 >= model.quantized_top1
    assert abs(s.rel_rms_mean - own.rel_rms_mean) < SAME_AS_LLAMA_CPP_OWN * own.rel_rms_mean


def test_exact_bound_rejects_float16_weights_and_quantized_activations(model, continuations, fast_path):
    """The exact bound can fail: the fast path's float16 weights and llama.cpp's own Q8 activations are
    each small, deliberate departures from exact float32 math, and each lies far outside it."""
    for ours in (fast_path, [c.quantized for c in continuations]):
        s = Summary.of(agreements(continuations, ours, "dequantized"))
        assert s.rel_rms_mean > 10 * model.exact_rel_rms_mean
        assert s.rel_rms_max > 10 * model.exact_rel_rms


def test_fast_bound_rejects_a_decode_step_with_a_wrong_attention(model, continuations, engine, monkeypatch):
    """The fast-path bound can fail in the step form, on two prompts: a decode step whose attention is
    wrong lies far outside it. The fault goes where the engine's step runs: the one-call native step
    (`kernels.cpu_step`) attends without the 1/sqrt(head_dim) scale; the Python step's attention leaves
    out the position just written (an off-by-one of the step form)."""
    decode = engine.model.kernels.decode
    if not engine.static_step or decode is None:
        pytest.skip(
            "not applicable: the engine's CPU decode step does not use the kernel set's decode kernels"
        )
    native = getattr(engine.model, "native_step", None)
    if native is not None:
        fault = "attention without its scale"
        monkeypatch.setattr(native.table, "scale", 1.0)
    else:
        fault = "attention missing the newest position"
        attention = decode.decode_attention

        def misses_the_newest(q, keys, values, position, *args, **kwargs):
            return attention(q, keys, values, position - 1, *args, **kwargs)

        monkeypatch.setattr(decode, "decode_attention", misses_the_newest)
    few = continuations[:2]
    s = Summary.of(agreements(few, fast_step_logits_along(engine, few), "dequantized"))
    print(f"\n{model.label}: decode step with {fault}: rel. RMS max {s.rel_rms_max:.2e}")
    assert s.rel_rms_max > 10 * FAST_REL_RMS
