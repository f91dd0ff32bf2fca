"""The decode GEMV on the tensor cores (Gluon, sm_80 and later): one activation row against a Q4_K matrix
in the file's block order or a Q6_K, Q8_0 or MXFP4 matrix regrouped (`kernels.qtensor.CODES_THEN_SCALES`),
or the token-expert pairs of a MoE against their experts of a regrouped MXFP4 expert tensor, with every
epilogue of `kernels.triton_gemv.launch_segments` (1-3 segments, bias, rms scaling, a scaled copy, GLU,
residual, split-K summed in the launch, dependent launch). `triton_gemv.launch_segments` hands a launch
here when its `GemvConfig.tensor_cores` is on (by default for the layouts of
`triton_gemv.TENSOR_CORE_FORMATS`, those timed faster here).

Why the tensor cores for a GEMV: the CUDA-core loop spends ~5.5 instructions a weight decoding and
multiplying (`benchmarks.ptx_cost`), and Nsight Compute finds it latency-bound with a third to half of the
issue slots busy; here one `mma.sync` multiplies a sub-block's 32 codes of 16 rows, ~3.5 instructions a
weight, so a warp reaches its next loads sooner (Q6_K's CUDA-core loop takes ~9 a weight).

How (one program: 64 rows x PER super-blocks; 4 warps, 16 rows each):
- The codes go from their load words straight into the registers of mma's A operand: a lane loads the
  words that hold the codes it owns in the operand's layout (`_WORDS`), so the walk has no shared memory
  and no barrier. A code becomes an exact float16 with one `lop3` and one `sub.f16x2` (`_code_pairs`);
  the K order inside a sub-block follows the words (`_a_tile`), and the activations are stored in that
  order (the prologue), so each product pairs a code with its own activation.
- The activations of the program's range are read once (after the wait for the previous grid), scaled
  by a power of two that puts their largest magnitude at the top of float16's range, and split
  hi + lo (hi + lo = the scaled value to ~22 bits) into shared memory as the B operand's two columns
  (the other six are left unwritten, `_shared_b`: only the result's columns 0 and 1 are summed). Each
  mma covers one sub-block, so its 6-bit scale and the super-block's d multiply the mma's float32
  result; the mins' term is one more mma a super-block (each row's eight 6-bit mins against the
  sub-blocks' sums of x).
- Q6_K (`_q6_k_walk`): a 16-code sub-block is one mma (K = 16). A lane's four K values of it are the four
  bytes of one ql word and its qh word (ggml's l .. l + 3), so a group of three words a lane (ql[l],
  ql[l + 32], qh[l]) feeds four sub-blocks (`_q6_k_a_tile`); each mma is scaled by d x the sub-block's
  int8 scale. The activations are stored in each sub-block's K order as for Q4_K's mins.
- Q8_0 (`_block_walk`): a 32-code block is one mma (K = 32) scaled by its d, its words taken as a Q4_K
  chunk's (lane t: words 2t and 2t + 1) and its codes made exact float16 by one byte permute with 1024.0's
  exponent above each sign-flipped byte and one `sub.f16x2` (`_q8_0_codes`), in the byte order of a Q4_K
  chunk's nibbles, so the activations are stored as a Q4_K sub-block's. A program walks up to 32 blocks,
  any count dividing the row's (GPT-OSS's rows are 90 blocks); the prologue holds the next power of two.
  Offline (sm_90, the 2,880-wide output form, 8 blocks a program): ~35 SASS instructions a block a thread
  (16 codes, 1.25 a code of decode) in the walk against 7.5 a weight for the CUDA-core regrouped loop
  (`benchmarks.ptx_cost`).
- MXFP4 (`_block_walk`): a 32-code block is one mma scaled by its E8M0 power of two, a lane's K values
  the 8 nibbles of one word (`_mxfp4_a_tile`). An e2m1 code's three magnitude bits at a float16's bits
  9-11 and its sign at 15 are its value times 2^-14, exact (two shifts, an `and` and a `lop3` a pair of
  codes, `_mxfp4_pairs`); the 2^15 that makes ggml's doubled table values is folded into the activations'
  scale. Expert tensors (EXPERT_FORMATS): the grid's third axis is the token-expert pair, each program
  reading its pair's expert id (after the wait for the previous grid) and offsetting its matrix, its bias,
  its rows of x, y and the split partials by it. Offline (sm_90, GPT-OSS's down form, 8 blocks a program):
  ~53 SASS instructions a block a thread (16 codes) in the walk against 5.78 a weight for the CUDA-core
  regrouped loop (`benchmarks.ptx_cost`).
- Split-K: each split stores its partial sums; the last program to arrive at a row tile (arrival
  counters, `triton_gemv.SplitCounters`) sums them in split order and runs the epilogue, as
  `triton_gemv`'s REDUCE form does; it resets the counter with a relaxed exchange (only a later launch
  reads it again). The split count is a constant of the launch (SPLITS), so that tail asks for every
  split's sums and the rms row at once (`_tail`); the bias, residual and norm weight are asked for before
  the counter's atomic. From the atomic on, a warp waits on memory twice (three times for Q6_K's
  residual form), not 6-7 times as with the runtime loops before (`triton_offline`'s round trips).
- Split-K in a cluster (CLUSTER, `GemvConfig.tc_cluster_splits`, the default on sm_90 for 2-8 splits): a
  row tile's splits run as one thread-block cluster (`kernels.cluster_launch`), split s its CTA s. Each
  program makes a static shared array headed by an mbarrier (`_cluster_started`: split 0 arrives on it
  expecting the other splits' bytes); splits 1.. wait once at the cluster barrier and send their sums into
  split 0's array by `st.async`, which completes those bytes on its mbarrier (`_send_to_rank0`); split 0
  waits on it (`_received`), sums from zero in split order (the counters' bits) and runs `_tail`. No fence,
  no atomic, no global partials: one trip between SMs of a GPC.
- A warp split (`GemvConfig.tc_warp_split` 2 or 4, off: timed slower): a program of 64 / split rows whose
  warps each walk their own run of each row's units (`_row_offsets`; B's columns 2s and 2s + 1 hold run
  s's activations, so one mma still serves every warp), the runs' sums added in the program
  (`_segments_summed`); the split of K across programs is then left only where the tiles alone leave
  the grid short (`units_per_warp`).

Accuracy: against the float64 product of gguf-py's dequantized weight the largest error relative to the
largest output is ~2e-7 (H100, Phi-3's Q4_K shapes), as the CUDA-core loop's; the tests' bound is 1e-5.
Without a GPU, `tests/kernels/test_tensor_core_algebra.py` re-states each format's operands in torch (the
same joins, permutes and bit operations) against the reference path, calibrated on Q4_K's, which the GPU
has run: a layout change is checked there first.
The weight prefetch of `dependent_launch.weight_prefetch` is not done here (off by default). A bulk L2
prefetch of each program's walk bytes (`cp.async.bulk.prefetch.L2`, one a row) was timed slower on an H100
(2026-12-07: every Phi-3 launch 5-27 % slower alone) and removed. Q4_K's int8 walk of one matrix can ask
for its whole share by TMA into shared memory instead (`_q4_k_int8_tma_walk`, `GemvConfig.tc_words_by_tma`:
the same bits; off, Phi-3's step 6.2 % slower on an H100).
"""

from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from kernels import cluster_launch, dependent_launch
from kernels.triton_cluster import shared_f32
from kernels.triton_common import await_previous_grid, gated, launch_next_grid_late, rms_over, segment_of

ROWS_PER_PROGRAM = 64  # a program's row tile: 4 warps x mma's 16 rows
NUM_WARPS = 4
SUPERBLOCK = 256  # elements a Q4_K or Q6_K super-block
# A Q4_K super-block's 144 bytes as 32-bit words: d and dmin, 12 scale bytes, 128 code bytes.
SUPERBLOCK_WORDS = gl.constexpr(36)
# A regrouped Q6_K super-block's code words: ql 128 bytes, qh 64, the sixteen int8 scales (d apart).
Q6_K_CODE_WORDS = gl.constexpr(52)
# A regrouped Q8_0 block's code words: its 32 int8 codes (the float16 d apart).
Q8_0_CODE_WORDS = gl.constexpr(8)
# A regrouped MXFP4 block's code words: its 32 e2m1 codes (the E8M0 scale byte apart).
MXFP4_CODE_WORDS = gl.constexpr(4)
PER_CHOICES = (4, 2, 1)  # super-blocks a program walks, largest first
MAX_BLOCKS_PER_PROGRAM = 32  # Q8_0: 32-element blocks a program walks at most (1,024 activations)
# The layouts (`triton_gemv`'s format names) this kernel reads, and the elements of the unit a program's
# walk counts in: Q4_K in the file's order (256-element super-blocks), Q6_K regrouped
# (`kernels.qtensor.CODES_THEN_SCALES`: a row's 208 code bytes a super-block 16-byte aligned, d apart),
# Q8_0 regrouped (a row's 32 code bytes a block, the float16 d apart; 32-element blocks).
UNITS = {
    "q4_k": SUPERBLOCK,
    "q6_k_codes_then_scales": SUPERBLOCK,
    "q8_0_codes_then_scales": 32,
    "mxfp4_codes_then_scales": 32,
}
FORMATS = tuple(UNITS)
# The layouts it also reads as experts of a 3-D tensor, one program axis over the token-expert pairs
# (a MoE's gate and up, its down): MXFP4's, the M0 models' only expert type.
EXPERT_FORMATS = ("mxfp4_codes_then_scales",)

_MMA = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8])
_A = gl.DotOperandLayout(operand_index=0, parent=_MMA, k_width=2)
_B = gl.DotOperandLayout(operand_index=1, parent=_MMA, k_width=2)
_ROWS = gl.SliceLayout(1, _MMA)  # one value a row of the tile: the epilogue's vectors
# A chunk's code words [64 rows, 4 t, 2 u] (chunk c: words 4 + 8c .. of the super-block), laid out as mma's
# A operand wants them: lane (row % 8, t) holds words (t, u) of rows row and row + 8 of its warp.
_WORDS = gl.DistributedLinearLayout(
    reg_bases=[[0, 0, 1], [8, 0, 0]],
    lane_bases=[[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
    warp_bases=[[16, 0, 0], [32, 0, 0]],
    block_bases=[],
    shape=[64, 4, 2],
)
# A sub-block's stored B, read back [8 n, 4 t, 8 (u, s, r)] (n: the hi, lo and six zero columns).
_B_LOAD = gl.DistributedLinearLayout(
    reg_bases=[[0, 1], [0, 2], [0, 4]],
    lane_bases=[[0, 8], [0, 16], [0, 32], [0, 64], [0, 128]],
    warp_bases=[[0, 0], [0, 0]],
    block_bases=[],
    shape=[1, 256],
)
# A 16-value B as stored [8 n, 4 t, 4 (s, r)], read flat: Q4_K's mins, a Q6_K sub-block's activations.
_M_LOAD = gl.DistributedLinearLayout(
    reg_bases=[[0, 1], [0, 2]],
    lane_bases=[[0, 4], [0, 8], [0, 16], [0, 32], [0, 64]],
    warp_bases=[[0, 0], [0, 0]],
    block_bases=[],
    shape=[1, 128],
)
# The mins' A as made [64 rows, 4 t, 2 s, 2 r]: K = 8s + 2t + r.
_MINS_A = gl.DistributedLinearLayout(
    reg_bases=[[0, 0, 0, 1], [8, 0, 0, 0], [0, 0, 1, 0]],
    lane_bases=[[0, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 0]],
    warp_bases=[[16, 0, 0, 0], [32, 0, 0, 0]],
    block_bases=[],
    shape=[64, 4, 2, 2],
)
_MINS_ROW = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, _MINS_A)))  # a value a row of it
# Regrouped Q6_K: a group's words [64 rows, 4 t], lane (row % 8, t) holding word t of rows row and row + 8.
_Q6_WORDS = gl.DistributedLinearLayout(
    reg_bases=[[8, 0]],
    lane_bases=[[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]],
    warp_bases=[[16, 0], [32, 0]],
    block_bases=[],
    shape=[64, 4],
)
_FLAT = gl.BlockedLayout([2], [32], [4], [0])  # the prologue's activations
_FLAT4 = gl.BlockedLayout([4], [32], [4], [0])  # the int8 walk's: a thread's 4 make a B word
_RMS_FLAT = gl.BlockedLayout([1], [32], [4], [0])  # the rms row, read after the walk
_PLAIN = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])


@gluon.jit
def _f16_pair_of(words, ASM: gl.constexpr):
    """Two float16 of each word made by the inline PTX `ASM` (the word is its $2, the two halves its $0
    and $1)."""
    return gl.inline_asm_elementwise(
        ASM, "=h,=h,r", [words], dtype=(gl.float16, gl.float16), is_pure=True, pack=1
    )


@gluon.jit
def _code_pairs(words, SHIFT: gl.constexpr):
    """The 4-bit codes at bits SHIFT.. and SHIFT + 16.. of each word as two exact float16: OR-ed into
    1024.0's mantissa, then 1024 subtracted (`sub.f16x2` takes no immediate: the constant in a register)."""
    return _f16_pair_of(
        words,
        gl.constexpr(
            f"{{ .reg .b32 t, m; shr.b32 t, $2, {SHIFT}; lop3.b32 t, t, 0x000F000F, 0x64006400, 0xEA; "
            "mov.b32 m, 0x64006400; sub.rn.f16x2 t, t, m; mov.b32 {$0, $1}, t; }"
        ),
    )


@gluon.jit
def _a_tile(words, H: gl.constexpr):
    """Sub-block (chunk, H)'s [64, 32] A operand from its chunk's words [64, 4 t, 2 u]: the low nibbles
    (H = 0) or the high ones, K = 16u + 8p + 2t + half (p: the word's byte pair)."""
    k0, k2 = _code_pairs(words, 4 * H)
    k1, k3 = _code_pairs(words, 4 * H + 8)
    return _a_of_bytes(k0, k2, k1, k3)


