"""The decode attention alone (`triton_decode.rope_attention`) on the three M0 models' head layouts.

    python -m benchmarks.kernels_attention [--out DIR] [--only NAME_SUBSTRING]

For each model's layout (query and KV heads, head dims, RoPE, GPT-OSS's sinks and sliding window) and each
(cache capacity, position) of `CASES`, it times one decode step's `rope_attention` (RoPE of the new
position's q and k, its K and V stored, the split-KV walk and the last split's merge) in each of
`VARIANTS`' forms: the launches are captured back to back in a CUDA graph and replayed
(`kernels_gemv.time_launches`), so a launch's fixed cost inside a graph counts as it does in the decode
step, without dependent launch. The capacity 256 is tg128's (one prompt token and 128 decoded ones: the
engine's cache bucket, `GRAPH_CACHE_BUCKET`); 4,096 a long context. Each form's output is compared with
the default's: "same bits" where the form computes the same sums in the same order.

Why: the profile puts attention at 8-13 µs a layer at tg128's short contexts (Phi-3, Qwen2.5, GPT-OSS;
`benchmarks/results/2026-12-06-h100-q8-0-ahead-side-by-side.md`), where the cache it reads is a few
hundred KB: latency, not bytes. Timing the forms apart says which part of the kernel holds it (the walk
by split 0 alone, the merge's round trips, the number of splits). Writes `kernels_attention.json` and
`kernels_attention.md` to `--out`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.kernels_gemv import time_launches
from benchmarks.runinfo import publish, run_info


@dataclass(frozen=True)
class Layout:
    model: str
    n_head: int
    n_kv: int
    head_dim: int
    rope_dims: int
    sinks: bool = False
    sliding_window: int | None = None


LAYOUTS = (
    Layout("qwen2.5-0.5b", 14, 2, 64, 64),
    Layout("phi-3-mini", 32, 32, 96, 96),
    Layout("gpt-oss-20b", 64, 8, 64, 64, sinks=True),
    Layout("gpt-oss-20b (windowed layers)", 64, 8, 64, 64, sinks=True, sliding_window=128),
)
# (cache capacity, position): tg128's cache early and late in its 128 tokens, and a long context.
CASES = ((256, 16), (256, 128), (4096, 1000), (4096, 4000))
# The forms timed, by name: `rope_attention`'s keyword arguments.
VARIANTS = {
    "default": {},
    "tiles before 2026-12-07": {"retiled": False, "heads_apart": False},
    "merge looped": {"unrolled_merge": False},
    "split by position": {"by_position": True},
    "re-tiled": {"retiled": True},
    "re-tiled, not pipelined": {"retiled": True, "dot_stages": 1},
    "heads apart": {"heads_apart": True},
    "heads apart, 16 positions a step": {"heads_apart": True, "step_positions": 16},
    "at most 4 splits": {"max_splits": 4},
    "one split": {"max_splits": 1},
    # a KV head's 2-8 splits as one thread-block cluster (sm_90; with more splits the counters' merge)
    "splits as clusters": {"clustered": True},
    "at most 8 splits": {"max_splits": 8},
    "at most 8 splits as clusters": {"max_splits": 8, "clustered": True},
}


@dataclass
class Result:
    model: str
    capacity: int
    position: int
    variant: str
    splits: int
    microseconds: float
    same_bits: bool
    max_abs_diff: float


def bench_layout(
    layout: Layout,
    capacity: int,
    position: int,
    device: torch.device,
    replays: int,
    forms: tuple[str, ...] = tuple(VARIANTS),
) -> list[Result]:
    import triton

    from kernels import triton_decode

    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    d, half = layout.head_dim, layout.rope_dims // 2
    q, k, v = rand(layout.n_head * d), rand(layout.n_kv * d), rand(layout.n_kv * d)
    keys, values = rand(layout.n_kv, capacity, d), rand(layout.n_kv, capacity, d)
    angles = torch.arange(capacity, dtype=torch.float32)[:, None] * torch.rand(half, generator=gen)[None, :]
    cos, sin = angles.cos().to(device), angles.sin().to(device)
    sinks = rand(layout.n_head) if layout.sinks else None
    pos = torch.tensor([position], dtype=torch.int64, device=device)
    scale = d**-0.5

    def run(options: dict) -> torch.Tensor:
        return triton_decode.rope_attention(
            q, k, v, keys, values, cos, sin, pos, True, scale, layout.sliding_window, sinks, **options
        )

    # the tile `rope_attention` picks, for the split count it launches
    block_s = triton_decode.chosen_tile(layout.n_head // layout.n_kv, triton.next_power_of_2(d)).block_s
    reference = run({})
    results = []
    for name in forms:
        options = VARIANTS[name]
        out = run(options)
        diff = (out - reference).abs().max().item()
        step = options.get("step_positions", block_s)
        splits = triton_decode.attention_splits(capacity, step, options.get("max_splits", 16))[1]
        us = time_launches(lambda _i, options=options: run(options), 1, replays)
        results.append(
            Result(layout.model, capacity, position, name, splits, us, torch.equal(out, reference), diff)
        )
    return results


def to_markdown(results: list[Result], meta: dict) -> str:
    lines = [
        "# Decode attention alone (`rope_attention`, one step, graph replay)",
        "",
        f"{meta['device'].get('name', '?')}, {meta['date']}, commit `{meta['git_commit']}`: `{meta['command']}`",
        "",
        "| layout | capacity | position | form | splits | µs | same bits as the default | max abs diff |",
        "|---|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.capacity} | {r.position} | {r.variant} | {r.splits} | {r.microseconds:.2f} "
            f"| {'yes' if r.same_bits else 'no'} | {r.max_abs_diff:.2e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default="", help="layouts whose model name contains this")
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument(
        "--forms", nargs="+", choices=tuple(VARIANTS), default=tuple(VARIANTS), help="the forms timed (all)"
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=[f"{c}:{p}" for c, p in CASES],
        metavar="CAPACITY:POSITION",
        help="cache capacity and position of each case (CASES)",
    )
    args = parser.parse_args(argv)
    cases = [tuple(int(v) for v in case.split(":")) for case in args.cases]
    if not torch.cuda.is_available():
        print("kernels_attention: needs a CUDA GPU", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    results: list[Result] = []
    for layout in LAYOUTS:
        if args.only not in layout.model:
            continue
        for capacity, position in cases:
            results.extend(bench_layout(layout, capacity, position, device, args.replays, tuple(args.forms)))
    meta = run_info(device)
    record = {**meta, "kind": "kernels-attention", "results": [asdict(r) for r in results]}
    publish(record, to_markdown(results, meta), args.out, "kernels_attention")
    return 0


if __name__ == "__main__":
    sys.exit(main())
