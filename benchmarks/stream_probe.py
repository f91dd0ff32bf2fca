"""What the decode GEMV's load pattern can stream, apart from its decoding: a probe for the next layout.

    python -m benchmarks.stream_probe [--out DIR] [--replays N] [--block-n 16 32 64] [--work 0 8 24 56]

The Q4_K GEMV (`kernels.triton_gemv`) reads each step a [rows, 36-word] tile: one 144-byte super-block of
each of BLOCK_N rows, rows a whole row's bytes apart (1,728 bytes for Phi-3's 3,072-wide rows), so a
step is BLOCK_N scattered 144-byte pieces. It runs at 0.9-1.2 TB/s on an H200 (`2026-12-04-h200-gemv-sweep-
phi3.json`) where its instructions alone would allow ~2.6 TB/s (`2026-12-05-sass-issue-bound.md`). Which
of three things holds it back is what this probe separates, with a kernel that loads exactly the GEMV's
words and does synthetic work instead of decoding them (`WORK` dependent float multiply-adds per word;
the Q4_K loop issues ~58 instructions per word, 7.28 a weight):

- **the layout**: the same words in the file's order ("rows"), against a load-time regrouping that makes
  each program's step one contiguous piece ("tiles": super-block sb of the tile's BLOCK_N rows side by
  side, BLOCK_N x 144 bytes);
- **the work**: `--work 0` is what the loads alone stream; the larger values show how fast the rate falls
  as the decode's instruction cost grows, with the loads of a step waited on before its work;
- **loads in flight**: `ahead` loads step sb + 1's words before step sb's work (twice the registers for
  the words), the form `GemvConfig.ahead` gives the GEMV.

Next to them the GEMV itself on the same shape (random bytes, finite scales), so each probe row reads
against what the worker gets. Every launch streams its bytes from HBM (a rotation of copies larger than
the L2, as `benchmarks.kernels_gemv`), timed in a CUDA graph with CUDA events. Writes `stream_probe.json`
and `stream_probe.md` to `--out`. CUDA only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import triton
import triton.language as tl

from benchmarks.kernels_gemv import L2_FLUSH_BYTES, Shape, random_weight, time_launches
from benchmarks.runinfo import copy_bandwidth
from kernels.formats import GGMLType
from kernels.qtensor import QTensor

SB_WORDS = tl.constexpr(36)  # a Q4_K super-block: d | dmin << 16, 3 scale words, 32 code words
# Phi-3-mini's Q4_K GEMVs (the model's largest share of bytes), as `benchmarks.kernels_gemv` names them.
SHAPES = [
    Shape("phi-3-mini", "attn_qkv", GGMLType.Q4_K, 9216, 3072),
    Shape("phi-3-mini", "attn_output", GGMLType.Q4_K, 3072, 3072),
    Shape("phi-3-mini", "ffn_up (gate+up)", GGMLType.Q4_K, 16384, 3072),
    Shape("phi-3-mini", "ffn_down", GGMLType.Q4_K, 3072, 8192),
]


@triton.jit
def _work(acc, qs, head, WORK: tl.constexpr):
    """WORK dependent float multiply-adds per word (v * v + 0.5: not foldable into one, unlike an affine
    chain), standing in for the decode; the values do not matter (infinities time like any float)."""
    v = (qs ^ head).to(tl.float32, bitcast=True)
    for _ in tl.static_range(WORK):
        v = v * v + 0.5
    return acc + v


@triton.jit
def _probe_kernel(
    w_ptr,
    y_ptr,
    n_rows,
    n_sb,
    row_words,
    sb_per_split,
    BLOCK_N: tl.constexpr,
    TILES: tl.constexpr,
    WORK: tl.constexpr,
    AHEAD: tl.constexpr,
):
    """One program: BLOCK_N rows x one split of their super-blocks, the GEMV's loads (the 32 code words as
    a [rows, 32] tile, the head word as [rows, 1]) and WORK float multiply-adds per word instead of decoding."""
    tile = tl.program_id(0)
    split = tl.program_id(1)
    r = tl.arange(0, BLOCK_N)
    if TILES:  # [tile][super-block][row][36 words]: a step is BLOCK_N * 144 contiguous bytes
        rows = w_ptr + (tile.to(tl.int64) * n_sb * BLOCK_N + r) * SB_WORDS
        sb_stride = BLOCK_N * SB_WORDS
    else:  # the file's order: [row][super-block][36 words]
        rows = w_ptr + (tile.to(tl.int64) * BLOCK_N + tl.minimum(r, n_rows - 1 - tile * BLOCK_N)) * row_words
        sb_stride = SB_WORDS
    lo = split * sb_per_split
    hi = tl.minimum(lo + sb_per_split, n_sb)
    cols = 4 + tl.arange(0, 32)[None, :]
    acc = tl.zeros([BLOCK_N, 32], dtype=tl.float32)
    if AHEAD:
        qs = tl.load(rows[:, None] + lo * sb_stride + cols)
        head = tl.load(rows[:, None] + lo * sb_stride)
        for sb in tl.range(lo, hi - 1):
            next_qs = tl.load(rows[:, None] + (sb + 1) * sb_stride + cols)
            next_head = tl.load(rows[:, None] + (sb + 1) * sb_stride)
            acc = _work(acc, qs, head, WORK)
            qs = next_qs
            head = next_head
        acc = _work(acc, qs, head, WORK)
    else:
        for sb in tl.range(lo, hi):
            qs = tl.load(rows[:, None] + sb * sb_stride + cols)
            head = tl.load(rows[:, None] + sb * sb_stride)
            acc = _work(acc, qs, head, WORK)
    out = tile * BLOCK_N + r
    tl.store(y_ptr + split.to(tl.int64) * n_rows + out, tl.sum(acc, axis=1), mask=out < n_rows)


@dataclass
class Probe:
    tensor: str
    shape: str
    weight_bytes: int
    block_n: int
    split: int
    layout: str  # "rows" (the file's order) or "tiles" (a step contiguous)
    work: int  # multiply-adds per word
    ahead: bool
    us: float
    gb_per_s: float
    pct_of_copy: float


def probe_shape(shape: Shape, args, device: torch.device, sm_count: int, copy_gbs: float) -> list[dict]:
    from kernels.triton_gemv import default_config, launch, layout_of, split_for

    w0 = random_weight(shape, device)
    n_copies = max(1, min(1024, -(-L2_FLUSH_BYTES // w0.nbytes)))
    copies = [w0.data] + [w0.data.clone() for _ in range(n_copies - 1)]
    n_rows, n_sb = shape.out_features, shape.in_features // 256
    row_words = n_sb * SB_WORDS.value
    label = f"{shape.out_features}x{shape.in_features}"
    results: list[dict] = []

    def record(block_n, split, layout, work, ahead, us):
        gbs = w0.nbytes / (us * 1e-6) / 1e9
        results.append(
            asdict(
                Probe(
                    shape.tensor,
                    label,
                    w0.nbytes,
                    block_n,
                    split,
                    layout,
                    work,
                    ahead,
                    round(us, 2),
                    round(gbs, 1),
                    round(100 * gbs / copy_gbs, 1),
                )
            )
        )

    # The GEMV itself (the file's order, the worker's default launch shape), as the reference row.
    x = torch.randn(1, shape.in_features, device=device)
    qcopies = [w0] + [QTensor(c, w0.qtype, w0.shape, w0.name, w0.layout) for c in copies[1:]]
    config = default_config(shape.qtype, n_rows, shape.in_features, 1, sm_count, layout=layout_of(w0))
    us = time_launches(lambda i: launch(x, qcopies[i], None, 1, config=config), n_copies, args.replays)
    record(config.block_n, config.split, "gemv", -1, config.ahead, us)

    words = [c.view(torch.int32) for c in copies]
    for block_n in args.block_n:
        n_tiles = triton.cdiv(n_rows, block_n)
        split = split_for(n_tiles, n_sb, 3, sm_count)  # the GEMV's: 3 super-blocks a split at least
        y = torch.empty(split, n_rows, dtype=torch.float32, device=device)
        for layout in ("rows", "tiles"):
            if layout == "tiles" and n_rows % block_n:
                continue
            for work in args.work:
                for ahead in (False, True):

                    def run(
                        i,
                        layout=layout,
                        work=work,
                        ahead=ahead,
                        block_n=block_n,
                        tiling=(n_tiles, split),
                        y=y,
                    ):
                        _probe_kernel[tiling](
                            words[i],
                            y,
                            n_rows,
                            n_sb,
                            row_words,
                            triton.cdiv(n_sb, tiling[1]),
                            BLOCK_N=block_n,
                            TILES=layout == "tiles",
                            WORK=work,
                            AHEAD=ahead,
                            num_warps=4,
                        )

                    record(block_n, split, layout, work, ahead, time_launches(run, n_copies, args.replays))
    return results


def to_markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Stream probe ({meta['device']}, {meta['date']}; copy {meta['copy_gb_per_s']:.0f} GB/s)",
        "",
        "| tensor | shape | rows/program | split | layout | work / word | ahead | µs | GB/s | % of copy |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        work = "GEMV" if r["work"] < 0 else str(r["work"])
        lines.append(
            f"| {r['tensor']} | {r['shape']} | {r['block_n']} | {r['split']} | {r['layout']} | {work} | "
            f"{'yes' if r['ahead'] else 'no'} | {r['us']} | {r['gb_per_s']:,.0f} | {r['pct_of_copy']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stream_probe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest"))
    parser.add_argument("--replays", type=int, default=15)
    parser.add_argument("--block-n", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--work", type=int, nargs="+", default=[0, 8, 24, 56])
    parser.add_argument("--only", default="", help="tensor name substring")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("stream_probe: no CUDA device", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    copy_gbs = copy_bandwidth(device)["gbps"]
    meta = {
        "device": torch.cuda.get_device_name(device),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "copy_gb_per_s": copy_gbs,
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    results: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for shape in SHAPES:
        if args.only in shape.tensor:
            results += probe_shape(shape, args, device, sm_count, copy_gbs)
            # Written after each shape: a call that runs out of time keeps the shapes it finished.
            (args.out / "stream_probe.json").write_text(
                json.dumps({"meta": meta, "results": results}, indent=1)
            )
            (args.out / "stream_probe.md").write_text(to_markdown(results, meta))
            print(f"stream_probe: {shape.tensor} done ({len(results)} rows)", flush=True)
    print(to_markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
