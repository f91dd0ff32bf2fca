"""Reference dequantizers: bit-exact against gguf-py and ggml's C code, edge cases, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from kernels.dequant import SUPPORTED_TYPES, dequantize
from kernels.formats import FORMATS, GGMLType, QuantFormatError
from tests.kernels.conftest import READ_TYPES

GGUF_PY_TYPES = READ_TYPES
# Q8_K has no gguf-py dequantizer; ggml's C code and the block formula are its oracles.
QUANTIZED_TYPES = [t for t in GGUF_PY_TYPES if FORMATS[t].block_size > 1] + [GGMLType.Q8_K]
SCALED_TYPES = [t for t in GGUF_PY_TYPES if FORMATS[t].block_size > 1 and t != GGMLType.MXFP4]

pytestmark = pytest.mark.oracle


def ids(types: list[GGMLType]) -> list[str]:
    return [t.name for t in types]


def reference(raw: np.ndarray, qtype: GGMLType) -> torch.Tensor:
    with np.errstate(over="ignore", invalid="ignore"):  # huge random scales overflow to inf, as in C
        values = gguf_dequantize(raw, GGMLQuantizationType(int(qtype)))
    return torch.from_numpy(np.ascontiguousarray(values))


def ours(raw: np.ndarray, qtype: GGMLType, device: torch.device) -> torch.Tensor:
    fmt = FORMATS[qtype]
    n = raw.size // fmt.type_size * fmt.block_size
    return dequantize(torch.from_numpy(raw.reshape(-1).copy()).to(device), qtype, (n,), name="t")


def test_every_listed_type_has_a_dequantizer() -> None:
    assert set(GGUF_PY_TYPES) | {GGMLType.Q8_K} <= set(SUPPORTED_TYPES)


@pytest.mark.parametrize("qtype", GGUF_PY_TYPES, ids=ids(GGUF_PY_TYPES))
def test_random_blocks_match_gguf_py(qtype, device, rng, blocks, bits_equal) -> None:
    raw = blocks(qtype, 512, rng)
    bits_equal(ours(raw, qtype, device), reference(raw, qtype).reshape(-1))


@pytest.mark.parametrize("qtype", QUANTIZED_TYPES, ids=ids(QUANTIZED_TYPES))
def test_random_blocks_match_ggml_c(qtype, device, rng, blocks, bits_equal, ggml_dequantize) -> None:
    raw = blocks(qtype, 256, rng)
    bits_equal(ours(raw, qtype, device), torch.from_numpy(ggml_dequantize(raw, qtype)))


def test_q8_k_matches_block_formula(device, rng, blocks, bits_equal) -> None:
    raw = blocks(GGMLType.Q8_K, 64, rng)
    d = raw[:, :4].copy().view(np.float32)  # block_q8_K {float d; int8 qs[256]; int16 bsums[16]}
    with np.errstate(over="ignore"):
        expected = d * raw[:, 4:260].view(np.int8).astype(np.float32)
    bits_equal(ours(raw, GGMLType.Q8_K, device), torch.from_numpy(expected.reshape(-1)))


@pytest.mark.parametrize("qtype", QUANTIZED_TYPES, ids=ids(QUANTIZED_TYPES))
def test_all_zero_blocks(qtype, device, bits_equal) -> None:
    raw = np.zeros((4, FORMATS[qtype].type_size), dtype=np.uint8)
    got = ours(raw, qtype, device)
    assert not got.abs().any()
    if qtype != GGMLType.Q8_K:
        bits_equal(got, reference(raw, qtype).reshape(-1))


# f16 scale patterns: +0, -0, negative, most negative, largest, smallest subnormal, negative subnormal.
F16_SCALES = {
    "+0": 0x0000,
    "-0": 0x8000,
    "-0.5": 0xB800,
    "-65504": 0xFBFF,
    "65504": 0x7BFF,
    "sub": 0x0001,
    "-sub": 0x8001,
}


@pytest.mark.parametrize("scale", list(F16_SCALES), ids=list(F16_SCALES))
@pytest.mark.parametrize("qtype", SCALED_TYPES, ids=ids(SCALED_TYPES))
def test_edge_scales(qtype, scale, device, rng, blocks, bits_equal, f16_fields) -> None:
    raw = blocks(qtype, 32, rng)
    pattern = np.array([F16_SCALES[scale]], dtype=np.uint16).view(np.uint8)
    for offset in f16_fields[qtype]:
        raw[:, offset : offset + 2] = pattern
    bits_equal(ours(raw, qtype, device), reference(raw, qtype).reshape(-1))


MXFP4_SCALE_BYTES = [0, 1, 2, 127, 128, 254, 255]


@pytest.mark.parametrize("e", MXFP4_SCALE_BYTES, ids=[f"e={e}" for e in MXFP4_SCALE_BYTES])
def test_mxfp4_scale_bytes_and_all_codes(e, device, bits_equal) -> None:
    codes = np.arange(32, dtype=np.uint8) % 16  # every code in the low and in the high nibbles
    qs = codes[:16] | (codes[16:] << 4)
    raw = np.concatenate([[e], qs]).astype(np.uint8).reshape(1, 17)
    got = ours(raw, GGMLType.MXFP4, device)
    bits_equal(got, reference(raw, GGMLType.MXFP4).reshape(-1))
    # OCP MX: value = 2^(e - 127) * e2m1(code); ggml computes it as (2 * e2m1) * 2^(e - 128).
    e2m1 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float64)
    expected = (e2m1.repeat(2) * 2.0 ** (e - 127)).float()
    assert torch.equal(got.cpu(), expected)


def test_mxfp4_signed_zero_codes_decode_to_positive_zero(device) -> None:
    # Codes 0 and 8 are +0 and -0 in E2M1, but ggml's table is integers, so both give +0.0 bits.
    raw = np.array([[127] + [0x80] * 16], dtype=np.uint8)  # low nibbles code 0, high nibbles code 8
    got = ours(raw, GGMLType.MXFP4, device).cpu()
    assert torch.equal(got.view(torch.int32), torch.zeros(32, dtype=torch.int32))


def test_q4_0_layout_low_nibbles_first(device) -> None:
    d = np.array([1.0], dtype=np.float16).view(np.uint8)
    qs = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)
    raw = np.concatenate([d, qs]).reshape(1, 18)
    got = ours(raw, GGMLType.Q4_0, device).cpu()
    assert got[:16].tolist() == [float(q - 8) for q in range(16)] and got[16:].tolist() == [7.0] * 16


@pytest.mark.parametrize("shape", [(512,), (4, 128), (2, 2, 128)], ids=["1d", "2d", "3d"])
def test_output_shape(shape, device, rng, blocks) -> None:
    raw = blocks(GGMLType.Q8_0, 16, rng)
    flat = ours(raw, GGMLType.Q8_0, device)
    got = dequantize(torch.from_numpy(raw.reshape(-1).copy()).to(device), GGMLType.Q8_0, shape)
    assert got.shape == shape and got.dtype == torch.float32 and got.device.type == device.type
    assert torch.equal(got.reshape(-1), flat)


def test_unaligned_f32_bytes_are_read(device) -> None:
    values = torch.tensor([1.5, -2.25, 3.0], dtype=torch.float32)
    buffer = torch.cat([torch.zeros(1, dtype=torch.uint8), values.view(torch.uint8)]).to(device)
    assert torch.equal(dequantize(buffer[1:], GGMLType.F32, (3,)).cpu(), values)


# Bad input: a QuantFormatError that names the tensor and the problem.


def test_truncated_buffer() -> None:
    raw = torch.zeros(18 * 4 - 1, dtype=torch.uint8)
    with pytest.raises(QuantFormatError, match=r"'blk\.0\.attn_q\.weight'.*truncated.*72 bytes, got 71"):
        dequantize(raw, GGMLType.Q4_0, (4, 32), name="blk.0.attn_q.weight")


def test_extra_bytes() -> None:
    with pytest.raises(QuantFormatError, match=r"'w'.*2 bytes beyond the 36"):
        dequantize(torch.zeros(38, dtype=torch.uint8), GGMLType.Q4_0, (2, 32), name="w")


def test_row_not_a_multiple_of_the_block_size() -> None:
    with pytest.raises(QuantFormatError, match=r"'w'.*row length 100 .*Q4_K block size 256"):
        dequantize(torch.zeros(144, dtype=torch.uint8), GGMLType.Q4_K, (1, 100), name="w")


def test_unknown_type_id() -> None:
    with pytest.raises(QuantFormatError, match=r"'w'.*unknown ggml type id 99"):
        dequantize(torch.zeros(18, dtype=torch.uint8), 99, (32,), name="w")


def test_type_without_dequantizer() -> None:
    with pytest.raises(QuantFormatError, match=r"'w'.*no dequantizer for ggml type IQ2_XXS"):
        dequantize(torch.zeros(66, dtype=torch.uint8), GGMLType.IQ2_XXS, (256,), name="w")


def test_packed_data_must_be_bytes() -> None:
    with pytest.raises(QuantFormatError, match=r"'w'.*uint8"):
        dequantize(torch.zeros(9, dtype=torch.int16), GGMLType.Q4_0, (32,), name="w")
