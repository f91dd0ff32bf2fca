"""Fused dequant-GEMV on CUDA (Triton) for decode: a few activation rows against a packed ggml weight.

Each program owns `BLOCK_N` weight rows (clamped at the edge, stores masked) and one split of the row's
blocks; it walks its blocks a step at a time, reads the packed bytes with the widest aligned loads the
layout allows (32- or 16-bit words; bytes for MXFP4's 17-byte blocks) as coalesced row tiles,
decodes them in registers and accumulates `w * x` in float32 into a tile-shaped accumulator that is
reduced once at the end (no cross-thread reduction inside the loop). Split-K partial sums go to a
small float32 buffer; the last program of a row tile to finish (a per-tile arrival counter) sums them
in split order and writes the output, so results are deterministic and a split GEMV is one launch, not
a launch plus PyTorch's sum (`SplitCounters`).

Decoding follows `kernels.dequant` field for field. Quant codes become floats without an int->float
conversion: the code is OR-ed into the mantissa of a power of two `P` (e.g. `16 + q` for a 4-bit `q`;
in the K-quant loops one byte permute a code, `_byte_as_float`),
and `w = (P + q) * scale + offset` with the offset folded per block (`-(P + 8) * d` for Q4_0,
`m - P * d` for Q4_1, `-(P * dl + ml)` for the K-quants). For Q4_0, Q5_0, Q8_0, MXFP4, F32, F16 and BF16
every decoded weight equals the reference's bit for bit; for the types with a separate offset
(Q4_1, Q5_1, Q4_K, Q5_K, Q6_K) the weight may differ from the reference's by one rounding, far
inside the 1e-5 relative bound the tests check.

`gemv` serves `kernels.qmatmul.qmatmul` (2-D weights, up to `MAX_ROWS` activation rows) and
`kernels.triton_moe.gemv_experts` serves `kernels.qmatmul.qmatmul_experts` (a 3-D expert tensor,
one launch computing only the selected experts); `kernels.backend` lists both for CUDA.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels import dependent_launch, tensor_core_gemv
from kernels.formats import FORMATS, GGMLType, tensor_nbytes
from kernels.qmatmul import FastPath, RMSNormed
from kernels.qtensor import CODES_THEN_SCALES, GGML, QTensor
from kernels.triton_common import (
    MAX_PREFETCH_LINES,
    PREFETCH_LINE,
    await_previous_grid,
    gated,
    launch_next_grid_late,
    prefetch_share,
    rms_over,
    routed_sum,
    segment_of,
)

MAX_ROWS = 8  # activation rows per call served here; more rows are prefill, a matmul's job

# ggml type -> (the kernel's format, by name; bytes per load word; elements per unit the loop steps over).
# The format name is the kernel's FMT constexpr: each launch compiles the one branch that reads it.


@dataclass(frozen=True)
class _Layout:
    fmt: str  # the ggml type's name in lower case, e.g. "q4_k"
    word: int  # bytes per load word (1, 2 or 4): the block layout's natural alignment
    unit: int  # elements per unit (a 32-element block, a 256-element super-block, 32 plain values)


LAYOUTS: dict[GGMLType, _Layout] = {
    GGMLType.F32: _Layout("f32", 4, 32),
    GGMLType.F16: _Layout("f16", 2, 32),
    GGMLType.BF16: _Layout("bf16", 2, 32),
    GGMLType.Q4_0: _Layout("q4_0", 2, 32),
    GGMLType.Q4_1: _Layout("q4_1", 4, 32),
    GGMLType.Q5_0: _Layout("q5_0", 2, 32),
    GGMLType.Q5_1: _Layout("q5_1", 4, 32),
    GGMLType.Q8_0: _Layout("q8_0", 2, 32),
    GGMLType.MXFP4: _Layout("mxfp4", 1, 32),
    GGMLType.Q4_K: _Layout("q4_k", 4, 256),
    GGMLType.Q5_K: _Layout("q5_k", 4, 256),
    GGMLType.Q6_K: _Layout("q6_k", 2, 256),
}
SUPERBLOCK_FORMATS = ("q4_k", "q5_k", "q6_k", "q6_k_codes_then_scales")
# Regrouped (kernels.qtensor.CODES_THEN_SCALES, by `pack` at load: MXFP4 experts; Q8_0 and the larger Q6_K
# matrices by default, or those of the --regroup types): a row's codes are 16-byte aligned and read as 32-bit words in runs of four (16-byte
# loads); its scales are read apart.
CODES_THEN_SCALES_LAYOUT = _Layout("mxfp4_codes_then_scales", 4, 32)
Q8_0_CODES_THEN_SCALES_LAYOUT = _Layout("q8_0_codes_then_scales", 4, 32)
Q6_K_CODES_THEN_SCALES_LAYOUT = _Layout("q6_k_codes_then_scales", 4, 256)
REGROUPED_LAYOUTS = {
    GGMLType.MXFP4: CODES_THEN_SCALES_LAYOUT,
    GGMLType.Q8_0: Q8_0_CODES_THEN_SCALES_LAYOUT,
    GGMLType.Q6_K: Q6_K_CODES_THEN_SCALES_LAYOUT,
}
# 32-bit words of codes per unit of a regrouped layout (MXFP4: 16 bytes a block, Q8_0: 32, Q6_K: the 208
# bytes of a super-block but its d).
_CODE_WORDS = {
    CODES_THEN_SCALES_LAYOUT.fmt: 4,
    Q8_0_CODES_THEN_SCALES_LAYOUT.fmt: 8,
    Q6_K_CODES_THEN_SCALES_LAYOUT.fmt: 52,
}


def layout_of(w: QTensor) -> _Layout | None:
    """How the kernel reads `w`: its type's layout, or its regrouped one; None if not served."""
    if w.layout == CODES_THEN_SCALES:
        return REGROUPED_LAYOUTS.get(w.qtype)
    return LAYOUTS.get(w.qtype)


def _row_words(w: QTensor, layout: _Layout) -> int:
    """Load words from one weight row to the next (CODES_THEN_SCALES: a row's codes only)."""
    if layout.fmt in _CODE_WORDS:
        return w.shape[-1] // layout.unit * _CODE_WORDS[layout.fmt]
    fmt = FORMATS[w.qtype]
    return w.shape[-1] // fmt.block_size * fmt.type_size // layout.word


@dataclass(frozen=True)
class GemvConfig:
    block_n: int  # weight rows per program
    units_per_step: int  # blocks per row per loop step (always 1 for the 256-element super-blocks)
    num_warps: int
    split: int  # programs sharing one row tile along the input dim (split-K)
    stages: int = 1  # loop software-pipelining depth (> 1: loads of later steps in flight, via shared memory)
    # Registers, not shared memory: each step's weight words, and the activations they multiply, are
    # loaded before the previous step is decoded, so a warp has a step's loads in flight while it
    # decodes and waits on memory once a step (formats of AHEAD_FORMATS).
    ahead: bool = False
    # The plain walk with each step's activations loaded with its weight words, not after they are
    # decoded: one memory round trip a step instead of 3-7, no register held across steps.
    with_words: bool = False
    # A cap on the registers a thread of the plain loop holds (ptxas's maxnreg), or None for the
    # compiler's choice: more registers, fewer programs resident on an SM, and a grid larger than one
    # wave of them runs two. The loops that load ahead or with the words hold more: not for them.
    max_registers: int | None = None
    # A layout `kernels.tensor_core_gemv` reads (Q4_K in the file's order; Q6_K, Q8_0, MXFP4 regrouped), one
    # activation row of a 2-D matrix or token-expert pairs of an MXFP4 expert tensor, sm_80+: the launch
    # runs on the tensor cores (its own 64-row tiles and split; the fields above then serve only the
    # launches it does not take: other formats, several rows, other experts, the first split launch inside
    # a capture).
    tensor_cores: bool = False
    # With tensor_cores: the tensor-core prologue stores the B operand's six unused columns as zeros (its
    # form before 2026-12-06) instead of leaving them unwritten (a quarter of the shared-memory stores;
    # the same bits: those columns' products are dropped, `tensor_core_gemv._shared_b`).
    tc_zero_columns: bool = False
    # With tensor_cores, Q4_K in the file's order: the codes as int8 mma operands and the activations as four
    # 8-bit limbs (`tensor_core_gemv._q4_k_int8_walk`: a third of the walk's decode) instead of float16 hi +
    # lo (False: the float16 walk, the form before 2026-12-06). Timed 2026-12-06 (H100): Phi-3's Q4_K GEMVs
    # alone 3-13 % faster, its decode step +0.9 %, the same tokens.
    tc_int8_codes: bool = True
    # With tensor_cores: a cap on the registers a thread of the tensor-core kernel holds (ptxas's maxnreg),
    # or None for the compiler's choice. Only Q4_K's gate/up walk holds more than 80 (86 on sm_90: five
    # programs resident an SM; at 80, six, with 16 bytes spilled), so a cap there is a question of
    # occupancy against spills that only timing answers (`kernels_gemv --tc-register-caps`, `step_ab`).
    tc_max_registers: int | None = None
    # With tensor_cores and dependent launch, a 2-D matrix: each program asks for its first unit's weight
    # words before it waits for the previous grid (no kernel of a step writes weights), so that round trip
    # runs beside the previous kernel's tail (False: it waits first, as every kernel does). Not timed yet.
    tc_words_early: bool = False
    # With tensor_cores: the units (super-blocks or blocks) a program walks, where it divides the row's, or
    # None for `tensor_core_gemv.units_per_program`'s rule (super-blocks: the fewest that keep the grid
    # within one wave of four programs an SM). `step_ab`'s "tensor-core walks by the rule before
    # 2026-12-07" and `kernels_gemv --tc-units` time other walks.
    tc_units_per_program: int | None = None
    # With tensor_cores: the units whose words a program has in flight beside the one it multiplies (1: the
    # next one's; 2: the next two's, the first two asked for before the activations' prologue, for up to a
    # unit's words more in registers). The same products in the same order, so the same bits. Timed on an
    # H100 (2026-12-07, `step_ab`'s "tensor-core walks two units ahead"): Phi-3's step -1.3 % (alone q/k/v
    # and the Q4_K down 5-8 % faster, gate/up and the Q6_K down slower), so it stays 1.
    tc_units_ahead: int = 1
    # With tensor_cores: the row tile's units across 1, 2 or 4 of a program's warps (2, 4: a program of
    # 32 or 16 rows, warp s walking its own run of each row's units, B's columns 2s and 2s + 1 its
    # activations, the runs' sums added in the program), where it divides the row's units: the split of
    # K across programs, with its partial sums, arrival counter and the last program's second pass, is
    # then needed only where the tiles alone leave the grid short (`tensor_core_gemv.units_per_warp`).
    # Q4_K's walk is then the float16 one. Timed on an H100 (2026-12-07): every Phi-3 launch slower alone (a
    # program reads its tile's whole activation row: four times the prologue's work), the step -11 %; off.
    tc_warp_split: int = 1
    # With tensor_cores, a Q4_K matrix on int8 mma (one segment, 2-D; sm_90+): each program asks for its whole
    # share of the matrix at its start, before the wait for the previous grid, by TMA copies into shared
    # memory (`tensor_core_gemv._q4_k_int8_tma_walk`), instead of one super-block's words ahead in
    # registers. The same words and products: the same bits. Timed on an H100 (2026-12-07, `benchmarks/
    # results/2026-12-07-h100-b-operand-probe-d5ed843.md`): Phi-3's step -6.8 % waiting for the whole share
    # at once, -6.2 % waiting a super-block at a time (as now), slower still with dependent launch. Off.
    tc_words_by_tma: bool = False
    # With tensor_cores, sm_90+: a launch split along K into 2-8 programs a row tile runs each tile's splits
    # as one thread-block cluster (`kernels.cluster_launch`); splits 1.. send their partial sums into split
    # 0's shared memory (`st.async`, counted on its mbarrier) and split 0 sums them in split order (the
    # same bits), instead of a fence, an arrival counter's atomic and the last program's reads through L2.
    # Timed on an H100 (2026-12-07, `benchmarks/results/2026-12-07-h100-cluster-splits-1a8eb58.md`): Phi-3's
    # q/k/v 10.40 -> 9.26 us and output 6.22 -> 5.22 us alone, gate/up +0.25 us; its step ±0 alone and
    # +4.0 % with dependent launch, which it then takes (`dependent_launch.chosen_for`).
    tc_cluster_splits: bool = True
    # With tensor_cores, the block formats (Q8_0, MXFP4): each program walks the fewest blocks whose splits a
    # cluster holds (2-8) with the grid in one wave of four programs an SM, where some do
    # (`tensor_core_gemv.units_per_program`), instead of the most that leave about four programs an SM (whose
    # 9-16 splits sum by arrival counters). Not timed yet: `step_ab`'s "... in one wave" variants.
    tc_blocks_in_one_wave: bool = False

    def __post_init__(self) -> None:
        if self.ahead and self.stages > 1:
            raise ValueError(
                "a GEMV loop loads ahead in registers or pipelines through shared memory, not both"
            )
        if self.ahead and self.with_words:
            raise ValueError("a GEMV loop loads a step's activations with its words or ahead, not both")

    @property
    def register_cap(self) -> int | None:
        """The maxnreg a launch of this loop passes: `max_registers` for the plain loop, else None."""
        return None if self.ahead or self.with_words else self.max_registers


# The formats whose loop can load ahead (`GemvConfig.ahead`) or a step's activations with its words
# (`GemvConfig.with_words`): the decode products of the M0 models' files.
AHEAD_FORMATS = (*SUPERBLOCK_FORMATS, "q5_0", "q8_0", "mxfp4_codes_then_scales", "q8_0_codes_then_scales")
# The kernel's LOADS: where a step's activations are loaded. At their use (after the step's weights
# are decoded: a warp waits on memory again for each group of them), with the step's weight words (one
# wait a step), or with the words one step ahead (`GemvConfig.ahead`).
LOADS_AT_USE = tl.constexpr(0)
LOADS_WITH_WORDS = tl.constexpr(1)
LOADS_AHEAD = tl.constexpr(2)


# ---------------------------------------------------------------------------------------------------
# Decoding helpers


@triton.jit
def _f16(bits):
    """Low 16 bits of an integer tensor, read as an IEEE half, as float32 (exact)."""
    return bits.to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _f16_pair(bits):
    """The two IEEE halves of a 32-bit integer tensor (low, high) as float32, exact."""
    return _f16(bits), _f16(bits >> 16)


@triton.jit
def _code(word, SRC: tl.constexpr, MASK: tl.constexpr, DST: tl.constexpr):
    """`(word >> SRC) & MASK`, left in place at bit DST (uint32 in, uint32 out)."""
    if DST >= SRC:
        v = word << (DST - SRC)
    else:
        v = word >> (SRC - DST)
    return v & (MASK << DST)


@triton.jit
def _as_float(bits):
    return bits.to(tl.float32, bitcast=True)


# Whether the kernels run as PTX (a GPU); Triton's CPU interpreter runs no inline PTX.
_PTX = tl.constexpr(not dependent_launch.interpreted())


