"""The Triton dequant-GEMV fast path against the reference path (CUDA only)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from kernels import backend
from kernels.formats import FORMATS, GGMLType
from kernels.qmatmul import qmatmul, reference_qmatmul
from kernels.qtensor import QTensor

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
]

TYPES = [GGMLType.Q4_0, GGMLType.Q8_0, GGMLType.MXFP4]


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.double().cpu(), expected.double().cpu()
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize(
    "shape", [(1, 64), (13, 96), (100, 4096), (2880, 2880)], ids=lambda s: f"{s[0]}x{s[1]}"
)
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_gemv_matches_reference(qtype, shape, rng, blocks, record_property) -> None:
    from kernels.triton_gemv import FAST_PATH

    raw = blocks(qtype, shape[0] * shape[1] // FORMATS[qtype].block_size, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), qtype, shape, "w", "cuda")
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, shape[1])).astype(np.float32)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, shape[0]).astype(np.float32)).cuda()
    assert FAST_PATH.supports(x, w)
    expected = reference_qmatmul(x.double().float(), w, bias, torch.float32)
    got = FAST_PATH.qmatmul(x, w, bias, torch.float32)
    err = rel_err(got, expected)
    record_property("max_rel_err_vs_reference", err)
    assert got.shape == expected.shape and err < 1e-5


def test_qmatmul_selects_the_fast_path_for_decode_only(rng, blocks, monkeypatch) -> None:
    from kernels import triton_gemv

    raw = blocks(GGMLType.MXFP4, 64 * 4, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), GGMLType.MXFP4, (64, 128), "w", "cuda")
    backend.set_mode(None)
    monkeypatch.setenv(backend.ENV_VAR, "auto")
    decode, prefill = torch.randn(1, 128, device="cuda"), torch.randn(4, 128, device="cuda")
    assert backend.fast_path_for(decode, w) is triton_gemv.FAST_PATH
    assert backend.fast_path_for(prefill, w) is None
    assert rel_err(qmatmul(decode.half(), w), reference_qmatmul(decode.half(), w, None, torch.float32)) < 1e-3
    monkeypatch.setenv(backend.ENV_VAR, "reference")
    assert backend.fast_path_for(decode, w) is None
