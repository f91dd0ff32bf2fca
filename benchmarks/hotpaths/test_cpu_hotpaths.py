"""Baselines of the CPU hot paths (pytest-benchmark): dequantization of each type, quantized matmul on the
reference and the CPU fast path, one decode step of a tiny model, tokenizer encode/decode, SSE framing.

Not part of `pytest tests/` or CI's pass/fail (timings on a shared machine are not verdicts). Needs the
`bench` extra and the prepared fixtures. Save a baseline, then compare a later run against it:

    pytest benchmarks/hotpaths --benchmark-storage=benchmarks/results/hotpaths --benchmark-save=cpu
    pytest benchmarks/hotpaths --benchmark-storage=benchmarks/results/hotpaths \
        --benchmark-compare --benchmark-compare-fail=median:25%

The first writes `benchmarks/results/hotpaths/<machine>/NNNN_cpu.json` (a recorded baseline is kept
there); `--benchmark-compare` compares with the latest saved run (or `--benchmark-compare=NNNN`), and
the `-fail` option turns a median slowdown beyond 25 % into a failure of that benchmark: a flagged
regression. Baselines are per machine: compare only runs made on the same machine and thread count.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from fixtures.paths import FixtureMissing, fixture_path
from kernels import cpu_dense
from kernels.backend import KernelConfig, kernel_set
from kernels.dequant import dequantize
from kernels.formats import FORMATS, GGMLType
from kernels.qtensor import QTensor
from tests.kernels.conftest import READ_TYPES, make_blocks

pytest.importorskip(
    "pytest_benchmark", reason="the benchmarks need the bench extra: pip install -e '.[bench]'"
)

ROWS, COLS = 64, 4096  # 256 Ki weights per dequantization
MATMUL_SHAPE = (2048, 768)  # a decode GEMV; the width is a multiple of the K-quants' 256-value blocks
MATMUL_TYPES = [GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K]


def _fixture(name: str):
    try:
        return fixture_path(name)
    except FixtureMissing as e:
        pytest.skip(str(e))


def _weight(qtype: GGMLType, shape: tuple[int, int]) -> QTensor:
    rng = np.random.default_rng(0)
    n_blocks = shape[0] * shape[1] // FORMATS[qtype].block_size
    raw = make_blocks(qtype, n_blocks, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), qtype, shape, f"bench.{qtype.name}")


FAST = kernel_set(KernelConfig(kernels="fast"), "cpu")
REFERENCE = kernel_set(KernelConfig(kernels="reference"), "cpu")


@pytest.mark.parametrize("qtype", READ_TYPES, ids=[t.name for t in READ_TYPES])
def test_dequantize(benchmark, qtype):
    w = _weight(qtype, (ROWS, COLS))
    benchmark(dequantize, w.data, w.qtype, w.shape)


@pytest.mark.parametrize("qtype", MATMUL_TYPES, ids=[t.name for t in MATMUL_TYPES])
def test_qmatmul_reference_decode(benchmark, qtype):
    w = _weight(qtype, MATMUL_SHAPE)
    x = torch.randn(1, MATMUL_SHAPE[1])
    benchmark(REFERENCE.qmatmul, x, w)


@pytest.mark.parametrize("qtype", MATMUL_TYPES, ids=[t.name for t in MATMUL_TYPES])
def test_qmatmul_cpu_dense_decode(benchmark, qtype):
    w = _weight(qtype, MATMUL_SHAPE)
    cpu_dense.build([w], lambda shape, dtype: torch.empty(shape, dtype=dtype), release=lambda t: None)
    x = torch.randn(1, MATMUL_SHAPE[1])
    assert cpu_dense.FAST_PATH.supports(x, w)
    benchmark(FAST.qmatmul, x, w)


@pytest.mark.parametrize("weight_cache", [False, True], ids=["reference", "cpu-dense"])
def test_decode_step_tiny_llama(benchmark, weight_cache):
    """One decode step as the engine runs it: with the weight cache the fast kernel set's step form
    (`kernels.cpu_decode`), else the reference path's plain forward."""
    from reference_worker.decode_step import DecodeStep
    from tests.worker.llama_helpers import load_model

    _fixture("tiny/llama-q4_k_m.gguf")
    kernels = None if weight_cache else KernelConfig(kernels="reference")
    model, _, _ = load_model("tiny/llama-q4_k_m.gguf", weight_cache=weight_cache, kernels=kernels)
    cache = model.new_cache(8)
    token = torch.tensor([17])
    with torch.inference_mode():
        model.forward(torch.tensor([1, 2, 3, 4]), cache)
        decode_step = DecodeStep(model, cache, None, static=model.kernels.decode is not None)

        def step():  # one token at position 4, every time (the cache is rewound after the step)
            logits = decode_step(token)
            cache.advance(-1)
            return logits

        benchmark(step)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from reference_worker.gguf import GGUFFile
    from reference_worker.tokenizers.loader import load_tokenizer

    path = _fixture("real/SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf = GGUFFile.open(path)
    try:
        return load_tokenizer(gguf.metadata, path)
    finally:
        gguf.close()


TEXT = (
    "The history of computing is a story of machines that learned to count, then to remember, and finally "
    "to speak. Each generation of hardware moved more bytes per second than the last. "
) * 8


def test_tokenizer_encode(benchmark, smollm2_tokenizer):
    benchmark(smollm2_tokenizer.encode, TEXT, add_special=False, parse_special=False)


def test_tokenizer_decode(benchmark, smollm2_tokenizer):
    ids = smollm2_tokenizer.encode(TEXT, add_special=False, parse_special=False)
    benchmark(smollm2_tokenizer.decode, ids)


def test_sse_token_event_framing(benchmark):
    from reference_worker.server.sse import sse_event

    def frame():
        return sse_event("token", t=" computing", i=17).encode()

    assert benchmark(frame).startswith(b"event: token")


def test_sse_stream_of_100_tokens(benchmark):
    from reference_worker.server.sse import sse_event

    out = io.BytesIO()

    def stream():
        out.seek(0)
        for i in range(100):
            out.write(sse_event("token", t=" word", i=i).encode())

    benchmark(stream)
