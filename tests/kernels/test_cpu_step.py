"""The one-call CPU decode step (`kernels.cpu_step`) against the Python step and the reference forward.

The same greedy tokens and logits within float32 reorderings on every llama / qwen2 / phi3 fixture whose
matrices all have a native GEMV, whatever the cache held at positions not yet written; faults in what the
step reads (attention scale, RoPE pairing, a bias) are caught; where a type has no GEMV, or no C compiler
is there, the Python step serves.
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from fixtures.paths import fixture_path
from kernels import cpu_native, cpu_step
from kernels.backend import KernelConfig
from kernels.cpu_step import NativeStep
from tests.worker.llama_helpers import load_model
from tests.worker.test_decode_step import PROMPT, STEP_TOL, decode, plain, rel_err, static

NATIVE_FIXTURES = [
    f"tiny/{arch}-{mix}.gguf"
    for arch in ("llama", "qwen2", "phi3")
    for mix in ("q4_0", "q4_1", "q5_0", "q8_0", "q4_k_m")
]
STEPS = 24
# Against the reference path's plain forward: the fast path's prefill multiplies float16 copies of the
# weights (`kernels.cpu_dense`), so its logits, and the cache the steps read, are ~1e-4..1e-3 apart; the
# bound of the CUDA fast paths (tests/worker/test_decode_step.py FAST_LOGITS_TOL).
REFERENCE_TOL = 1e-3

needs_native = pytest.mark.skipif(
    not cpu_native.available(), reason=f"native CPU GEMV not built here: {cpu_native.unavailable_reason()}"
)


def fast_model(name: str):
    model, _, _ = load_model(name, weight_cache=True)
    return model


def python_step(model):
    """The Python step form of the same model (what serves without the one-call step)."""
    native, model.native_step = model.native_step, None
    return native


@needs_native
@pytest.mark.parametrize("name", NATIVE_FIXTURES)
def test_the_one_call_step_gives_the_python_steps_tokens_and_logits(name) -> None:
    model = fast_model(name)
    assert model.native_step is not None
    got_tokens, got = decode(model, PROMPT, STEPS, static(model), unwritten=float("nan"))
    native = python_step(model)
    want_tokens, want = decode(model, PROMPT, STEPS, static(model))
    model.native_step = native
    assert got_tokens == want_tokens
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < STEP_TOL


@needs_native
@pytest.mark.parametrize(
    "name", ["tiny/llama-q4_k_m.gguf", "tiny/qwen2-q4_k_m.gguf", "tiny/phi3-q4_k_m.gguf"]
)
def test_the_one_call_step_gives_the_reference_forwards_tokens(name) -> None:
    reference, _, _ = load_model(name, kernels=KernelConfig(kernels="reference"))
    want_tokens, want = decode(reference, PROMPT, STEPS, plain(reference))
    model = fast_model(name)
    got_tokens, got = decode(model, PROMPT, STEPS, static(model))
    python_step(model)
    _, python = decode(model, PROMPT, STEPS, static(model))
    assert got_tokens == want_tokens
    worst, worst_python = (max(rel_err(a, b) for a, b in zip(x, want, strict=True)) for x in (got, python))
    assert worst < REFERENCE_TOL
    assert worst < 1.1 * worst_python + STEP_TOL  # no further from the reference than the Python step


@needs_native
def test_smollm2_one_call_step_gives_the_python_steps_tokens() -> None:
    name = "real/SmolLM2-135M-Instruct.Q4_1.gguf"
    if not fixture_path(name).is_file():
        pytest.skip(f"{name} not prepared (python -m fixtures prepare --real)")
    model = fast_model(name)
    got_tokens, got = decode(model, PROMPT, 12, static(model))
    python_step(model)
    want_tokens, want = decode(model, PROMPT, 12, static(model))
    assert got_tokens == want_tokens
    assert max(rel_err(a, b) for a, b in zip(got, want, strict=True)) < STEP_TOL


def _scale_times_1_01(native: NativeStep, layer: ctypes.Structure) -> None:
    native.table.scale *= 1.01


def _other_rope_pairing(native: NativeStep, layer: ctypes.Structure) -> None:
    native.table.neox = 1 - native.table.neox


def _no_q_bias(native: NativeStep, layer: ctypes.Structure) -> None:
    layer.q.bias = None


@needs_native
@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("tiny/llama-q4_k_m.gguf", _scale_times_1_01),
        ("tiny/phi3-q4_k_m.gguf", _other_rope_pairing),
        ("tiny/qwen2-q4_k_m.gguf", _no_q_bias),
    ],
    ids=["attention-scale", "rope-pairing", "qwen2-q-bias"],
)
def test_a_fault_in_the_table_is_caught(name, fault) -> None:
    """The comparison of the first test fails when the step reads one wrong thing."""
    model = fast_model(name)
    python = python_step(model)
    want_tokens, want = decode(model, PROMPT, STEPS, static(model))
    model.native_step = python
    fault(python, python.layers[0])
    _, got = decode(model, PROMPT, STEPS, static(model))
    assert max(rel_err(a, b) for a, b in zip(got, want, strict=True)) > STEP_TOL


def test_types_without_a_gemv_keep_the_python_step() -> None:
    model = fast_model("tiny/llama-f16.gguf")
    assert model.native_step is None
    reference = load_model("tiny/llama-q4_0.gguf", kernels=KernelConfig(kernels="reference"))[0]
    assert reference.native_step is None  # the reference kernels never take it


def test_without_a_compiler_the_python_step_serves(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(cpu_native, "_state", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = fast_model("tiny/qwen2-q4_0.gguf")
    assert model.native_step is None
    tokens, _ = decode(model, PROMPT, 4, static(model))
    assert len(tokens) == 4


@needs_native
def test_each_step_returns_its_own_logits() -> None:
    """A caller may keep a step's logits (the oracle's teacher-forced rows do): the next step must not
    overwrite them."""
    model = fast_model("tiny/qwen2-q4_k_m.gguf")
    cache = model.new_cache(8)
    try:
        first = model.native_step(torch.zeros(model.config.dim), cache, 0)
        kept = first.clone()
        model.native_step(torch.ones(model.config.dim), cache, 1)
        assert torch.equal(first, kept)
    finally:
        cache.free()


@needs_native
@pytest.mark.parametrize("embedding_copy", [True, False], ids=["float16-copy", "kernel-set-lookup"])
def test_the_step_from_a_token_id_is_the_step_from_its_embedding_row(embedding_copy, monkeypatch) -> None:
    """`step_token` (the decode loop's entry: the C step reads the token's row of the float16 embedding
    copy) gives exactly the step of the row `qembedding` gives; without the copy it looks the row up."""
    if not embedding_copy:
        monkeypatch.setattr(cpu_step, "_float16_rows", lambda w, dim: None)
    model = fast_model("tiny/llama-q4_k_m.gguf")
    native = model.native_step
    by_row, by_id = model.new_cache(4), model.new_cache(4)
    try:
        for position, token in enumerate([5, 17, model.token_embd.shape[0] - 1]):
            row = model.kernels.qembedding(torch.tensor([token]), model.token_embd).float()
            assert torch.equal(native.step_token(token, by_id, position), native(row, by_row, position))
        with pytest.raises(IndexError):
            native.step_token(model.token_embd.shape[0], by_id, 3)
    finally:
        by_row.free()
        by_id.free()
