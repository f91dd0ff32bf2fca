"""Prefill product time of the two CUDA prefill paths on the three M0 models' real weight shapes.

    python -m benchmarks.kernels_prefill [--rows 512] [--out DIR] [--sweep] [--only NAME_SUBSTRING]

For each (model, tensor, ggml type, out x in) of `benchmarks.kernels_gemv.SHAPES` it times
`y = x @ dequant(W).T` for `--rows` activation rows (an expert tensor: `--rows` tokens, each through its
`selected` experts drawn at random, so a 512-token prompt selects nearly every expert) through:
- **scratch** (`kernels.triton_prefill`, `--no-fused-prefill`): the weight decoded into a float16 scratch,
  then cuBLAS (per expert, after a host read of the expert counts);
- **fused** (`kernels.triton_qgemm`, the default): one GEMM launch decoding the packed tiles itself;
  with `--sweep`, also each launch shape of `SWEEP`.
Each figure is the median wall time of a whole call, synchronised before and after (what a prefill pays,
launches and host reads included: the scratch path's expert loop cannot be captured in a CUDA graph), with
the achieved TFLOP/s (2 x rows x out x in per call, x selected for experts). Writes `kernels_prefill.json`
and `kernels_prefill.md` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks.kernels_gemv import SHAPES, Shape, random_weight

# Launch shapes `--sweep` times beside the default: (block_m, block_n, block_k, warps, stages), each compiled
# for sm_90 without spills for every M0 type and the shapes of `SHAPES` (256 x 128 decodes a weight tile
# once per 256 rows, at 228-255 registers a thread; grouped K-quant experts, in no M0 file, would spill).
SWEEP = [
    (64, 64, 64, 4, 2),
    (64, 128, 64, 4, 3),
    (64, 128, 64, 8, 3),
    (128, 64, 64, 4, 3),
    (128, 128, 64, 8, 3),
    (64, 64, 128, 4, 3),
    (128, 128, 128, 8, 3),
    (256, 128, 64, 8, 2),
]


@dataclass
class Result:
    model: str
    tensor: str
    qtype: str
    shape: str
    rows: int
    scratch_ms: float
    fused_ms: float
    fused_config: str
    tflops_fused: float
    best_ms: float = 0.0
    best_config: str = ""
    swept: list = field(default_factory=list)  # "config ms" per swept launch shape


def time_call(fn, reps: int) -> float:
    """Median wall milliseconds of `fn()`, synchronised before and after, after two warm-up calls."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _config_label(config) -> str:
    return f"m{config.block_m}/n{config.block_n}/k{config.block_k}/w{config.num_warps}/p{config.num_stages}"


def bench_shape(shape: Shape, args, device: torch.device) -> Result:
    from kernels import triton_prefill, triton_qgemm

    w = random_weight(shape, device)
    x = torch.randn(args.rows, shape.in_features, device=device)
    if shape.n_expert:
        ids = torch.stack(
            [torch.randperm(shape.n_expert, device=device)[: shape.selected] for _ in range(args.rows)]
        )
        flops = 2.0 * args.rows * shape.selected * shape.out_features * shape.in_features
        default = triton_qgemm.default_config(args.rows * shape.selected, grouped=True)

        def scratch():
            return triton_prefill.matmul_experts(x, w, ids, None, torch.float32)

        def fused(config=None):
            return triton_qgemm.matmul_experts(x, w, ids, None, torch.float32, config)

        label = f"{shape.n_expert}x{shape.out_features}x{shape.in_features} (k={shape.selected})"
    else:
        flops = 2.0 * args.rows * shape.out_features * shape.in_features
        default = triton_qgemm.default_config(args.rows, grouped=False)

        def scratch():
            return triton_prefill.matmul(x, w, None, torch.float32)

        def fused(config=None):
            return triton_qgemm.matmul(x, w, None, torch.float32, config)

        label = f"{shape.out_features}x{shape.in_features}"
    scratch_ms = time_call(scratch, args.reps)
    fused_ms = time_call(fused, args.reps)
    result = Result(
        shape.model,
        shape.tensor,
        shape.qtype.name + (" regrouped" if shape.regrouped else ""),
        label,
        args.rows,
        round(scratch_ms, 3),
        round(fused_ms, 3),
        _config_label(default),
        round(flops / (fused_ms * 1e-3) / 1e12, 1),
    )
    if args.sweep:
        scored = []
        for m, n, k, warps, stages in SWEEP:
            config = triton_qgemm.QGemmConfig(m, n, k, warps, stages)
            scored.append((time_call(lambda c=config: fused(c), args.reps), _config_label(config)))
        scored.sort()
        result.best_ms, result.best_config = round(scored[0][0], 3), scored[0][1]
        result.swept = [f"{c} {ms:.3f}" for ms, c in scored]
    return result


def to_markdown(results: list[Result], meta: dict) -> str:
    lines = [
        f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}; {meta['date']}; "
        f"{meta['rows']} rows a call (median wall ms of a synchronised call).",
        "",
        "| model | tensor | type | shape | scratch ms | fused ms | fused / scratch | fused TFLOP/s | config "
        "| best swept | best ms |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.tensor} | {r.qtype} | {r.shape} | {r.scratch_ms} | {r.fused_ms} "
            f"| {r.fused_ms / r.scratch_ms:.2f} | {r.tflops_fused} | {r.fused_config} | {r.best_config} "
            f"| {r.best_ms or ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--rows", type=int, default=512, help="activation rows (prompt tokens) a call")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--sweep", action="store_true", help="also time each launch shape of SWEEP")
    parser.add_argument("--only", help="only shapes whose model or tensor name contains this")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the prefill benchmark needs a CUDA device", file=sys.stderr)
        return 2
    import triton

    device = torch.device("cuda")
    shapes = [s for s in SHAPES if s.model != "types"]
    if args.only:
        shapes = [s for s in shapes if args.only in s.model or args.only in s.tensor]
    results = []
    for shape in shapes:
        result = bench_shape(shape, args, device)
        results.append(result)
        print(
            f"{shape.model:13s} {shape.tensor:40s} scratch {result.scratch_ms:8.3f} ms  fused "
            f"{result.fused_ms:8.3f} ms ({result.tflops_fused} TFLOP/s) {result.best_config} {result.best_ms}",
            flush=True,
        )
    meta = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "rows": args.rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels_prefill.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1)
    )
    text = to_markdown(results, meta)
    (args.out / "kernels_prefill.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
