"""The ggml tensor types a GGUF file can hold: ids, block sizes, bytes per block.

Ids and sizes are those of ggml (`ggml-common.h`) and gguf-py (`GGML_QUANT_SIZES`); a tensor of `n`
elements of type `t` occupies `n // block_size * type_size` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from math import prod


class QuantFormatError(ValueError):
    """A tensor's bytes or shape do not fit its ggml type. The message names the tensor."""


class GGMLType(IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


@dataclass(frozen=True)
class BlockFormat:
    name: str
    block_size: int  # elements per block
    type_size: int  # bytes per block


_QK_K = 256  # super-block size of the K-quants

# (block_size, type_size) per type, as in gguf-py's GGML_QUANT_SIZES.
_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q8_1: (32, 4 + 4 + 32),
    GGMLType.Q2_K: (_QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    GGMLType.Q3_K: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    GGMLType.Q4_K: (_QK_K, 2 + 2 + _QK_K // 2 + 12),
    GGMLType.Q5_K: (_QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    GGMLType.Q6_K: (_QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    GGMLType.Q8_K: (_QK_K, 4 + _QK_K + _QK_K // 8),
    GGMLType.IQ2_XXS: (_QK_K, 2 + _QK_K // 4),
    GGMLType.IQ2_XS: (_QK_K, 2 + _QK_K // 4 + _QK_K // 32),
    GGMLType.IQ3_XXS: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8),
    GGMLType.IQ1_S: (_QK_K, 2 + _QK_K // 8 + _QK_K // 16),
    GGMLType.IQ4_NL: (32, 2 + 16),
    GGMLType.IQ3_S: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    GGMLType.IQ2_S: (_QK_K, 2 + _QK_K // 4 + _QK_K // 16),
    GGMLType.IQ4_XS: (_QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (_QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (_QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: (_QK_K, 2 + 64),
    GGMLType.MXFP4: (32, 1 + 16),
    GGMLType.NVFP4: (64, 4 + 32),
    GGMLType.Q1_0: (128, 2 + 16),
}

FORMATS: dict[GGMLType, BlockFormat] = {t: BlockFormat(t.name, bs, ts) for t, (bs, ts) in _SIZES.items()}


def ggml_type(type_id: int, *, name: str = "") -> GGMLType:
    """The GGMLType for a raw id read from a file; an unknown id is a QuantFormatError naming the tensor."""
    try:
        return GGMLType(type_id)
    except ValueError:
        raise QuantFormatError(f"tensor {name!r}: unknown ggml type id {type_id}") from None


def tensor_nbytes(qtype: GGMLType, shape: tuple[int, ...], *, name: str = "") -> int:
    """Bytes of a tensor of `shape` (PyTorch order; the last dim is ggml's contiguous ne0)."""
    fmt = FORMATS[qtype]
    row = shape[-1] if shape else 1
    if row % fmt.block_size:
        raise QuantFormatError(
            f"tensor {name!r}: row length {row} is not a multiple of the {fmt.name} block size {fmt.block_size}"
        )
    return prod(shape) // fmt.block_size * fmt.type_size
