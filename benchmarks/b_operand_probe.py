"""What the tensor-core GEMV's activation prologue, its split-K tail and its loads ahead cost a launch: the
Q4_K int8 walk with its B operands formed in the program, against the same walk loading them ready-made,
without the tail, and with its words asked for all at once by TMA.

    python -m benchmarks.b_operand_probe [--out DIR] [--replays N]

Each program of `tensor_core_gemv`'s Q4_K int8 walk (`_q4_k_int8_walk`) first makes its B operands from
the activation row: it loads its range, reduces the largest magnitude across its four warps, splits each
scaled value into four 8-bit limbs, stores them to shared memory and meets its warps at a barrier before
the first mma (Nsight Compute's PC samples put 21-41 % of the launches' warp time there, `benchmarks.
ncu_where`). Were the activations' producer (the previous launch's tail) to write them already in B's
layout, each program would load its fragments instead. This probe measures that before anyone builds it:

- `worker launch`: the worker's default launch of the product (`triton_gemv.launch`), the anchor;
- `worker launch, words by TMA`: the same with `GemvConfig.tc_words_by_tma` (`tensor_core_gemv.
  _q4_k_int8_tma_walk`: each program's whole share asked for at its start by TMA, its B formed as ever);
- `worker launch, splits by counters`: the same with `GemvConfig.tc_cluster_splits` off (the default
  before 2026-12-07): a tile's splits summed through L2 by the last program to arrive at its counter,
  not by split 0 of a thread-block cluster from its shared memory (sm_90+; elsewhere both are this);
- `B formed`: `_probe_kernel` with the product's walk, prologue included, and a split-K tail like the
  product's (partials, arrival counter, the last program sums them in split order);
- `B loaded`: the same kernel and tail, the walk loading each super-block's B words and the mins' operand
  from a buffer (with the words of the unit ahead), its scale one load: no reduction across warps, no
  shared memory, no barrier;
- `B loaded, words by TMA`: the same, the program's whole share of the matrix asked for at its start by
  two TMA copies a unit (code words, then the d, dmin and scale words) into shared memory and each unit's
  words read from there once its own copies have landed (`tensor_core_gemv.tma_tiles_asked`): every byte
  in flight at once, no registers held for it (the register walk has one unit
  ahead, `tc_units_ahead` 2 costs a program slot an SM);
- `B loaded, no split tail`: the same, each split storing its partial sums and ending (no arrival counter,
  nobody sums them), so the split-K tail's cost is the difference;
- `loads alone`: `chain_probe`'s read loop over the same bytes with as many programs, no decoding: what is
  left beyond that is the walk's own work.

The loaded forms read a buffer of zeros: their sums are not the product's, and only their time means anything (no
branch depends on a value). `B formed` is checked against the worker's launch: its sums must be the same
bits (the same walk, the same split order), and so must the worker's TMA form (the same words, read from
shared memory) and its form summing the splits by counters (the same sums in the same order), which the
report states. The matrices are Phi-3-mini's Q4_K
products, as many copies of each as exceed the L2, each form's launches in a CUDA graph (`kernels_gemv.
time_launches`). Writes `b_operand_probe.json` and `.md` to `--out`. CUDA (sm_80+) only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

from benchmarks.chain_probe import BLOCK_WORDS, _read_kernel
from benchmarks.kernels_gemv import L2_FLUSH_BYTES, time_launches
from benchmarks.runinfo import copy_bandwidth, publish, run_info
from kernels import tensor_core_gemv as tcg
from kernels.formats import GGMLType
from kernels.triton_common import gated

# Phi-3-mini's Q4_K products: (name, output rows, input features, GLU: gate and up rows in one matrix).
PHI3_PRODUCTS = (
    ("attn_qkv", 9216, 3072, False),
    ("attn_output", 3072, 3072, False),
    ("ffn_up (gate+up)", 16384, 3072, True),
    ("ffn_down", 3072, 8192, False),
)
# The forms timed, in the report's order.
FORMS = (
    "worker launch",
    "worker launch, words by TMA",
    "worker launch, splits by counters",
    "B formed",
    "B loaded",
    "B loaded, words by TMA",
    "B loaded, no split tail",
    "loads alone",
)
SUBBLOCK_B_WORDS = gl.constexpr(
    32
)  # a sub-block's B words in the buffer: [4 limbs n, 4 t, 2 u] (n >= 4 read as n - 4)
MINS_WORDS = gl.constexpr(
    64
)  # a super-block's mins operand: 128 float16, read as the product's shared buffer is


@gluon.jit
def _b_words(b_ptr, q):
    """Sub-block `q`'s B words [8 n, 4 t, 2 u] (`tcg._B5`) from the buffer (limb n % 4 in column n: the
    product leaves columns 4-7 unwritten and weighs them 0)."""
    n = gl.arange(0, 8, layout=gl.SliceLayout(1, gl.SliceLayout(2, tcg._B5)))
    t = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, tcg._B5)))
    u = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, tcg._B5)))
    off = gl.expand_dims(gl.expand_dims((n % 4) * 8, 1), 2)
    off = off + gl.expand_dims(gl.expand_dims(2 * t, 0), 2) + gl.expand_dims(gl.expand_dims(u, 0), 1)
    return gl.load(b_ptr + q * SUBBLOCK_B_WORDS + off)


@gluon.jit
def _unit_b(b_ptr, m_ptr, sb):
    """Super-block `sb`'s eight sub-blocks' B words and its mins' operand [1, 128] (`tcg._M_LOAD`)."""
    r = gl.arange(0, 1, layout=gl.SliceLayout(1, tcg._M_LOAD))
    c = gl.arange(0, 128, layout=gl.SliceLayout(0, tcg._M_LOAD))
    mins = gl.load(m_ptr + sb * (2 * MINS_WORDS) + gl.expand_dims(r, 1) * 128 + gl.expand_dims(c, 0))
    q = sb * 8
    return (
        _b_words(b_ptr, q),
        _b_words(b_ptr, q + 1),
        _b_words(b_ptr, q + 2),
        _b_words(b_ptr, q + 3),
        _b_words(b_ptr, q + 4),
        _b_words(b_ptr, q + 5),
        _b_words(b_ptr, q + 6),
        _b_words(b_ptr, q + 7),
        mins,
    )