@triton.jit
def _byte_as_float(src, K: tl.constexpr, TOP: tl.constexpr):
    """The float32 whose bits are TOP, byte K of `src` (uint32), then two zero bytes: with byte K holding
    a power of two's low exponent bit and a code below it, that power plus the code (`_P16`: TOP 0x41,
    byte 0x80 | q << 3 is 16 + q). One `prmt` (a byte permute) a code, where shifting, masking and OR-ing
    the power in take three instructions."""
    if _PTX:
        # prmt takes one of its selector and second source as an immediate: the selector is that one, and
        # TOP << 24 comes from a register ptxas cannot fold into a constant (%smid, below 2^16, shifted
        # out), read once: a constant would be moved into a register before every prmt.
        top = tl.inline_asm_elementwise(
            f"mov.u32 $0, %smid; shr.u32 $0, $0, 16; or.b32 $0, $0, {TOP << 24}; // $1",
            "=r,r",
            [tl.zeros([1], tl.uint32)],
            dtype=tl.uint32,
            is_pure=True,
            pack=1,
        )
        bits = tl.inline_asm_elementwise(
            f"prmt.b32 $0, $1, $2, {0x7044 | (K << 8)};",
            "=r,r,r",
            [src, top],
            dtype=tl.uint32,
            is_pure=True,
            pack=1,
        )
    else:
        bits = ((src >> (8 * K)) & 0xFF) << 16 | (TOP << 24)
    return _as_float(bits)


@triton.jit
def _halfword_byte_as_float(src, K: tl.constexpr):
    """`_byte_as_float` of byte K < 2 of `src`, whose byte 3 holds TOP and byte 2 zero: one `prmt` of
    `src` alone."""
    if _PTX:
        bits = tl.inline_asm_elementwise(
            f"prmt.b32 $0, $1, $1, {0x3022 | (K << 8)};", "=r,r", [src], dtype=tl.uint32, is_pure=True, pack=1
        )
    else:
        bits = ((src >> (8 * K)) & 0xFF) << 16 | (src & 0xFF000000)
    return _as_float(bits)


@triton.jit
def _take(acc, w, xs, AT: tl.constexpr, xptr, optr, mask, DEQ: tl.constexpr, MASKED: tl.constexpr):
    """One decoded weight tile: the GEMV multiplies it with the activations at `xptr` into `acc`; the
    dequantizer (`DEQ`) stores it at `optr` instead (same element offsets, in the output's dtype).
    `xs`: None (the activations are loaded here), or the step's activations loaded with its words
    (`_acts`), of which `xs[AT]` are these."""
    if DEQ:
        if MASKED:
            tl.store(optr, w.to(optr.dtype.element_ty), mask=mask)
        else:
            tl.store(optr, w.to(optr.dtype.element_ty))
    else:
        if xs is None:
            xv = _act(xptr, 0, mask, MASKED)
        else:
            xv = xs[AT]
        acc += w * xv.to(tl.float32)
    return acc


@triton.jit
def _act(xptr, OFFSET: tl.constexpr, mask, MASKED: tl.constexpr):
    if MASKED:
        return tl.load(xptr + OFFSET, mask=mask, other=0.0)
    else:
        return tl.load(xptr + OFFSET)


@triton.jit
def _acts(
    xb, mask, H: tl.constexpr, N_H: tl.constexpr, K: tl.constexpr, MASKED: tl.constexpr, DEQ: tl.constexpr
):
    """A step's activations, loaded with its weight words (`GemvConfig.with_words`, `GemvConfig.ahead`):
    the values at xb + H * h + k for h < N_H, k < K as a tuple indexed K * h + k (what `_take` loads for
    (h, k)). The dequantizer multiplies nothing: a placeholder, no loads."""
    tl.static_assert((N_H == 1 and K == 2) or (N_H == 2 and (K == 2 or K == 4)))
    if DEQ:
        return (xb,)
    elif N_H == 1:
        return _act(xb, 0, mask, MASKED), _act(xb, 1, mask, MASKED)
    elif K == 2:
        return (
            _act(xb, 0, mask, MASKED),
            _act(xb, 1, mask, MASKED),
            _act(xb, H, mask, MASKED),
            _act(xb, H + 1, mask, MASKED),
        )
    else:
        return (
            _act(xb, 0, mask, MASKED),
            _act(xb, 1, mask, MASKED),
            _act(xb, 2, mask, MASKED),
            _act(xb, 3, mask, MASKED),
            _act(xb, H, mask, MASKED),
            _act(xb, H + 1, mask, MASKED),
            _act(xb, H + 2, mask, MASKED),
            _act(xb, H + 3, mask, MASKED),
        )


@triton.jit
def _block_offsets(u0, hi, SPACING: tl.constexpr, NW: tl.constexpr, UB: tl.constexpr):
    """Element offsets [UB, NW] of the first element of each word of blocks u0.. (32 elements a block,
    SPACING elements a word) and the mask of the blocks inside the split [.., hi)."""
    blk = u0 + tl.arange(0, UB)
    return blk[:, None] * 32 + SPACING * tl.arange(0, NW)[None, :], (blk < hi)[:, None]


# Powers of two whose mantissa holds a small unsigned code exactly: P + q for q < P.
_P16 = tl.constexpr(0x41800000)  # 16.0; a 4-bit code at bit 19
_P32 = tl.constexpr(0x42000000)  # 32.0; a 5-bit code at bit 18
_P256 = tl.constexpr(0x43800000)  # 256.0; an 8-bit code at bit 15


# ---------------------------------------------------------------------------------------------------
# Per-format dot products over one split of a row tile. `rows` is a [BLOCK_N] tensor of pointers (typed
# as the format's load word) to the first word of each row; units [lo, hi) are processed. Each
# returns the [BLOCK_N] float32 partial dot products with the activation row at `xp`.