@gluon.jit
def _a_of_bytes(k0, k2, k1, k3):
    """The [64, 32] A operand from the codes of bytes 0, 2, 1 and 3 of each word [64, 4 t, 2 u] (of a Q4_K
    chunk's nibbles or a Q8_0 block's bytes): K = 16u + 8p + 2t + half holds byte 2 half + p of word (t, u),
    the element 8t + 4u + 2 half + p of the 32."""
    a = gl.join(gl.join(k0, k2), gl.join(k1, k3))  # [64, t, u, half, p]
    a = gl.permute(a, (0, 2, 4, 1, 3))  # [64, u, p, t, half]
    return gl.convert_layout(gl.reshape(a, (64, 32)), _A)


@gluon.jit
def _q8_0_codes(words):
    """The four int8 codes of each word as exact float16, bytes 0, 2, 1, 3: each byte with its sign bit
    flipped (q + 128) is the mantissa of 1024.0 (a byte permute with 0x64 above it), then 1152 subtracted."""
    return gl.inline_asm_elementwise(
        "{ .reg .b32 w, a, b, m; xor.b32 w, $4, 0x80808080; prmt.b32 a, w, 0x64646464, 0x4240; "
        "prmt.b32 b, w, 0x64646464, 0x4341; mov.b32 m, 0x64806480; sub.rn.f16x2 a, a, m; "
        "sub.rn.f16x2 b, b, m; mov.b32 {$0, $1}, a; mov.b32 {$2, $3}, b; }",
        "=h,=h,=h,=h,r",
        [words],
        dtype=(gl.float16, gl.float16, gl.float16, gl.float16),
        is_pure=True,
        pack=1,
    )


@gluon.jit
def _scale_bits(s1, s3, J: gl.constexpr):
    """The 6-bit scale of sub-block J of each row (ggml's get_scale_min_k4) from its scale words 1 and 3."""
    if J < 4:
        sc = (s1 >> (8 * J)) & 0x3F
    else:
        sc = ((s3 >> (8 * (J - 4))) & 0x0F) | (((s1 >> (8 * (J - 4) + 6)) & 0x3) << 4)
    return sc


@gluon.jit
def _scale(s1, s3, J: gl.constexpr):
    """`_scale_bits` as float32."""
    return _scale_bits(s1, s3, J).to(gl.float32)


@gluon.jit
def _with_zeros(v):
    """[B, 1, a, b] float32 -> [B, 8 * a * b] float16: column n = 0 their hi part, n = 1 their lo part,
    n >= 2 zeros (the B columns no activation uses)."""
    hi = v.to(gl.float16)
    lo = (v - hi.to(gl.float32)).to(gl.float16)
    z = gl.zeros_like(hi)
    # [B, 1, a, b, x0, x1, x2], the last join outermost: hi at x = (0, 0, 0), lo at (0, 0, 1); n = 4x0 + 2x1 + x2
    n8 = gl.join(gl.join(gl.join(hi, z), gl.join(z, z)), gl.join(gl.join(lo, z), gl.join(z, z)))
    n8 = gl.permute(n8, (0, 1, 4, 5, 6, 2, 3))  # [B, 1, x0, x1, x2, a, b]
    return gl.reshape(n8, (v.shape[0], 8 * v.shape[2] * v.shape[3]))


@gluon.jit
def _hi_lo(v):
    """[B, S, a, b] float32 -> [B, S * 2 * a * b] float16: `_with_zeros`'s columns n = 2s (hi) and 2s + 1 (lo)
    of each of the S segments of a warp split (`_shared_b`), S = 1 without one."""
    hi = v.to(gl.float16)
    lo = (v - hi.to(gl.float32)).to(gl.float16)
    n2 = gl.permute(gl.join(hi, lo), (0, 1, 4, 2, 3))  # [B, S, n, a, b]
    return gl.reshape(n2, (v.shape[0], 2 * v.shape[1] * v.shape[2] * v.shape[3]))