@gluon.jit
def _take_loaded(acc, acc_m, words, bs, jj, jb, s_is0):
    """`tcg._take_int8_superblock` with the B words and the mins' operand given (`_unit_b`)."""
    dd5, s1, s3, c0, c1, c2, c3, dd, m2, m3 = words
    chunks = (c0, c1, c2, c3)
    acc_i = gl.zeros_like(c0)
    for c in gl.static_range(4):
        for h in gl.static_range(2):
            b = gl.expand_dims(gl.expand_dims(bs[2 * c + h], 0), 0)
            acc_i = tcg._imma(acc_i, chunks[c], b, tcg._to5(tcg._scale_bits(s1, s3, 2 * c + h)), h)
    d = dd5.to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    dmin = (dd >> 16).to(gl.uint16).to(gl.float16, bitcast=True).to(gl.float32)
    acc_m = acc_m - tcg.mins_product_of(m2, m3, jj, jb, s_is0, bs[8]) * gl.expand_dims(32.0 * dmin, 1)
    return acc + tcg._to5(d) * acc_i.to(gl.float32), acc_m


@gluon.jit
def _loaded_walk(w_ptr, b_ptr, m_ptr, s_ptr, first, r_rows, n_rows, n_sb, lo, seg_w1, PER: gl.constexpr,
                 GLU: gl.constexpr):  # fmt: skip
    """`tcg._q4_k_int8_walk` (AHEAD 1) with each super-block's B words loaded beside its code words."""
    row_words = n_sb * tcg.SUPERBLOCK_WORDS
    rows = w_ptr + gl.minimum(r_rows, n_rows - 1).to(gl.int64) * row_words
    rows5 = w_ptr + tcg._row5(first, n_rows) * row_words
    t = gl.arange(0, 4, layout=gl.SliceLayout(1, tcg._TU))
    u = gl.arange(0, 2, layout=gl.SliceLayout(0, tcg._TU))
    tu = gl.expand_dims(
        gl.expand_dims(gl.expand_dims(gl.expand_dims(2 * t, 1) + gl.expand_dims(u, 0), 0), 0), 0
    )
    codes5 = tcg._to5(rows5) + tu
    mins_rows, jj, jb, s_is0 = tcg._mins_operands(w_ptr, 0, first, n_rows, row_words)
    ahead = tcg._int8_words(rows5, codes5, rows, mins_rows, lo)
    ahead_up = ahead
    if GLU:
        ahead_up = tcg._int8_words(rows5 + seg_w1, codes5 + seg_w1, rows + seg_w1, mins_rows + seg_w1, lo)
    up = gl.load(s_ptr + lo)  # the range's scale, as the product's prologue makes it
    b_ahead = _unit_b(b_ptr, m_ptr, lo)
    acc = gl.zeros_like(ahead[3]).to(gl.float32)
    acc_m = gl.full([64, 8], 0.0, gl.float32, tcg._MMA)
    acc_up, acc_m_up = acc, acc_m
    for i in gl.static_range(PER):
        words = ahead
        bs = b_ahead
        if i + 1 < PER:
            ahead = tcg._int8_words(rows5, codes5, rows, mins_rows, lo + i + 1)
            b_ahead = _unit_b(b_ptr, m_ptr, lo + i + 1)
        acc, acc_m = _take_loaded(acc, acc_m, words, bs, jj, jb, s_is0)
        if GLU:
            words_up = ahead_up
            if i + 1 < PER:
                ahead_up = tcg._int8_words(
                    rows5 + seg_w1, codes5 + seg_w1, rows + seg_w1, mins_rows + seg_w1, lo + i + 1
                )
            acc_up, acc_m_up = _take_loaded(acc_up, acc_m_up, words_up, bs, jj, jb, s_is0)
    return tcg._int8_total(acc, acc_m), tcg._int8_total(acc_up, acc_m_up), up


