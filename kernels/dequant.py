"""Reference dequantizers: ggml blocks -> float32, bit-exact with ggml's `dequantize_row_*`.

One function per ggml type, each taking a `(n_blocks, type_size)` uint8 tensor and returning
`(n_blocks, block_size)` float32 values; they mirror gguf-py's `quants.py` and ggml-quants.c. They are
vectorised PyTorch and run on the device of their input, so the same code serves CPU and CUDA.

Bit-exactness rules the C reference fixes and every function below follows:
- f16/bf16 scale fields are converted to f32 first; all arithmetic is f32, one rounding per operation.
- The order of operations is ggml's: `(d * sc) * q - (dmin * m)` for the K-quants, `d * q + m` for the
  "_1" types. PyTorch eager never fuses a multiply and an add into an FMA, so each step rounds as in C.
- Integer quants are exact in f32 (|q| <= 127), so int->float conversions never round.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from kernels.formats import FORMATS, GGMLType, QuantFormatError, ggml_type, tensor_nbytes

Blocks = torch.Tensor  # (n_blocks, type_size) uint8
BlockDequantizer = Callable[[Blocks], torch.Tensor]

_QK_K = 256


# ---------------------------------------------------------------------------------------------------
# Field helpers


def _reinterpret(field: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bytes -> `dtype` elements without conversion; copies only when the bytes are not aligned for it."""
    field = field.contiguous()
    if field.storage_offset() % dtype.itemsize:
        field = field.clone()
    return field.view(dtype)


def _f16(field: torch.Tensor) -> torch.Tensor:
    """(n, 2) little-endian f16 bytes -> (n, 1) f32 (exact: every f16 is an f32)."""
    return _reinterpret(field, torch.float16).to(torch.float32)


def _f32(field: torch.Tensor) -> torch.Tensor:
    """(n, 4) little-endian f32 bytes -> (n, 1) f32."""
    return _reinterpret(field, torch.float32)