@gluon.jit
def _shared_b(v, ROWS: gl.constexpr, WIDTH: gl.constexpr, ZERO_COLUMNS: gl.constexpr):
    """The activations `v` [ROWS, S, a, b] as B operands in shared memory [ROWS, WIDTH = 8 * a * b] float16:
    column n = 0 their hi part, n = 1 their lo part. ZERO_COLUMNS: the six other columns stored as zeros;
    else left unwritten, a quarter of the stores: only the mma's result columns 0 and 1 are read (`_used`),
    and a column of the result depends on its own column of B alone, so whatever those hold stays there.
    With a warp split (S = 2 or 4 segments, `GemvConfig.tc_warp_split`) segment s's activations are columns
    2s and 2s + 1: one mma multiplies each warp's codes with its own segment's (`_used` keeps those)."""
    S: gl.constexpr = v.shape[1]
    if ZERO_COLUMNS:
        gl.static_assert(S == 1, "B's unused columns are stored as zeros without a warp split only")
        smem = gl.allocate_shared_memory(gl.float16, [ROWS, WIDTH], _PLAIN, _with_zeros(v))
    else:
        smem = gl.allocate_shared_memory(gl.float16, [ROWS, WIDTH], _PLAIN)
        smem.slice(0, S * WIDTH // 4, dim=1).store(_hi_lo(v))
    return smem


@gluon.jit
def _used(acc, WS: gl.constexpr = 1):
    """The tile's sums [64, 8] with only B's columns 0 and 1 (the activations' hi and lo parts) kept: the
    others are zeros or, left unwritten (`_shared_b`), anything. With a warp split WS > 1, tile row r keeps
    its own segment's columns 2s and 2s + 1 (s = r // (64 / WS), `_row_offsets`)."""
    n = gl.arange(0, 8, layout=gl.SliceLayout(0, _MMA))
    if WS == 1:
        return gl.where(gl.expand_dims(n < 2, 0), acc, 0.0)
    r = gl.arange(0, 64, layout=gl.SliceLayout(1, _MMA))
    keep = gl.expand_dims(n // 2, 0) == gl.expand_dims(r // (64 // WS), 1)
    return gl.where(keep, acc, 0.0)


@gluon.jit
def _row_offsets(first, r, n_rows, row_words, unit_words, PER: gl.constexpr, WS: gl.constexpr):
    """The offsets (load words, or units with row_words the row's units and unit_words 1) of tile rows `r`
    (0..63, any layout) from the matrix's start: row first + r, clamped at the matrix's last (its stores
    are masked). With a warp split WS > 1 (`GemvConfig.tc_warp_split`) the tile is WS segments of 64 / WS
    rows, warp s's: tile row r is row first + r % (64 / WS), offset by the PER units of the segments
    before its own (s = r // (64 / WS)), so each warp walks its own PER units of the same rows."""
    if WS == 1:
        return gl.minimum(first + r, n_rows - 1).to(gl.int64) * row_words
    RT: gl.constexpr = 64 // WS
    row = gl.minimum(first + r % RT, n_rows - 1).to(gl.int64)
    return row * row_words + (r // RT) * (PER * unit_words)


@gluon.jit
def _b_tile(raw):
    """A sub-block's stored B [1, 256] -> the [32, 8] B operand, K = 16u + 8s + 2t + r."""
    b = gl.permute(gl.reshape(raw, (8, 4, 2, 2, 2)), (2, 3, 1, 4, 0))  # [u, s, t, r, n]
    return gl.convert_layout(gl.reshape(b, (32, 8)), _B)


@gluon.jit
def _superblock_words(rows, woff, mins_rows, sb):
    """Super-block `sb`'s words of the tile's rows, each in the layout its use wants: d and dmin, the two
    scale words, the four chunks of codes, the two words of the mins (loaded a super-block ahead of
    their use: `_take_superblock`)."""
    base = rows + sb * SUPERBLOCK_WORDS
    codes = woff + sb * SUPERBLOCK_WORDS + 4
    mins = mins_rows + sb * SUPERBLOCK_WORDS
    return (
        gl.load(base),
        gl.load(base + 1),
        gl.load(base + 3),
        gl.load(codes),
        gl.load(codes + 8),
        gl.load(codes + 16),
        gl.load(codes + 24),
        gl.load(mins + 2),
        gl.load(mins + 3),
    )


@gluon.jit
def _take_superblock(acc, words, jj, jb, s_is0, smem_b, smem_m, NTH: gl.constexpr):
    """`acc` plus the tile's products with a super-block (`_superblock_words`, the program's NTH: the
    buffer of its shared activations it reads): eight sub-block mmas scaled by d x scale, less one mma
    of the mins against the sub-block sums, scaled by dmin."""
    zero = gl.full([64, 8], 0.0, gl.float32, _MMA)
    dd, s1, s3, c0, c1, c2, c3, m2, m3 = words
    d = dd.to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    dmin = (dd >> 16).to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    chunks = (c0, c1, c2, c3)
    for c in gl.static_range(4):
        for h in gl.static_range(2):
            b = _b_tile(smem_b.slice(NTH * 8 + 2 * c + h, 1).load(_B_LOAD))
            a = _a_tile(chunks[c], h)
            acc += mma_v2(a, b, zero) * gl.expand_dims(d * _scale(s1, s3, 2 * c + h), 1)
    return acc - _mins_product(m2, m3, jj, jb, s_is0, smem_m, NTH) * gl.expand_dims(32.0 * dmin, 1)


@gluon.jit
def _mins_product(m2, m3, jj, jb, s_is0, smem_m, NTH: gl.constexpr):
    """A Q4_K super-block's mins against the program's NTH sub-block sums, one mma [64, 8] (the rows' sums
    of m_j x the sub-block's sum of x / 32 in columns 0 and 1): m_j (j < 4: byte j of word 2 & 63; else
    high nibble of byte j-4 of word 3 | top bits of byte j-4 of word 2); K >= 8 zeros."""
    return mins_product_of(m2, m3, jj, jb, s_is0, smem_m.slice(NTH, 1).load(_M_LOAD))


@gluon.jit
def mins_product_of(m2, m3, jj, jb, s_is0, sums):
    """`_mins_product` with the program's sub-block sums given as read [1, 128] (`_M_LOAD`)."""
    zero = gl.full([64, 8], 0.0, gl.float32, _MMA)
    mj = gl.where(jj < 4, (m2 >> jb) & 0x3F, ((m3 >> jb) >> 4 & 0x0F) | (((m2 >> jb) >> 6 & 0x3) << 4))
    ma = gl.where(s_is0, mj, 0).to(gl.float16)
    ma = gl.convert_layout(gl.reshape(gl.permute(ma, (0, 2, 1, 3)), (64, 16)), _A)
    mb = gl.permute(gl.reshape(sums, (8, 4, 2, 2)), (2, 1, 3, 0))  # [s, t, r, n]
    mb = gl.convert_layout(gl.reshape(mb, (16, 8)), _B)
    return mma_v2(ma, mb, zero)


@gluon.jit
def _q6_k_code_pairs(wq, wh, SQ: gl.constexpr, SH: gl.constexpr):
    """Q6_K codes of bytes b and b + 2 of each ql word `wq` and qh word `wh` as two exact float16 q - 32:
    the nibble at bit SQ (+ 16) of `wq` and the two bits at bit SH (+ 16) of `wh` above it, OR-ed into
    1024.0's mantissa, 1056 subtracted."""
    # qh's two bits to bits 4-5 of each half: a right shift from bit SH >= 4, else a left one
    LEFT: gl.constexpr = SH < 4
    SHIFT: gl.constexpr = 4 - SH if SH < 4 else SH - 4
    return gl.inline_asm_elementwise(
        f"{{ .reg .b32 a, h, m; {'shl' if LEFT else 'shr'}.b32 h, $3, {SHIFT}; "
        f"lop3.b32 h, h, 0x00300030, 0x64006400, 0xEA; shr.b32 a, $2, {SQ}; "
        "lop3.b32 a, a, 0x000F000F, h, 0xEA; mov.b32 m, 0x64206420; sub.rn.f16x2 a, a, m; mov.b32 {$0, $1}, a; }",
        "=h,=h,r,r",
        [wq, wh],
        dtype=(gl.float16, gl.float16),
        is_pure=True,
        pack=1,
    )


@gluon.jit
def _q6_k_a_tile(wq, wh, G: gl.constexpr):
    """The [64, 16] A operand of quarter G of a Q6_K group (ggml's q1..q4: the low nibbles of ql[l] or
    ql[l + 32], then the high ones; qh's bits 2G..) from its ql words `wq` and qh words `wh` [64, 4 t]:
    K = 8p + 2t + half holds the sub-block's element 4t + 2 half + p."""
    k0, k2 = _q6_k_code_pairs(wq, wh, 4 * (G // 2), 2 * G)
    k1, k3 = _q6_k_code_pairs(wq, wh, 4 * (G // 2) + 8, 2 * G + 8)
    a = gl.join(gl.join(k0, k2), gl.join(k1, k3))  # [64, t, half, p]
    a = gl.permute(a, (0, 3, 1, 2))  # [64, p, t, half]
    return gl.convert_layout(gl.reshape(a, (64, 16)), _A)


@gluon.jit
def _q6_k_superblock_words(rows, words, d_rows, sb):
    """Super-block `sb` of the tile's rows of a regrouped Q6_K matrix (52 code words a super-block: ql 32,
    qh 16, the sixteen int8 scales 4; d apart): for each group c = 2 hf + j (the half hf of 128 elements,
    the run j of 16 l's), its ql words l and l + 32 and its qh word as [64, 4 t] (lane t: bytes 4t..4t + 3
    of the run); the four scale words and d a row."""
    base = words + sb * Q6_K_CODE_WORDS
    scale_words = rows + sb * Q6_K_CODE_WORDS + 48
    return (
        gl.load(base),
        gl.load(base + 8),
        gl.load(base + 32),
        gl.load(base + 4),
        gl.load(base + 12),
        gl.load(base + 36),
        gl.load(base + 16),
        gl.load(base + 24),
        gl.load(base + 40),
        gl.load(base + 20),
        gl.load(base + 28),
        gl.load(base + 44),
        gl.load(scale_words),
        gl.load(scale_words + 1),
        gl.load(scale_words + 2),
        gl.load(scale_words + 3),
        gl.load(d_rows + sb),
    )


@gluon.jit
def _q6_k_scale(words, S: gl.constexpr):
    """Sub-block S's int8 scale of each row (byte S % 4 of scale word S // 4, sign-extended), as float32."""
    return ((words[12 + S // 4] << (24 - 8 * (S % 4))) >> 24).to(gl.float32)


@gluon.jit
def _take_q6_k_superblock(acc, words, smem_b, NTH: gl.constexpr):
    """`acc` plus the tile's products with a Q6_K super-block (`_q6_k_superblock_words`, the program's NTH):
    sixteen sub-block mmas (K = 16), each scaled by d x its int8 scale."""
    zero = gl.full([64, 8], 0.0, gl.float32, _MMA)
    d = words[16].to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    for c in gl.static_range(4):
        for g in gl.static_range(4):
            # the sub-block: ggml's sc[8 hf + is + 2g] with hf = c // 2, is = c % 2
            a = _q6_k_a_tile(words[3 * c + g % 2], words[3 * c + 2], g)
            raw = smem_b.slice(NTH * 16 + 8 * (c // 2) + 2 * g + c % 2, 1).load(_M_LOAD)
            b = gl.permute(gl.reshape(raw, (8, 4, 2, 2)), (2, 1, 3, 0))  # [p, t, half, n]
            b = gl.convert_layout(gl.reshape(b, (16, 8)), _B)
            sc = _q6_k_scale(words, 8 * (c // 2) + 2 * g + c % 2)
            acc += mma_v2(a, b, zero) * gl.expand_dims(d * sc, 1)
    return acc


@gluon.jit
def _q8_0_block_words(words, d_rows, blk):
    """Block `blk` of the tile's rows of a regrouped Q8_0 matrix (8 code words a block; d apart): its code
    words as [64, 4 t, 2 u] (lane t: words 2t and 2t + 1, codes 8t .. 8t + 7) and d a row."""
    return gl.load(words + blk * Q8_0_CODE_WORDS), gl.load(d_rows + blk)


@gluon.jit
def _take_q8_0_block(acc, words, smem_b, NTH: gl.constexpr):
    """`acc` plus the tile's products with a Q8_0 block (`_q8_0_block_words`, the program's NTH): one mma
    (K = 32) scaled by d."""
    zero = gl.full([64, 8], 0.0, gl.float32, _MMA)
    codes, dd = words
    d = dd.to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    k0, k2, k1, k3 = _q8_0_codes(codes)
    b = _b_tile(smem_b.slice(NTH, 1).load(_B_LOAD))
    return acc + mma_v2(_a_of_bytes(k0, k2, k1, k3), b, zero) * gl.expand_dims(d, 1)


@gluon.jit
def _mxfp4_pairs(words, S: gl.constexpr):
    """The e2m1 codes at bits S.. and S + 16.. of each word as two exact float16, their values times 2^-14
    (ggml's doubled table values times 2^-15): the magnitude's three bits at a float16's bits 9-11 (the
    exponent's two low bits and the mantissa's top one), the sign at bit 15; one `lop3` joins them."""
    LEFT: gl.constexpr = S <= 9
    MAG: gl.constexpr = 9 - S if S <= 9 else S - 9
    SIGN: gl.constexpr = (
        "and.b32 b, $2, 0x80008000; " if S == 12 else f"shl.b32 b, $2, {12 - S}; and.b32 b, b, 0x80008000; "
    )
    return _f16_pair_of(
        words,
        gl.constexpr(
            f"{{ .reg .b32 a, b; {'shl' if LEFT else 'shr'}.b32 a, $2, {MAG}; {SIGN}"
            "lop3.b32 a, a, 0x0E000E00, b, 0xEA; mov.b32 {$0, $1}, a; }"
        ),
    )


@gluon.jit
def _mxfp4_a_tile(words):
    """A regrouped MXFP4 block's [64, 32] A operand from its words [64, 4 t] (lane t: word t; byte k holds
    elements 4t + k and 4t + k + 16 in its low and high nibble): K = 16h + 8k + 2t + half holds nibble h
    of byte k + 2 half, the element 16h + 4t + 2 half + k."""
    h0k0 = _mxfp4_pairs(words, 0)  # nibbles 0 and 4: bytes 0 and 2, low
    h1k0 = _mxfp4_pairs(words, 4)
    h0k1 = _mxfp4_pairs(words, 8)  # bytes 1 and 3
    h1k1 = _mxfp4_pairs(words, 12)
    k_h0 = gl.join(gl.join(h0k0[0], h0k0[1]), gl.join(h0k1[0], h0k1[1]))  # [64, t, half, k]
    k_h1 = gl.join(gl.join(h1k0[0], h1k0[1]), gl.join(h1k1[0], h1k1[1]))
    a = gl.permute(gl.join(k_h0, k_h1), (0, 4, 3, 1, 2))  # [64, h, k, t, half]
    return gl.convert_layout(gl.reshape(a, (64, 32)), _A)


@gluon.jit
def _mxfp4_block_words(words, scale_rows, blk):
    """Block `blk` of the tile's rows of a regrouped MXFP4 matrix (4 code words a block; the scale bytes
    apart): its code words as [64, 4 t] and its E8M0 byte a row."""
    return gl.load(words + blk * MXFP4_CODE_WORDS), gl.load(scale_rows + blk)


@gluon.jit
def _take_mxfp4_block(acc, words, smem_b, NTH: gl.constexpr):
    """`acc` plus the tile's products with an MXFP4 block (`_mxfp4_block_words`, the program's NTH): one mma
    (K = 32) scaled by 2^(e - 128) (ggml's e8m0_half; the codes' 2^15 is the walk's, in its scale)."""
    zero = gl.full([64, 8], 0.0, gl.float32, _MMA)
    codes, e = words
    e = e.to(gl.uint32)
    # 2^(e - 128): a subnormal for e < 2, else the exponent field e - 1 (`triton_gemv`'s, bit for bit)
    scale = gl.where(e < 2, (e + 1) * 0x00200000, (e - 1) << 23).to(gl.float32, bitcast=True)
    b = _b_tile(smem_b.slice(NTH, 1).load(_B_LOAD))
    return acc + mma_v2(_mxfp4_a_tile(codes), b, zero) * gl.expand_dims(scale, 1)


@gluon.jit
def _rms(row, n, eps, BLOCK: gl.constexpr, BLOCKS: gl.constexpr):
    """rms_norm's float32 denominator sqrt(mean(row^2) + eps) of the `n` values at `row`, BLOCK at a time,
    the BLOCKS reads unrolled (`triton_common.rms_over`: the same sums in the same order as `triton_gemv._rms`)."""
    return rms_over(row, n, eps, gl.arange(0, BLOCK, layout=_RMS_FLAT), BLOCKS)


@gluon.jit
def _words_of(KIND: gl.constexpr, pointers, sb, shift):
    """Unit `sb`'s words of the matrix `shift` load words past the one at `pointers` (GLU's up rows: seg_w1;
    a regrouped matrix's scales follow its own codes: 2 * shift halfwords, 4 * shift bytes on)."""
    if KIND == "q4_k":
        rows, woff, mins_rows = pointers
        return _superblock_words(rows + shift, woff + shift, mins_rows + shift, sb)
    elif KIND == "q8_0":
        words, d_rows = pointers
        return _q8_0_block_words(words + shift, d_rows + 2 * shift, sb)
    elif KIND == "mxfp4":
        words, scale_rows = pointers
        return _mxfp4_block_words(words + shift, scale_rows + 4 * shift, sb)
    else:
        rows, words, d_rows = pointers
        return _q6_k_superblock_words(rows + shift, words + shift, d_rows + 2 * shift, sb)


@gluon.jit
def _first_words(
    KIND: gl.constexpr, pointers, lo, seg_w1, PER: gl.constexpr, GLU: gl.constexpr, AHEAD: gl.constexpr
):
    """The first unit's words (and with GLU the up rows'), and with AHEAD 2 the second's, asked for before
    the activations' prologue so their latency overlaps it: (first, first up, second, second up), the up
    rows' a placeholder without GLU and the second's without AHEAD 2 (or a one-unit walk)."""
    words = _words_of(KIND, pointers, lo, 0)
    words_up = words
    if GLU:  # the up rows, seg_w1 words past the gate's: the same activations
        words_up = _words_of(KIND, pointers, lo, seg_w1)
    second = words
    second_up = words_up
    if AHEAD == 2 and PER > 1:
        second = _words_of(KIND, pointers, lo + 1, 0)
        if GLU:
            second_up = _words_of(KIND, pointers, lo + 1, seg_w1)
    return words, words_up, second, second_up


@gluon.jit
def _take(KIND: gl.constexpr, acc, words, constants, smem_b, smem_m, NTH: gl.constexpr):
    """`acc` plus the tile's products with one unit (super-block or block) of its format."""
    if KIND == "q4_k":
        jj, jb, s_is0 = constants
        return _take_superblock(acc, words, jj, jb, s_is0, smem_b, smem_m, NTH)
    elif KIND == "q8_0":
        return _take_q8_0_block(acc, words, smem_b, NTH)
    elif KIND == "mxfp4":
        return _take_mxfp4_block(acc, words, smem_b, NTH)
    else:
        return _take_q6_k_superblock(acc, words, smem_b, NTH)


@gluon.jit
def _walk(
    KIND: gl.constexpr,
    pointers,
    constants,
    smem_b,
    smem_m,
    first_words,
    lo,
    seg_w1,
    PER: gl.constexpr,
    GLU: gl.constexpr,
    AHEAD: gl.constexpr = 1,
):
    """The walk over PER units (super-blocks or blocks) from `lo`, each one's words loaded AHEAD units ahead
    of their use (1: one unit's in registers beside the one multiplied; 2: two, `GemvConfig.
    tc_units_ahead`), from `_first_words`: the tile's sums [64, 8] (and the up rows'). The products are
    taken in the same order either way, so the sums' bits do not depend on AHEAD."""
    ahead, ahead_up, second, second_up = first_words
    acc = gl.full([64, 8], 0.0, gl.float32, _MMA)
    acc_up = acc
    for i in gl.static_range(PER):
        words = ahead
        if AHEAD == 2:
            ahead = second
            if i + 2 < PER:
                second = _words_of(KIND, pointers, lo + i + 2, 0)
        elif i + 1 < PER:
            ahead = _words_of(KIND, pointers, lo + i + 1, 0)
        acc = _take(KIND, acc, words, constants, smem_b, smem_m, i)
        if GLU:
            words_up = ahead_up
            if AHEAD == 2:
                ahead_up = second_up
                if i + 2 < PER:
                    second_up = _words_of(KIND, pointers, lo + i + 2, seg_w1)
            elif i + 1 < PER:
                ahead_up = _words_of(KIND, pointers, lo + i + 1, seg_w1)
            acc_up = _take(KIND, acc_up, words_up, constants, smem_b, smem_m, i)
    return acc, acc_up


@gluon.jit
def _mins_positions():
    """Where the mins' A [64 rows, 4 t, 2 s, 2 r] takes its values from (`_mins_product`): the sub-block
    j = 2t + r of each element, the bit of its byte in a scale word, and whether it is K < 8 (s = 0; K >= 8
    are zeros)."""
    ma_t = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, _MINS_A))))
    ma_s = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, _MINS_A))))
    ma_r = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, _MINS_A))))
    jj = gl.expand_dims(gl.expand_dims(gl.expand_dims(2 * ma_t, 0), 2), 3) + gl.expand_dims(
        gl.expand_dims(gl.expand_dims(ma_r, 0), 1), 2
    )
    s_is0 = gl.expand_dims(gl.expand_dims(gl.expand_dims(ma_s, 0), 1), 3) == 0
    return jj, (jj % 4) * 8, s_is0


@gluon.jit
def _mins_operands(w_ptr, w_off, first, n_rows, row_words, PER: gl.constexpr = 1, WS: gl.constexpr = 1):
    """What a Q4_K walk's mins' mma reads its A with (`_mins_product`), laid out as that A [64 rows, 4 t,
    2 s, 2 r]: each row's words (clamped at the matrix's last row) and `_mins_positions`."""
    ma_r_rows = gl.arange(0, 64, layout=_MINS_ROW)
    mins_rows = w_ptr + w_off + _row_offsets(first, ma_r_rows, n_rows, row_words, SUPERBLOCK_WORDS, PER, WS)
    mins_rows = gl.expand_dims(gl.expand_dims(gl.expand_dims(mins_rows, 1), 2), 3)
    jj, jb, s_is0 = _mins_positions()
    return mins_rows, jj, jb, s_is0


@gluon.jit
def _q4_k_walk(
    w_ptr,
    x_ptr,
    w_off,
    first,
    n_rows,
    n_sb,
    lo,
    seg_w1,
    PER: gl.constexpr,
    PER_POW2: gl.constexpr,
    GLU: gl.constexpr,
    ZERO_COLUMNS: gl.constexpr,
    WAIT: gl.constexpr = 0,
    AHEAD: gl.constexpr = 1,
    WS: gl.constexpr = 1,
):
    """A program's walk over PER Q4_K super-blocks from `lo` (after the wait for the previous grid): the
    tile's products (and with GLU the up rows', seg_w1 words on) [64, 8], and the activations' scale.
    WAIT: the dependent-launch mode to wait for the previous grid with once the first super-block's words
    are asked for (`GemvConfig.tc_words_early`: weights, which no kernel of a step writes), 0 where the
    kernel waited before the walk. WS: a warp split (`_row_offsets`), each warp's PER from lo + s * PER."""
    row_words = n_sb * SUPERBLOCK_WORDS
    # Each row's words, clamped at the matrix's last row (its stores are masked), in the three layouts
    # the walk reads them in: the scalars a row, the code words as A wants them, the mins as their A.
    r = gl.arange(0, 64, layout=_ROWS)
    rows = w_ptr + w_off + _row_offsets(first, r, n_rows, row_words, SUPERBLOCK_WORDS, PER, WS)
    woff = _lane_word_pairs(w_ptr, w_off, first, n_rows, row_words, SUPERBLOCK_WORDS, PER, WS)
    mins_rows, jj, jb, s_is0 = _mins_operands(w_ptr, w_off, first, n_rows, row_words, PER, WS)
    first_words = _first_words("q4_k", (rows, woff, mins_rows), lo, seg_w1, PER, GLU, AHEAD)
    await_previous_grid(WAIT)
    # The program's activations, once: scaled by 2^(14 - e) (e: the exponent of their largest magnitude),
    # split hi + lo into shared memory in each sub-block's K order (natural element 8t + 4u + 2r + s of a
    # sub-block stored at 8t + 4u + 2s + r); the sub-block sums (scaled 2^-5 more: 32 values) for the mins.
    # A warp split's segments side by side in B's columns (`_shared_b`); PER_POW2 holds PER, the rest zeros.
    P: gl.constexpr = PER_POW2
    xs, up = _activations(x_ptr, lo * 256, P * 256, PER * 256, False, WS)
    xb = gl.permute(gl.reshape(xs, (WS, P * 8, 4, 2, 2, 2)), (1, 0, 2, 3, 5, 4))
    smem_b = _shared_b(gl.reshape(xb, (P * 8, WS, 4, 8)), P * 8, 256, ZERO_COLUMNS)
    sx = gl.sum(gl.reshape(xs, (WS, P, 4, 2, 32)), axis=4) * 0.03125  # [WS, P, t = j // 2, r = j % 2]
    sx = gl.permute(gl.join(sx, gl.zeros_like(sx)), (1, 0, 2, 4, 3))  # [P, WS, t, s, r]: s = 1 (K >= 8) zero
    smem_m = _shared_b(gl.reshape(sx, (P, WS, 4, 4)), P, 128, ZERO_COLUMNS)
    gl.thread_barrier()
    return _walk(
        "q4_k", (rows, woff, mins_rows), (jj, jb, s_is0), smem_b, smem_m, first_words, lo, seg_w1, PER, GLU,
        AHEAD,
    ) + (up,)  # fmt: skip


# Q4_K on int8 mma (`GemvConfig.tc_int8_codes`, the default): a sub-block's 4-bit codes are the A operand
# of `mma.sync.m16n8k32.s8` as they lie in their words (one `and` a word of four codes, a shift more for the
# high nibbles, instead of one instruction a code to make float16), and the activations, as integers
# X = x * up * 2^15 (|X| < 2^30), are B's columns 0-3 as four signed 8-bit limbs (X = sum_n limb_n 256^n,
# exact): one mma gives each row's four limb products, exact in int32; a row's 6-bit scale multiplies them
# there (sum over a super-block < 2^25), d once a super-block in float32, the limbs' weights 256^n 2^-15
# once a program. The mins stay the float16 mma of the other walk.
# The tile [64 rows, 4 t, 2 u] as [4 w, 2 h, 8 g, 4 t, 2 u] (row 16w + 8h + g): lane (g, t) holds words
# (t, u) of rows g and g + 8 (the `_WORDS` of a chunk), registers (u, h) in that order, which is the order
# the mma's fragments take them in (`_IMMA`); a sub-block's B [8 n, 4 t, 2 u] broadcast over w and h.
_L5 = gl.DistributedLinearLayout(
    reg_bases=[[0, 0, 0, 0, 1], [0, 1, 0, 0, 0]],
    lane_bases=[[0, 0, 0, 1, 0], [0, 0, 0, 2, 0], [0, 0, 1, 0, 0], [0, 0, 2, 0, 0], [0, 0, 4, 0, 0]],
    warp_bases=[[1, 0, 0, 0, 0], [2, 0, 0, 0, 0]],
    block_bases=[],
    shape=[4, 2, 8, 4, 2],
)
_R5 = gl.SliceLayout(3, gl.SliceLayout(4, _L5))  # a value a row [4 w, 2 h, 8 g]
_TU = gl.SliceLayout(0, gl.SliceLayout(0, gl.SliceLayout(0, _L5)))  # a value a (t, u) [4, 2]
_B5 = gl.SliceLayout(0, gl.SliceLayout(0, _L5))  # a sub-block's B words [8 n, 4 t, 2 u]
_PLAIN4 = gl.SwizzledSharedLayout(1, 1, 1, [3, 2, 1, 0])
# A sub-block's B words as read from shared memory [1, 8 n, 4 t, 2 u]: `_B5`'s lanes and register.
_B5_LOAD = gl.DistributedLinearLayout(
    reg_bases=[[0, 0, 0, 1]],
    lane_bases=[[0, 0, 1, 0], [0, 0, 2, 0], [0, 1, 0, 0], [0, 2, 0, 0], [0, 4, 0, 0]],
    warp_bases=[[0, 0, 0, 0], [0, 0, 0, 0]],
    block_bases=[],
    shape=[1, 8, 4, 2],
)


@gluon.jit
def _imma(acc, words, b, sc, H: gl.constexpr):
    """`acc` [4, 2, 8, 4, 2] int32 (column 2t + u of each row) plus `sc` (a row's scale) x the products of
    a sub-block's codes, nibble H of each chunk word of `words`, with its B words `b` (limb n of its
    activations in column n): one m16n8k32 int8 mma a warp. Operands in register order (u, h): A's
    a0..a3 are rows g, g + 8 at K 4t.. then at K 16 + 4t..; B's b0, b1 K 4t.. and 16 + 4t..; D's d0..d3
    rows g, g + 8 at columns 2t, 2t + 1."""
    NIB: gl.constexpr = (
        "and.b32 a0, $8, 0x0F0F0F0F; and.b32 a1, $10, 0x0F0F0F0F; "
        "and.b32 a2, $9, 0x0F0F0F0F; and.b32 a3, $11, 0x0F0F0F0F; "
        if H == 0
        else "shr.b32 a0, $8, 4; shr.b32 a1, $10, 4; shr.b32 a2, $9, 4; shr.b32 a3, $11, 4; "
        "and.b32 a0, a0, 0x0F0F0F0F; and.b32 a1, a1, 0x0F0F0F0F; "
        "and.b32 a2, a2, 0x0F0F0F0F; and.b32 a3, a3, 0x0F0F0F0F; "
    )
    return gl.inline_asm_elementwise(
        gl.constexpr(
            "{ .reg .b32 a0, a1, a2, a3, d0, d1, d2, d3; "
            + NIB
            + "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {d0, d1, d2, d3}, {a0, a1, a2, a3}, "
            "{$12, $13}, {0, 0, 0, 0}; mad.lo.s32 $0, d0, $16, $4; mad.lo.s32 $1, d1, $17, $5; "
            "mad.lo.s32 $2, d2, $18, $6; mad.lo.s32 $3, d3, $19, $7; }"
        ),
        "=r,=r,=r,=r,r,r,r,r,r,r,r,r,r,r,r,r,r,r,r,r",
        [acc, words, b, sc],
        dtype=gl.int32,
        is_pure=True,
        pack=4,
    )


@gluon.jit
def _limb_words(z0, z1, z2, z3):
    """Four words of four consecutive activations' biased limbs (`_int8_b`) -> their limb words: word n
    holds byte n of each (a 4 x 4 byte transpose, eight byte permutes)."""
    return gl.inline_asm_elementwise(
        "{ .reg .b32 t0, t1, t2, t3; prmt.b32 t0, $4, $5, 0x5140; prmt.b32 t1, $4, $5, 0x7362; "
        "prmt.b32 t2, $6, $7, 0x5140; prmt.b32 t3, $6, $7, 0x7362; prmt.b32 $0, t0, t2, 0x5410; "
        "prmt.b32 $1, t0, t2, 0x7632; prmt.b32 $2, t1, t3, 0x5410; prmt.b32 $3, t1, t3, 0x7632; }",
        "=r,=r,=r,=r,r,r,r,r",
        [z0, z1, z2, z3],
        dtype=(gl.int32, gl.int32, gl.int32, gl.int32),
        is_pure=True,
        pack=1,
    )


@gluon.jit
def _int8_b(xs, PER: gl.constexpr):
    """The program's scaled activations `xs` [PER * 256] as B words in shared memory [PER * 8, 8 n, 4 t,
    2 u] int32: sub-block j's word (n, t, u) holds limb n of its elements 8t + 4u .. + 3 (n < 4; n >= 4
    left unwritten: those result columns are weighted 0). X = trunc(x * up * 2^15) fits 31 bits; adding
    0x80 to each byte lane (0x80808080, no carries: the lanes' digits of X + 0x80808080 are the limbs + 128)
    and flipping each lane's top bit gives the signed limbs, sum_n limb_n 256^n = X exactly."""
    big = (xs * 32768.0).to(gl.int32)
    z = (big + -2139062144) ^ -2139062144  # 0x80808080 as int32; the add wraps
    z = gl.reshape(z, (PER * 8, 4, 2, 2, 2))  # [j, t, u, b1, b0]: element 8t + 4u + 2 b1 + b0
    z02, z13 = gl.split(z)  # b0 = 0, 1: [j, t, u, b1]
    z0, z2 = gl.split(z02)
    z1, z3 = gl.split(z13)
    w0, w1, w2, w3 = _limb_words(z0, z1, z2, z3)  # [j, t, u] each
    limbs = gl.join(gl.join(w0, w1), gl.join(w2, w3))  # [j, t, u, n0, n1]: n = 2 n1 + n0
    limbs = gl.permute(limbs, (0, 4, 3, 1, 2))  # [j, n1, n0, t, u]
    smem = gl.allocate_shared_memory(gl.int32, [PER * 8, 8, 4, 2], _PLAIN4)
    smem.slice(0, 4, dim=1).store(gl.reshape(limbs, (PER * 8, 4, 4, 2)))
    return smem


@gluon.jit
def _row5(first, n_rows):
    """The tile's rows [4 w, 2 h, 8 g] (row first + 16w + 8h + g), clamped at the matrix's last."""
    w = gl.arange(0, 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, _R5)))
    h = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(2, _R5)))
    g = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, _R5)))
    wh = gl.expand_dims(16 * w, 1) + 8 * gl.expand_dims(h, 0)
    rows = gl.expand_dims(wh, 2) + gl.expand_dims(gl.expand_dims(g, 0), 1)
    return gl.minimum(first + rows, n_rows - 1).to(gl.int64)