@gluon.jit
def _tma_walk(codes_desc, heads_desc, codes_up_desc, heads_up_desc, w_ptr, b_ptr, m_ptr, s_ptr, first, lo,
              PER: gl.constexpr, GLU: gl.constexpr):  # fmt: skip
    """`_loaded_walk` with the product's TMA tiles (`tcg.tma_tiles_asked`): the program's whole share of the
    matrix (GLU: of gate and up) asked for at its start, every unit's words then read from shared memory."""
    codes, heads, codes_up, heads_up, bars = tcg.tma_tiles_asked(
        codes_desc, heads_desc, codes_up_desc, heads_up_desc, first, lo, PER, GLU
    )
    jj, jb, s_is0 = tcg._mins_positions()
    up = gl.load(s_ptr + lo)
    b_ahead = _unit_b(b_ptr, m_ptr, lo)
    acc = gl.full([4, 2, 8, 4, 2], 0.0, gl.float32, tcg._L5)
    acc_m = gl.full([64, 8], 0.0, gl.float32, tcg._MMA)
    acc_up, acc_m_up = acc, acc_m
    for i in gl.static_range(PER):
        bs = b_ahead
        if i + 1 < PER:
            b_ahead = _unit_b(b_ptr, m_ptr, lo + i + 1)
        mbarrier.wait(bars.index(i), 0)
        acc, acc_m = _take_loaded(acc, acc_m, tcg.tma_superblock_words(codes, heads, i), bs, jj, jb, s_is0)
        if GLU:
            words_up = tcg.tma_superblock_words(codes_up, heads_up, i)
            acc_up, acc_m_up = _take_loaded(acc_up, acc_m_up, words_up, bs, jj, jb, s_is0)
    for i in gl.static_range(PER):
        mbarrier.invalidate(bars.index(i))
    return tcg._int8_total(acc, acc_m), tcg._int8_total(acc_up, acc_m_up), up


