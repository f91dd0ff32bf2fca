"""What a kernel boundary costs a chain of weight reads: one launch a matrix against one launch a layer.

    python -m benchmarks.chain_probe [--out DIR] [--replays N] [--programs-per-sm 1 2 4]

A decode step reads its matrices one after another, each GEMV a launch that waits for the previous one
(its input is the previous one's output). Each launch pays a fixed cost beyond streaming its bytes: the
grid's start, the first loads' trip to memory, the last programs' drain (`benchmarks.stream_probe`: ~2.3-
2.7 µs even for a kernel that only loads, on an H100). A persistent launch would run a layer's products
in one grid, its programs meeting at a grid-wide barrier between two products (the next needs the whole
previous output) and asking for the next matrix's first bytes before they wait there (weights do not
depend on the previous product). This probe measures what that buys before anyone builds it, on loads
alone (no decoding, the same loop in every form):

- `launches`: each matrix a launch of `_read_kernel` (every program reads an equal contiguous share);
- `one launch, barriers`: the layer's matrices in one launch of `_chain_kernel`, a grid barrier between
  two (an arrival counter, each program spinning on it);
- `one launch, barriers, next bytes first`: the same, each program loading its first block of the next
  matrix before it waits at the barrier.

The matrices are Phi-3-mini's per-layer Q4_K bytes in the step's order (attn_qkv, attn_output, ffn_up
gate+up, ffn_down), as many layers' copies as exceed the L2, in a CUDA graph (`kernels_gemv.time_launches`);
the table gives µs a layer and GB/s. Every program of a chain launch must be resident at once (the
barrier spins): the grid is at most `--programs-per-sm` a multiprocessor, checked against the occupancy the
compiled kernel allows. Writes `chain_probe.json` and `chain_probe.md` to `--out`. CUDA only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from benchmarks.kernels_gemv import L2_FLUSH_BYTES, time_launches
from benchmarks.runinfo import copy_bandwidth, publish, run_info

# Phi-3-mini's Q4_K matrices of one layer in the decode step's order (bytes: 144 per 256 weights).
PHI3_LAYER = (
    ("attn_qkv", 9216 * 3072 * 144 // 256),
    ("attn_output", 3072 * 3072 * 144 // 256),
    ("ffn_up (gate+up)", 16384 * 3072 * 144 // 256),
    ("ffn_down", 3072 * 8192 * 144 // 256),
)
BLOCK_WORDS = 1024  # 32-bit words a program loads a step (8 a thread at 4 warps)
MAX_MATRICES = 4


@triton.jit
def _read_share(ptr, words, acc, program, programs, BLOCK: tl.constexpr):
    """Sum this program's equal contiguous share of `words` words at `ptr` into `acc`."""
    share = tl.cdiv(tl.cdiv(words, programs), BLOCK) * BLOCK
    start = program * share
    end = tl.minimum(start + share, words)
    offsets = tl.arange(0, BLOCK)
    for off in range(start, end, BLOCK):
        acc += tl.load(ptr + off + offsets, mask=off + offsets < end, other=0)
    return acc


@triton.jit
def _read_kernel(ptr, words, sink_ptr, BLOCK: tl.constexpr):
    acc = tl.zeros([BLOCK], tl.int32)
    acc = _read_share(ptr, words, acc, tl.program_id(0), tl.num_programs(0), BLOCK)
    tl.store(sink_ptr + tl.program_id(0), tl.sum(acc, axis=0))