@gluon.jit
def _to5(v):
    """A value a row [4, 2, 8] (`_R5`) as [4, 2, 8, 1, 1] (`_L5`), to broadcast over (t, u)."""
    return gl.expand_dims(gl.expand_dims(v, 3), 4)


@gluon.jit
def _int8_words(rows5, codes5, rows, mins_rows, sb):
    """Super-block `sb`'s words for `_take_int8_superblock`: d and dmin, scale words 1 and 3 a row (`_R5`),
    the four chunks' code words (`_L5`), and, for the mins' mma, d and dmin (`_ROWS`) and words 2 and 3 in
    the mins' A layout."""
    base5 = rows5 + sb * SUPERBLOCK_WORDS
    codes = codes5 + sb * SUPERBLOCK_WORDS + 4
    mins = mins_rows + sb * SUPERBLOCK_WORDS
    return (
        gl.load(base5),
        gl.load(base5 + 1),
        gl.load(base5 + 3),
        gl.load(codes),
        gl.load(codes + 8),
        gl.load(codes + 16),
        gl.load(codes + 24),
        gl.load(rows + sb * SUPERBLOCK_WORDS),
        gl.load(mins + 2),
        gl.load(mins + 3),
    )


@gluon.jit
def _take_int8_superblock(acc, acc_m, words, jj, jb, s_is0, smem_i, smem_m, NTH: gl.constexpr):
    """`acc` [4, 2, 8, 4, 2] float32 (a row's limb sums by column) plus d x a super-block's eight int8 mmas
    scaled by their sub-blocks' scales in int32; `acc_m` [64, 8] less its mins' mma scaled by dmin."""
    dd5, s1, s3, c0, c1, c2, c3, dd, m2, m3 = words
    chunks = (c0, c1, c2, c3)
    acc_i = gl.zeros_like(c0)
    for c in gl.static_range(4):
        for h in gl.static_range(2):
            b = gl.reshape(smem_i.slice(NTH * 8 + 2 * c + h, 1).load(_B5_LOAD), (8, 4, 2))
            b = gl.expand_dims(gl.expand_dims(gl.convert_layout(b, _B5), 0), 0)
            acc_i = _imma(acc_i, chunks[c], b, _to5(_scale_bits(s1, s3, 2 * c + h)), h)
    d = dd5.to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    dmin = (dd >> 16).to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    acc_m = acc_m - _mins_product(m2, m3, jj, jb, s_is0, smem_m, NTH) * gl.expand_dims(32.0 * dmin, 1)
    return acc + _to5(d) * acc_i.to(gl.float32), acc_m


@gluon.jit
def _int8_total(acc, acc_m):
    """A row's sum [64] (`_ROWS`): the limbs' columns weighted 256^n 2^-15 (X's 2^15 undone; columns 4-7
    weighted 0), plus the mins' columns 0 and 1."""
    t = gl.arange(0, 4, layout=gl.SliceLayout(1, _TU))
    u = gl.arange(0, 2, layout=gl.SliceLayout(0, _TU))
    n = gl.expand_dims(2 * t, 1) + gl.expand_dims(u, 0)
    weight = gl.where(n < 4, gl.exp2((8 * n - 15).to(gl.float32)), 0.0)
    weight = gl.expand_dims(gl.expand_dims(gl.expand_dims(weight, 0), 0), 0)
    rows = gl.reshape(gl.sum(gl.sum(acc * weight, axis=4), axis=3), (64,))
    return gl.convert_layout(rows, _ROWS) + gl.sum(_used(acc_m), axis=1)