@gluon.jit
def _probe_kernel(w_ptr, x_ptr, b_ptr, m_ptr, s_ptr, y_ptr, part_ptr, count_ptr, n_rows, n_sb, seg_w1, y_width,
                  codes_desc, heads_desc, codes_up_desc, heads_up_desc, PER: gl.constexpr, SPLITS: gl.constexpr,
                  GLU: gl.constexpr, LOADED: gl.constexpr, COUNTED: gl.constexpr = 1):  # fmt: skip
    """One program: a 64-row tile's PER super-blocks by the product's walk (LOADED 0), `_loaded_walk` (1) or
    `_tma_walk` (2: its words by TMA, `tcg.tma_descriptors`), then the product's split-K tail without its
    epilogue's extras (bias, rms, residual); COUNTED 0: each split stores its partial sums and ends (no
    arrival counter, nobody sums them: a timing form)."""
    tile = gl.program_id(0)
    split = gl.program_id(1)
    first = tile * 64
    lo = split * PER
    r_rows = first + gl.arange(0, 64, layout=tcg._ROWS)
    if LOADED == 2:
        total, total_up, up = _tma_walk(
            codes_desc, heads_desc, codes_up_desc, heads_up_desc, w_ptr, b_ptr, m_ptr, s_ptr, first, lo, PER, GLU
        )  # fmt: skip
    elif LOADED:
        total, total_up, up = _loaded_walk(
            w_ptr, b_ptr, m_ptr, s_ptr, first, r_rows, n_rows, n_sb, lo, seg_w1, PER, GLU
        )
    else:
        total, total_up, up = tcg._q4_k_int8_walk(
            w_ptr, x_ptr, 0, first, r_rows, n_rows, n_sb, lo, seg_w1, PER, GLU
        )
    total = total / up
    total_up = total_up / up
    row_mask = r_rows < n_rows
    if SPLITS > 1:
        parts: gl.constexpr = 2 if GLU else 1
        gl.store(part_ptr + split * (y_width * parts) + r_rows, total, mask=row_mask)
        if GLU:
            gl.store(part_ptr + split * (y_width * parts) + y_width + r_rows, total_up, mask=row_mask)
        if COUNTED:
            gl.thread_barrier()
            arrived = gl.atomic_add(count_ptr + tile, 1, sem="acq_rel")
        else:
            arrived = 0
        if COUNTED and arrived == SPLITS - 1:
            total = gl.zeros_like(total)
            total_up = gl.zeros_like(total)
            for s in gl.static_range(SPLITS):
                part = part_ptr + s * (y_width * parts) + r_rows
                total += gl.load(part, mask=row_mask, other=0.0, cache_modifier=".cg")
                if GLU:
                    total_up += gl.load(part + y_width, mask=row_mask, other=0.0, cache_modifier=".cg")
            gl.atomic_xchg(count_ptr + tile, 0, sem="relaxed")
            if GLU:
                total = gated(total, total_up, False, 1.0, 0.0)
            gl.store(y_ptr + r_rows, total, mask=row_mask)
    else:
        if GLU:
            total = gated(total, total_up, False, 1.0, 0.0)
        gl.store(y_ptr + r_rows, total, mask=row_mask)