@triton.jit
def _block_words(
    rows,
    u0,
    hi,
    STRIDE: tl.constexpr,
    OFFSET: tl.constexpr,
    NW: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
):
    """Words OFFSET..OFFSET+NW-1 of blocks u0..u0+UB-1 (clamped to the split) of each row, as
    [BLOCK_N, UB, NW]. Loaded as one [BLOCK_N, UB * NW] tile so that threads spread along the row's
    words and each keeps several rows (which then share every activation value it loads)."""
    col = tl.arange(0, UB * NW)
    blk = tl.minimum(u0 + col // NW, hi - 1)
    words = tl.load(rows[:, None] + blk[None, :] * STRIDE + OFFSET + col[None, :] % NW)
    return tl.reshape(words, (BLOCK_N, UB, NW))


@triton.jit
def _dot_plain(
    rows,
    xp,
    op,
    lo,
    hi,
    FLOAT: tl.constexpr,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
):
    # F32 / F16 / BF16 (`FLOAT`: "f32", "f16", "bf16"): a unit is 32 consecutive values, one a load word.
    j = tl.arange(0, 32)
    acc = tl.zeros([BLOCK_N, UB, 32], dtype=tl.float32)
    for u0 in tl.range(lo, hi, UB, num_stages=STAGES):
        blk = u0 + tl.arange(0, UB)
        raw = _block_words(rows, u0, hi, 32, 0, 32, BLOCK_N, UB)
        if FLOAT == "f32":
            w = _as_float(raw)
        elif FLOAT == "bf16":
            w = _as_float(raw.to(tl.uint32) << 16)
        else:
            w = raw.to(tl.float16, bitcast=True).to(tl.float32)
        xo = blk[:, None] * 32 + j[None, :]
        acc = _take(acc, w, None, 0, xp + xo, op[:, None, None] + xo[None], (blk < hi)[:, None], DEQ, True)
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _dot_q4_0(
    rows, xp, op, lo, hi, STAGES: tl.constexpr, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr
):
    # block_q4_0 as 9 halfwords {d, qs[8]}: halfword w holds elements 2w, 2w+1 (low nibbles) and
    # 2w+16, 2w+17 (high nibbles). w = (q - 8) * d = (16 + q) * d - 24 * d, exact.
    r3 = rows[:, None, None]
    w8 = tl.arange(0, 8)
    acc = tl.zeros([BLOCK_N, UB, 8], dtype=tl.float32)
    for u0 in tl.range(lo, hi, UB, num_stages=STAGES):
        blk = u0 + tl.arange(0, UB)
        b3 = tl.minimum(blk, hi - 1)[None, :, None] * 9
        d = _f16(tl.load(r3 + b3))
        qs = _block_words(rows, u0, hi, 9, 1, 8, BLOCK_N, UB).to(tl.uint32)
        off = -24.0 * d
        xo = blk[:, None] * 32 + 2 * w8[None, :]
        xb, ob = xp + xo, op[:, None, None] + xo[None]
        xmask = (blk < hi)[:, None]
        for h in tl.static_range(2):
            for k in tl.static_range(2):
                f = _as_float(_code(qs, 8 * k + 4 * h, 15, 19) | _P16)
                acc = _take(acc, f * d + off, None, 0, xb + (16 * h + k), ob + (16 * h + k), xmask, DEQ, True)
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _dot_q4_1(
    rows, xp, op, lo, hi, STAGES: tl.constexpr, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr
):
    # block_q4_1 as 5 words {d | m << 16, qs[4]}: word w byte k holds elements 4w+k and 4w+k+16.
    r3 = rows[:, None, None]
    w4 = tl.arange(0, 4)
    acc = tl.zeros([BLOCK_N, UB, 4], dtype=tl.float32)
    for u0 in tl.range(lo, hi, UB, num_stages=STAGES):
        blk = u0 + tl.arange(0, UB)
        b3 = tl.minimum(blk, hi - 1)[None, :, None] * 5
        dm = tl.load(r3 + b3)
        d = _f16(dm)
        off = _f16(dm >> 16) - 16.0 * d
        qs = _block_words(rows, u0, hi, 5, 1, 4, BLOCK_N, UB)
        xo = blk[:, None] * 32 + 4 * w4[None, :]
        xb, ob = xp + xo, op[:, None, None] + xo[None]
        xmask = (blk < hi)[:, None]
        for h in tl.static_range(2):
            for k in tl.static_range(4):
                f = _as_float(_code(qs, 8 * k + 4 * h, 15, 19) | _P16)
                acc = _take(acc, f * d + off, None, 0, xb + (16 * h + k), ob + (16 * h + k), xmask, DEQ, True)
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _walk_blocks(
    acc,
    rows,
    aux,
    xp,
    op,
    lo,
    hi,
    WORDS: tl.constexpr,
    ACTS: tl.constexpr,
    STEP: tl.constexpr,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    """The walk over 32-element blocks [lo, hi) of the rows at `rows`, UB a step: `WORDS(rows, aux, xp,
    u0, hi, BLOCK_N, UB, DEQ)` loads blocks u0.. (a tuple; `aux`: a format's second pointer, e.g. the
    scale rows), `STEP(acc, words, xs, u0, hi, xp, op, BLOCK_N, UB, DEQ)` decodes them into `acc`, with
    `xs` the step's activations loaded with its words (`xs = ACTS(xp, u0, hi, UB, DEQ)`, LOADS
    LOADS_WITH_WORDS) or None (LOADS_AT_USE: it loads them as it multiplies). LOADS_AHEAD
    (`GemvConfig.ahead`): step u0 + UB's words and activations loaded before u0 is decoded, the last step
    peeled so that nothing past the split is read; the same steps in the same order as the plain walk."""
    if LOADS == LOADS_AHEAD:
        words = WORDS(rows, aux, xp, lo, hi, BLOCK_N, UB, DEQ)
        xs = ACTS(xp, lo, hi, UB, DEQ)
        last = lo + (hi - 1 - lo) // UB * UB
        for u0 in range(lo, last, UB):
            following = WORDS(rows, aux, xp, u0 + UB, hi, BLOCK_N, UB, DEQ)
            following_xs = ACTS(xp, u0 + UB, hi, UB, DEQ)
            acc = STEP(acc, words, xs, u0, hi, xp, op, BLOCK_N, UB, DEQ)
            words = following
            xs = following_xs
        acc = STEP(acc, words, xs, last, hi, xp, op, BLOCK_N, UB, DEQ)
    else:
        for u0 in tl.range(lo, hi, UB, num_stages=STAGES):
            words = WORDS(rows, aux, xp, u0, hi, BLOCK_N, UB, DEQ)
            if LOADS == LOADS_WITH_WORDS:
                acc = STEP(acc, words, ACTS(xp, u0, hi, UB, DEQ), u0, hi, xp, op, BLOCK_N, UB, DEQ)
            else:
                acc = STEP(acc, words, None, u0, hi, xp, op, BLOCK_N, UB, DEQ)
    return acc


@triton.jit
def _q5_0_words(rows, aux, xp, u0, hi, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr):
    """Blocks u0..u0+UB-1 (clamped to the split) of each row as Q5_0's halfword loads: d and the two qh
    halfwords [rows, UB, 1], qs [rows, UB, 8]."""
    r3 = rows[:, None, None]
    b3 = tl.minimum(u0 + tl.arange(0, UB), hi - 1)[None, :, None] * 11
    d = tl.load(r3 + b3)
    qh0 = tl.load(r3 + b3 + 1)
    qh1 = tl.load(r3 + b3 + 2)
    qs = _block_words(rows, u0, hi, 11, 3, 8, BLOCK_N, UB)
    return d, qh0, qh1, qs


@triton.jit
def _q5_0_acts(xp, u0, hi, UB: tl.constexpr, DEQ: tl.constexpr):
    """The activations `_q5_0_step` multiplies blocks u0.. with, loaded with their words (`_acts`)."""
    xo, xmask = _block_offsets(u0, hi, 2, 8, UB)
    return _acts(xp + xo, xmask, 16, 2, 2, True, DEQ)


@triton.jit
def _q5_0_step(acc, words, xs, u0, hi, xp, op, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr):
    """Blocks u0.. of each row, from their loads (`_q5_0_words`, `xs`: None or `_q5_0_acts`), into
    `acc` [rows, UB, 8]."""
    d_bits, qh0, qh1, qs = words
    d = _f16(d_bits)
    qh = qh0.to(tl.uint32) | (qh1.to(tl.uint32) << 16)
    qs = qs.to(tl.uint32)
    off = -48.0 * d
    xo, xmask = _block_offsets(u0, hi, 2, 8, UB)
    return _take_q5_codes(acc, qs, qh, d, off, xs, xp + xo, op[:, None, None] + xo[None], xmask, 8, DEQ)


@triton.jit
def _take_q5_codes(acc, qs, qh, d, off, xs, xb, ob, xmask, NW: tl.constexpr, DEQ: tl.constexpr):
    """A 5-bit block's 32 weights, (32 + q) * d + off, into `acc` [rows, UB, NW]: the codes' 16 bytes as
    NW words `qs` (byte j: the low nibbles of elements j, the high of j + 16), their fifth bits in `qh`
    (bit e: element e); `xb` / `ob` the activations / outputs at each word's first element (`xs`: None,
    or those activations loaded with the words, `_acts(xb, xmask, 16, 2, 16 // NW, ...)`)."""
    K: tl.constexpr = 16 // NW  # bytes a word
    lanes = K * tl.arange(0, NW)
    for h in tl.static_range(2):
        for k in tl.static_range(K):
            e = (16 * h + k + lanes[None, None, :]).to(tl.uint32)
            high = ((qh >> e) & 1) << 22
            f = _as_float(_code(qs, 8 * k + 4 * h, 15, 18) | high | _P32)
            acc = _take(
                acc, f * d + off, xs, K * h + k, xb + (16 * h + k), ob + (16 * h + k), xmask, DEQ, True
            )
    return acc


@triton.jit
def _dot_q5_0(
    rows,
    xp,
    op,
    lo,
    hi,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    # block_q5_0 as 11 halfwords {d, qh (2 halfwords, bit e = fifth bit of element e), qs[8]}.
    # w = (q - 16) * d = (32 + q) * d - 48 * d, exact.
    acc = tl.zeros([BLOCK_N, UB, 8], dtype=tl.float32)
    acc = _walk_blocks(
        acc, rows, rows, xp, op, lo, hi, _q5_0_words, _q5_0_acts, _q5_0_step, STAGES, BLOCK_N, UB, DEQ, LOADS
    )
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _q5_1_words(rows, aux, xp, u0, hi, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr):
    """Blocks u0..u0+UB-1 (clamped to the split) of each row as Q5_1's word loads: d | m << 16 and qh
    [rows, UB, 1], qs [rows, UB, 4]."""
    r3 = rows[:, None, None]
    b3 = tl.minimum(u0 + tl.arange(0, UB), hi - 1)[None, :, None] * 6
    return tl.load(r3 + b3), tl.load(r3 + b3 + 1), _block_words(rows, u0, hi, 6, 2, 4, BLOCK_N, UB)


@triton.jit
def _q5_1_step(acc, words, xs, u0, hi, xp, op, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr):
    """Blocks u0.. of each row, from their loads (`_q5_1_words`), into `acc` [rows, UB, 4]."""
    dm, qh, qs = words
    d = _f16(dm)
    off = _f16(dm >> 16) - 32.0 * d
    xo, xmask = _block_offsets(u0, hi, 4, 4, UB)
    return _take_q5_codes(acc, qs, qh, d, off, xs, xp + xo, op[:, None, None] + xo[None], xmask, 4, DEQ)


@triton.jit
def _dot_q5_1(
    rows,
    xp,
    op,
    lo,
    hi,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    # block_q5_1 as 6 words {d | m << 16, qh, qs[4]}; w = q * d + m = (32 + q) * d + (m - 32 * d).
    acc = tl.zeros([BLOCK_N, UB, 4], dtype=tl.float32)
    acc = _walk_blocks(
        acc, rows, rows, xp, op, lo, hi, _q5_1_words, None, _q5_1_step, STAGES, BLOCK_N, UB, DEQ, LOADS
    )
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _q8_0_words(rows, aux, xp, u0, hi, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr):
    """Blocks u0..u0+UB-1 (clamped to the split) of each row as Q8_0's halfword loads: d [rows, UB, 1],
    qs [rows, UB, 16]."""
    b3 = tl.minimum(u0 + tl.arange(0, UB), hi - 1)[None, :, None] * 17
    return tl.load(rows[:, None, None] + b3), _block_words(rows, u0, hi, 17, 1, 16, BLOCK_N, UB)


@triton.jit
def _q8_0_acts(xp, u0, hi, UB: tl.constexpr, DEQ: tl.constexpr):
    """The activations `_q8_0_step` multiplies blocks u0.. with, loaded with their words (`_acts`)."""
    xo, xmask = _block_offsets(u0, hi, 2, 16, UB)
    return _acts(xp + xo, xmask, 0, 1, 2, True, DEQ)


@triton.jit
def _q8_0_step(acc, words, xs, u0, hi, xp, op, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr):
    """Blocks u0.. of each row, from their loads (`_q8_0_words`, `xs`: None or `_q8_0_acts`), into
    `acc` [rows, UB, 16]."""
    d_bits, qs = words
    d = _f16(d_bits)
    qs = qs.to(tl.uint32) ^ 0x8080
    off = -384.0 * d
    xo, xmask = _block_offsets(u0, hi, 2, 16, UB)
    xb, ob = xp + xo, op[:, None, None] + xo[None]
    for k in tl.static_range(2):
        f = _as_float(_code(qs, 8 * k, 255, 15) | _P256)
        acc = _take(acc, f * d + off, xs, k, xb + k, ob + k, xmask, DEQ, True)
    return acc


@triton.jit
def _dot_q8_0(
    rows,
    xp,
    op,
    lo,
    hi,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    # block_q8_0 as 17 halfwords {d, qs[16]}: halfword w holds int8 elements 2w, 2w+1.
    # s = (s ^ 0x80) - 128, so w = (256 + (s ^ 0x80)) * d - 384 * d, exact.
    acc = tl.zeros([BLOCK_N, UB, 16], dtype=tl.float32)
    acc = _walk_blocks(
        acc, rows, rows, xp, op, lo, hi, _q8_0_words, _q8_0_acts, _q8_0_step, STAGES, BLOCK_N, UB, DEQ, LOADS
    )
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _q8_0_regrouped_words(
    rows, scale_rows, xp, u0, hi, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr
):
    """Blocks u0..u0+UB-1 of each row of a regrouped Q8_0 matrix as `_q8_0_words` gives them from the
    file's order (d [rows, UB, 1], qs [rows, UB, 16] halfwords: halfword 2i + j is word i's half j), from
    16-byte loads of the codes. Past the split the loads are masked to zeros where `_q8_0_words` repeats
    the split's last block: both decode to weights the step multiplies by masked (zero) activations, and
    a zero product leaves every sum as it is."""
    blk = u0 + tl.arange(0, UB)
    words = u0 * 8 + tl.arange(0, UB * 8)  # a multiple of 8 plus a run of UB * 8: 16-byte vectors
    qs = tl.load(rows[:, None] + words[None, :], mask=(words < hi * 8)[None, :], other=0)
    qs = tl.reshape(qs, (BLOCK_N, UB, 8))
    qs = tl.reshape(tl.join(qs & 0xFFFF, qs >> 16), (BLOCK_N, UB, 16))
    d = tl.load(scale_rows[:, None] + blk[None, :], mask=(blk < hi)[None, :], other=0)
    return d[:, :, None], qs


@triton.jit
def _dot_q8_0_codes_then_scales(
    rows,
    scale_rows,
    xp,
    op,
    lo,
    hi,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    # Q8_0 regrouped: `rows` point at each row's codes (32 int8 a block, 8 words, 16-byte aligned),
    # `scale_rows` at its float16 scales (one halfword a block). The step is `_dot_q8_0`'s on the same
    # values; compiled, the 16-byte vectors are reduced in another tree than the file order's halfwords,
    # so the sums are its within float32 rounding (interpreted: bit for bit).
    acc = tl.zeros([BLOCK_N, UB, 16], dtype=tl.float32)
    acc = _walk_blocks(
        acc, rows, scale_rows, xp, op, lo, hi, _q8_0_regrouped_words, _q8_0_acts, _q8_0_step, STAGES,
        BLOCK_N, UB, DEQ, LOADS,
    )  # fmt: skip
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _dot_mxfp4(
    rows, xp, op, lo, hi, STAGES: tl.constexpr, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr
):
    # block_mxfp4 as 17 bytes {e (E8M0), qs[16]}: byte i holds elements i and i + 16.
    # w = kvalues_mxfp4[code] * e8m0_half(e), kvalues the doubled e2m1 values (0, 1, 2, 3, 4, 6, 8, 12).
    r3 = rows[:, None, None]
    i16 = tl.arange(0, 16)
    acc = tl.zeros([BLOCK_N, UB, 16], dtype=tl.float32)
    for u0 in tl.range(lo, hi, UB, num_stages=STAGES):
        blk = u0 + tl.arange(0, UB)
        b3 = tl.minimum(blk, hi - 1)[None, :, None] * 17
        e = tl.load(r3 + b3).to(tl.uint32)
        scale = _as_float(tl.where(e < 2, tl.full(e.shape, 0x00200000, tl.uint32) << e, (e - 1) << 23))
        qs = _block_words(rows, u0, hi, 17, 1, 16, BLOCK_N, UB).to(tl.uint32)
        xo = blk[:, None] * 32 + i16[None, :]
        xb, ob = xp + xo, op[:, None, None] + xo[None]
        xmask = (blk < hi)[:, None]
        for h in tl.static_range(2):
            # The code's magnitude bits as a float16's exponent and mantissa, its sign as the sign: the
            # e2m1 value times 2^-14, exact for all 16 codes; times 2^15 it is the doubled table value.
            v = _f16(_code(qs, 4 * h, 7, 9) | _code(qs, 4 * h + 3, 1, 15)) * 32768.0
            acc = _take(acc, v * scale, None, 0, xb + 16 * h, ob + 16 * h, xmask, DEQ, True)
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _mxfp4_regrouped_words(
    rows, scale_rows, xp, u0, hi, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr
):
    """Blocks u0..u0+UB-1 of each row of a regrouped MXFP4 matrix as loads: the codes [rows, UB, 4 words],
    the scale bytes [rows, UB] and (not DEQ) the blocks' 32 activations each [UB, 32] (masked past the
    split: zeros)."""
    blk = u0 + tl.arange(0, UB)
    words = u0 * 4 + tl.arange(0, UB * 4)  # a multiple of 4 plus a run of UB * 4: 16-byte vectors
    qs = tl.load(rows[:, None] + words[None, :], mask=(words < hi * 4)[None, :], other=0)
    qs = tl.reshape(qs, (BLOCK_N, UB, 4))
    e = tl.load(scale_rows[:, None] + blk[None, :], mask=(blk < hi)[None, :], other=0)
    if DEQ:
        xt = tl.zeros([UB, 32], dtype=tl.float32)
    else:
        xmask = (blk < hi)[:, None]
        xt = tl.load(xp + blk[:, None] * 32 + tl.arange(0, 32)[None, :], mask=xmask, other=0.0)
    return qs, e, xt


@triton.jit
def _mxfp4_regrouped_acts(xp, u0, hi, UB: tl.constexpr, DEQ: tl.constexpr):
    """Nothing: `_mxfp4_regrouped_words` loads the activations with the codes in either walk."""
    return (xp,)


@triton.jit
def _mxfp4_regrouped_step(
    acc, words, xs, u0, hi, xp, op, BLOCK_N: tl.constexpr, UB: tl.constexpr, DEQ: tl.constexpr
):
    """Blocks u0.. of each row, from their loads (`_mxfp4_regrouped_words`; `xs` unused), into `acc`
    [rows, UB] (DEQ: stored at `op` instead)."""
    qs, e, xt = words
    blk = u0 + tl.arange(0, UB)
    e = e.to(tl.uint32)
    scale = _as_float(tl.where(e < 2, tl.full(e.shape, 0x00200000, tl.uint32) << e, (e - 1) << 23))
    if DEQ:
        # The block's 32 values assembled in element order (16h + 4w + 2j + k), then stored as one
        # contiguous run per row and block: wide stores instead of one 2-byte store per value.
        s = 32768.0 * scale[:, :, None]
        h0 = _deq_half(qs, s, BLOCK_N, UB)
        h1 = _deq_half(qs >> 4, s, BLOCK_N, UB)
        tile = tl.reshape(tl.permute(tl.join(h0, h1), (0, 1, 3, 2)), (BLOCK_N, UB, 32))
        rows_out = op[:, None, None] + blk[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]
        tl.store(rows_out, tile.to(op.dtype.element_ty), mask=(blk < hi)[None, :, None])
    else:
        # The block's 32 activations regrouped in registers by (h, k, j): element 16h + 4w + 2j + k is
        # X[blk, w, h, j, k].
        xt = tl.permute(tl.reshape(xt.to(tl.float32), (UB, 2, 4, 2, 2)), (0, 2, 1, 3, 4))
        xk0, xk1 = tl.split(xt)
        x00, x01 = tl.split(xk0)
        x10, x11 = tl.split(xk1)
        x000, x100 = tl.split(x00)
        x001, x101 = tl.split(x01)
        x010, x110 = tl.split(x10)
        x011, x111 = tl.split(x11)
        xs = (x000, x001, x010, x011, x100, x101, x110, x111)  # index 4h + 2k + j
        part = tl.zeros([BLOCK_N, UB, 4], dtype=tl.float32)
        for h in tl.static_range(2):
            for k in tl.static_range(2):
                # Bytes k and k + 2 at once: their nibble h as two float16s in one 32-bit word.
                n = qs >> (8 * k + 4 * h)
                pair = ((n & 0x00070007) << 9) | ((n & 0x00080008) << 12)
                halves = _f16_pair(pair)
                for j in tl.static_range(2):
                    part += halves[j] * xs[4 * h + 2 * k + j]
        acc += tl.sum(part, axis=2) * 32768.0 * scale
    return acc


@triton.jit
def _dot_mxfp4_codes_then_scales(
    rows,
    scale_rows,
    xp,
    op,
    lo,
    hi,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    # MXFP4 regrouped: `rows` point at each row's codes (4 words per block, 16-byte aligned: word w of a
    # block, byte k holds elements 4w + k (low nibble) and 4w + k + 16 (high nibble)); `scale_rows` at
    # each row's scale bytes (one per block). A code's bits placed as a float16's (magnitude as exponent
    # and mantissa, sign as sign) are its e2m1 value times 2^-14, exact; the GEMV sums those times x per
    # block and scales the block's sum once by 2^15 * e8m0_half(e) (powers of two: exact), so a weight
    # costs its bit extraction, one conversion and one FMA. The dequantizer stores v * 2^15 * scale,
    # `_dot_mxfp4`'s value bit for bit.
    acc = tl.zeros([BLOCK_N, UB], dtype=tl.float32)
    acc = _walk_blocks(
        acc,
        rows,
        scale_rows,
        xp,
        op,
        lo,
        hi,
        _mxfp4_regrouped_words,
        _mxfp4_regrouped_acts,
        _mxfp4_regrouped_step,
        STAGES,
        BLOCK_N,
        UB,
        DEQ,
        LOADS,
    )
    return tl.sum(acc, axis=1)


@triton.jit
def _deq_half(n, s, BLOCK_N: tl.constexpr, UB: tl.constexpr):
    """One nibble of every code byte of a regrouped MXFP4 tile `n` [rows, blocks, 4 words] (the nibble in
    bits 0-3 of each byte) as values times `s`, in element order within the half-block: word w, byte
    b = k + 2j is element 4w + b, so the result is [rows, blocks, 16] with index 4w + 2j + k."""
    k0 = _f16_pair(((n & 0x00070007) << 9) | ((n & 0x00080008) << 12))  # bytes 0 (j=0), 2 (j=1)
    n1 = n >> 8
    k1 = _f16_pair(((n1 & 0x00070007) << 9) | ((n1 & 0x00080008) << 12))  # bytes 1, 3
    j0 = tl.join(k0[0] * s, k1[0] * s)  # [.., 4, 2]: bytes 0, 1
    j1 = tl.join(k0[1] * s, k1[1] * s)  # bytes 2, 3
    quad = tl.join(j0, j1)  # [.., 4 (w), 2 (k), 2 (j)]
    quad = tl.permute(quad, (0, 1, 2, 4, 3))  # [.., w, j, k]
    return tl.reshape(quad, (BLOCK_N, UB, 16))


@triton.jit
def _scale_min_k4(s1, s2, s3, c4):
    """get_scale_min_k4 for the sub-blocks 2c and 2c + 1 of the chunks `c4` (a uint32 tensor), from the
    three scale words of a block: (sc, mn) of 2c, then of 2c + 1, as float32. Their bytes are neighbours
    (byte 2 (c & 1) and the next of each word), so both are decoded at once, as halfwords."""
    sh = (c4 & 1) * 16
    a = s1 >> sh
    b = s2 >> sh
    c = s3 >> sh
    low = c4 < 2  # sub-blocks 0-3: the low 6 bits of scales[j], scales[j + 4]
    sc = tl.where(low, a & 0x3F3F, (c & 0x0F0F) | ((a >> 2) & 0x3030))
    mn = tl.where(low, b & 0x3F3F, ((c >> 4) & 0x0F0F) | ((b >> 2) & 0x3030))
    return (
        (sc & 0xFF).to(tl.float32),
        (mn & 0xFF).to(tl.float32),
        (sc >> 8).to(tl.float32),
        (mn >> 8).to(tl.float32),
    )


@triton.jit
def _walk_superblocks(
    acc,
    rows,
    aux,
    xb,
    ob,
    lo,
    hi,
    WORDS: tl.constexpr,
    ACTS: tl.constexpr,
    STEP: tl.constexpr,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    """The walk over super-blocks [lo, hi) of the rows at `rows`: `WORDS(rows, aux, sb, BLOCK_N)` loads one
    super-block's words (a tuple; `aux`: a layout's second pointer, the d rows of a regrouped one),
    `STEP(acc, words, xs, xb, ob, DEQ)` decodes them against the
    activations at `xb` (the super-block's 256 elements from there; `ob`: the dequantizer's output)
    into `acc`, with `xs` the activations loaded with the words (`xs = ACTS(xb, DEQ)`, LOADS
    LOADS_WITH_WORDS) or None (LOADS_AT_USE: it loads them as it multiplies). LOADS_AHEAD
    (`GemvConfig.ahead`): super-block sb + 1's words and activations loaded before sb is decoded, the last
    one peeled so that nothing past the split is read; the same steps in the same order as the plain walk."""
    if LOADS == LOADS_AHEAD:
        words = WORDS(rows, aux, lo, BLOCK_N)
        xs = ACTS(xb + lo * 256, DEQ)
        for sb in range(lo, hi - 1):
            following = WORDS(rows, aux, sb + 1, BLOCK_N)
            following_xs = ACTS(xb + (sb + 1) * 256, DEQ)
            acc = STEP(acc, words, xs, xb + sb * 256, ob + sb * 256, DEQ)
            words = following
            xs = following_xs
        acc = STEP(acc, words, xs, xb + (hi - 1) * 256, ob + (hi - 1) * 256, DEQ)
    else:
        for sb in tl.range(lo, hi, num_stages=STAGES):
            words = WORDS(rows, aux, sb, BLOCK_N)
            if LOADS == LOADS_WITH_WORDS:
                acc = STEP(acc, words, ACTS(xb + sb * 256, DEQ), xb + sb * 256, ob + sb * 256, DEQ)
            else:
                acc = STEP(acc, words, None, xb + sb * 256, ob + sb * 256, DEQ)
    return acc


@triton.jit
def _k_quant_x(xb):
    """The activations at xb + k for the bytes k < 4 of the words at `xb` ([4, 8] pointers), as four
    tensors: loaded as two [4, 8, 2] pairs (8-byte loads; a tensor of fewer elements than the program has
    threads, so it is loaded in the layout its use needs, without a shared-memory round trip) then split."""
    pair = tl.arange(0, 2)[None, None, :]
    x0, x1 = tl.split(tl.load(xb[:, :, None] + pair))
    x2, x3 = tl.split(tl.load(xb[:, :, None] + 2 + pair))
    return x0, x1, x2, x3


@triton.jit
def _k_quant_acts(xb, DEQ: tl.constexpr):
    """The activations a Q4_K / Q5_K step multiplies (`_take` at xb + 32 h + k, as xs[4 h + k]), loaded
    with its words. The dequantizer multiplies nothing: a placeholder, no loads."""
    if DEQ:
        return (xb,)
    else:
        return _k_quant_x(xb) + _k_quant_x(xb + 32)


@triton.jit
def _take_k_quant(acc, codes, TOP: tl.constexpr, dl, off, xs, H: tl.constexpr, xb, ob, DEQ: tl.constexpr):
    """`_take` of the weights `_byte_as_float(codes, k, TOP) * dl + off` of bytes k < 4, sub-block H of a
    Q4_K / Q5_K step (activations at xb + 32 H + k). Without activations loaded with the words (`xs`),
    those of the sub-block are loaded here, as pairs. (Two loops: Triton cannot carry a tuple-or-None and
    its constexpr index out of a static branch into one.)"""
    if xs is None and not DEQ:
        xh = _k_quant_x(xb + 32 * H)
        for k in tl.static_range(4):
            w = _byte_as_float(codes, k, TOP) * dl + off
            acc = _take(acc, w, xh, k, xb, ob, None, DEQ, False)
    else:
        for k in tl.static_range(4):
            w = _byte_as_float(codes, k, TOP) * dl + off
            acc = _take(acc, w, xs, 4 * H + k, xb + (32 * H + k), ob + (32 * H + k), None, DEQ, False)
    return acc


@triton.jit
def _q4_k_words(rows, aux, sb, BLOCK_N: tl.constexpr):
    """Super-block `sb` of each row (`r2`: [rows, 1] word pointers) as Q4_K's loads: qs [rows, 4, 8],
    then d | dmin << 16 and the three scale words [rows, 1, 1]."""
    base = rows[:, None] + sb * 36
    qs = tl.reshape(tl.load(base + 4 + tl.arange(0, 32)[None, :]), (BLOCK_N, 4, 8))
    dd = tl.load(base)[:, :, None]
    s1 = tl.load(base + 1)[:, :, None]
    s2 = tl.load(base + 2)[:, :, None]
    s3 = tl.load(base + 3)[:, :, None]
    return qs, dd, s1, s2, s3


@triton.jit
def _q4_k_step(acc, words, xs, xb, ob, DEQ: tl.constexpr):
    """One Q4_K super-block of each row, from its loads (`_q4_k_words`; `xs`: None or `_k_quant_acts`),
    into `acc` [rows, 4, 8]."""
    qs, dd, s1, s2, s3 = words
    c4 = tl.arange(0, 4)[None, :, None]
    d = _f16(dd)
    dmin = _f16(dd >> 16)
    # Each byte's nibble h as byte 2 of the float 16 + q (0x80 | q << 3), four codes a word at once;
    # `_byte_as_float` then places one under the exponent's top byte: the floats `_code(..) | _P16` gives.
    nibbles = (((qs << 3) & 0x78787878) | 0x80808080, ((qs >> 1) & 0x78787878) | 0x80808080)
    scales = _scale_min_k4(s1, s2, s3, c4.to(tl.uint32))
    for h in tl.static_range(2):
        dl = d * scales[2 * h]
        off = -16.0 * dl - dmin * scales[2 * h + 1]  # -(16 dl + dmin m), bit for bit, without a negation
        acc = _take_k_quant(acc, nibbles[h], 0x41, dl, off, xs, h, xb, ob, DEQ)
    return acc


@triton.jit
def _dot_q4_k(
    rows, xp, op, lo, hi, STAGES: tl.constexpr, BLOCK_N: tl.constexpr, DEQ: tl.constexpr, LOADS: tl.constexpr
):
    # block_q4_K as 36 words {d | dmin << 16, scales[3], qs[32]}: qs chunk c (8 words) holds sub-block
    # 2c in its low nibbles and 2c+1 in its high nibbles; word w of chunk c, byte k is element
    # 64c + 32h + 4w + k. The qs words are loaded as one [rows, 32] tile (16-byte vectors, threads
    # spread over the row's words so each keeps several rows) and viewed as [rows, chunk, word].
    xo = 64 * tl.arange(0, 4)[:, None] + 4 * tl.arange(0, 8)[None, :]
    acc = tl.zeros([BLOCK_N, 4, 8], dtype=tl.float32)
    acc = _walk_superblocks(
        acc,
        rows,
        rows,
        xp + xo,
        op[:, None, None] + xo[None],
        lo,
        hi,
        _q4_k_words,
        _k_quant_acts,
        _q4_k_step,
        STAGES,
        BLOCK_N,
        DEQ,
        LOADS,
    )
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _q5_k_words(rows, aux, sb, BLOCK_N: tl.constexpr):
    """Super-block `sb` of each row as Q5_K's loads: qs [rows, 4, 8], qh [rows, 4, 8] (the same 8 words for
    each chunk), then d | dmin << 16 and the three scale words [rows, 1, 1]."""
    base = rows[:, None] + sb * 44
    dd = tl.load(base)[:, :, None]
    s1 = tl.load(base + 1)[:, :, None]
    s2 = tl.load(base + 2)[:, :, None]
    s3 = tl.load(base + 3)[:, :, None]
    # qh word w for every chunk c, loaded as a [rows, 32] tile like qs ([rows, 4, 8] with the 8 words
    # repeated): the same layout as qs, where [rows, 1, 8] would be converted through shared memory
    # (as many elements as the program has threads at 16 rows: a barrier inside the loop).
    t = tl.arange(0, 32)[None, :]
    qh = tl.reshape(tl.load(base + 4 + t % 8), (BLOCK_N, 4, 8))
    qs = tl.reshape(tl.load(base + 12 + t), (BLOCK_N, 4, 8))
    return qs, qh, dd, s1, s2, s3


@triton.jit
def _q5_k_step(acc, words, xs, xb, ob, DEQ: tl.constexpr):
    """One Q5_K super-block of each row, from its loads (`_q5_k_words`; `xs`: None or `_k_quant_acts`),
    into `acc` [rows, 4, 8]."""
    qs, qh, dd, s1, s2, s3 = words
    c4 = tl.arange(0, 4)[None, :, None]
    d = _f16(dd)
    dmin = _f16(dd >> 16)
    scales = _scale_min_k4(s1, s2, s3, c4.to(tl.uint32))
    for h in tl.static_range(2):
        j = (2 * c4 + h).to(tl.uint32)
        dl = d * scales[2 * h]
        off = -32.0 * dl - dmin * scales[2 * h + 1]  # -(32 dl + dmin m), bit for bit, without a negation
        # Each byte's code as byte 2 of the float 32 + q (q << 2: its nibble h at bits 2-5, bit j of the
        # qh byte at bit 6), four codes a word at once: the floats `_code(..) | high | _P32` gives.
        low = (qs << 2) if h == 0 else (qs >> 2)
        codes = (low & 0x3C3C3C3C) | (((qh >> j) << 6) & 0x40404040)
        acc = _take_k_quant(acc, codes, 0x42, dl, off, xs, h, xb, ob, DEQ)
    return acc


@triton.jit
def _dot_q5_k(
    rows, xp, op, lo, hi, STAGES: tl.constexpr, BLOCK_N: tl.constexpr, DEQ: tl.constexpr, LOADS: tl.constexpr
):
    # block_q5_K as 44 words {d | dmin << 16, scales[3], qh[8], qs[32]}: as Q4_K, plus the fifth bit of
    # element (sub-block j, byte i) = bit j of qh byte i.
    xo = 64 * tl.arange(0, 4)[:, None] + 4 * tl.arange(0, 8)[None, :]
    acc = tl.zeros([BLOCK_N, 4, 8], dtype=tl.float32)
    acc = _walk_superblocks(
        acc,
        rows,
        rows,
        xp + xo,
        op[:, None, None] + xo[None],
        lo,
        hi,
        _q5_k_words,
        _k_quant_acts,
        _q5_k_step,
        STAGES,
        BLOCK_N,
        DEQ,
        LOADS,
    )
    return tl.sum(tl.sum(acc, axis=2), axis=1)


@triton.jit
def _q6_k_words(rows, aux, sb, BLOCK_N: tl.constexpr):
    """Super-block `sb` of each row as Q6_K's loads: ql and qh [rows, 4, 2, 8] (uint32), the scales of
    each nibble half h as halfwords [rows, 4, 1, 1] (two int8, wh = 0 low) and d [rows, 1, 1, 1] (its
    halfword)."""
    col = tl.arange(0, 64)[None, :]  # = 16 na + w
    col_qh = 64 + 8 * ((col // 16) - (col // 16) % 2) + col % 16
    na = tl.arange(0, 4)[None, :, None, None]
    a = na & 1
    base = rows[:, None] + sb * 105
    ql = tl.reshape(tl.load(base + col), (BLOCK_N, 4, 2, 8)).to(tl.uint32)
    qh = tl.reshape(tl.load(base + col_qh), (BLOCK_N, 4, 2, 8)).to(tl.uint32)
    # The scales of (na, h) for wh = 0, 1 are one halfword (scales[8n + 4h + 2a], [.. + 1]): loaded as
    # [rows, 4, 1, 1] halfwords, not [rows, 4, 2, 1] bytes. A tensor of fewer elements than the program
    # has threads is re-laid out by recomputing it; one of as many is converted through shared memory,
    # a barrier inside the loop.
    pairs = base[:, :, None, None] + 96 + (2 * na - a)
    sc0 = tl.load(pairs)
    sc1 = tl.load(pairs + 2)
    d = tl.load(base + 104)[:, :, None, None]
    return ql, qh, sc0, sc1, d


@triton.jit
def _q6_k_acts(xb, DEQ: tl.constexpr):
    """The activations a Q6_K step multiplies (`_take` at xb + 64 h + k), loaded with its words."""
    return _acts(xb, None, 64, 2, 2, False, DEQ)


@triton.jit
def _q6_k_step(acc, words, xs, xb, ob, DEQ: tl.constexpr):
    """One Q6_K super-block of each row, from its loads (`_q6_k_words`; `xs`: None or `_q6_k_acts`),
    into `acc` [rows, 4, 2, 8]."""
    ql, qh, sc0, sc1, d_bits = words
    a = tl.arange(0, 4)[None, :, None, None] & 1
    wh = tl.arange(0, 2)[None, None, :, None]
    d = _f16(d_bits)
    for h in tl.static_range(2):
        # The int8 scale of halfword wh: its byte wh, sign-extended.
        sc = (((sc1 if h else sc0).to(tl.int32) << (24 - 8 * wh)) >> 24).to(tl.float32)
        dl = d * sc
        off = -96.0 * dl
        # Each byte's code as byte 2 of the float 64 + q (0x80 | q << 1: its nibble h at bits 1-4, its two
        # qh bits at 5-6), both codes of a halfword at once, and the float's top byte (0x42) above them:
        # 64.0 with the 6-bit code OR-ed in at bit 17.
        low = (ql << 1) if h == 0 else (ql >> 3)
        codes = (low & 0x1E1E) | (((qh >> (4 * h + 2 * a).to(tl.uint32)) << 5) & 0x6060) | 0x42008080
        for k in tl.static_range(2):
            f = _halfword_byte_as_float(codes, k)
            acc = _take(
                acc, f * dl + off, xs, 2 * h + k, xb + (64 * h + k), ob + (64 * h + k), None, DEQ, False
            )
    return acc


@triton.jit
def _q6_k_regrouped_words(rows, scale_rows, sb, BLOCK_N: tl.constexpr):
    """Super-block `sb` of each row of a regrouped Q6_K matrix as `_q6_k_words` gives them from the file's
    order (the same halfwords: ql, qh, the scale pairs and d), from 16-byte loads of its 52 code words
    (ql 32, qh 16, scales 4; halfword 2i + j is word i's half j) and a halfword load of d."""
    base = rows[:, None] + sb * 52
    m = tl.arange(0, 32)[None, :]  # word m holds the halfwords of element columns 2m, 2m + 1
    ql = tl.load(base + m)
    ql = tl.reshape(tl.join(ql & 0xFFFF, ql >> 16), (BLOCK_N, 4, 2, 8))
    # qh: element column 16 na + w reads qh halfword 16 (na // 2) + w, so word m reads qh word
    # 8 (m // 16) + m % 8 (each of its 16 words twice, the repeats from L1): then split as ql is.
    qh = tl.load(base + 32 + 8 * (m // 16) + m % 8)
    qh = tl.reshape(tl.join(qh & 0xFFFF, qh >> 16), (BLOCK_N, 4, 2, 8))
    # The scale halfwords 96 + (2 na - a) (sc0) and 2 further (sc1): half a of word 48 + 2 (na // 2)
    # (sc0) or the word after it (sc1), loaded in the file order's [rows, 4, 1, 1] shape.
    na = tl.arange(0, 4)[None, :, None, None]
    pair = base[:, :, None, None] + 48 + 2 * (na // 2)
    half = 16 * (na & 1).to(tl.uint32)
    sc0 = (tl.load(pair) >> half) & 0xFFFF
    sc1 = (tl.load(pair + 1) >> half) & 0xFFFF
    d = tl.load(scale_rows + sb)[:, None, None, None]
    return ql, qh, sc0, sc1, d


@triton.jit
def _dot_q6_k(
    rows,
    aux,
    xp,
    op,
    lo,
    hi,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
    WORDS: tl.constexpr,
):
    # WORDS: `_q6_k_words` (the file's order) or `_q6_k_regrouped_words` (`aux`: the rows' d halfwords).
    # block_q6_K as 105 halfwords {ql[64], qh[32], scales (8 halfwords of 2 int8), d}. With n the
    # 128-element half, a the 32-byte chunk of ql inside it, w = 8 wh + wl the halfword in the chunk,
    # k the byte and h the nibble, the element is 128n + 64h + 32a + 2w + k; its high two bits are bits
    # 4h + 2a of qh byte 32n + 2w + k, and its scale is scales[8n + 4h + 2a + wh]. na = 2n + a.
    na = tl.arange(0, 4)[None, :, None, None]
    w = 8 * tl.arange(0, 2)[None, None, :, None] + tl.arange(0, 8)[None, None, None, :]
    xo = 64 * na - 32 * (na & 1) + 2 * w  # [1, 4, 2, 8]
    acc = tl.zeros([BLOCK_N, 4, 2, 8], dtype=tl.float32)
    acc = _walk_superblocks(
        acc,
        rows,
        aux,
        xp + xo,
        op[:, None, None, None] + xo,
        lo,
        hi,
        WORDS,
        _q6_k_acts,
        _q6_k_step,
        STAGES,
        BLOCK_N,
        DEQ,
        LOADS,
    )
    return tl.sum(tl.sum(tl.sum(acc, axis=3), axis=2), axis=1)


@triton.jit
def _rms(row, n, eps, BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    """rms_norm's float32 denominator sqrt(mean(row^2) + eps) of the `n` values at `row`. Read after the
    row's walk, BLOCK at a time (the BLOCKS reads unrolled, all asked for at once, where the launch gives
    their count): nothing of it is live during the walk (the row held whole would cost a wide model's GEMV
    40 registers a thread, and with them half its programs per SM)."""
    return rms_over(row, n, eps, tl.arange(0, BLOCK), BLOCKS)


@triton.jit
def _dot_rows(
    row_ptrs,
    xp,
    op,
    lo,
    hi,
    FMT: tl.constexpr,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    """The format's dot products (or decode, `DEQ`) of the rows at `row_ptrs` over units [lo, hi): every
    format read in the file's block order. `LOADS`: how the formats of `AHEAD_FORMATS` load a step's
    activations (`LOADS_AT_USE`, `LOADS_WITH_WORDS`, `LOADS_AHEAD`)."""
    if FMT == "f32" or FMT == "f16" or FMT == "bf16":
        acc = _dot_plain(row_ptrs, xp, op, lo, hi, FMT, STAGES, BLOCK_N, UB, DEQ)
    elif FMT == "q4_0":
        acc = _dot_q4_0(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ)
    elif FMT == "q4_1":
        acc = _dot_q4_1(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ)
    elif FMT == "q5_0":
        acc = _dot_q5_0(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ, LOADS)
    elif FMT == "q5_1":
        acc = _dot_q5_1(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ, LOADS)
    elif FMT == "q8_0":
        acc = _dot_q8_0(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ, LOADS)
    elif FMT == "mxfp4":
        acc = _dot_mxfp4(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ)
    elif FMT == "q4_k":
        acc = _dot_q4_k(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, DEQ, LOADS)
    elif FMT == "q5_k":
        acc = _dot_q5_k(row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, DEQ, LOADS)
    else:  # "q6_k"
        acc = _dot_q6_k(row_ptrs, row_ptrs, xp, op, lo, hi, STAGES, BLOCK_N, DEQ, LOADS, _q6_k_words)
    return acc


@triton.jit
def _bias_and_residual(
    bias_row, seg_b1, rows, mask, res_ptr, m, y_width, cols, HAS_BIAS: tl.constexpr, GLU: tl.constexpr,
    HAS_RES: tl.constexpr,
):  # fmt: skip
    """What the epilogue adds to a row tile's sums: its bias (with GLU the up bias too, seg_b1 elements
    past the gate's) and its residual (zeros where the launch has none), as float32."""
    bias = tl.zeros([rows.shape[0]], dtype=tl.float32)
    bias_up = bias
    res = bias
    if HAS_BIAS:
        bias = tl.load(bias_row + rows, mask=mask, other=0.0).to(tl.float32)
        if GLU:
            bias_up = tl.load(bias_row + seg_b1 + rows, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        res = _residual(res_ptr, m, y_width, cols, mask)
    return bias, bias_up, res


@triton.jit
def _residual(res_ptr, m, y_width, cols, mask):
    """Row `m`'s residual at `cols` (rows like y's)."""
    return tl.load(res_ptr + m.to(tl.int64) * y_width + cols, mask=mask, other=0.0)


# ---------------------------------------------------------------------------------------------------
# The kernel: one program = one activation row (or token-expert pair) x one row tile x one split.


@triton.jit
def _regrouped_rows(wp, w_ptr, clamped, matrix_off, n_rows, row_stride, FMT: tl.constexpr):
    """The rows `clamped` of a regrouped matrix (kernels.qtensor.CODES_THEN_SCALES) `matrix_off` load words
    from `wp`: (their codes, their scales, scale elements per load word). Every row's codes start on a
    16-byte boundary: `pack` regroups only matrices whose bytes are whole multiples of 16 (`row_stride // C
    * C` is row_stride, written so that the compiler sees the multiple even where matrix_off is folded
    away and the hint with it). The scales follow the matrix's codes, a row's n_units of them in a run:
    MXFP4 an E8M0 byte a 4-word block, Q8_0 a float16 an 8-word block, Q6_K a float16 d a 52-word
    super-block."""
    if FMT == "mxfp4_codes_then_scales":
        code_rows = wp + tl.multiple_of(clamped * (row_stride // 4 * 4) + matrix_off, 4)
        scales, per_word, unit_words = w_ptr.to(tl.pointer_type(tl.uint8)), 4, 4
    elif FMT == "q8_0_codes_then_scales":
        code_rows = wp + tl.multiple_of(clamped * (row_stride // 8 * 8) + matrix_off, 8)
        scales, per_word, unit_words = w_ptr.to(tl.pointer_type(tl.uint16)), 2, 8
    else:  # "q6_k_codes_then_scales"
        code_rows = wp + tl.multiple_of(clamped * (row_stride // 4 * 4) + matrix_off, 4)
        scales, per_word, unit_words = w_ptr.to(tl.pointer_type(tl.uint16)), 2, 52
    scale_rows = scales + (matrix_off + n_rows * row_stride) * per_word + clamped * (row_stride // unit_words)
    return code_rows, scale_rows, per_word


@triton.jit
def _dot_regrouped(
    code_rows,
    scale_rows,
    xp,
    op,
    lo,
    hi,
    FMT: tl.constexpr,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    DEQ: tl.constexpr,
    LOADS: tl.constexpr,
):
    """The walk of a regrouped layout's rows (`_regrouped_rows`) over units [lo, hi)."""
    if FMT == "mxfp4_codes_then_scales":
        acc = _dot_mxfp4_codes_then_scales(
            code_rows, scale_rows, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ, LOADS
        )
    elif FMT == "q8_0_codes_then_scales":
        acc = _dot_q8_0_codes_then_scales(
            code_rows, scale_rows, xp, op, lo, hi, STAGES, BLOCK_N, UB, DEQ, LOADS
        )
    else:  # "q6_k_codes_then_scales"
        acc = _dot_q6_k(
            code_rows, scale_rows, xp, op, lo, hi, STAGES, BLOCK_N, DEQ, LOADS, _q6_k_regrouped_words
        )
    return acc


@triton.jit(do_not_specialize=["seg_w1", "seg_w2", "seg_b1", "seg_b2"])
def _qgemv_kernel(
    w_ptr,
    x_ptr,
    y_ptr,
    bias_ptr,
    ids_ptr,
    n_rows,
    n_units,
    units_per_split,
    row_stride,  # load words per weight row
    x_stride,  # elements per activation row
    x_group,  # output rows per activation row (k for the gate/up of a MoE, else 1)
    n_out_rows,  # activation rows x pairs of this call (rows of y)
    o_ptr,  # DEQ: the dequantized rows (16-bit floats), row r at o_ptr + r * o_stride
    o_stride,
    seg_w1,  # SEGMENTS > 1: the weights of segments 1 and 2 as load-word offsets from w_ptr,
    seg_w2,
    seg_b1,  # their biases as element offsets from bias_ptr,
    seg_b2,
    rows1,  # their row counts (segment 0 has n_rows),
    rows2,
    tile1,  # and the first row tile of each (the grid's tiles run through the segments in order)
    tile2,
    y_width,  # elements per row of y: every segment's rows, side by side
    FMT: tl.constexpr,
    WORD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_IDS: tl.constexpr,
    STAGES: tl.constexpr,
    DEQ: tl.constexpr = False,
    part_ptr=None,  # REDUCE: the split partial sums [split, n_out_rows, y_width]
    count_ptr=None,  # REDUCE: one arrival counter per (activation row, row tile), zero between launches
    REDUCE: tl.constexpr = 0,  # the grid's splits (axis 2), summed in the launch; 0: each split's sums apart
    SEGMENTS: tl.constexpr = 1,  # weights of one type and input width served by this launch (1-3)
    rms_ptr=None,  # RMS_BLOCK > 0: rows like x's; each output row is scaled by 1 / rms of its row here
    eps=0.0,  # (x then holds those rows times the norm weight: the product is rms_norm(rows) @ W.T)
    nw_ptr=None,  # SCALED: the epilogue also stores y * nw at y2_ptr (the next rms_norm's rows x weight)
    y2_ptr=None,
    RMS_BLOCK: tl.constexpr = 0,  # elements of the rms row read per step (a power of two), or 0: no scaling
    RMS_BLOCKS: tl.constexpr = 0,  # the steps that cover the rms row (unrolled: `triton_common.rms_over`)
    SCALED: tl.constexpr = False,
    GLU: tl.constexpr = False,  # y = silu(gate rows' product) * (up rows' product), the up rows at seg_w1
    res_ptr=None,  # HAS_RES: rows like y added after the bias (the residual stream: residual + x @ W.T + b)
    HAS_RES: tl.constexpr = False,
    GLU_OAI: tl.constexpr = False,  # GLU: gpt-oss's clamped SwiGLU (`triton_common.gated`) with these two constants
    glu_alpha=1.0,
    glu_limit=0.0,
    PDL: tl.constexpr = False,  # launched early: wait for the previous grid first (`await_previous_grid`)
    PREFETCH_LINES: tl.constexpr = 0,  # L2 lines of its weight tile a program asks for first
    LOADS: tl.constexpr = 0,  # LOADS_*: a step's activations with its words, or its words and them ahead
    # MIX_K > 0: a MoE's down projection, one row of x a token-expert pair and MIX_K pairs a token, whose
    # epilogue also forms each token's routed sum (`_mix_pairs`); SCALED then scales that sum, not y.
    MIX_K: tl.constexpr = 0,
    mix_ptr=None,  # MIX_K: the tokens' sums [n_out_rows // MIX_K, y_width]
    mix_res_ptr=None,  # the residual rows they add to, shaped like them
    route_ptr=None,  # the routing weights [n_out_rows // MIX_K, MIX_K] float32
    mix_count_ptr=None,  # one arrival counter per (token, row tile), zero between launches
):
    m = tl.program_id(0)
    tile = tl.program_id(1)
    split = tl.program_id(2)
    # Segments: several weights multiplying the same activations (q/k/v, gate/up), one grid over all
    # their row tiles; a program finds its weight, its local tile and its columns of y.
    local_tile, col0, w_off, b_off, n_rows = segment_of(
        tile, n_rows, seg_w1, seg_w2, seg_b1, seg_b2, rows1, rows2, tile1, tile2, SEGMENTS
    )
    # Nothing above reads memory. The weight tile's rows are one contiguous span (`row_stride` load words
    # a row; MXFP4 regrouped: its codes); each split of the tile asks L2 for its share of the span first
    # (with PDL: while the previous kernel runs). With expert ids, once the expert is read (after the wait).
    # (32-bit sizes: a tile's span is at most BLOCK_N rows, well under 2 GiB; a 64-bit division would be
    # a branch before the wait.)
    tile_first = local_tile * BLOCK_N
    span = tl.minimum(n_rows - tile_first, BLOCK_N) * row_stride * WORD
    share = tl.cdiv(span, tl.num_programs(2))
    share_from = tl.minimum(split * share, span - 1)
    span_from = w_ptr.to(tl.pointer_type(tl.uint8)) + (tile_first.to(tl.int64) * row_stride + w_off) * WORD
    share_bytes = tl.minimum(share, span - share_from)
    # With GLU the up rows are seg_w1 load words past the gate rows: their span is prefetched too.
    up_at = seg_w1.to(tl.int64) * WORD
    await_previous_grid(
        PDL, span_from + share_from, share_bytes, 0 if HAS_IDS else PREFETCH_LINES, up_at, GLU
    )
    rows = local_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    clamped = tl.minimum(rows, n_rows - 1).to(tl.int64)
    # Rows past the matrix repeat its last row: the dequantizer then writes that row's values again.
    # With ids, program m dequantizes expert ids[m] into the m-th (n_rows, in) slot of the output.
    op = o_ptr + (m * n_rows + clamped) * o_stride
    matrix_off = w_off  # load words from w_ptr to this program's matrix
    if HAS_IDS:
        expert = tl.load(ids_ptr + m).to(tl.int64)
        if FMT == "mxfp4_codes_then_scales":
            # An expert is its rows' codes (n_rows * row_stride words) and a scale byte per 16 code bytes.
            matrix_off += expert * (n_rows * (row_stride // 4) // 16 * 17 * 4)
        elif FMT == "q8_0_codes_then_scales":
            # An expert is its rows' codes (8 words a block) and a float16 scale per block: 34 bytes each.
            matrix_off += expert * (n_rows * (row_stride // 8) * 34 // 4)
        elif FMT == "q6_k_codes_then_scales":
            # An expert is its rows' codes (52 words a super-block) and a d per super-block: 210 bytes each.
            matrix_off += expert * (n_rows * (row_stride // 52) * 210 // 4)
        else:
            matrix_off += expert * n_rows * row_stride  # an expert is n_rows rows
        if PREFETCH_LINES > 0:  # this expert's share of the tile (MXFP4 regrouped: its codes)
            expert_from = span_from + (matrix_off - w_off) * WORD
            prefetch_share(expert_from + share_from, share_bytes, PREFETCH_LINES, up_at, GLU)
    row_off = clamped * row_stride + matrix_off
    if WORD == 4:
        wp = w_ptr.to(tl.pointer_type(tl.uint32))
    elif WORD == 2:
        wp = w_ptr.to(tl.pointer_type(tl.uint16))
    else:
        wp = w_ptr
    row_ptrs = wp + row_off
    xp = x_ptr + (m // x_group).to(tl.int64) * x_stride
    u_begin = split * units_per_split
    u_end = tl.minimum(u_begin + units_per_split, n_units)
    row_mask = rows < n_rows
    if RMS_BLOCK > 0:  # this row's rms source
        rms_row = rms_ptr + (m // x_group).to(tl.int64) * x_stride
    bias_row = bias_ptr + b_off
    if HAS_BIAS:
        if HAS_IDS:
            bias_row += expert * n_rows  # (n_expert, n_rows), contiguous
    if FMT == "mxfp4_codes_then_scales" or FMT == "q8_0_codes_then_scales" or FMT == "q6_k_codes_then_scales":
        code_rows, scale_rows, scales_per_word = _regrouped_rows(
            wp, w_ptr, clamped, matrix_off, n_rows, row_stride, FMT
        )
        acc = _dot_regrouped(
            code_rows, scale_rows, xp, op, u_begin, u_end, FMT, STAGES, BLOCK_N, UB, DEQ, LOADS
        )
        if GLU:  # the up tensor, seg_w1 words further: its codes and its scales alike
            up_scales = scale_rows + seg_w1.to(tl.int64) * scales_per_word
            acc_up = _dot_regrouped(
                code_rows + seg_w1, up_scales, xp, op, u_begin, u_end, FMT, STAGES, BLOCK_N, UB, DEQ, LOADS
            )
    else:
        acc = _dot_rows(row_ptrs, xp, op, u_begin, u_end, FMT, STAGES, BLOCK_N, UB, DEQ, LOADS)
        if GLU:  # the up rows, seg_w1 load words past the gate rows: the same walk, the same activations
            acc_up = _dot_rows(
                row_ptrs + seg_w1, xp, op, u_begin, u_end, FMT, STAGES, BLOCK_N, UB, DEQ, LOADS
            )
    # The weights are read: the next kernel's programs may become resident beside the epilogue.
    launch_next_grid_late(PDL)
    if DEQ:
        return
    # With split-K and 1/rms scaling, the last program to arrive scales the sum, then adds the bias.
    SCALE_AT_END: tl.constexpr = REDUCE and RMS_BLOCK > 0
    if RMS_BLOCK > 0:
        if not REDUCE:
            r = _rms(rms_row, x_stride, eps, RMS_BLOCK, RMS_BLOCKS)
            acc = acc / r
            if GLU:
                acc_up = acc_up / r
    if not SCALE_AT_END:  # the bias and the residual: once, in split 0's sum
        row_bias, row_bias_up, row_res = _bias_and_residual(
            bias_row, seg_b1, rows, row_mask & (split == 0), res_ptr, m, y_width, col0 + rows, HAS_BIAS, GLU,
            HAS_RES,
        )  # fmt: skip
        if HAS_BIAS:
            acc += row_bias
            if GLU:
                acc_up += row_bias_up
        if HAS_RES:
            acc += row_res
    if REDUCE:
        # Split-K: store the partial, then count arrivals on this tile; the last program to arrive
        # sums every split's partial in split order (the same order whoever arrives last) and resets
        # the counter for the next launch. The barrier orders all threads' stores before the
        # release of the counter's atomic; `.cg` loads skip L1, which may hold stale lines.
        cols = col0 + rows
        # A partial row holds the gate then the up sums with GLU, else the sums.
        PARTS: tl.constexpr = 2 if GLU else 1
        part_row = part_ptr + (split.to(tl.int64) * n_out_rows + m) * (y_width * PARTS)
        tl.store(part_row + cols, acc, mask=row_mask)
        if GLU:
            tl.store(part_row + y_width + cols, acc_up, mask=row_mask)
        tl.debug_barrier()
        counter = count_ptr + m * tl.num_programs(1) + tile
        arrived = tl.atomic_add(counter, 1, sem="acq_rel")
        if arrived == REDUCE - 1:
            total = tl.zeros([BLOCK_N], dtype=tl.float32)
            total_up = tl.zeros([BLOCK_N], dtype=tl.float32)
            for s in tl.static_range(REDUCE):  # unrolled: every split's sums asked for at once
                part = part_ptr + (s * n_out_rows + m).to(tl.int64) * (y_width * PARTS) + cols
                total += tl.load(part, mask=row_mask, other=0.0, cache_modifier=".cg")
                if GLU:
                    total_up += tl.load(part + y_width, mask=row_mask, other=0.0, cache_modifier=".cg")
            if SCALE_AT_END:
                r = _rms(rms_row, x_stride, eps, RMS_BLOCK, RMS_BLOCKS)
                tail_bias, tail_bias_up, tail_res = _bias_and_residual(
                    bias_row, seg_b1, rows, row_mask, res_ptr, m, y_width, cols, HAS_BIAS, GLU, HAS_RES
                )
            if SCALED and MIX_K == 0:
                nw = tl.load(nw_ptr + cols, mask=row_mask, other=0.0)
            if SCALE_AT_END:
                total = total / r
                total_up = total_up / r
                if HAS_BIAS:
                    total += tail_bias
                    if GLU:
                        total_up += tail_bias_up
                if HAS_RES:
                    total += tail_res
            if GLU:
                total = gated(total, total_up, GLU_OAI, glu_alpha, glu_limit)
            tl.store(y_ptr + m.to(tl.int64) * y_width + cols, total, mask=row_mask)
            if SCALED and MIX_K == 0:
                tl.store(y2_ptr + m.to(tl.int64) * y_width + cols, total * nw, mask=row_mask)
            # relaxed: only a later launch reads the counter again, after this one (the kernel
            # boundary or dependent launch's wait orders it); acq_rel fenced the last program's tail.
            tl.atomic_xchg(counter, 0, sem="relaxed")
            if MIX_K > 0:
                _mix_pairs(
                    y_ptr, m, tile, y_width, cols, row_mask, mix_ptr, mix_res_ptr, route_ptr, mix_count_ptr,
                    nw_ptr, y2_ptr, SCALED, MIX_K,
                )  # fmt: skip
    else:
        if GLU:
            acc = gated(acc, acc_up, GLU_OAI, glu_alpha, glu_limit)
        out = y_ptr + (split.to(tl.int64) * n_out_rows + m) * y_width + col0 + rows
        tl.store(out, acc, mask=row_mask)
        if SCALED and MIX_K == 0:  # one split (no REDUCE): acc is the whole sum
            nw = tl.load(nw_ptr + col0 + rows, mask=row_mask, other=0.0)
            tl.store(y2_ptr + m.to(tl.int64) * y_width + col0 + rows, acc * nw, mask=row_mask)
        if MIX_K > 0:  # (one split: the launch has no other partials of this tile)
            _mix_pairs(
                y_ptr, m, tile, y_width, col0 + rows, row_mask, mix_ptr, mix_res_ptr, route_ptr, mix_count_ptr,
                nw_ptr, y2_ptr, SCALED, MIX_K,
            )  # fmt: skip


@triton.jit
def _mix_pairs(
    y_ptr, m, tile, y_width, cols, row_mask, mix_ptr, mix_res_ptr, route_ptr, mix_count_ptr, nw_ptr, y2_ptr,
    SCALED: tl.constexpr, MIX_K: tl.constexpr,
):  # fmt: skip
    """The down projection's routed sum (`MIX_K`), once pair `m`'s rows `cols` of y are stored: count the
    token's pairs that have stored this row tile; the last to arrive adds the token's MIX_K rows, weighted,
    to its residual rows (`routed_sum`, in expert order whoever arrives last: `moe_combine`'s bits), stores
    them (and with SCALED, them times the next norm's weight) and resets the counter for the next launch.
    The barrier orders all threads' stores before the release of the counter's atomic; `.cg` loads skip
    L1, which may hold stale lines."""
    tl.debug_barrier()
    token = (m // MIX_K).to(tl.int64)
    counter = mix_count_ptr + token * tl.num_programs(1) + tile
    arrived = tl.atomic_add(counter, 1, sem="acq_rel")
    if arrived == MIX_K - 1:
        residual = tl.load(mix_res_ptr + token * y_width + cols, mask=row_mask, other=0.0)
        y = routed_sum(
            residual, y_ptr + token * MIX_K * y_width, route_ptr + token * MIX_K, y_width, cols, row_mask,
            MIX_K, ".cg",
        )  # fmt: skip
        tl.store(mix_ptr + token * y_width + cols, y, mask=row_mask)
        if SCALED:  # the next rms_norm's rows x weight (`RMSNormed`)
            nw = tl.load(nw_ptr + cols, mask=row_mask, other=0.0)
            tl.store(y2_ptr + token * y_width + cols, y * nw, mask=row_mask)
        # relaxed: only a later launch reads the counter again, after this one (the kernel
        # boundary or dependent launch's wait orders it); acq_rel fenced the last program's tail.
        tl.atomic_xchg(counter, 0, sem="relaxed")


# ---------------------------------------------------------------------------------------------------
# Launch


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


class SplitCounters:
    """The arrival counters of split-K launches on one device: int32 zeros, allocated once (outside any
    CUDA graph capture, so a captured launch never owns them) and left at zero by every launch.

    Launches on one device share them: launches are ordered by the stream they share (the worker runs
    a model's steps on one stream), so one launch's counters are back at zero before the next starts.
    A launch with more tiles than `SIZE`, or the first one inside a capture, sums its splits with
    PyTorch instead."""

    SIZE = 1 << 16
    _lock = threading.Lock()
    _by_device: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def get(cls, device: torch.device, needed: int) -> torch.Tensor | None:
        if needed > cls.SIZE:
            return None
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        with cls._lock:
            counters = cls._by_device.get(device)
            capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
            if counters is None and not capturing:
                counters = torch.zeros(cls.SIZE, dtype=torch.int32, device=device)
                cls._by_device[device] = counters
        return counters


def default_config(
    qtype: GGMLType,
    n_rows: int,
    in_features: int,
    n_out_rows: int,
    sm_count: int,
    *,
    layout: _Layout | None = None,
    tensor_cores: bool = False,
) -> GemvConfig:
    """A fixed, deterministic choice per shape (no run-time timing, so results never depend on it).

    The rules come from sweeping tile shapes, splits and pipelining depths on an H100 over the M0
    models' shapes (`benchmarks/kernels_gemv.py --sweep`, numbers in benchmarks/README.md): 16 rows
    per program and 8 blocks per step in general; MXFP4 (byte loads) and short rows of few outputs
    take whole rows in few steps; the input dim is split until the grid has about four programs per
    SM (one when the loop is pipelined), keeping at least 2 steps (3 super-blocks) per split. The
    super-block loops of at most 1,024 rows load each step's words ahead (`GemvConfig.ahead`): measured
    on the decode step (`benchmarks.step_ab`, 2026-12-05), Qwen2.5-0.5B's down projections so gave it
    +5.8 % a token, where ahead in the larger tiles cost Phi-3 4 % (registers: fewer resident programs);
    file-order Q6_K loads ahead at every size (its plain loop's loads come in seven trips a step)."""
    layout = layout or LAYOUTS[qtype]
    fmt = layout.fmt
    n_units = in_features // layout.unit
    stages = 1
    if fmt in SUPERBLOCK_FORMATS:
        block_n, ub = (16 if fmt.startswith("q6_k") or n_rows <= 1024 else 32), 1
    elif fmt in ("f32", "f16", "bf16"):
        block_n, ub, stages = 16, 16, 3
    elif fmt in ("mxfp4", "mxfp4_codes_then_scales") or (n_units <= 32 and n_rows <= 2048):
        block_n, ub = 8, 32
    elif fmt in ("q8_0", "q8_0_codes_then_scales") and n_units <= 32:
        block_n, ub = 32, 2
    elif fmt == "q5_1":
        block_n, ub, stages = 16, 16, 3
    else:
        block_n, ub = 16, 8
    while ub > 1 and n_units <= ub // 2:
        ub //= 2
    steps = triton.cdiv(n_units, ub)
    min_steps = 3 if fmt in SUPERBLOCK_FORMATS else 2
    programs = triton.cdiv(n_rows, block_n) * n_out_rows
    split = split_for(programs, steps, min_steps, sm_count, pipelined=stages > 1)
    # File-order Q6_K loads ahead at every size: with the byte-permute decode its plain loop waits on
    # memory 7 times a step (ptxas orders its 2-byte loads after the decode of the first rows), ahead once
    # (H100, 2026-12-06: Phi-3's ffn_down 39.3 -> 25.1 us, output 91.7 -> 64.7 us; the regrouped
    # matrices the worker reads by default are not concerned).
    ahead = fmt in SUPERBLOCK_FORMATS and (n_rows <= 1024 or fmt == "q6_k")
    # Regrouped Q8_0 in the 16-row x 8-block tile loads ahead too: GPT-OSS's Q8_0 GEMVs alone (H100,
    # 2026-12-06, `benchmarks.kernels_gemv`): q/k/v 12.05 -> 10.90 us, attn_output 10.79 -> 9.26, output
    # 235.4 -> 222.1 (`benchmarks.step_ab` "regrouped Q8_0 GEMVs plain" is the form before).
    ahead = ahead or (fmt == "q8_0_codes_then_scales" and (block_n, ub) == (16, 8))
    # Q4_K's plain loop compiles to 72 registers a thread: 7 programs an SM, so Phi-3's gate/up launch
    # (1,024 programs on 132 SMs) ran in two waves; at 64 (8 an SM) it spills nothing (benchmarks.ptx_cost).
    max_registers = 64 if fmt == "q4_k" else None  # its plain loop only (`GemvConfig.register_cap`)
    # `tensor_cores` (the kernel set's choice, `KernelConfig.tensor_core_gemv`): the matrices of
    # TENSOR_CORE_FORMATS of at least TENSOR_CORE_MIN_BYTES on the tensor cores, where `tensor_core_gemv`
    # serves the launch (regrouped Q6_K matrices hold at least REGROUP_Q6_K_MIN_BYTES).
    on_tensor_cores = (
        tensor_cores
        and fmt in TENSOR_CORE_FORMATS
        and tensor_nbytes(qtype, (n_rows, in_features)) >= TENSOR_CORE_MIN_BYTES
    )
    return GemvConfig(
        block_n, ub, 4, split, stages, ahead=ahead, max_registers=max_registers, tensor_cores=on_tensor_cores
    )


# The smallest Q4_K or regrouped Q6_K matrix (bytes) whose decode GEMV runs on the tensor cores when the
# kernel set asks for them. Measured in the decode step (H100, 2026-12-06, `benchmarks.step_ab` "Q4_K GEMV on the tensor
# cores"): Phi-3-mini, whose Q4_K matrices hold 5.3-28.3 MB, +3.6 % a token; Qwen2.5-0.5B, whose only Q4_K
# matrices are its 2.4 MB ffn_down (one super-block a program: the prologue weighs), -1.5 %. Regrouped Q6_K
# (Phi-3's 19.7-77 MB matrices): +6.3 % more (step_ab "regrouped Q6_K GEMVs on the tensor cores too",
# 2026-12-06; its ffn_down 22.2 -> 16.2 us, output 63.1 -> 42.4 us alone).
TENSOR_CORE_MIN_BYTES = 4 << 20
# The layouts whose GEMVs go to the tensor cores by default: those timed faster there in the decode step
# (above). `tensor_core_gemv` also reads regrouped Q8_0 and MXFP4, MXFP4 experts by token-expert pair
# (`tensor_core_gemv.FORMATS`, `EXPERT_FORMATS`), timed slower there (H100, 2026-12-06, GPT-OSS's step:
# Q8_0 -5.3 %, below 64 MiB +0.2 %, MXFP4 experts -22.5 %): they run there only where a config asks
# (`benchmarks.step_ab` "regrouped Q8_0 GEMVs on the tensor cores too", "MXFP4 expert GEMVs on the tensor
# cores too", `benchmarks.kernels_gemv --tensor-cores`).
TENSOR_CORE_FORMATS = ("q4_k", "q6_k_codes_then_scales")


def split_for(programs: int, steps: int, min_steps: int, sm_count: int, *, pipelined: bool = False) -> int:
    """`default_config`'s split-K: programs sharing a row tile until the grid has about four programs an
    SM (one when the loop is pipelined: it keeps its own loads in flight), each split at least
    `min_steps` of the loop's `steps`."""
    target = sm_count if pipelined else 4 * sm_count
    return max(1, min(triton.cdiv(target, programs), steps // min_steps))


def loads_constant(ahead: bool, with_words: bool) -> int:
    """The kernel's LOADS for `GemvConfig.ahead` / `GemvConfig.with_words`."""
    return (LOADS_AHEAD if ahead else LOADS_WITH_WORDS if with_words else LOADS_AT_USE).value


def _loads(config: GemvConfig, layout: _Layout, w: QTensor) -> int:
    """The kernel's LOADS constant for `config` on `w`'s layout; a format whose loop has no such form is
    refused rather than silently run without it (a sweep would time the same kernel twice)."""
    if (config.ahead or config.with_words) and layout.fmt not in AHEAD_FORMATS:
        raise ValueError(
            f"tensor {w.name!r}: the {layout.fmt} GEMV loop does not load ahead (nor a step's activations "
            "with its words)"
        )
    return loads_constant(config.ahead, config.with_words)


def supports_layout(w: QTensor) -> bool:
    """Whether the packed data can be read with the format's load word (alignment of base and rows)."""
    layout = layout_of(w)
    if layout is None or not w.data.is_cuda:
        return False
    unit_ok = w.shape[-1] % layout.unit == 0
    if layout.fmt in _CODE_WORDS:  # rows and matrices on 16-byte boundaries (see `pack`)
        return unit_ok and w.data.data_ptr() % 16 == 0 and _matrix_bytes(w) % 16 == 0
    row_bytes = FORMATS[w.qtype].type_size * w.shape[-1] // FORMATS[w.qtype].block_size
    return unit_ok and w.data.data_ptr() % layout.word == 0 and row_bytes % layout.word == 0


def _matrix_bytes(w: QTensor) -> int:
    return w.nbytes // w.n_matrices


# Which 2-D matrices `pack` regroups unless the config names the types (KernelConfig.regroup=None), from the
# H100 step A/B of 2026-12-05 (benchmarks/results/2026-12-05-h100-regrouped-defaults.md): every Q8_0 matrix
# (GPT-OSS's attention and output: the step 7 % faster; Qwen2.5's tied output: 0.5 %), and Q6_K matrices of
# at least REGROUP_Q6_K_MIN_BYTES (Phi-3's ffn_down and output: the step 10 % faster; Qwen2.5's 3.4 MB
# ffn_down took 10.5 us instead of 8.0, its step 2.5 % slower).
REGROUP_Q6_K_MIN_BYTES = 8 << 20


def regrouped_by_default(w: QTensor) -> bool:
    """Whether `pack` regroups the 2-D matrix `w` when the types are not named (`REGROUP_Q6_K_MIN_BYTES`)."""
    if len(w.shape) != 2:
        return False
    if w.qtype == GGMLType.Q8_0:
        return True
    return w.qtype == GGMLType.Q6_K and _matrix_bytes(w) >= REGROUP_Q6_K_MIN_BYTES


def pack(w: QTensor, regroup: tuple[GGMLType, ...] | None = None) -> QTensor:
    """The order this GEMV reads fastest, made once at load in the weight's own storage (same bytes):
    MXFP4 expert tensors CODES_THEN_SCALES (measured: twice the GEMV's bandwidth on the H200); 2-D
    matrices of the types in `regroup` (`KernelConfig.regroup`), or, where it is None, those
    `regrouped_by_default` picks, too: the decode GEMV and the prefill GEMM read them so, and an embedding
    table's rows are gathered back into the file's order (`embedding`); any other weight as it is. Only
    where every matrix's bytes are a multiple of 16 (so each matrix's and each row's codes start 16-byte
    aligned)."""
    if w.qtype == GGMLType.MXFP4 and len(w.shape) == 3:
        wanted = True
    elif regroup is None:
        wanted = regrouped_by_default(w)
    else:
        wanted = w.qtype in regroup and len(w.shape) == 2
    if (
        wanted
        and w.layout == GGML
        and w.data.is_cuda
        and w.data.data_ptr() % 16 == 0
        and _matrix_bytes(w) % 16 == 0
        and w.qtype in REGROUPED_LAYOUTS
        and w.shape[-1] % REGROUPED_LAYOUTS[w.qtype].unit == 0
    ):
        return w.codes_then_scales_in_place()
    return w


MAX_SEGMENTS = 3  # weights one launch serves side by side (q/k/v)
RMS_STEP = 1024  # elements of an rms row read per step after the GEMV's walk (`_rms`)


def rms_block_for(in_features: int) -> int:
    """The kernel's RMS_BLOCK for rows of `in_features` values: read after the walk, RMS_STEP at a time."""
    return min(triton.next_power_of_2(in_features), RMS_STEP)


@dataclass(frozen=True)
class RoutedSum:
    """`launch_segments(mix=...)`: a MoE down projection's epilogue forms each token's output, its residual
    plus its experts' rows weighted by the router (`triton_decode.moe_combine`'s sum, one launch fewer)."""

    route_weights: torch.Tensor  # [T, k] float32, contiguous: token t's weight of its j-th pair
    residual: torch.Tensor  # [T, out] float32, contiguous


def launch(
    x: torch.Tensor,
    w: QTensor,
    bias: torch.Tensor | None,
    n_out_rows: int,
    *,
    expert_ids: torch.Tensor | None = None,
    x_group: int = 1,
    config: GemvConfig | None = None,
    tensor_cores: bool = False,
) -> torch.Tensor:
    """y (n_out_rows, out) float32: row r is x[r // x_group] against w (or expert expert_ids[r] of w)."""
    return launch_segments(
        x, (w,), (bias,), n_out_rows, expert_ids=expert_ids, x_group=x_group, config=config,
        tensor_cores=tensor_cores,
    )  # fmt: skip


def launch_segments(
    x: torch.Tensor,
    weights: tuple[QTensor, ...],
    biases: tuple[torch.Tensor | None, ...],
    n_out_rows: int,
    *,
    expert_ids: torch.Tensor | None = None,
    x_group: int = 1,
    config: GemvConfig | None = None,
    rms_of: torch.Tensor | None = None,
    eps: float = 0.0,
    scaled_by: torch.Tensor | None = None,
    glu: bool = False,
    residual: torch.Tensor | None = None,
    glu_oai: tuple[float, float] | None = None,
    tensor_cores: bool = False,
    mix: RoutedSum | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
    """`launch` for 1-3 weights of one type and input width in one launch: y (n_out_rows, sum of their
    out features) float32, weight i's outputs in its own columns, in order. Biases: all None or all
    float32 tensors of the same dtype (contiguous; `(n_expert, out)` with `expert_ids`).

    `rms_of` (rows shaped like x, float32): each row of y is scaled by 1 / sqrt(mean(row^2) + eps) of
    its row there, before the bias (x holds those rows times a norm weight: y = rms_norm(rows) @ W.T).
    `scaled_by` (float32, y's width): also returns y * scaled_by, stored by the same launch.
    `glu`: `weights` is (gate, up) of one type, shape and layout, biases both or neither (with
    `expert_ids`, by expert): y (n_out_rows, gate's out features) is silu(x @ gate.T + bg) * (x @ up.T + bu),
    each program walking the same rows of both; `glu_oai=(alpha, limit)`: gpt-oss's clamped SwiGLU instead.
    `residual` (float32, y's shape): added to y after the bias (and before `scaled_by`): the residual
    stream's `residual + (x @ W.T + b)` in the same launch.
    `tensor_cores` (without `config`): `default_config`'s tensor-core choice (`KernelConfig.tensor_core_gemv`).
    `mix` (one weight with `expert_ids`, one row of x a pair, `x_group` 1): a MoE's down projection returning
    each token's routed sum `mix.residual + sum_j mix.route_weights[:, j] * y[pair j]` (T, out) instead of
    y, formed in the launch's epilogue (with `scaled_by`, also that sum times it); CUDA cores only; None
    where no arrival counters are free (the first launch inside a capture): the caller sums apart."""
    if mix is not None:
        _check_mix(mix, weights, n_out_rows, expert_ids, x_group, glu, residual)
    glu_up = None
    if glu:
        gate, up = weights
        gate_b, up_b = biases
        if (
            gate.shape != up.shape
            or gate.qtype != up.qtype
            or gate.layout != up.layout
            or (gate_b is None) != (up_b is None)
            or (gate_b is not None and (gate_b.dtype != up_b.dtype or gate_b.shape != up_b.shape))
            or scaled_by is not None
            or residual is not None
        ):
            raise ValueError(
                f"tensor {gate.name!r}: a GLU launch takes gate and up alike (biases both or neither), "
                "without a scaled copy or a residual"
            )
        weights, biases, glu_up, glu_up_b = (gate,), (gate_b,), up, up_b
    w = weights[0]
    if not 1 <= len(weights) <= MAX_SEGMENTS or len(biases) != len(weights):
        raise ValueError(f"tensor {w.name!r}: {len(weights)} weights and {len(biases)} biases in one launch")
    out_rows = [v.shape[-2] for v in weights]
    in_features = w.shape[-1]
    layout = layout_of(w)
    if any(layout_of(v) is not layout for v in weights):
        raise ValueError(f"tensor {w.name!r}: weights of one launch must share one layout")
    row_words = _row_words(w, layout)
    y_width = sum(out_rows)
    if config is None:
        sm_count = _sm_count(x.device.index or 0)
        config = default_config(
            w.qtype, y_width, in_features, n_out_rows, sm_count, layout=layout, tensor_cores=tensor_cores
        )
    n_units = in_features // layout.unit
    ub = config.units_per_step
    units_per_split = triton.cdiv(triton.cdiv(n_units, config.split), ub) * ub
    split = triton.cdiv(n_units, units_per_split)
    x2 = x.reshape(-1, in_features)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    tiles = [triton.cdiv(r, config.block_n) for r in out_rows]
    # Segments 1 and 2 as offsets from segment 0 (a missing segment starts past the grid's last tile).
    starts = [sum(tiles[:i]) for i in range(len(tiles))] + [sum(tiles)] * (MAX_SEGMENTS - len(tiles))
    rows = out_rows + [0] * (MAX_SEGMENTS - len(out_rows))
    w_off = [(v.data.data_ptr() - w.data.data_ptr()) // layout.word for v in weights[1:]]
    has_bias = biases[0] is not None
    b_off = (
        [(b.data_ptr() - biases[0].data_ptr()) // b.element_size() for b in biases[1:]] if has_bias else []
    )
    w_off += [0] * (MAX_SEGMENTS - 1 - len(w_off))
    b_off += [0] * (MAX_SEGMENTS - 1 - len(b_off))
    if glu_up is not None:  # the up rows as seg_w1: load words from the gate's; its bias as seg_b1
        w_off[0] = (glu_up.data.data_ptr() - w.data.data_ptr()) // layout.word
        if glu_up_b is not None:
            b_off[0] = (glu_up_b.data_ptr() - biases[0].data_ptr()) // glu_up_b.element_size()
    rms_block = 0
    if rms_of is not None:
        rms_of = rms_of.reshape(-1, in_features)
        if x2.stride(0) != in_features or not rms_of.is_contiguous() or rms_of.dtype != torch.float32:
            raise ValueError(f"tensor {w.name!r}: the rms rows must be contiguous float32 like x")
        rms_block = rms_block_for(in_features)
    if scaled_by is not None and (scaled_by.numel() != y_width or scaled_by.dtype != torch.float32):
        raise ValueError(f"tensor {w.name!r}: the output scale must be {y_width} float32 values")
    if residual is not None and (
        residual.shape != (n_out_rows, y_width)
        or residual.dtype != torch.float32
        or not residual.is_contiguous()
    ):
        raise ValueError(
            f"tensor {w.name!r}: the residual must be {n_out_rows} x {y_width} contiguous float32"
        )
    if (
        config.tensor_cores
        and mix is None  # (the tensor-core epilogue has no routed sum)
        and tensor_core_gemv.serves(layout.fmt, n_out_rows, in_features, expert_ids is not None, x.device)
        and (n_out_rows == 1 or x2.stride(0) == in_features)  # several pairs: rows of x in_features apart
    ):
        tc_tiles = (
            sum(tensor_core_gemv.row_tiles(layout.fmt, out_rows, in_features, config.tc_warp_split))
            * n_out_rows
        )
        served = tensor_core_gemv.launch(
            layout.fmt,
            x2,
            w.data,
            out_rows,
            in_features,
            segment_words=w_off,
            bias=biases[0] if has_bias else None,
            segment_bias=b_off,
            glu=glu_up is not None,
            glu_oai=glu_oai,
            rms_of=rms_of,
            eps=eps,
            rms_block=rms_block,
            scaled_by=scaled_by,
            residual=residual,
            counters=SplitCounters.get(x.device, tc_tiles),
            sm_count=_sm_count(x.device.index or 0),
            expert_ids=expert_ids,
            x_group=x_group,
            # an expert's bytes (codes, then scales, a run each) as load words; 0 for a 2-D matrix
            expert_words=w.data.numel() // w.shape[0] // 4 if expert_ids is not None else 0,
            zero_columns=config.tc_zero_columns,
            int8_codes=config.tc_int8_codes,
            max_registers=config.tc_max_registers,
            words_early=config.tc_words_early,
            units=config.tc_units_per_program,
            units_ahead=config.tc_units_ahead,
            warp_split=config.tc_warp_split,
            words_by_tma=config.tc_words_by_tma,
            cluster_splits=config.tc_cluster_splits,
            blocks_in_one_wave=config.tc_blocks_in_one_wave,
            up_data=glu_up.data if glu_up is not None else None,
        )
        if served is not None:
            return served[0] if scaled_by is None else served
    grid = (n_out_rows, sum(tiles), split)
    # The split's arrival counters first, then the routed sum's (one per token and row tile).
    split_slots = grid[0] * grid[1] if split > 1 else 0
    mix_tokens = n_out_rows // mix.route_weights.shape[-1] if mix is not None else 0
    all_counters = (
        SplitCounters.get(x.device, split_slots + mix_tokens * grid[1]) if split_slots or mix else None
    )
    if mix is not None and all_counters is None:
        return None
    counters = all_counters if split_slots else None
    if glu_up is not None and split > 1 and counters is None:
        raise ValueError(
            f"tensor {w.name!r}: a GLU launch of {grid[0] * grid[1]} split tiles has no counters"
        )
    parts = 2 if glu_up is not None and counters is not None else 1  # GLU partials: gate, then up sums
    target = torch.empty(split, n_out_rows, y_width * parts, dtype=torch.float32, device=x.device)
    y = target.new_empty(n_out_rows, y_width) if counters is not None else target
    ids = expert_ids if expert_ids is not None else target
    y2_rows = mix_tokens if mix is not None else n_out_rows
    y2 = target.new_empty(y2_rows, y_width) if scaled_by is not None else None
    mixed = target.new_empty(mix_tokens, y_width) if mix is not None else None
    prefetch_lines = 0  # the tile's weight span in L2 lines, each split's share (`await_previous_grid`)
    if dependent_launch.weight_prefetch():
        share = triton.cdiv(config.block_n * row_words * layout.word, split)
        prefetch_lines = min(
            MAX_PREFETCH_LINES, triton.next_power_of_2(triton.cdiv(share, PREFETCH_LINE.value))
        )
    _qgemv_kernel[grid](
        w.data,
        x2,
        y,
        biases[0] if has_bias else target,
        ids,
        out_rows[0],
        n_units,
        units_per_split,
        row_words,
        x2.stride(0),
        x_group,
        n_out_rows,
        target,
        0,
        w_off[0],
        w_off[1],
        b_off[0],
        b_off[1],
        rows[1],
        rows[2],
        starts[1],
        starts[2],
        y_width,
        FMT=layout.fmt,
        WORD=layout.word,
        BLOCK_N=config.block_n,
        UB=ub,
        HAS_BIAS=has_bias,
        HAS_IDS=expert_ids is not None,
        STAGES=config.stages,
        LOADS=_loads(config, layout, w),
        part_ptr=target,
        count_ptr=counters if counters is not None else target,
        REDUCE=split if counters is not None else 0,
        SEGMENTS=len(weights),
        rms_ptr=rms_of if rms_of is not None else target,
        eps=eps,
        nw_ptr=scaled_by if scaled_by is not None else target,
        y2_ptr=y2 if y2 is not None else target,
        RMS_BLOCK=rms_block,
        RMS_BLOCKS=triton.cdiv(in_features, rms_block) if rms_block else 0,
        SCALED=y2 is not None,
        GLU=glu_up is not None,
        res_ptr=residual if residual is not None else target,
        HAS_RES=residual is not None,
        GLU_OAI=glu_oai is not None,
        glu_alpha=glu_oai[0] if glu_oai is not None else 1.0,
        glu_limit=glu_oai[1] if glu_oai is not None else 0.0,
        num_warps=config.num_warps,
        maxnreg=config.register_cap,
        PREFETCH_LINES=prefetch_lines,
        MIX_K=mix.route_weights.shape[-1] if mix is not None else 0,
        mix_ptr=mixed if mixed is not None else target,
        mix_res_ptr=mix.residual if mix is not None else target,
        route_ptr=mix.route_weights if mix is not None else target,
        mix_count_ptr=all_counters[split_slots:] if mix is not None else target,
        **dependent_launch.launch_kwargs(),
    )
    if mixed is not None:
        y = mixed
    elif counters is None:
        y = target[0] if split == 1 else target.sum(0)
    return y if y2 is None else (y, y2)


def _check_mix(mix, weights, n_out_rows, expert_ids, x_group, glu, residual) -> None:
    """Raises ValueError naming the rule a routed sum's launch breaks."""
    route, res = mix.route_weights, mix.residual
    k = route.shape[-1] if route.dim() == 2 else 0
    tokens = n_out_rows // k if k else 0
    out = sum(v.shape[-2] for v in weights)
    if len(weights) != 1:
        problem = "it takes one weight"
    elif expert_ids is None or x_group != 1:
        problem = "it takes expert ids and one row of x a pair"
    elif glu or residual is not None:
        problem = "it takes no GLU and no residual of its own"
    elif not k or tokens * k != n_out_rows or route.dtype != torch.float32 or not route.is_contiguous():
        problem = f"the routing weights must be [T, k] float32, contiguous, T * k = {n_out_rows}"
    elif res.shape != (tokens, out) or res.dtype != torch.float32 or not res.is_contiguous():
        problem = f"the residual must be {tokens} x {out} contiguous float32"
    else:
        return
    raise ValueError(f"tensor {weights[0].name!r}: a routed sum's launch: {problem}")


def dequantize_into(
    w: QTensor,
    out: torch.Tensor,
    *,
    rows: tuple[int, int] | None = None,
    experts: torch.Tensor | None = None,
    config: GemvConfig | None = None,
) -> torch.Tensor:
    """Decodes packed weight rows into `out` (float16, bfloat16 or float32, contiguous) with the GEMV's
    own decoders (the kernel's `DEQ` mode stores each decoded tile instead of multiplying it).

    2-D `w`: rows `rows = (r0, r1)` (default all) into `out (r1 - r0, in)`. 3-D `w` with `experts`
    (a device tensor of n expert ids): those experts into `out (n, out_features, in)`."""
    out_features, in_features = w.shape[-2], w.shape[-1]
    layout, fmt = layout_of(w), FORMATS[w.qtype]
    row_bytes = in_features // fmt.block_size * fmt.type_size
    data, n_slots, ids = w.data, 1, None
    if experts is not None:
        n_rows, n_slots, ids = out_features, experts.numel(), experts
    else:
        r0, r1 = rows if rows is not None else (0, out_features)
        n_rows = r1 - r0
        if layout.fmt in _CODE_WORDS and (r0, r1) != (0, out_features):
            raise ValueError(f"tensor {w.name!r}: a row range of a regrouped matrix (its scales are apart)")
        data = data[r0 * row_bytes : r1 * row_bytes]
    if out.dtype not in (torch.float16, torch.bfloat16, torch.float32) or not out.is_contiguous():
        raise ValueError(f"tensor {w.name!r}: dequantize_into needs a contiguous float output")
    if out.numel() != n_slots * n_rows * in_features:
        raise ValueError(
            f"tensor {w.name!r}: output of {out.numel()} elements for {n_slots}x{n_rows}x{in_features}"
        )
    if config is None:
        sm_count = _sm_count(out.device.index or 0)
        config = default_config(w.qtype, n_rows, in_features, n_slots, sm_count, layout=layout)
    n_units = in_features // layout.unit
    ub = config.units_per_step
    units_per_split = triton.cdiv(triton.cdiv(n_units, config.split), ub) * ub
    split = triton.cdiv(n_units, units_per_split)
    row_words = _row_words(w, layout)
    grid = (n_slots, triton.cdiv(n_rows, config.block_n), split)
    _qgemv_kernel[grid](
        data,
        out,
        out,
        out,
        ids if ids is not None else out,
        n_rows,
        n_units,
        units_per_split,
        row_words,
        0,
        1,
        n_slots,
        out,
        in_features,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        n_rows,
        FMT=layout.fmt,
        WORD=layout.word,
        BLOCK_N=config.block_n,
        UB=ub,
        HAS_BIAS=False,
        HAS_IDS=ids is not None,
        STAGES=1,
        DEQ=True,
        LOADS=_loads(config, layout, w),
        num_warps=config.num_warps,
    )
    return out


def supports(x: torch.Tensor, w: QTensor) -> bool:
    if not x.is_floating_point():  # `qembedding` asks with the token ids as x: any number of rows
        # (a table read row by row: in the file's block order, each row's blocks together; a regrouped
        # table's rows are gathered back into that order first)
        return len(w.shape) == 2 and not x.is_complex() and supports_layout(w)
    return len(w.shape) == 2 and x.numel() <= MAX_ROWS * w.shape[1] and supports_layout(w)


def embedding(ids: torch.Tensor, w: QTensor, *, checked: bool = True) -> torch.Tensor:
    """`kernels.qmatmul.qembedding`'s contract: rows `ids` of the table `w (vocab, dim)` as float32
    `(*ids.shape, dim)`, decoded by the GEMV's decoders in one launch (the reference's bits for the
    exact formats; the K-quants' within one rounding, as the GEMV's weights). The table is read as
    `vocab` one-row experts, each id selecting one. `checked=False`: ids known to be in range (a
    sampled token inside a CUDA graph), not read back to the host."""
    vocab, dim = w.shape
    flat = ids.reshape(-1)
    if checked and flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= vocab):
        raise IndexError(f"tensor {w.name!r}: row index out of range [0, {vocab})")
    out = torch.empty(flat.numel(), 1, dim, dtype=torch.float32, device=flat.device)
    if flat.numel() and w.layout != GGML:
        # A regrouped table (a row's codes and its scales apart): those rows gathered back into the
        # file's order (a few small copies on the device), then decoded as rows of their own.
        picked = QTensor(w.rows_in_file_order(flat), w.qtype, (flat.numel(), dim), w.name)
        dequantize_into(picked, out.view(flat.numel(), dim))
    elif flat.numel():
        rows_as_experts = QTensor(w.data, w.qtype, (vocab, 1, dim), w.name)
        dequantize_into(rows_as_experts, out, experts=flat)
    return out.view(*ids.shape, dim)


def gemv(
    x: torch.Tensor,
    w: QTensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    *,
    tensor_cores: bool = False,
) -> torch.Tensor:
    """`kernels.qmatmul.qmatmul`'s contract: `x[..., in] @ dequant(w).T (+ bias)` as `out_dtype`
    (`tensor_cores`: `launch_segments`'s, here and in the functions below)."""
    n_rows = x.numel() // w.shape[1]
    bias_arg = bias.contiguous() if bias is not None else None
    y = launch(x, w, bias_arg, n_rows, tensor_cores=tensor_cores)
    return y.reshape(*x.shape[:-1], w.shape[0]).to(out_dtype)


def gemvs(
    x: torch.Tensor,
    weights: tuple[QTensor, ...],
    biases: tuple[torch.Tensor | None, ...],
    *,
    rms_of: torch.Tensor | None = None,
    eps: float = 0.0,
    tensor_cores: bool = False,
) -> tuple[torch.Tensor, ...] | None:
    """`kernels.qmatmul.qmatmuls`'s contract (one input, several weights; outputs in `x.dtype`): the
    weights of one type and layout are served by one launch over their rows together (q/k/v, gate/up:
    one graph node instead of two or three, and a grid large enough to fill the GPU); a weight whose type
    is alone in the tuple gets its own launch. None (not served here) unless every weight is supported.
    `rms_of`, `eps`: see `launch_segments` (the input of `gemvs_normed`)."""
    if not all(supports(x, w) for w in weights):
        return None
    n_rows = x.numel() // weights[0].shape[1]
    outs: list[torch.Tensor | None] = [None] * len(weights)
    groups: dict[tuple[GGMLType, str], list[int]] = {}
    for i, w in enumerate(weights):
        groups.setdefault((w.qtype, w.layout), []).append(i)  # one launch reads one layout
    for members in groups.values():
        for chunk in (members[j : j + MAX_SEGMENTS] for j in range(0, len(members), MAX_SEGMENTS)):
            bs = [biases[i] for i in chunk]
            if any(b is not None for b in bs) and not all(
                b is not None and b.dtype == bs[0].dtype for b in bs
            ):
                bs = [None] * len(chunk)  # mixed biases: added after the launch instead
            y = launch_segments(
                x,
                tuple(weights[i] for i in chunk),
                tuple(None if b is None else b.contiguous() for b in bs),
                n_rows,
                rms_of=rms_of,
                eps=eps,
                tensor_cores=tensor_cores,
            )
            col = 0
            for i, b in zip(chunk, bs, strict=True):
                part = y[:, col : col + weights[i].shape[0]]
                col += weights[i].shape[0]
                if b is None and biases[i] is not None:
                    part = part + biases[i].to(torch.float32)
                outs[i] = part.reshape(*x.shape[:-1], weights[i].shape[0]).to(x.dtype)
    return tuple(outs)


# Widest rows a GEMV takes rms-normed (the model widths are 896-4096; wider, the norm is formed first).
RMS_MAX_FEATURES = 8192


def gemvs_normed(
    h: RMSNormed,
    weights: tuple[QTensor, ...],
    biases: tuple[torch.Tensor | None, ...],
    *,
    tensor_cores: bool = False,
) -> tuple[torch.Tensor, ...] | None:
    """`kernels.qmatmul.qmatmuls_normed`'s contract: `gemvs` of `h.xw`, each output row scaled by the
    1 / rms of its row of `h.x` inside the launch (no norm kernel). None where not served."""
    if not normed_rows_served(h):
        return None
    return gemvs(h.xw, weights, biases, rms_of=h.x, eps=h.eps, tensor_cores=tensor_cores)


def normed_rows_served(h: RMSNormed) -> bool:
    """Whether a launch can take `h` normed inside it: float32 rows and rows x weight, contiguous, alike,
    at most RMS_MAX_FEATURES wide."""
    x, xw = h.x, h.xw
    return (
        x.shape == xw.shape
        and x.dtype == torch.float32
        and xw.dtype == torch.float32
        and x.is_contiguous()
        and xw.is_contiguous()
        and x.shape[-1] <= RMS_MAX_FEATURES
    )


def gemv_add_normed(
    x: torch.Tensor,
    w: QTensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    bias: torch.Tensor | None = None,
    *,
    tensor_cores: bool = False,
) -> RMSNormed | None:
    """`kernels.qmatmul.qmatmul_add_normed`'s contract for one activation row: the sum
    `residual + (x @ w.T + bias)` and that sum times `weight` from one launch (without a bias the
    residual rides in as the bias; with one, it is the epilogue's second addend; the scaled copy is the
    epilogue's second store). None where not served."""
    out_features = w.shape[0]
    if not (
        supports(x, w)
        and x.numel() == w.shape[1]
        and residual.numel() == out_features
        and residual.dtype == torch.float32
        and weight.numel() == out_features
        and weight.dtype == torch.float32
        and (bias is None or (bias.numel() == out_features and bias.dtype == torch.float32))
    ):
        return None
    scale = weight.reshape(-1).contiguous()
    if bias is None:
        y, yw = launch_segments(
            x, (w,), (residual.reshape(-1).contiguous(),), 1, scaled_by=scale, tensor_cores=tensor_cores
        )
    else:
        y, yw = launch_segments(
            x,
            (w,),
            (bias.reshape(-1).contiguous(),),
            1,
            scaled_by=scale,
            residual=residual.reshape(1, -1).contiguous(),
            tensor_cores=tensor_cores,
        )
    return RMSNormed(y.reshape(residual.shape), yw.reshape(residual.shape), eps)


def gate_and_up_rows(w: QTensor) -> tuple[QTensor, QTensor]:
    """The gate rows and the up rows of a fused `[gate; up]` matrix (ggml_swiglu's split), as zero-copy
    QTensor views. In the file's order only: a regrouped matrix's halves are not matrices of their own
    (every row's codes come before the first row's scales)."""
    if w.layout != GGML:
        raise ValueError(f"tensor {w.name!r}: the halves of a regrouped matrix are not matrices of their own")
    n, width = w.shape[0] // 2, w.row_bytes
    shape = (n, *w.shape[1:])
    return (
        QTensor(w.data[: n * width], w.qtype, shape, f"{w.name}[gate]"),
        QTensor(w.data[n * width : 2 * n * width], w.qtype, shape, f"{w.name}[up]"),
    )


def gemv_glu(
    h: torch.Tensor | RMSNormed, w_gate: QTensor, w_up: QTensor | None, *, tensor_cores: bool = False
) -> torch.Tensor | None:
    """`kernels.qmatmul.qmatmul_glu`'s contract for one activation row: silu(h @ gate.T) * (h @ up.T)
    from one launch (`launch_segments(glu=True)`; an `RMSNormed` h is normed inside it). `w_up` None:
    `w_gate` holds the gate rows, then the up rows (ggml_swiglu's split). None where not served."""
    if w_up is None:
        if w_gate.layout != GGML:
            # A regrouped [gate; up] matrix (Phi-3's Q8_0 ffn_up) has no halves to launch side by side: the
            # caller takes its one product and the SwiGLU apart.
            return None
        w_gate, w_up = gate_and_up_rows(w_gate)
    x, rms_of, eps = (h.xw, h.x, h.eps) if isinstance(h, RMSNormed) else (h, None, 0.0)
    if isinstance(h, RMSNormed) and not normed_rows_served(h):
        return None
    if not (
        supports(x, w_gate)
        and supports(x, w_up)
        and x.numel() == w_gate.shape[1]
        and w_gate.shape == w_up.shape
        and w_gate.qtype == w_up.qtype
    ):
        return None
    try:
        y = launch_segments(
            x, (w_gate, w_up), (None, None), 1, rms_of=rms_of, eps=eps, glu=True, tensor_cores=tensor_cores
        )
    except ValueError:
        return None  # more split tiles than arrival counters
    return y.reshape(*x.shape[:-1], w_gate.shape[0]).to(x.dtype)


def fast_path(*, tensor_cores: bool) -> FastPath:
    """The decode GEMVs as a fast path; `tensor_cores`: Q4_K and regrouped Q6_K matrices of at least
    TENSOR_CORE_MIN_BYTES on the tensor cores (`kernels.tensor_core_gemv`) where it serves the launch."""
    choice = {"tensor_cores": tensor_cores}
    return FastPath(
        name="triton-gemv-tensor-cores" if tensor_cores else "triton-gemv",
        devices=("cuda",),
        supports=supports,
        qmatmul=functools.partial(gemv, **choice),
        qembedding=embedding,
        qmatmuls=functools.partial(gemvs, **choice),
        qmatmuls_normed=functools.partial(gemvs_normed, **choice),
        qmatmul_add_normed=functools.partial(gemv_add_normed, **choice),
        qmatmul_glu=functools.partial(gemv_glu, **choice),
    )


FAST_PATH = fast_path(tensor_cores=True)  # the default kernel set's (`KernelConfig.tensor_core_gemv`)
CUDA_CORE_FAST_PATH = fast_path(tensor_cores=False)