@gluon.jit
def _q4_k_int8_walk(
    w_ptr, x_ptr, w_off, first, r_rows, n_rows, n_sb, lo, seg_w1, PER: gl.constexpr, GLU: gl.constexpr,
    WAIT: gl.constexpr = 0, AHEAD: gl.constexpr = 1,
):  # fmt: skip
    """`_q4_k_walk` on int8 mma (the codes as they lie, the activations as four 8-bit limbs): each row's
    sum [64] (`_ROWS`; and with GLU the up rows'), and the activations' scale. Each super-block's words
    are loaded AHEAD ahead of their use, as `_walk` does."""
    row_words = n_sb * SUPERBLOCK_WORDS
    rows = w_ptr + w_off + gl.minimum(r_rows, n_rows - 1).to(gl.int64) * row_words
    rows5 = w_ptr + w_off + _row5(first, n_rows) * row_words
    t = gl.arange(0, 4, layout=gl.SliceLayout(1, _TU))
    u = gl.arange(0, 2, layout=gl.SliceLayout(0, _TU))
    tu = gl.expand_dims(
        gl.expand_dims(gl.expand_dims(gl.expand_dims(2 * t, 1) + gl.expand_dims(u, 0), 0), 0), 0
    )
    codes5 = _to5(rows5) + tu  # word 2t + u of a chunk, each row's
    mins_rows, jj, jb, s_is0 = _mins_operands(w_ptr, w_off, first, n_rows, row_words)
    ahead = _int8_words(rows5, codes5, rows, mins_rows, lo)
    ahead_up = ahead
    if GLU:
        ahead_up = _int8_words(rows5 + seg_w1, codes5 + seg_w1, rows + seg_w1, mins_rows + seg_w1, lo)
    second = ahead
    second_up = ahead_up
    if AHEAD == 2 and PER > 1:  # as `_first_words`
        second = _int8_words(rows5, codes5, rows, mins_rows, lo + 1)
        if GLU:
            second_up = _int8_words(
                rows5 + seg_w1, codes5 + seg_w1, rows + seg_w1, mins_rows + seg_w1, lo + 1
            )
    await_previous_grid(WAIT)  # as `_q4_k_walk`'s WAIT
    xs, up = _activations(x_ptr, lo * 256, PER * 256, PER * 256, True)
    smem_i = _int8_b(xs, PER)
    sx = gl.sum(gl.reshape(xs, (PER, 4, 2, 32)), axis=3) * 0.03125  # as `_q4_k_walk`'s mins
    sx = gl.permute(gl.join(sx, gl.zeros_like(sx)), (0, 1, 3, 2))
    smem_m = _shared_b(gl.reshape(sx, (PER, 1, 4, 4)), PER, 128, False)
    gl.thread_barrier()
    acc = gl.zeros_like(ahead[3]).to(gl.float32)
    acc_m = gl.full([64, 8], 0.0, gl.float32, _MMA)
    acc_up, acc_m_up = acc, acc_m
    for i in gl.static_range(PER):
        words = ahead
        if AHEAD == 2:
            ahead = second
            if i + 2 < PER:
                second = _int8_words(rows5, codes5, rows, mins_rows, lo + i + 2)
        elif i + 1 < PER:
            ahead = _int8_words(rows5, codes5, rows, mins_rows, lo + i + 1)
        acc, acc_m = _take_int8_superblock(acc, acc_m, words, jj, jb, s_is0, smem_i, smem_m, i)
        if GLU:
            words_up = ahead_up
            if AHEAD == 2:
                ahead_up = second_up
                if i + 2 < PER:
                    second_up = _int8_words(
                        rows5 + seg_w1, codes5 + seg_w1, rows + seg_w1, mins_rows + seg_w1, lo + i + 2
                    )
            elif i + 1 < PER:
                ahead_up = _int8_words(
                    rows5 + seg_w1, codes5 + seg_w1, rows + seg_w1, mins_rows + seg_w1, lo + i + 1
                )
            acc_up, acc_m_up = _take_int8_superblock(
                acc_up, acc_m_up, words_up, jj, jb, s_is0, smem_i, smem_m, i
            )
    return _int8_total(acc, acc_m), _int8_total(acc_up, acc_m_up), up


