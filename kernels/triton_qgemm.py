"""Prefill products on tensor cores that read the packed ggml weight directly (CUDA, Triton).

A prompt of T > `triton_gemv.MAX_ROWS` tokens multiplies every weight with T activation rows. Here each
program owns a `BLOCK_M x BLOCK_N` tile of the output; it walks the input dimension `BLOCK_K` values a
step, decodes its `BLOCK_N x BLOCK_K` weight tile from the packed bytes in registers (the same fields as
`kernels.dequant`), rounds it to float16 and feeds it with the activation tile to `tl.dot` (float32
accumulation). No float16 copy of the weight is ever written: against decoding into a scratch and
calling cuBLAS (`kernels.triton_prefill`), that saves the scratch's write and read (2 bytes a weight
each way), and a product is two launches (the activations' scaling, the GEMM) instead of four.

Mixture-of-experts prefill (`matmul_experts`) is one launch per expert tensor: the (token, expert)
pairs are sorted by expert and each expert's run padded to whole `BLOCK_M` blocks on the device
(`expert_blocks`, no host read: a CUDA graph can capture it); each program reads its block's expert id and multiplies that
expert's weight tile with its block's token rows, storing each pair's output row in place (so nothing
is gathered or scattered after). Programs of the padding past the last block return at once.

Numerics: those of `kernels.triton_prefill`: activations divided per row by their largest magnitude and
rounded to float16 (`_scaled_half_kernel`, the same bits as its `torch.div(...).half()`), the decoded
weight rounded once to float16, products summed in float32 and scaled back per row in the epilogue, with
the bias. Against the float64 product of the reference weights the error is two float16 roundings per
product (bounded in the tests).

The decoders address every weight by its byte and bit (byte loads: the 17/18/22/34-byte blocks have no
wider alignment), in element order, so the activation tile is a plain contiguous load. Their cost is
shared by the `BLOCK_M` rows of the tile (`benchmarks.ptx_cost --kernel prefill-gemm` counts it).
`tests/kernels/interpreted_qgemm.py` checks every format against gguf-py's values on CPU under Triton's
interpreter; `tests/kernels/test_triton_prefill.py` checks both prefill paths on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.formats import FORMATS, GGMLType
from kernels.qmatmul import ExpertsFastPath, FastPath
from kernels.qtensor import CODES_THEN_SCALES, SCALES, QTensor, code_bytes
from kernels.triton_gemv import MAX_ROWS
from kernels.triton_moe import MAX_PAIRS

# ggml type -> the kernel's FMT constexpr (each launch compiles the one decoder it reads).
FORMAT_NAMES: dict[GGMLType, str] = {
    GGMLType.F16: "f16",
    GGMLType.BF16: "bf16",
    GGMLType.Q4_0: "q4_0",
    GGMLType.Q4_1: "q4_1",
    GGMLType.Q5_0: "q5_0",
    GGMLType.Q5_1: "q5_1",
    GGMLType.Q8_0: "q8_0",
    GGMLType.MXFP4: "mxfp4",
    GGMLType.Q4_K: "q4_k",
    GGMLType.Q5_K: "q5_k",
    GGMLType.Q6_K: "q6_k",
}
# kernels.qtensor.CODES_THEN_SCALES: a matrix's codes (a row's 16-byte aligned), then its scales. MXFP4
# expert tensors are read so by default (`triton_gemv.pack`); Q8_0 and Q6_K matrices where asked.
REGROUPED_FORMATS: dict[GGMLType, str] = {
    GGMLType.MXFP4: "mxfp4_codes_then_scales",
    GGMLType.Q8_0: "q8_0_codes_then_scales",
    GGMLType.Q6_K: "q6_k_codes_then_scales",
}
REGROUPED_MXFP4 = REGROUPED_FORMATS[GGMLType.MXFP4]


@dataclass(frozen=True)
class QGemmConfig:
    """A launch shape: the output tile of one program, the input step, warps and pipelining depth."""

    block_m: int = 64  # activation rows (or token-expert pairs) per program
    block_n: int = 64  # weight rows per program
    block_k: int = 64  # input values per step: a multiple of 32, dividing 256 (a K-quant super-block)
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self) -> None:
        if self.block_k % 32 or 256 % self.block_k:
            raise ValueError(f"block_k {self.block_k}: must be a multiple of 32 that divides 256")


# Launch shapes before any sweep on the GPU (`python -m benchmarks.kernels_prefill --sweep` times others),
# chosen so that ptxas spills nothing for any format (sm_90, `benchmarks.ptx_cost`-style compile).
_FEW_ROWS = QGemmConfig(64, 64, 64, 4, 2)
_MANY_ROWS = QGemmConfig(128, 128, 64, 8, 3)  # a decoded tile serves 128 rows: half the decode work of 64
# Experts: a 512-token GPT-OSS prompt gives ~64 pairs an expert, which 128-row blocks hold in one block
# (64-row blocks: ~1.5 a expert); the decode, not the matrix units, bounds this GEMM, so each expert tile
# decoded once is worth the padded rows' multiplications.
_EXPERTS = QGemmConfig(128, 128, 64, 8, 3)


def default_config(n_rows: int, *, grouped: bool) -> QGemmConfig:
    """The launch shape for `n_rows` activation rows (or token-expert pairs, `grouped`)."""
    if grouped:
        return _EXPERTS
    return _MANY_ROWS if n_rows > 64 else _FEW_ROWS


# ---------------------------------------------------------------------------------------------------
# Field readers. `p` are uint8 pointers; the layouts are those of `kernels.dequant`.


@triton.jit
def _u8(p):
    return tl.load(p).to(tl.uint32)


@triton.jit
def _f16_at(p):
    """The little-endian IEEE half at byte pointers `p` (any alignment), as float32 (exact)."""
    bits = _u8(p) | (_u8(p + 1) << 8)
    return bits.to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _nibble(qs, h, j):
    """Code 16h + j of a 32-element block whose 16 code bytes start at `qs` (`h` [.., 2, 1], `j` [.., 1, 16]):
    byte j, its low nibble for h = 0 and its high one for h = 1 (ggml's Q4_0/Q4_1/Q5_0/Q5_1/MXFP4 order).
    Each byte is read once for both of its codes."""
    return (_u8(qs + j) >> (4 * h)) & 15


@triton.jit
def _u32_at(p):
    """The little-endian 32-bit word at byte pointers `p` (any alignment)."""
    return _u8(p) | (_u8(p + 1) << 8) | (_u8(p + 2) << 16) | (_u8(p + 3) << 24)


@triton.jit
def _e8m0_half(e):
    """ggml_e8m0_to_fp32_half: 2^(e - 128) as float32 (subnormal for e < 2), from the uint32 exponent."""
    bits = tl.where(e < 2, tl.full(e.shape, 0x00200000, tl.uint32) << e, (e - 1) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _e2m1_doubled(code):
    """kvalues_mxfp4[code] (the doubled e2m1 value: 0, 1, 2, 3, 4, 6, 8, 12, signed by bit 3), exact: the
    magnitude bits as a float16's exponent and mantissa are the e2m1 value times 2^-14."""
    bits = ((code & 7) << 9) | ((code & 8) << 12)
    return bits.to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32) * 32768.0