def probe_product(name: str, out_rows: int, in_features: int, glu: bool, replays: int, device) -> dict:
    """The three forms of one product; µs a launch and GB/s each, and whether `B formed` equals the worker."""
    from benchmarks.kernels_gemv import Shape, random_weight
    from kernels.qtensor import QTensor
    from kernels.triton_gemv import default_config, launch_segments, layout_of

    shape = Shape("phi-3-mini", name, GGMLType.Q4_K, out_rows, in_features)
    w0 = random_weight(shape, device)
    n_copies = max(1, min(64, -(-L2_FLUSH_BYTES // w0.nbytes)))
    copies = [w0.data] + [w0.data.clone() for _ in range(n_copies - 1)]
    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    x = torch.randn(1, in_features, device=device)
    n_sb = in_features // 256
    y_rows = out_rows // 2 if glu else out_rows
    tiles = -(-y_rows // 64)
    per = tcg.units_per_program("q4_k", n_sb, tiles, sm_count)
    splits = n_sb // per
    row_words = n_sb * 36
    b_words, m_words = 8 * SUBBLOCK_B_WORDS.value, MINS_WORDS.value
    b_buf = torch.zeros(n_sb * (b_words + m_words) + n_sb, dtype=torch.int32, device=device)
    m_view = b_buf[n_sb * b_words :].view(torch.float16)
    s_view = b_buf[n_sb * (b_words + m_words) :].view(torch.float32)
    s_view.fill_(1.0)
    sink = torch.empty(tiles * splits, dtype=torch.int32, device=device)
    counters = torch.zeros(tiles, dtype=torch.int32, device=device)
    y = torch.empty(y_rows, device=device)
    part = torch.empty(splits, y_rows * (2 if glu else 1), device=device)

    # `_tma_walk`'s descriptors of each copy (`tcg.tma_descriptors`; GLU: the gate's and the up's halves).
    halves = 2 if glu else 1
    descs = []
    for c in copies:
        half = c.numel() // halves
        gate = tcg.tma_descriptors(c[:half], y_rows, n_sb)
        descs.append(gate + (tcg.tma_descriptors(c[half:], y_rows, n_sb) if glu else (None, None)))

    def run_probe(i: int, loaded: int, counted: int = 1) -> torch.Tensor:
        _probe_kernel[(tiles, splits)](
            copies[i].view(torch.int32), x, b_buf, m_view, s_view, y, part, counters, y_rows, n_sb,
            y_rows * row_words if glu else 0, y_rows, *descs[i], PER=per, SPLITS=splits, GLU=glu, LOADED=loaded,
            COUNTED=counted, num_warps=tcg.NUM_WARPS,
        )  # fmt: skip
        return y

    # The worker's launch of the same bytes: GLU's gate and up are the matrix's two halves of rows.
    segments = [
        tuple(
            QTensor(
                c[h * c.numel() // halves : (h + 1) * c.numel() // halves],
                w0.qtype,
                (y_rows, in_features),
                f"{name}.{h}",
            )  # fmt: skip
            for h in range(halves)
        )
        for c in copies
    ]
    config = default_config(
        shape.qtype, y_rows, in_features, 1, sm_count, layout=layout_of(w0), tensor_cores=True
    )

    by_tma = dataclasses.replace(config, tc_words_by_tma=True)
    counted = dataclasses.replace(config, tc_cluster_splits=False)

    def run_worker(i: int, config=config) -> torch.Tensor:
        return launch_segments(x, segments[i], (None,) * halves, 1, config=config, glu=glu)

    want = run_worker(0).reshape(-1).clone()
    same = torch.equal(want, run_probe(0, 0).clone())
    tma_same = torch.equal(want, run_worker(0, by_tma).reshape(-1).clone())
    counted_same = torch.equal(want, run_worker(0, counted).reshape(-1).clone())
    row = {"product": name, "shape": f"{out_rows}x{in_features}", "glu": glu, "per": per, "splits": splits}
    row["tiles"] = tiles
    row["bytes"] = w0.nbytes
    row["b_formed_equals_worker"] = same
    row["tma_worker_equals_worker"] = tma_same
    row["counted_worker_equals_worker"] = counted_same
    forms = (
        ("worker launch", run_worker),
        ("worker launch, words by TMA", lambda i: run_worker(i, by_tma)),
        ("worker launch, splits by counters", lambda i: run_worker(i, counted)),
        ("B formed", lambda i: run_probe(i, 0)),
        ("B loaded", lambda i: run_probe(i, 1)),
        ("B loaded, words by TMA", lambda i: run_probe(i, 2)),
        ("B loaded, no split tail", lambda i: run_probe(i, 1, 0)),
        (
            "loads alone",
            lambda i: _read_kernel[(tiles * splits,)](
                copies[i].view(torch.int32), copies[i].numel() // 4, sink, BLOCK=BLOCK_WORDS, num_warps=4
            ),
        ),
    )
    assert tuple(label for label, _ in forms) == FORMS
    for label, fn in forms:
        us = time_launches(fn, len(copies), replays)
        row[label] = {"us": round(us, 2), "gb_per_s": round(w0.nbytes / (us * 1e-6) / 1e9, 1)}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.b_operand_probe", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--replays", type=int, default=20)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the probe needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    rows = [probe_product(*product, args.replays, device) for product in PHI3_PRODUCTS]
    copy = copy_bandwidth(device)
    copy_gbps = copy["gbps"] if copy else None
    lines = [
        f"### B operand probe: Phi-3-mini's Q4_K products ({torch.cuda.get_device_name()}, copy {copy_gbps} GB/s)",
        "",
        "µs a launch (% of copy). `B formed` - `B loaded`: the prologue; `B loaded` - its form with no split "
        "tail: the tail; `loads alone`: the same bytes read by as many programs with no decoding.",
        "",
        "| product | shape | PER x splits | "
        + " | ".join(FORMS)
        + " | copy time | B formed (worker by TMA, by counters) = worker |",
        "|---|---|---|" + "---:|" * (len(FORMS) + 1) + "---|",
    ]
    for r in rows:
        cells = []
        for form in FORMS:
            pct = f" ({100 * r[form]['gb_per_s'] / copy_gbps:.1f} %)" if copy_gbps else ""
            cells.append(f"{r[form]['us']}{pct}")
        floor = f"{r['bytes'] / (copy_gbps * 1e3):.2f}" if copy_gbps else ""
        lines.append(
            f"| {r['product']} | {r['shape']} | {r['per']} x {r['splits']} | "
            + " | ".join(cells)
            + f" | {floor} | {'yes' if r['b_formed_equals_worker'] else 'NO'} "
            + f"({'yes' if r['tma_worker_equals_worker'] else 'NO'}, "
            + f"{'yes' if r['counted_worker_equals_worker'] else 'NO'}) |"
        )
    record = {**run_info(device), "copy": copy, "rows": rows}
    publish(record, "\n".join(lines) + "\n", args.out, "b_operand_probe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