# `_q4_k_int8_tma_walk`: a program's share of a Q4_K matrix as TMA writes it, from the matrix viewed
# [super-blocks, rows, 36 words] (strides 36 and a row's words, `tma_descriptors`): the code words [PER, 64
# rows, 32] (128-byte rows, swizzled, so the 8 rows a warp's lanes read at once fall in different banks) and
# the head words (d and dmin, the scale words) [PER, 64, 4] (16-byte rows, unswizzled).
CODES_SMEM = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=32, rank=3)
HEADS_SMEM = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=3)
# A super-block's code words of the tile [1, 64, 32] (column 8c + 2t + u): lane (g, t) words (t, u) of
# each chunk c of rows g and g + 8, as `_L5` holds a chunk.
_CODES_LOAD = gl.DistributedLinearLayout(
    reg_bases=[[0, 0, 1], [0, 8, 0], [0, 0, 8], [0, 0, 16]],
    lane_bases=[[0, 0, 2], [0, 0, 4], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
    warp_bases=[[0, 16, 0], [0, 32, 0]],
    block_bases=[],
    shape=[1, 64, 32],
)
# A super-block's head words of the tile [1, 64, 4]: lane (g, t) rows g and g + 8 of its warp, every t
# alike, as `_R5`, `_ROWS` and `_MINS_ROW` hold a row's values.
_HEADS_LOAD = gl.DistributedLinearLayout(
    reg_bases=[[0, 8, 0], [0, 0, 1], [0, 0, 2]],
    lane_bases=[[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
    warp_bases=[[0, 16, 0], [0, 32, 0]],
    block_bases=[],
    shape=[1, 64, 4],
)


@gluon.jit
def tma_superblock_words(codes, heads, i: gl.constexpr):
    """Super-block i's words of a TMA tile in shared memory (`CODES_SMEM`, `HEADS_SMEM`), as
    `_int8_words` returns them from memory."""
    head = heads.slice(i, 1).load(_HEADS_LOAD)
    q0, q1 = gl.split(gl.reshape(head, (64, 2, 2)))  # column 2p + q: q0 holds words 0 and 2, q1 1 and 3
    w0, w2 = gl.split(q0)
    w1, w3 = gl.split(q1)
    words = gl.reshape(codes.slice(i, 1).load(_CODES_LOAD), (4, 2, 8, 4, 4, 2))  # [w, h, g, c, t, u]
    words = gl.reshape(gl.permute(words, (0, 1, 2, 4, 5, 3)), (4, 2, 8, 4, 2, 2, 2))  # [.., t, u, c1, c0]
    even, odd = gl.split(words)  # c0
    c0, c2 = gl.split(even)  # c1
    c1, c3 = gl.split(odd)
    m2 = gl.convert_layout(w2, _MINS_ROW)
    m3 = gl.convert_layout(w3, _MINS_ROW)
    return (
        gl.convert_layout(gl.reshape(w0, (4, 2, 8)), _R5),
        gl.convert_layout(gl.reshape(w1, (4, 2, 8)), _R5),
        gl.convert_layout(gl.reshape(w3, (4, 2, 8)), _R5),
        gl.convert_layout(c0, _L5),
        gl.convert_layout(c1, _L5),
        gl.convert_layout(c2, _L5),
        gl.convert_layout(c3, _L5),
        gl.convert_layout(w0, _ROWS),
        gl.expand_dims(gl.expand_dims(gl.expand_dims(m2, 1), 2), 3),
        gl.expand_dims(gl.expand_dims(gl.expand_dims(m3, 1), 2), 3),
    )


@gluon.jit
def tma_tiles_asked(codes_desc, heads_desc, codes_up_desc, heads_up_desc, first, lo, PER: gl.constexpr,
                    GLU: gl.constexpr):  # fmt: skip
    """Allocates a program's TMA tiles (GLU: the up rows' too) and one mbarrier a super-block, and asks for
    its share of the matrix, PER super-blocks from `lo` of rows `first` .., a copy of each super-block's
    code words and head words (GLU: and the up rows'): (codes, heads, codes_up, heads_up, barriers), barrier
    i's phase 0 complete once super-block i's bytes have landed, so the walk starts on the first while the
    rest are in flight."""
    codes = gl.allocate_shared_memory(gl.int32, [PER, 64, 32], CODES_SMEM)
    heads = gl.allocate_shared_memory(gl.int32, [PER, 64, 4], HEADS_SMEM)
    codes_up, heads_up = codes, heads
    if GLU:
        codes_up = gl.allocate_shared_memory(gl.int32, [PER, 64, 32], CODES_SMEM)
        heads_up = gl.allocate_shared_memory(gl.int32, [PER, 64, 4], HEADS_SMEM)
    bars = gl.allocate_shared_memory(gl.int64, [PER, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(PER):
        mbarrier.init(bars.index(i), count=1)
    fence_async_shared()
    # A super-block's bytes a barrier (GLU: gate's and up's); rows past the matrix land as zeros and count.
    EXPECTED: gl.constexpr = (2 if GLU else 1) * 64 * SUPERBLOCK_WORDS * 4
    for i in gl.static_range(PER):
        mbarrier.expect(bars.index(i), EXPECTED)
    for i in gl.static_range(PER):
        bar = bars.index(i)
        tma.async_copy_global_to_shared(codes_desc, [lo + i, first, 4], bar, codes.slice(i, 1))
        tma.async_copy_global_to_shared(heads_desc, [lo + i, first, 0], bar, heads.slice(i, 1))
        if GLU:
            tma.async_copy_global_to_shared(codes_up_desc, [lo + i, first, 4], bar, codes_up.slice(i, 1))
            tma.async_copy_global_to_shared(heads_up_desc, [lo + i, first, 0], bar, heads_up.slice(i, 1))
    return codes, heads, codes_up, heads_up, bars


@gluon.jit
def _q4_k_int8_tma_walk(
    codes_desc, heads_desc, codes_up_desc, heads_up_desc, x_ptr, first, lo, PER: gl.constexpr, GLU: gl.constexpr,
    WAIT: gl.constexpr = 0,
):  # fmt: skip
    """`_q4_k_int8_walk` with the program's whole share of the matrix (GLU: of gate and up) asked for at its
    start, before the wait for the previous grid (weights are never written during a step), by two TMA
    copies a super-block and matrix into shared memory (`tma_tiles_asked`), and each super-block's words
    read from there once its own copies have landed (`tma_superblock_words`): every byte in flight at once
    and none held in registers. The same words and products in the same order as the register walk: the
    same bits."""
    codes, heads, codes_up, heads_up, bars = tma_tiles_asked(
        codes_desc, heads_desc, codes_up_desc, heads_up_desc, first, lo, PER, GLU
    )
    jj, jb, s_is0 = _mins_positions()
    await_previous_grid(WAIT)
    xs, up = _activations(x_ptr, lo * 256, PER * 256, PER * 256, True)  # as `_q4_k_int8_walk`'s prologue
    smem_i = _int8_b(xs, PER)
    sx = gl.sum(gl.reshape(xs, (PER, 4, 2, 32)), axis=3) * 0.03125
    sx = gl.permute(gl.join(sx, gl.zeros_like(sx)), (0, 1, 3, 2))
    smem_m = _shared_b(gl.reshape(sx, (PER, 1, 4, 4)), PER, 128, False)
    gl.thread_barrier()
    acc = gl.full([4, 2, 8, 4, 2], 0.0, gl.float32, _L5)
    acc_m = gl.full([64, 8], 0.0, gl.float32, _MMA)
    acc_up, acc_m_up = acc, acc_m
    for i in gl.static_range(PER):
        mbarrier.wait(bars.index(i), 0)
        words = tma_superblock_words(codes, heads, i)
        acc, acc_m = _take_int8_superblock(acc, acc_m, words, jj, jb, s_is0, smem_i, smem_m, i)
        if GLU:
            words_up = tma_superblock_words(codes_up, heads_up, i)
            acc_up, acc_m_up = _take_int8_superblock(
                acc_up, acc_m_up, words_up, jj, jb, s_is0, smem_i, smem_m, i
            )
    for i in gl.static_range(PER):
        mbarrier.invalidate(bars.index(i))
    return _int8_total(acc, acc_m), _int8_total(acc_up, acc_m_up), up


def tma_descriptors(data: torch.Tensor, n_rows: int, n_sb: int) -> tuple:
    """`_q4_k_int8_tma_walk`'s view of a Q4_K matrix's bytes `data` (n_rows rows of n_sb super-blocks):
    [super-blocks, rows, 36 words] int32, a super-block's 64 rows' code words and head words a copy each."""
    row_words = n_sb * 36
    units = data.view(torch.int32).as_strided((n_sb, n_rows, 36), (36, row_words, 1))
    return tuple(
        TensorDescriptor(units, [n_sb, n_rows, 36], [36, row_words, 1], [1, 64, width], layout)
        for width, layout in ((32, CODES_SMEM), (4, HEADS_SMEM))
    )


@gluon.jit
def _activations(
    x_ptr, start, N: gl.constexpr, VALID: gl.constexpr, FOURS: gl.constexpr = False, WS: gl.constexpr = 1
):
    """The program's N activations from element `start` (the first VALID of them; the rest zeros), scaled
    by 2^(14 - e) (e: the exponent of their largest magnitude, so hi + lo float16 keep ~22 bits of each),
    and that scale; FOURS: 4 consecutive ones a thread (`_FLAT4`), else 2 (`_FLAT`). With a warp split
    WS > 1: [WS * N], run s the VALID from start + s * VALID (warp s's segment, `_row_offsets`) and zeros,
    all under one scale (the segments' sums are added in the epilogue)."""
    if FOURS:
        offsets = gl.arange(0, WS * N, layout=_FLAT4)
    else:
        offsets = gl.arange(0, WS * N, layout=_FLAT)
    if WS > 1:
        j = offsets % N
        xr = gl.load(x_ptr + start + (offsets // N) * VALID + j, mask=j < VALID, other=0.0)
    elif VALID < N:
        xr = gl.load(x_ptr + start + offsets, mask=offsets < VALID, other=0.0)
    else:
        xr = gl.load(x_ptr + start + offsets)
    amax = gl.max(gl.abs(xr), axis=0)
    e = ((amax.to(gl.uint32, bitcast=True) >> 23) & 0xFF).to(gl.int32) - 127
    e = gl.minimum(gl.maximum(e, -100), 100)  # an all-zero range (e = -127) keeps a finite scale
    up = ((141 - e).to(gl.uint32) << 23).to(gl.float32, bitcast=True)  # 2^(14 - e)
    return xr * up, up


@gluon.jit
def _q6_k_walk(
    w_ptr,
    d_ptr,
    x_ptr,
    w_off,
    first,
    n_rows,
    n_sb,
    lo,
    seg_w1,
    PER: gl.constexpr,
    PER_POW2: gl.constexpr,
    GLU: gl.constexpr,
    ZERO_COLUMNS: gl.constexpr,
    WAIT: gl.constexpr = 0,
    AHEAD: gl.constexpr = 1,
    WS: gl.constexpr = 1,
):
    """`_q4_k_walk` for a regrouped Q6_K matrix (`kernels.qtensor.CODES_THEN_SCALES`: each row's 52 code
    words a super-block, then the matrix's d halfwords, a row's n_sb in a run)."""
    row_words = n_sb * Q6_K_CODE_WORDS
    r = gl.arange(0, 64, layout=_ROWS)
    rows = w_ptr + w_off + _row_offsets(first, r, n_rows, row_words, Q6_K_CODE_WORDS, PER, WS)
    d_base = d_ptr + (w_off + n_rows.to(gl.int64) * row_words) * 2
    d_rows = d_base + _row_offsets(first, r, n_rows, n_sb, 1, PER, WS)
    words = _lane_words(w_ptr, w_off, first, n_rows, row_words, Q6_K_CODE_WORDS, PER, WS)
    first_words = _first_words("q6_k", (rows, words, d_rows), lo, seg_w1, PER, GLU, AHEAD)
    await_previous_grid(WAIT)
    # The activations in each 16-element sub-block's K order: natural element 4t + 2r + s stored at
    # [t, s, r] (K = 8s + 2t + r), hi and lo as B's columns 0 and 1 (a warp split's segment s: 2s, 2s + 1).
    P: gl.constexpr = PER_POW2
    xs, up = _activations(x_ptr, lo * 256, P * 256, PER * 256, False, WS)
    xb = gl.permute(gl.reshape(xs, (WS, P * 16, 4, 2, 2)), (1, 0, 2, 4, 3))
    smem_b = _shared_b(gl.reshape(xb, (P * 16, WS, 4, 4)), P * 16, 128, ZERO_COLUMNS)
    gl.thread_barrier()
    # (no mins: the Q6_K walk reads one shared buffer, passed for both)
    return _walk(
        "q6_k", (rows, words, d_rows), (), smem_b, smem_b, first_words, lo, seg_w1, PER, GLU, AHEAD
    ) + (up,)


@gluon.jit
def _lane_words(
    w_ptr, w_off, first, n_rows, row_words, unit_words, PER: gl.constexpr = 1, WS: gl.constexpr = 1
):
    """Pointers [64 rows, 4 t] to word t of each of the tile's rows (clamped at the matrix's last row; a
    warp split's segments, `_row_offsets`), laid out as a 16-code operand wants them: lane (row % 8, t)
    holds rows row and row + 8 (Q6_K, MXFP4)."""
    rq = gl.arange(0, 64, layout=gl.SliceLayout(1, _Q6_WORDS))
    tq = gl.arange(0, 4, layout=gl.SliceLayout(0, _Q6_WORDS))
    return (
        w_ptr
        + w_off
        + gl.expand_dims(_row_offsets(first, rq, n_rows, row_words, unit_words, PER, WS), 1)
        + gl.expand_dims(tq, 0)
    )


@gluon.jit
def _lane_word_pairs(
    w_ptr, w_off, first, n_rows, row_words, unit_words, PER: gl.constexpr = 1, WS: gl.constexpr = 1
):
    """Pointers [64 rows, 4 t, 2 u] to words 2t + u of each of the tile's rows (clamped; a warp split's
    segments, `_row_offsets`), laid out as a 32-code operand wants them: lane (row % 8, t) holds words 2t,
    2t + 1 of rows row and row + 8 (Q4_K's chunks, Q8_0)."""
    rw = gl.arange(0, 64, layout=gl.SliceLayout(1, gl.SliceLayout(2, _WORDS)))
    tw = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, _WORDS)))
    uw = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, _WORDS)))
    wrow = w_ptr + w_off + _row_offsets(first, rw, n_rows, row_words, unit_words, PER, WS)
    return (
        gl.expand_dims(gl.expand_dims(wrow, 1), 2)
        + gl.expand_dims(gl.expand_dims(2 * tw, 0), 2)
        + gl.expand_dims(gl.expand_dims(uw, 0), 1)
    )


@gluon.jit
def _block_walk(
    KIND: gl.constexpr,
    w_ptr,
    d_ptr,
    x_ptr,
    w_off,
    first,
    n_rows,
    n_blocks,
    lo,
    seg_w1,
    PER: gl.constexpr,
    PER_POW2: gl.constexpr,
    GLU: gl.constexpr,
    ZERO_COLUMNS: gl.constexpr,
    WAIT: gl.constexpr = 0,
    AHEAD: gl.constexpr = 1,
    WS: gl.constexpr = 1,
):
    """`_q4_k_walk` for a regrouped matrix of 32-element blocks (`kernels.qtensor.CODES_THEN_SCALES`: each
    row's code words a block, then the matrix's scales, a row's n_blocks in a run): Q8_0 (8 words a block,
    float16 d) or MXFP4 (4 words, an E8M0 byte), over PER blocks from `lo`. PER need not be a power of two
    (a row's 90 blocks at 2,880 wide): the prologue's PER_POW2 holds them, the blocks past PER zeros no mma
    reads. MXFP4's activations' scale carries its codes' 2^-15."""
    # each row's first scale of its segment, in units (blocks) from the matrix's scales
    scale_of_row = _row_offsets(first, gl.arange(0, 64, layout=_ROWS), n_rows, n_blocks, 1, PER, WS)
    if KIND == "q8_0":
        row_words = n_blocks * Q8_0_CODE_WORDS
        scales = d_ptr + (w_off + n_rows.to(gl.int64) * row_words) * 2 + scale_of_row
        words = _lane_word_pairs(w_ptr, w_off, first, n_rows, row_words, Q8_0_CODE_WORDS, PER, WS)
    else:
        row_words = n_blocks * MXFP4_CODE_WORDS
        bytes_ptr = w_ptr.to(gl.pointer_type(gl.uint8))
        scales = bytes_ptr + (w_off + n_rows.to(gl.int64) * row_words) * 4 + scale_of_row
        words = _lane_words(w_ptr, w_off, first, n_rows, row_words, MXFP4_CODE_WORDS, PER, WS)
    first_words = _first_words(KIND, (words, scales), lo, seg_w1, PER, GLU, AHEAD)
    await_previous_grid(WAIT)
    P: gl.constexpr = PER_POW2
    xs, up = _activations(x_ptr, lo * 32, P * 32, PER * 32, False, WS)
    if KIND == "q8_0":
        # as a Q4_K sub-block's: natural element 8t + 4u + 2r + s stored at 8t + 4u + 2s + r
        xb = gl.permute(gl.reshape(xs, (WS, P, 4, 2, 2, 2)), (1, 0, 2, 3, 5, 4))
    else:
        # natural element 16h + 4t + 2 half + k stored at 8t + 4h + 2k + half (`_b_tile` then reads
        # K = 16h + 8k + 2t + half, as `_mxfp4_a_tile` holds it)
        xb = gl.permute(gl.reshape(xs, (WS, P, 2, 4, 2, 2)), (1, 0, 3, 2, 5, 4))
        up = up * (1.0 / 32768.0)
    smem_b = _shared_b(gl.reshape(xb, (P, WS, 4, 8)), P, 256, ZERO_COLUMNS)
    gl.thread_barrier()
    return _walk(KIND, (words, scales), (), smem_b, smem_b, first_words, lo, seg_w1, PER, GLU, AHEAD) + (up,)


# A warp split's sums [WS segments, 64 / WS rows] with each thread holding a row's WS segments (added in a
# thread, in segment order).
_SEGMENTS_2 = gl.DistributedLinearLayout(
    reg_bases=[[1, 0]],
    lane_bases=[[0, 1], [0, 2], [0, 4], [0, 8], [0, 16]],
    warp_bases=[[0, 0], [0, 0]],
    block_bases=[],
    shape=[2, 32],
)
_SEGMENTS_4 = gl.DistributedLinearLayout(
    reg_bases=[[1, 0], [2, 0]],
    lane_bases=[[0, 1], [0, 2], [0, 4], [0, 8], [0, 0]],
    warp_bases=[[0, 0], [0, 0]],
    block_bases=[],
    shape=[4, 16],
)


@gluon.constexpr_function
def _segments_layout(WS):
    return _SEGMENTS_2 if WS == 2 else _SEGMENTS_4


@gluon.jit
def _segments_summed(total, WS: gl.constexpr):
    """A warp split's tile sums [64] (`_ROWS`; tile row s * (64 / WS) + i: row i's segment s, `_row_offsets`)
    -> each row's sum over its segments [64 / WS], added in segment order."""
    by_segment = gl.convert_layout(gl.reshape(total, (WS, 64 // WS)), _segments_layout(WS))
    return gl.sum(by_segment, axis=0)


@gluon.jit
def _tc_gemv_kernel(
    w_ptr,  # int32 words of segment 0's matrix; segments 1 and 2 (GLU: the up rows) seg_w1, seg_w2 words on
    d_ptr,  # regrouped Q6_K, Q8_0: the same bytes as int16 (each matrix's d halfwords follow its codes)
    x_ptr,  # the activation row (HAS_IDS: rows, in_features apart), float32
    y_ptr,
    bias_ptr,
    part_ptr,  # SPLITS > 1: the split partial sums [split, pairs, y_width * (2 with GLU)]
    count_ptr,  # SPLITS > 1: one arrival counter a row tile (and pair), zero between launches
    rms_ptr,
    nw_ptr,
    y2_ptr,
    res_ptr,
    n_rows,
    n_sb,  # units a row: super-blocks (Q4_K, Q6_K) or 32-element blocks (Q8_0, MXFP4)
    seg_w1,
    seg_w2,
    seg_b1,
    seg_b2,
    rows1,
    rows2,
    tile1,
    tile2,
    y_width,
    eps,
    glu_alpha,
    glu_limit,
    ids_ptr,  # HAS_IDS: the expert id of each token-expert pair (the grid's axis 2)
    x_group,  # HAS_IDS: pairs a row of x and of the rms rows (k for a MoE's gate and up, 1 for its down)
    expert_words,  # HAS_IDS: load words from one expert of the matrix to the next
    codes_desc,  # WORDS_BY_TMA: `tma_descriptors` of the matrix (GLU: the gate's), else None
    heads_desc,
    codes_up_desc,  # WORDS_BY_TMA with GLU: the up matrix's, else None
    heads_up_desc,
    FMT: gl.constexpr,  # one of FORMATS
    UNIT: gl.constexpr,  # elements a unit of FMT (UNITS)
    PER: gl.constexpr,  # units a program walks
    PER_POW2: gl.constexpr,  # PER rounded up to a power of two (the block formats' prologue)
    HAS_BIAS: gl.constexpr,
    SEGMENTS: gl.constexpr,
    RMS_BLOCK: gl.constexpr,
    RMS_BLOCKS: gl.constexpr,  # RMS_BLOCK reads that cover the rms row (unrolled: `_rms`)
    SCALED: gl.constexpr,
    GLU: gl.constexpr,
    GLU_OAI: gl.constexpr,
    HAS_RES: gl.constexpr,
    SPLITS: gl.constexpr,  # the grid's splits of K (axis 1); above 1, summed in the launch
    PDL: gl.constexpr = 0,
    HAS_IDS: gl.constexpr = 0,  # EXPERT_FORMATS: program axis 2 is a token-expert pair, rows of x and y its own
    ZERO_COLUMNS: gl.constexpr = 0,  # B's six unused columns stored as zeros (`_shared_b`), else unwritten
    INT8_CODES: gl.constexpr = 0,  # Q4_K: the codes as int8 mma operands (`_q4_k_int8_walk`)
    WORDS_EARLY: gl.constexpr = 0,  # a 2-D matrix: the walk waits once its first words are asked for
    AHEAD: gl.constexpr = 1,  # units whose words are in flight beside the one multiplied (1 or 2)
    WARP_SPLIT: gl.constexpr = 1,  # 1, 2 or 4: the row tile's K across its warps (`GemvConfig.tc_warp_split`)
    WORDS_BY_TMA: gl.constexpr = 0,  # Q4_K int8, one segment: the walk's words by TMA (`_q4_k_int8_tma_walk`)
    CLUSTER: gl.constexpr = 0,  # SPLITS > 1: a tile's splits are one cluster, summed in shared memory
):
    gl.static_assert(not (WORDS_EARLY and HAS_IDS), "an expert's words are known only after the wait")
    gl.static_assert(not (WARP_SPLIT > 1 and INT8_CODES), "a warp split walks Q4_K's float16 codes")
    gl.static_assert(
        not WORDS_BY_TMA or (INT8_CODES and SEGMENTS == 1 and not HAS_IDS), "TMA walks one Q4_K int8 matrix"
    )
    # Where the program waits for the previous grid: here, or with WORDS_EARLY inside the walk, after it
    # has asked for its first unit's words (`GemvConfig.tc_words_early`).
    # The TMA walk asks for its whole share before it waits, as WORDS_EARLY does for the first unit.
    WEIGHTS_EARLY: gl.constexpr = WORDS_EARLY or WORDS_BY_TMA
    WALK_WAIT: gl.constexpr = PDL if WEIGHTS_EARLY else 0
    REDUCE: gl.constexpr = SPLITS > 1
    PARTS: gl.constexpr = 2 if GLU else 1  # REDUCE: partial sums a row (GLU: the gate's, then the up's)
    gl.static_assert(not CLUSTER or REDUCE, "a cluster is a tile's splits")
    if CLUSTER:
        # Launched as clusters of SPLITS consecutive programs along axis 0 (`kernels.cluster_launch`): a
        # tile's splits, split s the cluster's CTA s.
        tile = gl.program_id(0) // SPLITS
        split = gl.program_id(0) % SPLITS
        gl.static_assert(WARP_SPLIT == 1, "a cluster's sums are the 64-row tile's (`_send_to_rank0`)")
    else:
        tile = gl.program_id(0)
        split = gl.program_id(1)
    # Segments as in `triton_gemv._qgemv_kernel`: the grid's tiles run through them in order.
    local_tile, col0, w_off, b_off, n_rows = segment_of(
        tile, n_rows, seg_w1, seg_w2, seg_b1, seg_b2, rows1, rows2, tile1, tile2, SEGMENTS
    )
    # A program's tile: 64 rows, or with a warp split 64 / WARP_SPLIT rows whose units its warps share,
    # each walking PER of them (`_row_offsets`).
    first = local_tile * (64 // WARP_SPLIT)
    lo = split * (WARP_SPLIT * PER)
    r_rows = first + gl.arange(0, 64, layout=_ROWS)
    await_previous_grid(0 if WEIGHTS_EARLY else PDL)
    if CLUSTER:
        # Rank 0's array of partial sums and the cluster barrier's first arrival, long before any program
        # waits on it (after the wait for the previous grid: ptxas branches around the arrival).
        cluster_array = _cluster_started(
            CLUSTER_SUMS_AT // 4 + SPLITS * PARTS * 64, (SPLITS - 1) * PARTS * 64 * 4
        )
    if HAS_IDS:
        # The pair's expert (read after the wait), its rows of x, y and the partial sums, its counters.
        pair = gl.program_id(2)
        expert = gl.load(ids_ptr + pair).to(gl.int64)
        w_off = w_off + expert * expert_words
        bias_ptr = bias_ptr + expert * n_rows  # (n_expert, n_rows) biases, GLU's up ones alike
        in_row = (pair // x_group).to(gl.int64) * (n_sb * UNIT)
        x_ptr = x_ptr + in_row
        rms_ptr = rms_ptr + in_row
        out_row = pair.to(gl.int64) * y_width
        y_ptr = y_ptr + out_row
        y2_ptr = y2_ptr + out_row
        res_ptr = res_ptr + out_row
        part_ptr = part_ptr + pair * (y_width * PARTS)
        count_ptr = count_ptr + pair * gl.num_programs(0)
    if FMT == "q4_k" and INT8_CODES and WORDS_BY_TMA:
        total, total_up, up = _q4_k_int8_tma_walk(
            codes_desc, heads_desc, codes_up_desc, heads_up_desc, x_ptr, first, lo, PER, GLU, WALK_WAIT
        )
    elif FMT == "q4_k" and INT8_CODES:
        total, total_up, up = _q4_k_int8_walk(
            w_ptr, x_ptr, w_off, first, r_rows, n_rows, n_sb, lo, seg_w1, PER, GLU, WALK_WAIT, AHEAD
        )
    elif FMT == "q4_k":
        acc, acc_up, up = _q4_k_walk(
            w_ptr, x_ptr, w_off, first, n_rows, n_sb, lo, seg_w1, PER, PER_POW2, GLU, ZERO_COLUMNS, WALK_WAIT,
            AHEAD, WARP_SPLIT,
        )  # fmt: skip
    elif FMT == "q8_0_codes_then_scales" or FMT == "mxfp4_codes_then_scales":
        KIND: gl.constexpr = "q8_0" if FMT == "q8_0_codes_then_scales" else "mxfp4"
        acc, acc_up, up = _block_walk(
            KIND,
            w_ptr,
            d_ptr,
            x_ptr,
            w_off,
            first,
            n_rows,
            n_sb,
            lo,
            seg_w1,
            PER,
            PER_POW2,
            GLU,
            ZERO_COLUMNS,
            WALK_WAIT,
            AHEAD,
            WARP_SPLIT,
        )
    else:
        acc, acc_up, up = _q6_k_walk(
            w_ptr, d_ptr, x_ptr, w_off, first, n_rows, n_sb, lo, seg_w1, PER, PER_POW2, GLU, ZERO_COLUMNS,
            WALK_WAIT, AHEAD, WARP_SPLIT,
        )  # fmt: skip
    launch_next_grid_late(PDL)
    if not (FMT == "q4_k" and INT8_CODES):  # the int8 walk's sums are a row's already
        total = gl.sum(_used(acc, WARP_SPLIT), axis=1)
        total_up = gl.sum(_used(acc_up, WARP_SPLIT), axis=1)
    total = total / up
    total_up = total_up / up
    if WARP_SPLIT > 1:  # each row's sum over its segments; the epilogue then runs on the tile's rows
        total = _segments_summed(total, WARP_SPLIT)
        total_up = _segments_summed(total_up, WARP_SPLIT)
        r_rows = first + gl.arange(
            0, 64 // WARP_SPLIT, layout=gl.SliceLayout(0, _segments_layout(WARP_SPLIT))
        )
    cols = col0 + r_rows
    row_mask = r_rows < n_rows
    # What the tail adds to the sums, asked for before the split's counter (every program, a few words):
    # it arrives while the counter's atomic travels, and the last program's tail waits only on the
    # partial sums and the rms row, asked for together (`_tail`).
    bias, bias_up = total, total_up  # placeholders where there is none
    if HAS_BIAS:
        bias = gl.load(bias_ptr + b_off + r_rows, mask=row_mask, other=0.0).to(gl.float32)
        if GLU:
            bias_up = gl.load(bias_ptr + seg_b1 + r_rows, mask=row_mask, other=0.0).to(gl.float32)
    res = total
    if HAS_RES:
        res = gl.load(res_ptr + cols, mask=row_mask, other=0.0)
    nw = total
    if SCALED:
        nw = gl.load(nw_ptr + cols, mask=row_mask, other=0.0)
    if CLUSTER:
        # Splits 1.. send their partial sums into rank 0's shared memory (`st.async`, each landing byte
        # counted on rank 0's mbarrier: no fence, no atomic), rank 0 waits for them all, sums every split's
        # in split order from zero as the last program to arrive below does (the same bits) and runs the
        # tail: one trip between SMs of a GPC instead of a fence, an atomic and the loads through L2.
        SPLIT_BYTES: gl.constexpr = PARTS * 64 * 4  # a split's sums in the array: [PARTS, 64] float32
        at = CLUSTER_SUMS_AT + split * SPLIT_BYTES
        if split > 0:
            _cluster_waited()
            _send_to_rank0(cluster_array, at, gl.convert_layout(total, _ROWS))
            if GLU:
                _send_to_rank0(cluster_array, at + 64 * 4, gl.convert_layout(total_up, _ROWS))
        else:
            _received(cluster_array)
            row = (r_rows - first) * 4
            own, own_up = total, total_up
            total = gl.zeros_like(own) + own
            total_up = gl.zeros_like(own) + own_up
            for s in gl.static_range(1, SPLITS):  # unrolled: every split's sums asked for at once
                total += shared_f32(cluster_array + (CLUSTER_SUMS_AT + s * SPLIT_BYTES) + row)
                if GLU:
                    total_up += shared_f32(
                        cluster_array + (CLUSTER_SUMS_AT + s * SPLIT_BYTES + 64 * 4) + row
                    )
            _tail(
                total, total_up, bias, bias_up, res, nw, rms_ptr, n_sb * UNIT, eps, y_ptr, y2_ptr, cols,
                row_mask, glu_alpha, glu_limit, HAS_BIAS, RMS_BLOCK, RMS_BLOCKS, SCALED, GLU, GLU_OAI, HAS_RES,
            )  # fmt: skip
    elif REDUCE:
        # Store this split's partial, count arrivals on the tile; the last to arrive sums every split's in
        # split order (the same order whoever arrives last) and resets the counter. The barrier orders all
        # threads' stores before the counter's release; `.cg` loads skip L1, which may hold stale lines.
        split_stride = y_width * PARTS  # from one split's partial sums to the next's (all pairs' between)
        if HAS_IDS:
            split_stride = gl.num_programs(2) * split_stride
        gl.store(part_ptr + split * split_stride + cols, total, mask=row_mask)
        if GLU:
            gl.store(part_ptr + split * split_stride + y_width + cols, total_up, mask=row_mask)
        gl.thread_barrier()
        arrived = gl.atomic_add(count_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLITS - 1:
            total = gl.zeros_like(total)
            total_up = gl.zeros_like(total)
            for s in gl.static_range(SPLITS):  # unrolled: every split's sums asked for at once
                part = part_ptr + s * split_stride + cols
                total += gl.load(part, mask=row_mask, other=0.0, cache_modifier=".cg")
                if GLU:
                    total_up += gl.load(part + y_width, mask=row_mask, other=0.0, cache_modifier=".cg")
            # relaxed: only a later launch reads the counter again, after this one (the kernel
            # boundary or dependent launch's wait orders it); acq_rel fenced the last program's tail.
            gl.atomic_xchg(count_ptr + tile, 0, sem="relaxed")
            _tail(
                total, total_up, bias, bias_up, res, nw, rms_ptr, n_sb * UNIT, eps, y_ptr, y2_ptr, cols,
                row_mask, glu_alpha, glu_limit, HAS_BIAS, RMS_BLOCK, RMS_BLOCKS, SCALED, GLU, GLU_OAI, HAS_RES,
            )  # fmt: skip
    else:
        _tail(
            total, total_up, bias, bias_up, res, nw, rms_ptr, n_sb * UNIT, eps, y_ptr, y2_ptr, cols, row_mask,
            glu_alpha, glu_limit, HAS_BIAS, RMS_BLOCK, RMS_BLOCKS, SCALED, GLU, GLU_OAI, HAS_RES,
        )  # fmt: skip


@gluon.constexpr_function
def _cluster_start_asm(words, rank0_bytes):
    # A static shared array (the kernel's dynamic one is Triton's to lay out) whose address is the same in
    # every CTA, so that `mapa` turns it into rank 0's: an mbarrier (words 0-1), then the partial sums (from
    # word 4). Thread 0 of each CTA initialises the mbarrier for one arrival; thread 0 of rank 0 makes that
    # arrival at once, expecting the bytes the other splits will send. The init is fenced for the cluster,
    # then every thread arrives at the cluster barrier (relaxed: it only says the CTA has started).
    return (
        f"{{ .shared .align 16 .b32 cluster_sums[{words}]; .reg .pred first, rank0; .reg .u32 rank, thread;"
        " mov.u32 $0, cluster_sums; mov.u32 rank, %cluster_ctarank; mov.u32 thread, %tid.x;"
        " setp.eq.u32 first, thread, 0; setp.eq.and.u32 rank0, rank, 0, first;"
        " @first mbarrier.init.shared::cta.b64 [cluster_sums], 1;"
        f" @rank0 mbarrier.arrive.expect_tx.shared::cta.b64 _, [cluster_sums], {rank0_bytes};"
        " fence.mbarrier_init.release.cluster; barrier.cluster.arrive.relaxed.aligned; }"
    )


# Bytes: where the partial sums start in the cluster's array (after its mbarrier).
CLUSTER_SUMS_AT = gl.constexpr(16)


@gluon.jit
def _cluster_started(WORDS: gl.constexpr, RANK0_BYTES: gl.constexpr):
    """The CLUSTER form's start: the shared address of this CTA's `WORDS`-word cluster array (rank 0's
    receives the partial sums, `_cluster_start_asm`), after this thread's first arrival at the cluster
    barrier. `RANK0_BYTES`: the bytes rank 0 receives from the other splits."""
    return gl.inline_asm_elementwise(
        _cluster_start_asm(WORDS, RANK0_BYTES), "=r", [], dtype=gl.int32, is_pure=False, pack=1
    )


@gluon.jit
def _cluster_waited():
    """Wait until every CTA of the cluster has arrived once (`_cluster_started`): rank 0's mbarrier is set."""
    gl.inline_asm_elementwise(
        "barrier.cluster.wait.aligned; mov.u32 $0, 0;", "=r", [], dtype=gl.int32, is_pure=False, pack=1
    )


@gluon.jit
def _send_to_rank0(array, offset, values):
    """Split s > 0: send `values` (float32 [64], `_ROWS`) to rank 0's array at byte `offset` + the row's
    (one lane of each four holding a row sends it: 256 bytes), completing that many bytes of rank 0's
    mbarrier. After `_cluster_waited`."""
    rows = gl.arange(0, 64, layout=_ROWS)
    gl.inline_asm_elementwise(
        "{ .reg .u32 lane, at, bar; .reg .pred owner; mov.u32 lane, %laneid; and.b32 lane, lane, 3;"
        " setp.eq.u32 owner, lane, 0; mapa.shared::cluster.u32 at, $1, 0; mapa.shared::cluster.u32 bar, $2, 0;"
        " @owner st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [at], $3, [bar]; } mov.u32 $0, 0;",
        "=r,r,r,r",
        [array + offset + rows * 4, gl.full([64], 0, gl.int32, _ROWS) + array, values],
        dtype=gl.int32,
        is_pure=False,
        pack=1,
    )


@gluon.jit
def _received(array):
    """Rank 0: wait until its mbarrier's phase 0 completes (every byte sent to it has landed)."""
    gl.inline_asm_elementwise(
        "{ .reg .pred done; cluster_sums_wait: mbarrier.try_wait.parity.shared::cta.b64 done, [$1], 0;"
        " @!done bra cluster_sums_wait; } mov.u32 $0, 0;",
        "=r,r",
        [array],
        dtype=gl.int32,
        is_pure=False,
        pack=1,
    )


@gluon.jit
def _tail(
    total, total_up, bias, bias_up, res, nw, rms_ptr, n, eps, y_ptr, y2_ptr, cols, row_mask, glu_alpha,
    glu_limit, HAS_BIAS: gl.constexpr, RMS_BLOCK: gl.constexpr, RMS_BLOCKS: gl.constexpr,
    SCALED: gl.constexpr, GLU: gl.constexpr, GLU_OAI: gl.constexpr, HAS_RES: gl.constexpr,
):  # fmt: skip
    """The epilogue of a tile's summed rows: 1/rms, bias, residual, GLU, the store and the scaled copy. In
    a split launch it is called right after the partial sums' loads are issued (no barrier or wait
    between), so the rms row's reads issue beside them; the bias, residual and norm weight come loaded."""
    if RMS_BLOCK > 0:
        r = _rms(rms_ptr, n, eps, RMS_BLOCK, RMS_BLOCKS)
        total = total / r
        total_up = total_up / r
    if HAS_BIAS:
        total += bias
        if GLU:
            total_up += bias_up
    if HAS_RES:
        total += res
    if GLU:
        total = gated(total, total_up, GLU_OAI, glu_alpha, glu_limit)
    gl.store(y_ptr + cols, total, mask=row_mask)
    if SCALED:
        gl.store(y2_ptr + cols, total * nw, mask=row_mask)


def serves(fmt: str, n_out_rows: int, in_features: int, has_expert_ids: bool, device: torch.device) -> bool:
    """Whether a launch of `fmt` can run here: a layout of FORMATS, rows of whole units, on an sm_80+ GPU
    (mma.sync's float16 shape); one activation row of a 2-D matrix, or for EXPERT_FORMATS the token-expert
    pairs of a 3-D one (as many as `triton_moe.MAX_PAIRS` lets through). Whether it should is the caller's
    part (`GemvConfig.tensor_cores`)."""
    rows_served = fmt in EXPERT_FORMATS if has_expert_ids else n_out_rows == 1
    return (
        fmt in UNITS
        and rows_served
        and in_features % UNITS[fmt] == 0
        and device.type == "cuda"
        and _has_mma_sync(device.index if device.index is not None else torch.cuda.current_device())
    )


@functools.lru_cache(maxsize=8)
def _has_mma_sync(device_index: int) -> bool:
    """sm_80 or later, asked once a device (`serves` runs at every launch)."""
    return torch.cuda.get_device_capability(device_index)[0] >= 8


@functools.lru_cache(maxsize=8)
def _has_tma(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def _unit_choices(fmt: str) -> tuple[int, ...]:
    """The walks a program of `fmt` can take, in units, longest first."""
    return PER_CHOICES if UNITS[fmt] == SUPERBLOCK else tuple(range(MAX_BLOCKS_PER_PROGRAM, 0, -1))


def units_per_program(
    fmt: str, n_units: int, tiles: int, sm_count: int, *, blocks_in_one_wave: bool = False
) -> int:
    """PER, the units a program walks, dividing the row's (`tiles`: the grid's row tiles, times its
    token-expert pairs).

    Super-blocks (Q4_K, Q6_K; 1, 2 or 4): the fewest that keep the grid within one wave of four programs an
    SM (the int8 Q4_K gate/up walk held 103 registers then: four resident; 86 now), else 4. Timed in the decode step on
    an H200 (2026-12-07, as `step_ab`'s variant "tensor-core grids within one wave" then): Phi-3 **+7.0 %**,
    the same tokens (gate/up 4 super-blocks, 384 programs, where the rule before gave 2: 768 programs in
    1.45 waves; q/k/v 4, the output projection 2, down 4); on an H100 the rule before, `step_ab`'s
    "tensor-core walks by the rule before 2026-12-07" now, −10.0 %. `units_per_program_before` is that rule.
    Blocks (Q8_0, MXFP4; 32 down to 1: a row's 90 blocks at 2,880 wide: 30, 18, 15, 10, 9, ...): the most
    that still leave the grid about four programs an SM, not yet timed against other choices; with
    `blocks_in_one_wave` (`GemvConfig.tc_blocks_in_one_wave`) the fewest whose splits a thread-block
    cluster holds (`cluster_launch.MAX_PORTABLE_SIZE`) and whose grid fits one wave of four programs an SM,
    where one does (GPT-OSS's q/k/v 15 blocks in 6 splits and its output projection 16 in 8, where the rule
    above gives 10 in 9 and 8 in 16, splits the clusters do not hold), else the rule above."""
    if UNITS[fmt] == SUPERBLOCK:
        dividing = [per for per in _unit_choices(fmt) if n_units % per == 0]
        within = [per for per in dividing if tiles * (n_units // per) <= 4 * sm_count]
        return within[-1] if within else dividing[0]
    if blocks_in_one_wave:
        clustered = [
            per
            for per in _unit_choices(fmt)
            if n_units % per == 0
            and 1 < n_units // per <= cluster_launch.MAX_PORTABLE_SIZE
            and tiles * (n_units // per) <= 4 * sm_count
        ]
        if clustered:
            return clustered[-1]
    return units_per_program_before(fmt, n_units, tiles, sm_count)


WARP_SPLITS = (1, 2, 4)  # `GemvConfig.tc_warp_split`: the row tile's K across 1, 2 or 4 of its warps
MAX_UNITS_PER_WARP = 8  # a warp split's walk: units a warp walks at most


def warp_split_for(n_units: int, warp_split: int) -> int:
    """The warp split a launch takes: `warp_split` where it divides the row's units, else 1 (none). (Q4_K's
    walk with a split is the float16 one: asking for both the split and int8 codes keeps the split.)"""
    if warp_split not in WARP_SPLITS:
        raise ValueError(f"tensor_core_gemv: a warp split is one of {WARP_SPLITS}, not {warp_split}")
    return warp_split if n_units % warp_split == 0 else 1


def rows_per_tile(warp_split: int) -> int:
    """A program's rows: 64, or 64 / warp_split with its warps sharing each row's units."""
    return ROWS_PER_PROGRAM // warp_split


def row_tiles(fmt: str, out_rows: list[int], in_features: int, warp_split: int) -> list[int]:
    """The row tiles a launch of `fmt` takes over each segment's `out_rows` (one pair's; the split counters
    hold one a tile and pair): 64 rows a tile, or fewer with the warp split it takes (`warp_split_for`)."""
    rows = rows_per_tile(warp_split_for(in_features // UNITS[fmt], warp_split))
    return [triton.cdiv(r, rows) for r in out_rows]


def units_per_warp(n_units: int, tiles: int, sm_count: int, warp_split: int) -> int:
    """With a warp split (`GemvConfig.tc_warp_split`): the units each warp walks (any count up to
    MAX_UNITS_PER_WARP dividing the row's units / warp_split, the prologue padding it to a power of two):
    the most that still give the grid two programs an SM (eight warps streaming), so the fewest splits of
    K across programs (none where the tiles alone are enough: Phi-3's q/k/v and gate/up), else one."""
    per_segment = n_units // warp_split
    choices = [p for p in range(min(per_segment, MAX_UNITS_PER_WARP), 0, -1) if per_segment % p == 0]
    for per in choices:
        if tiles * (per_segment // per) >= 2 * sm_count:
            return per
    return choices[-1]


def units_per_program_before(fmt: str, n_units: int, tiles: int, sm_count: int) -> int:
    """The walk rule before 2026-12-07 (the block formats' still): the most units a program walks, dividing
    the row's, that still leave the grid about four programs an SM. For super-blocks it was calibrated
    alone on Phi-3's shapes as plain GEMVs; the gate/up GLU launch has half the row tiles of its 16,384-row
    tensor, so in the step it took 2 super-blocks (1.45 waves), not the 4 timed fastest alone."""
    for per in _unit_choices(fmt):
        if n_units % per == 0 and tiles * (n_units // per) >= 4 * sm_count:
            return per
    return 1


def launch(
    fmt: str,
    x: torch.Tensor,
    w_data: torch.Tensor,
    out_rows: list[int],
    in_features: int,
    *,
    segment_words: list[int],
    bias: torch.Tensor | None,
    segment_bias: list[int],
    glu: bool,
    glu_oai: tuple[float, float] | None,
    rms_of: torch.Tensor | None,
    eps: float,
    rms_block: int,
    scaled_by: torch.Tensor | None,
    residual: torch.Tensor | None,
    counters: torch.Tensor | None,
    sm_count: int,
    expert_ids: torch.Tensor | None = None,
    x_group: int = 1,
    expert_words: int = 0,
    zero_columns: bool = False,
    int8_codes: bool = False,
    max_registers: int | None = None,
    words_early: bool = False,
    units: int | None = None,
    units_ahead: int = 1,
    warp_split: int = 1,
    words_by_tma: bool = False,
    up_data: torch.Tensor | None = None,
    cluster_splits: bool = False,
    blocks_in_one_wave: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One launch of `fmt` (one of FORMATS) for `triton_gemv.launch_segments`, its arguments resolved there
    (segments 1 and 2, or GLU's up rows as segment 1, as load-word offsets from `w_data`; their biases as
    element offsets): (y [pairs, sum(out_rows)], y * scaled_by or None). With `expert_ids` (EXPERT_FORMATS):
    pair m reads expert expert_ids[m] (`expert_words` load words apart) and row m // x_group of x (rows
    `in_features` apart) and of `rms_of`. None if a split launch has no arrival counters (the first launch
    inside a capture): the caller's loop serves it. `zero_columns`: the prologue stores B's six unused
    columns as zeros (`GemvConfig.tc_zero_columns`), else leaves them unwritten. `int8_codes`: Q4_K's walk
    on int8 mma (`GemvConfig.tc_int8_codes`, `_q4_k_int8_walk`). `max_registers`: ptxas's maxnreg for the
    launch (`GemvConfig.tc_max_registers`), None for the compiler's choice. `words_early`: under dependent
    launch, a 2-D matrix's programs ask for their first unit's words before they wait for the previous
    grid (`GemvConfig.tc_words_early`; an expert's are known only after it). `units`: the units a program
    walks where it divides the row's (`GemvConfig.tc_units_per_program`), else `units_per_program`'s.
    `units_ahead`: the units whose words a program has in flight beside the one it multiplies, 1 or 2
    (`GemvConfig.tc_units_ahead`). `warp_split`: the row tile's units across 1, 2 or 4 of its warps
    (`GemvConfig.tc_warp_split`, `warp_split_for`), `units` then the units a warp walks. `words_by_tma`: a Q4_K
    int8 walk of one 2-D matrix (GLU: `up_data`, the up matrix's bytes, beside the gate's `w_data`) asks
    for each program's whole share by TMA (`GemvConfig.tc_words_by_tma`, `_q4_k_int8_tma_walk`; sm_90+).
    `cluster_splits`: a split launch of at most `cluster_launch.MAX_PORTABLE_SIZE` splits, without a warp
    split, runs each tile's splits as one cluster, summed through rank 0's shared memory
    (`GemvConfig.tc_cluster_splits`; sm_90+, needs no counters). `blocks_in_one_wave`: a block format's walk
    by `units_per_program`'s clustered one-wave rule (`GemvConfig.tc_blocks_in_one_wave`)."""
    if units_ahead not in (1, 2):
        raise ValueError(f"tensor_core_gemv.launch: units_ahead is 1 or 2, not {units_ahead}")
    pairs = expert_ids.numel() if expert_ids is not None else 1
    n_units = in_features // UNITS[fmt]
    tiles = row_tiles(fmt, out_rows, in_features, warp_split)
    warp_split = warp_split_for(n_units, warp_split)
    if warp_split > 1:
        per = units_per_warp(n_units, sum(tiles) * pairs, sm_count, warp_split)
        if units is not None and 0 < units <= MAX_UNITS_PER_WARP and (n_units // warp_split) % units == 0:
            per = units
    else:
        per = units_per_program(
            fmt, n_units, sum(tiles) * pairs, sm_count, blocks_in_one_wave=blocks_in_one_wave
        )
        if units is not None and units in _unit_choices(fmt) and n_units % units == 0:
            per = units
    split = n_units // (warp_split * per)
    clustered = (
        cluster_splits
        and 1 < split <= cluster_launch.MAX_PORTABLE_SIZE
        and warp_split
        == 1  # (a warp split's sums are a tile of 64 / warp_split rows: not the cluster's form)
        and cluster_launch.supported(x.device)
    )
    if split > 1 and not clustered and (counters is None or sum(tiles) * pairs > counters.numel()):
        return None
    y_width = sum(out_rows)
    starts = [sum(tiles[:i]) for i in range(len(tiles))] + [sum(tiles)] * (3 - len(tiles))
    rows = out_rows + [0] * (3 - len(out_rows))
    parts = 2 if glu else 1
    y = torch.empty(pairs, y_width, dtype=torch.float32, device=x.device)
    part = y.new_empty(split, pairs, y_width * parts) if split > 1 and not clustered else y
    y2 = y.new_empty(pairs, y_width) if scaled_by is not None else None
    # Clustered: grid x is the tiles, each launched as a cluster of its `split` programs (`cluster_launch`).
    along_k = 1 if clustered else split
    grid = (sum(tiles), along_k, pairs) if expert_ids is not None else (sum(tiles), along_k)
    int8 = int8_codes and fmt == "q4_k" and warp_split == 1
    by_tma = (
        words_by_tma
        and int8
        and expert_ids is None
        and len(out_rows) == 1
        and (not glu or up_data is not None)
        and all(d.data_ptr() % 16 == 0 for d in (w_data, up_data) if d is not None)  # TMA's alignment
        and _has_tma(x.device.index if x.device.index is not None else torch.cuda.current_device())
    )
    descs = (None,) * 4
    if by_tma:
        descs = tma_descriptors(w_data, out_rows[0], n_units)
        descs += tma_descriptors(up_data, out_rows[0], n_units) if glu else (None, None)
    args = (
        w_data.view(torch.int32),
        w_data.view(torch.int16),
        x,
        y,
        bias if bias is not None else y,
        part,
        counters if split > 1 and not clustered else y,
        rms_of if rms_of is not None else y,
        scaled_by if scaled_by is not None else y,
        y2 if y2 is not None else y,
        residual if residual is not None else y,
        out_rows[0],
        n_units,
        segment_words[0],
        segment_words[1],
        segment_bias[0],
        segment_bias[1],
        rows[1],
        rows[2],
        starts[1],
        starts[2],
        y_width,
        eps,
        glu_oai[0] if glu_oai is not None else 1.0,
        glu_oai[1] if glu_oai is not None else 0.0,
        expert_ids if expert_ids is not None else y,
        x_group,
        expert_words,
        *descs,
    )
    constants = dict(
        FMT=fmt,
        UNIT=UNITS[fmt],
        PER=per,
        PER_POW2=triton.next_power_of_2(per),
        HAS_BIAS=bias is not None,
        SEGMENTS=len(out_rows),
        RMS_BLOCK=rms_block if rms_of is not None else 0,
        RMS_BLOCKS=triton.cdiv(in_features, rms_block) if rms_of is not None else 0,
        SCALED=scaled_by is not None,
        GLU=glu,
        GLU_OAI=glu_oai is not None,
        HAS_RES=residual is not None,
        SPLITS=split,
        HAS_IDS=expert_ids is not None,
        ZERO_COLUMNS=zero_columns,
        INT8_CODES=int8,
        WORDS_EARLY=words_early and expert_ids is None and dependent_launch.active(),
        AHEAD=units_ahead,
        WARP_SPLIT=warp_split,
        WORDS_BY_TMA=by_tma,
        CLUSTER=clustered,
        num_warps=NUM_WARPS,
        maxnreg=max_registers,
    )
    if clustered:
        cluster_launch.launch(
            _tc_gemv_kernel, grid, split, *args, **constants, **dependent_launch.launch_kwargs()
        )
    else:
        _tc_gemv_kernel[grid](*args, **constants, **dependent_launch.launch_kwargs())
    return y, y2
