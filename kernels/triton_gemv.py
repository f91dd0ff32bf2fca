"""Fused dequant-GEMV for decode (one activation row) on CUDA, for the 32-element block types.

Each program reads `BLOCK_N` weight rows block by block, decodes them in registers exactly as
`kernels.dequant` does (same scale conversion, same products) and accumulates `w * x` in float32; the
dequantized weight never reaches memory. It registers as a `kernels.backend.FastPath` and is tested
against the reference path (`tests/kernels/test_triton_gemv.py`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.backend import FastPath
from kernels.formats import FORMATS, GGMLType
from kernels.qtensor import QTensor

_FORMAT_IDS = {GGMLType.Q4_0: 0, GGMLType.Q8_0: 1, GGMLType.MXFP4: 2}
BLOCK_N = 8  # weight rows per program
BLOCKS_PER_STEP = 8  # 32-element blocks per row per loop iteration


@triton.jit
def _f16_at(ptr, offsets, mask):
    lo = tl.load(ptr + offsets, mask=mask, other=0).to(tl.uint16)
    hi = tl.load(ptr + offsets + 1, mask=mask, other=0).to(tl.uint16)
    return (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _nibble(ptr, offsets, j, mask):
    # Elements j and j + 16 share byte j: low nibble first (Q4_0, MXFP4).
    byte = tl.load(ptr + offsets + (j % 16), mask=mask, other=0).to(tl.int32)
    return tl.where(j < 16, byte & 15, byte >> 4)


@triton.jit
def _gemv_kernel(
    w_ptr,
    x_ptr,
    bias_ptr,
    y_ptr,
    n_rows,
    n_blocks,
    row_bytes,
    FMT: tl.constexpr,
    TYPE_SIZE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BB: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    j = tl.arange(0, 32)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for b0 in range(0, n_blocks, BB):
        blk = b0 + tl.arange(0, BB)
        blk_mask = blk < n_blocks
        x = tl.load(x_ptr + blk[:, None] * 32 + j[None, :], mask=blk_mask[:, None], other=0.0).to(tl.float32)
        base = rows[:, None].to(tl.int64) * row_bytes + blk[None, :] * TYPE_SIZE  # [BLOCK_N, BB]
        mask2 = row_mask[:, None] & blk_mask[None, :]
        base3 = base[:, :, None]
        mask3 = mask2[:, :, None]
        j3 = j[None, None, :]
        if FMT == 0:  # Q4_0: (q - 8) * d
            d = _f16_at(w_ptr, base, mask2)
            q = _nibble(w_ptr, base3 + 2, j3, mask3)
            w = d[:, :, None] * (q - 8).to(tl.float32)
        elif FMT == 1:  # Q8_0: q * d
            d = _f16_at(w_ptr, base, mask2)
            q = tl.load(w_ptr + base3 + 2 + j3, mask=mask3, other=0).to(tl.int8, bitcast=True)
            w = q.to(tl.float32) * d[:, :, None]
        else:  # MXFP4: kvalues_mxfp4[q] * e8m0_half(e)
            e = tl.load(w_ptr + base, mask=mask2, other=0).to(tl.int32)
            d = tl.where(e < 2, (e * 0 + 0x00200000) << e, (e - 1) << 23).to(tl.float32, bitcast=True)
            code = _nibble(w_ptr, base3 + 1, j3, mask3)
            mag = code & 7  # doubled e2m1: 0, 1, 2, 3, 4, 6, 8, 12
            mag = tl.where(mag < 4, mag, (2 + (mag & 1)) << tl.maximum((mag >> 1) - 1, 0))
            w = d[:, :, None] * tl.where(code >= 8, -mag, mag).to(tl.float32)
        acc += tl.sum(tl.sum(w * x[None, :, :], axis=2), axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows, acc, mask=row_mask)


def supports(x: torch.Tensor, w: QTensor) -> bool:
    return w.qtype in _FORMAT_IDS and len(w.shape) == 2 and x.numel() == w.shape[1] and x.is_floating_point()


def gemv(x: torch.Tensor, w: QTensor, bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    n_rows, in_features = w.shape
    fmt = FORMATS[w.qtype]
    x_row = x.reshape(in_features).contiguous()
    y = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    bias_arg = bias.contiguous() if bias is not None else y
    _gemv_kernel[(triton.cdiv(n_rows, BLOCK_N),)](
        w.data,
        x_row,
        bias_arg,
        y,
        n_rows,
        in_features // 32,
        w.row_bytes,
        FMT=_FORMAT_IDS[w.qtype],
        TYPE_SIZE=fmt.type_size,
        HAS_BIAS=bias is not None,
        BLOCK_N=BLOCK_N,
        BB=BLOCKS_PER_STEP,
    )
    return y.reshape(*x.shape[:-1], n_rows).to(out_dtype)


FAST_PATH = FastPath(name="triton-gemv", devices=("cuda",), supports=supports, qmatmul=gemv)