@triton.jit
def _load_acquire(ptr):
    """The 32-bit word at `ptr`, read at L2 with acquire order (a spinning reader; Triton folds an
    atomic add of 0 away)."""
    return tl.inline_asm_elementwise(
        "ld.acquire.gpu.global.u32 $0, [$1];", "=r,l", [ptr], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _grid_barrier(count_ptr, target):
    """Wait until `target` arrivals have been counted (this program's included)."""
    tl.debug_barrier()  # every thread's loads issued and stores done before the arrival
    seen = tl.atomic_add(count_ptr, 1, sem="acq_rel") + 1
    while seen < target:
        seen = _load_acquire(count_ptr)
    tl.debug_barrier()


@triton.jit
def _chain_kernel(
    m0, w0, m1, w1, m2, w2, m3, w3, sink_ptr, count_ptr, N: tl.constexpr, BLOCK: tl.constexpr,
    NEXT_FIRST: tl.constexpr,
):  # fmt: skip
    """The N matrices' shares read in order, a grid barrier between two; NEXT_FIRST: the next matrix's
    first block loaded before the barrier. The counter is reset by the last program to leave."""
    program, programs = tl.program_id(0), tl.num_programs(0)
    offsets = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.int32)
    ptrs = (m0, m1, m2, m3)
    sizes = (w0, w1, w2, w3)
    for i in tl.static_range(N):
        if i > 0:
            if NEXT_FIRST:  # this program's first block of matrix i, asked for before the wait
                share = tl.cdiv(tl.cdiv(sizes[i], programs), BLOCK) * BLOCK
                first = tl.load(
                    ptrs[i] + program * share + offsets, mask=program * share + offsets < sizes[i], other=0
                )
            _grid_barrier(count_ptr, i * programs)
            if NEXT_FIRST:
                acc += first
        acc = _read_share(ptrs[i], sizes[i], acc, program, programs, BLOCK)
    tl.store(sink_ptr + program, tl.sum(acc, axis=0))
    left = tl.atomic_add(count_ptr, 1, sem="acq_rel")
    if left == N * programs - 1:  # everyone has passed every barrier: reset for the next launch
        tl.atomic_xchg(count_ptr, 0, sem="relaxed")


def probe(programs_per_sm: list[int], replays: int) -> list[dict]:
    device = torch.device("cuda")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    layer_bytes = sum(n for _, n in PHI3_LAYER)
    layers = max(2, -(-L2_FLUSH_BYTES // layer_bytes))
    mats = [
        [
            torch.randint(-(2**31), 2**31 - 1, (n // 4,), dtype=torch.int32, device=device)
            for _, n in PHI3_LAYER
        ]
        for _ in range(layers)
    ]
    count = torch.zeros(1, dtype=torch.int32, device=device)
    rows = []
    for per_sm in programs_per_sm:
        programs = sms * per_sm
        sink = torch.empty(programs, dtype=torch.int32, device=device)

        def launches(programs=programs, sink=sink):
            for layer in mats:
                for m in layer:
                    _read_kernel[(programs,)](m, m.numel(), sink, BLOCK=BLOCK_WORDS, num_warps=4)

        def chained(next_first: bool, programs=programs, sink=sink):
            for layer in mats:
                args = [a for m in layer for a in (m, m.numel())]
                _chain_kernel[(programs,)](
                    *args, sink, count, N=len(layer), BLOCK=BLOCK_WORDS, NEXT_FIRST=next_first, num_warps=4
                )

        # The barrier spins: every program must be resident at once.
        kernel = _chain_kernel.warmup(
            *[a for m in mats[0] for a in (m, m.numel())], sink, count, N=len(mats[0]), BLOCK=BLOCK_WORDS,
            NEXT_FIRST=True, num_warps=4, grid=(programs,),
        )  # fmt: skip
        kernel._init_handles()
        resident = kernel.n_regs * 128 * per_sm <= 65536 and per_sm <= 16
        forms = {"launches": launches}
        if resident:
            forms["one launch, barriers"] = lambda: chained(False)
            forms["one launch, barriers, next bytes first"] = lambda: chained(True)
        for name, fn in forms.items():
            us = time_launches(lambda _i, fn=fn: fn(), 1, replays) / layers
            rows.append(
                {
                    "form": name, "programs_per_sm": per_sm, "programs": programs, "us_per_layer": round(us, 2),
                    "gb_per_s": round(layer_bytes / us / 1e3, 1), "layers": layers, "layer_bytes": layer_bytes,
                }
            )  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chain_probe", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--programs-per-sm", type=int, nargs="+", default=[1, 2, 4])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the probe needs a CUDA device", file=sys.stderr)
        return 2
    rows = probe(args.programs_per_sm, args.replays)
    copy = copy_bandwidth(torch.device("cuda"))
    copy_gbps = copy["gbps"] if copy else None
    lines = [
        f"### Chain probe: Phi-3-mini's layer of Q4_K bytes ({torch.cuda.get_device_name()}, copy {copy_gbps} GB/s)",
        "",
        "| form | programs an SM | µs a layer | GB/s | % of copy |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        pct = round(100 * r["gb_per_s"] / copy_gbps, 1) if copy_gbps else ""
        lines.append(
            f"| {r['form']} | {r['programs_per_sm']} | {r['us_per_layer']} | {r['gb_per_s']} | {pct} |"
        )
    record = {**run_info(torch.device("cuda")), "copy": copy, "rows": rows}
    publish(record, "\n".join(lines) + "\n", args.out, "chain_probe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
