"""Shared fixtures for the kernels tests: devices, random ggml blocks, the gguf-py and ggml oracles."""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kernels.formats import FORMATS, GGMLType

# Every type the worker must read (M0 models: Q4_0, Q4_K_M mixes, MXFP4 MoE) plus cheap extras; gguf-py
# dequantizes all of them (Q8_K, which it cannot, is tested on its own).
READ_TYPES = [
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q8_0,
    GGMLType.Q2_K,
    GGMLType.Q3_K,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
    GGMLType.MXFP4,
    GGMLType.IQ4_NL,
]

CUDA_PARAM = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
)

# Byte offsets of the f16 scale fields inside one block; random bytes there may spell Inf/NaN.
F16_FIELDS: dict[GGMLType, tuple[int, ...]] = {
    GGMLType.F16: (0,),
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, 2),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,),
    GGMLType.IQ4_NL: (0,),
    GGMLType.Q2_K: (80, 82),
    GGMLType.Q3_K: (108,),
    GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2),
    GGMLType.Q6_K: (208,),
}
F32_FIELDS: dict[GGMLType, tuple[int, ...]] = {GGMLType.F32: (0,), GGMLType.Q8_K: (0,)}

BlockFactory = Callable[..., np.ndarray]


def _finite_f16(blocks: np.ndarray, offset: int) -> None:
    high = blocks[:, offset + 1]
    inf_or_nan = (high & 0x7C) == 0x7C
    blocks[:, offset + 1] = np.where(inf_or_nan, high & 0xBF, high)


def _finite_f32(blocks: np.ndarray, offset: int) -> None:
    high = blocks[:, offset + 3]
    inf_or_nan = ((high & 0x7F) == 0x7F) & ((blocks[:, offset + 2] & 0x80) != 0)
    blocks[:, offset + 3] = np.where(inf_or_nan, high & 0xBF, high)


def make_blocks(
    qtype: GGMLType, n_blocks: int, rng: np.random.Generator, *, realistic: bool = False
) -> np.ndarray:
    """(n_blocks, type_size) uint8 blocks of random bytes with finite scales.

    `realistic` replaces the scales by small normal values (as a quantizer would write), so that
    matmul outputs are not dominated by a few blocks with huge scales."""
    fmt = FORMATS[qtype]
    if qtype in (GGMLType.F32, GGMLType.F16, GGMLType.BF16) and realistic:
        values = torch.from_numpy(rng.normal(0.0, 0.05, n_blocks).astype(np.float32))
        dtype = {GGMLType.F32: torch.float32, GGMLType.F16: torch.float16, GGMLType.BF16: torch.bfloat16}[
            qtype
        ]
        return values.to(dtype).view(torch.uint8).numpy().reshape(n_blocks, fmt.type_size).copy()
    blocks = rng.integers(0, 256, size=(n_blocks, fmt.type_size), dtype=np.uint8)
    for offset in F16_FIELDS.get(qtype, ()):
        if realistic:
            scale = rng.normal(0.0, 0.01, n_blocks).astype(np.float16)
            blocks[:, offset : offset + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
        else:
            _finite_f16(blocks, offset)
    for offset in F32_FIELDS.get(qtype, ()):
        if realistic:
            scale = rng.normal(0.0, 0.01, n_blocks).astype(np.float32)
            blocks[:, offset : offset + 4] = scale.view(np.uint8).reshape(n_blocks, 4)
        else:
            _finite_f32(blocks, offset)
    if qtype == GGMLType.MXFP4 and realistic:
        blocks[:, 0] = rng.integers(118, 126, size=n_blocks, dtype=np.uint8)
    return blocks


@pytest.fixture(params=["cpu", CUDA_PARAM])
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


@pytest.fixture
def blocks() -> BlockFactory:
    return make_blocks


@pytest.fixture
def f16_fields() -> dict[GGMLType, tuple[int, ...]]:
    """Byte offsets of each block layout's f16 scale fields."""
    return F16_FIELDS


def _ggml_base_library() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "lib" / "libggml-base.so"
    return ctypes.CDLL(str(path)) if path.is_file() else None


@pytest.fixture(scope="session")
def ggml_dequantize() -> Callable[[np.ndarray, GGMLType], np.ndarray]:
    """ggml's own C `dequantize_row_<type>` (from llama-cpp-python's libggml-base), an oracle independent
    of gguf-py; skips when llama-cpp-python is not installed."""
    lib = _ggml_base_library()
    if lib is None:
        pytest.skip("llama-cpp-python (libggml-base) is not installed")

    def run(raw: np.ndarray, qtype: GGMLType) -> np.ndarray:
        fmt = FORMATS[qtype]
        name = qtype.name.lower().replace("_k", "_K")
        fn = getattr(lib, f"dequantize_row_{name}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        n = raw.size // fmt.type_size * fmt.block_size
        out = np.empty(n, dtype=np.float32)
        fn(raw.ctypes.data, out.ctypes.data, n)
        return out

    return run


def assert_bits_equal(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Same float32 bit patterns everywhere, except that any NaN equals any NaN."""
    got, expected = got.cpu().contiguous(), expected.cpu().contiguous()
    assert got.dtype == expected.dtype == torch.float32
    assert got.shape == expected.shape
    same = (got.view(torch.int32) == expected.view(torch.int32)) | (got.isnan() & expected.isnan())
    bad = (~same).nonzero()
    assert not bad.numel(), (
        f"{bad.shape[0]} of {got.numel()} values differ; first at {bad[0].tolist()}: "
        f"got {got[tuple(bad[0])].item()!r}, expected {expected[tuple(bad[0])].item()!r}"
    )


@pytest.fixture
def bits_equal() -> Callable[[torch.Tensor, torch.Tensor], None]:
    return assert_bits_equal


# Formats whose GEMV decoder gives the reference's float32 weights bit for bit (the others may differ by
# one float32 rounding of their fused `q * scale + offset`), so their float16 tiles are exact roundings.
EXACT_TYPES = {
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q4_0,
    GGMLType.Q5_0,
    GGMLType.Q8_0,
    GGMLType.MXFP4,
}


def assert_half_of(got: torch.Tensor, reference: torch.Tensor, *, exact: bool) -> None:
    """`got` (float16) is `reference` (float32) rounded to float16: exactly, or within one float16 step
    plus the float32 rounding of the decoder's fused `q * scale + offset` (absolute, at the row's scale:
    near zero the two terms cancel)."""
    assert not got.isnan().any(), "an output element was not written"
    if exact:
        assert torch.equal(got, reference.half())
    else:
        row_max = reference.abs().amax(dim=-1, keepdim=True)
        step = reference.abs() * 2.0**-10 + row_max * 2.0**-16 + 2.0**-24
        assert ((got.float() - reference).abs() <= step).all()