@lru_cache(maxsize=64)
def _const(values: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(..., n) bytes -> (..., 2n): the low nibbles first, then the high ones.

    This is ggml's split for Q4_0/Q4_1/Q5_x/IQ4_NL/MXFP4 (elements j and j + n share byte j) and, per
    32-byte chunk, for Q4_K/Q5_K."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _bits(field: torch.Tensor, n_bits: int, width: int) -> torch.Tensor:
    """(n, m) bytes -> (n, m * 8 // n_bits) fields of `width` bits taken at shifts 0, n_bits, ... per byte,
    ordered shift-major: all bytes at shift 0, then all bytes at shift n_bits, ..."""
    shifts = _const(tuple(range(0, 8, n_bits)), field.device, torch.uint8).view(1, -1, 1)
    return ((field.unsqueeze(1) >> shifts) & ((1 << width) - 1)).flatten(1)


# ---------------------------------------------------------------------------------------------------
# Plain float types


def _dequant_f32(b: Blocks) -> torch.Tensor:
    return _f32(b)


def _dequant_f16(b: Blocks) -> torch.Tensor:
    return _f16(b)


def _dequant_bf16(b: Blocks) -> torch.Tensor:
    # bf16 is the top half of an f32: shift the bits (NaN payloads survive, as in gguf-py).
    return (_reinterpret(b, torch.int16).to(torch.int32) << 16).view(torch.float32)


# ---------------------------------------------------------------------------------------------------
# 32-element blocks


def _dequant_q4_0(b: Blocks) -> torch.Tensor:
    # block_q4_0 {half d; u8 qs[16]}: w = (q - 8) * d
    d = _f16(b[:, :2])
    q = _nibbles(b[:, 2:]).to(torch.int16) - 8
    return d * q.to(torch.float32)


def _dequant_q4_1(b: Blocks) -> torch.Tensor:
    # block_q4_1 {half d; half m; u8 qs[16]}: w = q * d + m
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    q = _nibbles(b[:, 4:]).to(torch.float32)
    return d * q + m


def _q5_high_bits(qh: torch.Tensor) -> torch.Tensor:
    # qh is a little-endian u32 whose bit j is the fifth bit of element j.
    return _bits(qh, 1, 1).view(-1, 8, 4).transpose(1, 2).reshape(-1, 32)


def _dequant_q5_0(b: Blocks) -> torch.Tensor:
    # block_q5_0 {half d; u8 qh[4]; u8 qs[16]}: w = (q - 16) * d
    d = _f16(b[:, :2])
    q = (_nibbles(b[:, 6:]) | (_q5_high_bits(b[:, 2:6]) << 4)).to(torch.int16) - 16
    return d * q.to(torch.float32)


def _dequant_q5_1(b: Blocks) -> torch.Tensor:
    # block_q5_1 {half d; half m; u8 qh[4]; u8 qs[16]}: w = q * d + m
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    q = (_nibbles(b[:, 8:]) | (_q5_high_bits(b[:, 4:8]) << 4)).to(torch.float32)
    return d * q + m


def _dequant_q8_0(b: Blocks) -> torch.Tensor:
    # block_q8_0 {half d; i8 qs[32]}: w = q * d
    d = _f16(b[:, :2])
    return b[:, 2:].view(torch.int8).to(torch.float32) * d


_IQ4_NL_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _dequant_iq4_nl(b: Blocks) -> torch.Tensor:
    # block_iq4_nl {half d; u8 qs[16]}: w = d * kvalues_iq4nl[q]
    d = _f16(b[:, :2])
    values = _const(_IQ4_NL_VALUES, b.device, torch.float32)
    return d * values[_nibbles(b[:, 2:]).long()]


# e2m1 values doubled (ggml's kvalues_mxfp4); the scale below is halved to compensate, so the product is
# the OCP MX value exactly. The table holds integers, so code 8 ("-0") decodes to +0.0 as in ggml.
_MXFP4_VALUES = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def _e8m0_to_fp32_half(e: torch.Tensor) -> torch.Tensor:
    """ggml_e8m0_to_fp32_half: 2^(e - 128) built from bits; e < 2 gives the f32 subnormals 2^-128, 2^-127."""
    e = e.to(torch.int32)
    bits = torch.where(e < 2, torch.full_like(e, 0x00200000) << e, (e - 1) << 23)
    return bits.view(torch.float32)


def _dequant_mxfp4(b: Blocks) -> torch.Tensor:
    # block_mxfp4 {u8 e (E8M0); u8 qs[16]}: w = kvalues_mxfp4[q] * e8m0_half(e)
    d = _e8m0_to_fp32_half(b[:, :1])
    values = _const(_MXFP4_VALUES, b.device, torch.float32)
    return d * values[_nibbles(b[:, 1:]).long()]


# ---------------------------------------------------------------------------------------------------
# 256-element super-blocks (K-quants)


def _dequant_q2_k(b: Blocks) -> torch.Tensor:
    # block_q2_K {u8 scales[16]; u8 qs[64]; half d; half dmin}: 16 sub-blocks of 16, 4-bit scale and min
    n = b.shape[0]
    scales, qs = b[:, :16], b[:, 16:80]
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = (d * (scales & 0x0F).to(torch.float32)).view(n, 16, 1)
    ml = (dmin * (scales >> 4).to(torch.float32)).view(n, 16, 1)
    # Each 32-byte half holds 128 elements as 2-bit fields at shifts 0, 2, 4, 6.
    q = _bits(qs.reshape(n * 2, 32), 2, 2).view(n, 16, 16).to(torch.float32)
    return (dl * q - ml).view(n, _QK_K)


def _dequant_q3_k(b: Blocks) -> torch.Tensor:
    # block_q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d}: 16 sub-blocks of 16, 6-bit signed scales
    n = b.shape[0]
    hmask, qs, packed, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    low = _bits(packed[:, :8], 4, 4)  # scales 0..15, low 4 bits
    high = _bits(packed[:, 8:], 2, 2)  # scales 0..15, high 2 bits
    scales = ((low | (high << 4)).to(torch.int16) - 32).to(torch.float32)
    dl = (d * scales).view(n, 16, 1)
    ql = _bits(qs.reshape(n * 2, 32), 2, 2).view(n, 16, 16).to(torch.int16)
    # A clear hmask bit subtracts 4; a set one subtracts nothing.
    qh = _bits(hmask, 1, 1).view(n, 16, 16).to(torch.int16)
    q = (ql - ((qh ^ 1) << 2)).to(torch.float32)
    return (dl * q).view(n, _QK_K)


def _scale_min_k4(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """get_scale_min_k4: 12 bytes -> eight 6-bit scales and eight 6-bit mins (Q4_K, Q5_K)."""
    d, m, md = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc.to(torch.float32), mn.to(torch.float32)


def _dequant_q4_k(b: Blocks) -> torch.Tensor:
    # block_q4_K {half d; half dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32, w = d*sc*q - dmin*m
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mn = _scale_min_k4(b[:, 4:16])
    dl = (d * sc).view(n, 8, 1)
    ml = (dmin * mn).view(n, 8, 1)
    q = _nibbles(b[:, 16:].reshape(n, 4, 32)).view(n, 8, 32).to(torch.float32)
    return (dl * q - ml).view(n, _QK_K)


def _dequant_q5_k(b: Blocks) -> torch.Tensor:
    # block_q5_K {half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: Q4_K plus a fifth bit from qh
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mn = _scale_min_k4(b[:, 4:16])
    dl = (d * sc).view(n, 8, 1)
    ml = (dmin * mn).view(n, 8, 1)
    ql = _nibbles(b[:, 48:].reshape(n, 4, 32)).view(n, 8, 32)
    qh = _bits(b[:, 16:48], 1, 1).view(n, 8, 32)  # sub-block j takes bit j of each qh byte
    q = (ql | (qh << 4)).to(torch.float32)
    return (dl * q - ml).view(n, _QK_K)


def _dequant_q6_k(b: Blocks) -> torch.Tensor:
    # block_q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d}: 16 sub-blocks of 16, w = (d*sc) * (q - 32)
    n = b.shape[0]
    ql, qh = b[:, :128], b[:, 128:192]
    scales = b[:, 192:208].view(torch.int8).to(torch.float32)
    d = _f16(b[:, 208:210])
    dl = (d * scales).view(n, 16, 1)
    # Each 128-element half: low nibbles of 64 ql bytes (0..63), high nibbles (64..127), and 2-bit fields
    # of 32 qh bytes at shifts 0, 2, 4, 6.
    low = _nibbles(ql.reshape(n, 2, 64)).view(n, 8, 32)
    high = _bits(qh.reshape(n * 2, 32), 2, 2).view(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int16) - 32).to(torch.float32)
    return (dl * q.view(n, 16, 16)).view(n, _QK_K)


def _dequant_q8_k(b: Blocks) -> torch.Tensor:
    # block_q8_K {float d; i8 qs[256]; i16 bsums[16]}: w = d * q (bsums only serve dot products)
    d = _f32(b[:, :4])
    return d * b[:, 4:260].view(torch.int8).to(torch.float32)


DEQUANTIZERS: dict[GGMLType, BlockDequantizer] = {
    GGMLType.F32: _dequant_f32,
    GGMLType.F16: _dequant_f16,
    GGMLType.BF16: _dequant_bf16,
    GGMLType.Q4_0: _dequant_q4_0,
    GGMLType.Q4_1: _dequant_q4_1,
    GGMLType.Q5_0: _dequant_q5_0,
    GGMLType.Q5_1: _dequant_q5_1,
    GGMLType.Q8_0: _dequant_q8_0,
    GGMLType.IQ4_NL: _dequant_iq4_nl,
    GGMLType.MXFP4: _dequant_mxfp4,
    GGMLType.Q2_K: _dequant_q2_k,
    GGMLType.Q3_K: _dequant_q3_k,
    GGMLType.Q4_K: _dequant_q4_k,
    GGMLType.Q5_K: _dequant_q5_k,
    GGMLType.Q6_K: _dequant_q6_k,
    GGMLType.Q8_K: _dequant_q8_k,
}

SUPPORTED_TYPES: tuple[GGMLType, ...] = tuple(DEQUANTIZERS)


def check_layout(
    raw: torch.Tensor, qtype: GGMLType | int, shape: tuple[int, ...], *, name: str = ""
) -> GGMLType:
    """Validate that `raw` holds exactly a `shape` tensor of `qtype`; returns the type as a GGMLType."""
    qtype = ggml_type(int(qtype), name=name)
    if qtype not in DEQUANTIZERS:
        supported = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise QuantFormatError(
            f"tensor {name!r}: no dequantizer for ggml type {qtype.name} (supported: {supported})"
        )
    if raw.dtype != torch.uint8:
        raise QuantFormatError(f"tensor {name!r}: packed data must be uint8 bytes, got {raw.dtype}")
    if any(dim < 0 for dim in shape):
        raise QuantFormatError(f"tensor {name!r}: negative dimension in shape {shape}")
    expected = tensor_nbytes(qtype, shape, name=name)
    got = raw.numel()
    if got < expected:
        raise QuantFormatError(
            f"tensor {name!r}: truncated {qtype.name} data: shape {shape} needs {expected} bytes, got {got}"
        )
    if got > expected:
        raise QuantFormatError(
            f"tensor {name!r}: {got - expected} bytes beyond the {expected} a {qtype.name} tensor of shape {shape} holds"
        )
    return qtype


def dequantize(
    raw: torch.Tensor, qtype: GGMLType | int, shape: tuple[int, ...], *, name: str = ""
) -> torch.Tensor:
    """Dequantize packed ggml bytes to a float32 tensor of `shape` (PyTorch order) on `raw`'s device.

    Bit-exact with `gguf.quants.dequantize` and ggml's `to_float`. For F32 the result may share memory
    with `raw` (no copy is needed); treat it as read-only.
    """
    qtype = check_layout(raw, qtype, shape, name=name)
    fmt = FORMATS[qtype]
    blocks = raw.reshape(-1, fmt.type_size)
    return DEQUANTIZERS[qtype](blocks).reshape(shape)
