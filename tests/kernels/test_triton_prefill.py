"""Prefill on tensor cores against the reference path (CUDA only): both prefill paths, the GEMM that
decodes the packed tiles itself (`kernels.triton_qgemm`, "fused") and the float16 scratch + cuBLAS
(`kernels.triton_prefill`, "scratch").

The scratch's decoder (`triton_gemv.dequantize_into`) must give the reference's float32 weights rounded
once to float16, for every type the fast paths serve, with every output element written. The matmuls must
match the reference path within two float16 roundings per product (PREFILL_TOL), whatever the
activations' magnitude, and serve only what decode does not.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from kernels import backend
from kernels.formats import GGMLType
from kernels.qmatmul import reference_qmatmul
from tests.kernels.conftest import EXACT_TYPES, assert_half_of
from tests.kernels.test_triton_gemv import TYPES, make_weight, rel_err, shapes_for

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
]

# float16 operands, float32 accumulation: each product carries two float16 roundings (2^-11 each);
# against max|y| the sums stay far inside this bound (measured ~5e-4).
PREFILL_TOL = 3e-3
# Types whose decoded float32 weight equals the reference's bit for bit (docs/kernels.md); the others may
# differ by one float32 rounding, so their float16 value may be the neighbour of the rounded reference.
# The two prefill paths by the name `KernelConfig.fused_prefill` gives them.
PREFILL_PATHS = ["fused", "scratch"]


def prefill_module(name: str):
    from kernels import triton_prefill, triton_qgemm

    return triton_qgemm if name == "fused" else triton_prefill


DEQUANT_CASES = [pytest.param(t, s, id=f"{t.name}-{s[0]}x{s[1]}") for t in TYPES for s in shapes_for(t)[:5]]


@pytest.mark.parametrize(("qtype", "shape"), DEQUANT_CASES)
def test_dequantize_into_is_the_reference_rounded_to_half(qtype, shape, rng, blocks) -> None:
    from kernels.triton_gemv import dequantize_into

    w = make_weight(qtype, shape, rng, blocks)
    reference = w.dequantize()
    got = torch.full(shape, float("nan"), dtype=torch.float16, device="cuda")  # poisoned: all written?
    dequantize_into(w, got)
    assert_half_of(got, reference, exact=qtype in EXACT_TYPES)
    r0, r1 = shape[0] // 3, shape[0] - shape[0] // 4
    part = torch.full((r1 - r0, shape[1]), float("nan"), dtype=torch.float16, device="cuda")
    dequantize_into(w, part, rows=(r0, r1))
    assert torch.equal(part, got[r0:r1])


@pytest.mark.parametrize("qtype", [GGMLType.MXFP4, GGMLType.Q4_K, GGMLType.Q8_0])
def test_dequantize_into_selected_experts(qtype, rng, blocks) -> None:
    from kernels.triton_gemv import dequantize_into

    w = make_weight(qtype, (6 * 40, 512), rng, blocks)
    w3 = type(w)(w.data, w.qtype, (6, 40, 512), "exps")
    ids = torch.tensor([4, 0, 5], device="cuda")
    got = torch.full((3, 40, 512), float("nan"), dtype=torch.float16, device="cuda")
    dequantize_into(w3, got, experts=ids)
    assert_half_of(got, w3.dequantize()[ids], exact=qtype in EXACT_TYPES)


@pytest.mark.parametrize("path", PREFILL_PATHS)
@pytest.mark.parametrize("rows", [9, 100, 512])
# F32 weights are declined by design (cuBLAS reads them in place, without a float16 rounding).
@pytest.mark.parametrize("qtype", [t for t in TYPES if t != GGMLType.F32], ids=lambda t: t.name)
def test_prefill_matmul_matches_reference(qtype, rows, path, rng, blocks, record_property) -> None:
    path_module = prefill_module(path)
    shape = shapes_for(qtype)[-3]
    w = make_weight(qtype, shape, rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (rows, shape[1])).astype(np.float32)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, shape[0]).astype(np.float32)).cuda()
    assert path_module.FAST_PATH.supports(x, w)
    got = path_module.FAST_PATH.qmatmul(x, w, bias, torch.float32)
    err = rel_err(got, reference_qmatmul(x, w, bias, torch.float32))
    record_property("max_rel_err_vs_reference", err)
    assert got.shape == (rows, shape[0]) and got.dtype == torch.float32
    assert err < PREFILL_TOL


@pytest.mark.parametrize("path", PREFILL_PATHS)
def test_prefill_declines_float32_weights(path, rng, blocks) -> None:
    path_module = prefill_module(path)
    shape = shapes_for(GGMLType.F32)[-3]
    w = make_weight(GGMLType.F32, shape, rng, blocks)
    x = torch.zeros((9, shape[1]), dtype=torch.float32, device="cuda")
    assert not path_module.FAST_PATH.supports(x, w)


@pytest.mark.parametrize("path", PREFILL_PATHS)
def test_prefill_matmul_tiles_and_huge_activations(path, rng, blocks, monkeypatch) -> None:
    from kernels import triton_prefill as scratch

    path_module = prefill_module(path)
    monkeypatch.setattr(scratch, "SCRATCH_ELEMENTS", 100 * 768)  # 100 rows a tile, last one short
    w = make_weight(GGMLType.Q6_K, (257, 768), rng, blocks)
    # Rows of very different magnitudes, one far beyond float16's range, one all zeros.
    x = torch.from_numpy(rng.normal(0.0, 1.0, (12, 768)).astype(np.float32)).cuda()
    x[0] *= 1e9
    x[1] *= 1e-9
    x[2] = 0.0
    got = path_module.FAST_PATH.qmatmul(x, w, None, torch.float32)
    expected = reference_qmatmul(x, w, None, torch.float32)
    assert torch.isfinite(got).all() and torch.equal(got[2], expected[2])
    for r in (0, 1, 3):
        assert rel_err(got[r], expected[r]) < PREFILL_TOL


@pytest.mark.parametrize("regrouped", [False, True], ids=["file-order", "regrouped"])
@pytest.mark.parametrize("path", PREFILL_PATHS)
def test_prefill_experts_match_the_grouped_reference(path, regrouped, rng, blocks, monkeypatch) -> None:
    from kernels import triton_prefill as scratch

    path_module = prefill_module(path)
    monkeypatch.setattr(scratch, "SCRATCH_ELEMENTS", 2 * 96 * 512)  # two experts per fill
    w = make_weight(GGMLType.MXFP4, (8 * 96, 512), rng, blocks)
    w3 = type(w)(w.data, w.qtype, (8, 96, 512), "exps")
    if regrouped:  # as the CUDA model loads MXFP4 experts (triton_gemv.pack)
        w3 = w3.codes_then_scales_in_place()
    x = torch.from_numpy(rng.normal(0.0, 1.0, (40, 512)).astype(np.float32)).cuda()
    ids = torch.from_numpy(rng.integers(0, 7, size=(40, 4))).cuda()  # expert 7 never selected
    bias = torch.from_numpy(rng.normal(0.0, 0.1, (8, 96)).astype(np.float32)).cuda()
    fast = backend.kernel_set(backend.KernelConfig(kernels="fast", fused_prefill=path == "fused"), "cuda")
    reference = backend.kernel_set(backend.KernelConfig(kernels="reference"), "cuda")
    assert path_module.EXPERTS_FAST_PATH.supports(x, w3, ids)
    assert path_module.EXPERTS_FAST_PATH in fast.experts_paths
    got = fast.qmatmul_experts(x, w3, ids, bias)
    assert got.shape == (40, 4, 96)
    assert rel_err(got, reference.qmatmul_experts(x, w3, ids, bias)) < PREFILL_TOL
    # GPT-OSS's down projection: one activation row per (token, expert) pair.
    rows = torch.from_numpy(rng.normal(0.0, 1.0, (160, 512)).astype(np.float32)).cuda()
    pairs = ids.reshape(-1, 1)
    got = fast.qmatmul_experts(rows, w3, pairs, bias)
    assert rel_err(got, reference.qmatmul_experts(rows, w3, pairs, bias)) < PREFILL_TOL


@pytest.mark.parametrize("path", PREFILL_PATHS)
def test_decode_rows_keep_the_gemv(path, rng, blocks) -> None:
    from kernels import triton_gemv

    path_module = prefill_module(path)
    w = make_weight(GGMLType.Q4_K, (64, 256), rng, blocks)
    fast = backend.kernel_set(backend.KernelConfig(kernels="fast", fused_prefill=path == "fused"), "cuda")
    assert fast.paths == (triton_gemv.FAST_PATH, path_module.FAST_PATH)
    decode, prefill = torch.randn(8, 256, device="cuda"), torch.randn(9, 256, device="cuda")
    assert triton_gemv.FAST_PATH.supports(decode, w) and not path_module.FAST_PATH.supports(decode, w)
    assert path_module.FAST_PATH.supports(prefill, w) and not triton_gemv.FAST_PATH.supports(prefill, w)