@triton.jit
def _scale_min_k4(sc, j):
    """get_scale_min_k4: sub-block `j`'s 6-bit scale and min from the 12 scale bytes at `sc`."""
    a = _u8(sc + j)
    b = _u8(sc + j + 4)
    c = _u8(sc + j % 4)  # j - 4 for the upper four sub-blocks
    low = j < 4
    scale = tl.where(low, a & 63, (b & 15) | ((c >> 6) << 4))
    mn = tl.where(low, b & 63, (b >> 4) | ((a >> 6) << 4))
    return scale.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _weights(rows, scale_rows, s, h, j, FMT: tl.constexpr):
    """Decoded float32 weights of 32-element sub-blocks `s` ([1, NSUB, 1, 1], the index along the row),
    element i = 16h + j of each (`h` [1, 1, 2, 1], `j` [1, 1, 1, 16]), for the rows whose first byte `rows`
    points at ([BLOCK_N, 1, 1, 1]); `scale_rows`: each row's scales (a regrouped layout's). Returns
    [BLOCK_N, NSUB, 2, 16]: a field shared by a half or a whole block is read once for it."""
    i = 16 * h + j
    if FMT == "f16":
        w = tl.load((rows + (s * 32 + i) * 2).to(tl.pointer_type(tl.float16))).to(tl.float32)
    elif FMT == "bf16":
        bits = tl.load((rows + (s * 32 + i) * 2).to(tl.pointer_type(tl.uint16))).to(tl.uint32)
        w = (bits << 16).to(tl.float32, bitcast=True)
    elif FMT == "q4_0":  # {d, qs[16]}: (q - 8) * d
        b = rows + s * 18
        w = (_nibble(b + 2, h, j).to(tl.float32) - 8.0) * _f16_at(b)
    elif FMT == "q4_1":  # {d, m, qs[16]}: q * d + m
        b = rows + s * 20
        w = _nibble(b + 4, h, j).to(tl.float32) * _f16_at(b) + _f16_at(b + 2)
    elif FMT == "q5_0":  # {d, qh[4], qs[16]}: the fifth bit of element i is bit i of qh
        b = rows + s * 22
        q = _nibble(b + 6, h, j) | (((_u32_at(b + 2) >> i) & 1) << 4)
        w = (q.to(tl.float32) - 16.0) * _f16_at(b)
    elif FMT == "q5_1":  # {d, m, qh[4], qs[16]}
        b = rows + s * 24
        q = _nibble(b + 8, h, j) | (((_u32_at(b + 4) >> i) & 1) << 4)
        w = q.to(tl.float32) * _f16_at(b) + _f16_at(b + 2)
    elif FMT == "q8_0":  # {d, qs[32] int8}
        b = rows + s * 34
        w = _q8_0_weights(b + 2, b, i)
    elif FMT == "q8_0_codes_then_scales":  # a row's codes (32 bytes a block), its float16 scales apart
        w = _q8_0_weights(rows + s * 32, scale_rows + s * 2, i)
    elif FMT == "mxfp4":  # {e (E8M0), qs[16]}
        b = rows + s * 17
        w = _e2m1_doubled(_nibble(b + 1, h, j)) * _e8m0_half(_u8(b))
    elif FMT == "mxfp4_codes_then_scales":  # a row's codes (16 bytes a block), its scale bytes apart
        w = _e2m1_doubled(_nibble(rows + s * 16, h, j)) * _e8m0_half(_u8(scale_rows + s))
    elif FMT == "q6_k_codes_then_scales":  # a row's super-blocks but their d (208 bytes each), the d's apart
        w = _q6_k_weights(rows + (s // 8) * 208, scale_rows + (s // 8) * 2, s, h, i)
    elif FMT == "q4_k":  # {d, dmin, scales[12], qs[128]}: sub-block u in byte chunk u // 2, nibble u % 2
        b = rows + (s // 8) * 144
        u = s % 8  # the sub-block within its super-block
        sc, mn = _scale_min_k4(b + 4, u)
        q = (_u8(b + 16 + 32 * (u // 2) + i) >> (4 * (u % 2))) & 15
        w = (_f16_at(b) * sc) * q.to(tl.float32) - _f16_at(b + 2) * mn
    elif FMT == "q5_k":  # {d, dmin, scales[12], qh[32], qs[128]}: the fifth bit is bit u of qh[i]
        b = rows + (s // 8) * 176
        u = s % 8  # the sub-block within its super-block
        sc, mn = _scale_min_k4(b + 4, u)
        q = ((_u8(b + 48 + 32 * (u // 2) + i) >> (4 * (u % 2))) & 15) | (((_u8(b + 16 + i) >> u) & 1) << 4)
        w = (_f16_at(b) * sc) * q.to(tl.float32) - _f16_at(b + 2) * mn
    else:  # "q6_k": {ql[128], qh[64], scales[16] int8, d}
        b = rows + (s // 8) * 210
        w = _q6_k_weights(b, b + 208, s, h, i)
    return w


@triton.jit
def _q8_0_weights(qs, d_at, i):
    """Element i of Q8_0 blocks whose 32 int8 codes start at `qs`, times the float16 scale at `d_at`.
    The signed byte with its sign bit flipped is q + 128, read as a float through the mantissa of 2^23
    (exact): a signed int8 to float32 is an I2F on sm_90, at an eighth of the other ALU ops' rate."""
    q = ((_u8(qs + i) ^ 0x80) | 0x4B000000).to(tl.float32, bitcast=True) - 8388736.0  # 2^23 + 128
    return q * _f16_at(d_at)


@triton.jit
def _q6_k_weights(b, d_at, s, h, i):
    """Element i = 16h + j of sub-block s % 8 of Q6_K super-blocks whose ql, qh and scales start at `b`
    (the file's {ql[128], qh[64], scales[16] int8, d} without d, which is at `d_at`). Sub-block u: half
    n = u // 4, quarter t = u % 4: low bits in ql[64n + 32(t & 1) + i], nibble t >> 1; high bits 2t of
    qh[32n + i]; scale 8n + h + 2t."""
    u = s % 8
    n = u // 4
    t = u % 4
    low = (_u8(b + 64 * n + 32 * (t & 1) + i) >> (4 * (t >> 1))) & 15
    high = (_u8(b + 128 + 32 * n + i) >> (2 * t)) & 3
    sc = tl.load((b + 192 + 8 * n + h + 2 * t).to(tl.pointer_type(tl.int8))).to(tl.float32)
    return (_f16_at(d_at) * sc) * ((low | (high << 4)).to(tl.float32) - 32.0)


@triton.jit
def _qgemm_kernel(
    x_ptr,  # float16 (rows, K): activations divided by their row scale
    x_scale_ptr,  # float32 (rows,): that scale
    w_ptr,  # uint8: the packed weight (a 3-D expert tensor when GROUPED)
    b_ptr,  # float32 bias (N,) or (n_expert, N), if HAS_BIAS
    y_ptr,  # float32 (M, N)
    pair_ptr,  # GROUPED: int32 pair ids sorted by expert, each expert's run padded with M
    block_expert_ptr,  # GROUPED: int32 expert of each BLOCK_M block (n_expert past the last)
    M,  # output rows: activation rows, or token-expert pairs when GROUPED
    N,
    K,
    row_bytes,  # bytes from one weight row to the next (regrouped MXFP4: of its codes)
    matrix_bytes,  # bytes from one expert to the next
    scales_at,  # regrouped: bytes from a matrix's start to its scales
    scale_row_bytes,  # regrouped: bytes of one row's scales
    x_group,  # GROUPED: pairs per activation row (pair p reads row p // x_group)
    n_expert,
    FMT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GROUPED: tl.constexpr,
    EVEN_K: tl.constexpr,  # K is a multiple of BLOCK_K
):
    pid_m = tl.program_id(0)  # fastest: consecutive programs share a weight tile (read once from L2)
    pid_n = tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    matrix = w_ptr
    if GROUPED:
        expert = tl.load(block_expert_ptr + pid_m)
        if expert >= n_expert:  # padding blocks past the last expert's run
            return
        out_row = tl.load(pair_ptr + m)
        valid = out_row < M
        x_row = out_row // x_group
        matrix = w_ptr + expert.to(tl.int64) * matrix_bytes
    else:
        out_row = m
        valid = m < M
        x_row = m
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_read = tl.minimum(n, N - 1)  # edge tiles read the last row again; their stores are masked
    rows = (matrix + n_read.to(tl.int64) * row_bytes)[:, None, None, None]
    scale_rows = (matrix + scales_at + n_read.to(tl.int64) * scale_row_bytes)[:, None, None, None]
    NSUB: tl.constexpr = BLOCK_K // 32
    sub = tl.arange(0, NSUB)[None, :, None, None]
    half = tl.arange(0, 2)[None, None, :, None]
    j = tl.arange(0, 16)[None, None, None, :]
    k = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + x_row.to(tl.int64)[:, None] * K
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            xt = tl.load(x_rows + k0 + k[None, :], mask=valid[:, None], other=0.0)
            w = _weights(rows, scale_rows, k0 // 32 + sub, half, j, FMT)
            w = tl.reshape(w, (BLOCK_N, BLOCK_K)).to(tl.float16)
        else:  # a 32-block format's last step runs past K: clamp its reads, zero its weights
            in_k = k0 + k < K
            xt = tl.load(x_rows + k0 + k[None, :], mask=valid[:, None] & in_k[None, :], other=0.0)
            w = _weights(rows, scale_rows, tl.minimum(k0 // 32 + sub, K // 32 - 1), half, j, FMT)
            w = tl.where(in_k[None, :], tl.reshape(w, (BLOCK_N, BLOCK_K)), 0.0).to(tl.float16)
        acc = tl.dot(xt, tl.trans(w), acc)
    out = acc * tl.load(x_scale_ptr + x_row, mask=valid, other=0.0)[:, None]
    if HAS_BIAS:
        if GROUPED:
            out += tl.load(b_ptr + expert * N + n_read)[None, :]
        else:
            out += tl.load(b_ptr + n_read)[None, :]
    tl.store(
        y_ptr + out_row.to(tl.int64)[:, None] * N + n[None, :], out, mask=valid[:, None] & (n < N)[None, :]
    )


@triton.jit
def _scaled_half_kernel(x_ptr, x16_ptr, scale_ptr, K, x_stride, BLOCK: tl.constexpr):
    """One activation row a program: its largest magnitude (at least 1e-30) to `scale_ptr`, and the row
    divided by it (IEEE division, `div_rn`) rounded to float16: `torch.div(x, max|x|).half()`, the same
    bits, in one launch instead of four."""
    row = tl.program_id(0)
    src = x_ptr + row.to(tl.int64) * x_stride
    c = tl.arange(0, BLOCK)
    big = tl.zeros([BLOCK], dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        big = tl.maximum(big, tl.abs(tl.load(src + k0 + c, mask=k0 + c < K, other=0.0).to(tl.float32)))
    scale = tl.maximum(tl.max(big, axis=0), 1e-30)
    tl.store(scale_ptr + row, scale)
    dst = x16_ptr + row.to(tl.int64) * K
    for k0 in range(0, K, BLOCK):
        v = tl.load(src + k0 + c, mask=k0 + c < K, other=0.0).to(tl.float32)
        tl.store(
            dst + k0 + c,
            tl.math.div_rn(v, tl.full(v.shape, scale, tl.float32)).to(tl.float16),
            mask=k0 + c < K,
        )


# ---------------------------------------------------------------------------------------------------
# Launches


def format_of(w: QTensor) -> str | None:
    """The kernel's decoder for `w`, or None if it has none."""
    if w.layout == CODES_THEN_SCALES:
        return REGROUPED_FORMATS.get(w.qtype)
    return FORMAT_NAMES.get(w.qtype)


SCALE_BLOCK = 1024  # activation values a `_scaled_half_kernel` step reads


def scaled_half(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` (rows, in) as float16 rows divided by their largest magnitude, and that divisor (rows,), in
    one launch: no activation overflows float16 whatever its size (one float32 rounding, far below
    float16's)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    rows, in_features = x.shape
    x16 = torch.empty(rows, in_features, dtype=torch.float16, device=x.device)
    scale = torch.empty(rows, dtype=torch.float32, device=x.device)
    block = min(SCALE_BLOCK, triton.next_power_of_2(in_features))
    _scaled_half_kernel[(rows,)](x, x16, scale, in_features, x.stride(0), BLOCK=block, num_warps=4)
    return x16, scale


def _layout_args(w: QTensor) -> tuple[int, int, int, int]:
    """(row_bytes, matrix_bytes, scales_at, scale_row_bytes) of `w`'s matrices (an expert's, for a 3-D
    tensor); a regrouped row's bytes are its codes'."""
    out_features, in_features = w.shape[-2], w.shape[-1]
    matrix_bytes = w.nbytes // w.n_matrices
    if w.layout == CODES_THEN_SCALES:
        blocks = in_features // FORMATS[w.qtype].block_size
        row_bytes = blocks * code_bytes(w.qtype)
        return row_bytes, matrix_bytes, out_features * row_bytes, blocks * SCALES[w.qtype][1]
    return matrix_bytes // out_features, matrix_bytes, 0, 0


def _launch(
    x: torch.Tensor,
    w: QTensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    n_out_rows: int,
    grouped: tuple[torch.Tensor, torch.Tensor, int] | None,
    config: QGemmConfig,
) -> None:
    in_features = w.shape[-1]
    x16, x_scale = scaled_half(x.reshape(-1, in_features))
    row_bytes, matrix_bytes, scales_at, scale_row_bytes = _layout_args(w)
    n_expert = w.shape[0] if len(w.shape) == 3 else 1
    if grouped is not None:
        pairs, block_expert, x_group = grouped
        n_blocks = block_expert.numel()
    else:
        pairs = block_expert = x_scale  # unused
        x_group, n_blocks = 1, triton.cdiv(n_out_rows, config.block_m)
    grid = (n_blocks, triton.cdiv(w.shape[-2], config.block_n))
    _qgemm_kernel[grid](
        x16,
        x_scale,
        w.data,
        bias if bias is not None else x_scale,
        y,
        pairs,
        block_expert,
        n_out_rows,
        w.shape[-2],
        in_features,
        row_bytes,
        matrix_bytes,
        scales_at,
        scale_row_bytes,
        x_group,
        n_expert,
        FMT=format_of(w),
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        HAS_BIAS=bias is not None,
        GROUPED=grouped is not None,
        EVEN_K=in_features % config.block_k == 0,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


def readable(w: QTensor) -> bool:
    """Whether the kernel decodes `w`: a format it reads, on CUDA, rows of whole 32-element blocks, and
    F16/BF16 values on 2-byte boundaries (read as halves; every other format is read by the byte)."""
    fmt = format_of(w)
    return (
        fmt is not None
        and w.data.is_cuda
        and w.shape[-1] % 32 == 0
        and (fmt not in ("f16", "bf16") or w.data.data_ptr() % 2 == 0)
    )


def _float32_bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.float().contiguous()


def supports(x: torch.Tensor, w: QTensor) -> bool:
    return len(w.shape) == 2 and x.is_floating_point() and x.numel() > MAX_ROWS * w.shape[1] and readable(w)


def matmul(
    x: torch.Tensor,
    w: QTensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: QGemmConfig | None = None,
) -> torch.Tensor:
    """`kernels.qmatmul.qmatmul`'s contract for many activation rows, in one launch."""
    out_features, in_features = w.shape
    n_rows = x.numel() // in_features
    config = config or default_config(n_rows, grouped=False)
    y = torch.empty(n_rows, out_features, dtype=torch.float32, device=x.device)
    _launch(x, w, _float32_bias(bias), y, n_rows, None, config)
    return y.reshape(*x.shape[:-1], out_features).to(out_dtype)


def expert_blocks(expert_ids: torch.Tensor, n_expert: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs p = t * k + j of `expert_ids (T, k)` sorted by expert (stable), each expert's run padded
    with the sentinel T * k to whole `block_m` blocks, and each block's expert (`n_expert` for the blocks
    past the last run): int32 tensors of cdiv(T * k, block_m) + n_expert blocks, the most the padding can
    take, built on the device without reading anything back (so a CUDA graph can capture it)."""
    flat = expert_ids.reshape(-1).long()
    n_pairs = flat.numel()
    device = flat.device
    order = torch.argsort(flat, stable=True)
    # Counted by scatter_add, not bincount: on CUDA bincount reads its largest id back to size its output,
    # which a captured prefill (reference_worker.prefill_graph) cannot do.
    counts = torch.zeros(n_expert, dtype=torch.long, device=device).scatter_add_(
        0, flat, torch.ones_like(flat)
    )
    padded = (counts + block_m - 1) // block_m * block_m
    padded_ends = torch.cumsum(padded, 0)
    # Pair order[r] (rank r in the sorted run of expert e) lands at e's padded start + (r - e's start).
    shift = (padded_ends - padded) - (torch.cumsum(counts, 0) - counts)
    n_blocks = triton.cdiv(n_pairs, block_m) + n_expert
    pairs = torch.full((n_blocks * block_m,), n_pairs, dtype=torch.int32, device=device)
    pairs[torch.arange(n_pairs, device=device) + shift[flat[order]]] = order.int()
    block_starts = torch.arange(n_blocks, device=device) * block_m
    block_expert = torch.searchsorted(padded_ends, block_starts, right=True).int()
    return pairs, block_expert


def supports_experts(x: torch.Tensor, w: QTensor, expert_ids: torch.Tensor) -> bool:
    return (
        len(w.shape) == 3
        and x.is_floating_point()
        and expert_ids.numel() > MAX_PAIRS
        and expert_ids.device == x.device
        and readable(w)
    )


def matmul_experts(
    x: torch.Tensor,
    w: QTensor,
    expert_ids: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: QGemmConfig | None = None,
) -> torch.Tensor:
    """`kernels.qmatmul.qmatmul_experts`'s contract for many (token, expert) pairs, in one launch."""
    n_expert, out_features, _ = w.shape
    n_tokens, k = expert_ids.shape
    config = config or default_config(n_tokens * k, grouped=True)
    pairs, block_expert = expert_blocks(expert_ids, n_expert, config.block_m)
    y = torch.empty(n_tokens * k, out_features, dtype=torch.float32, device=x.device)
    _launch(x, w, _float32_bias(bias), y, n_tokens * k, (pairs, block_expert, k), config)
    return y.view(n_tokens, k, out_features).to(out_dtype)


FAST_PATH = FastPath(name="triton-qgemm", devices=("cuda",), supports=supports, qmatmul=matmul)
EXPERTS_FAST_PATH = ExpertsFastPath(
    name="triton-qgemm-experts",
    devices=("cuda",),
    supports=supports_experts,
    qmatmul_experts=matmul_experts,
)
