"""Is PyTorch's CPU int4 matmul exact enough for the CPU fast path? Error and time against the float16 GEMV.

    python -m benchmarks.cpu_int4pack [--model FILE ...] [--rows 4] [--calls 200] [--out DIR]

`torch._weight_int4pack_mm_for_cpu(x, packed, 32, scales_and_zeros)` computes `x @ W.T` for 4-bit codes
`q` in groups of 32 along the input with `W = (q - 8) * scale + zero`, which is Q4_0 (`scale = d`,
`zero = 0`), Q4_1 (`scale = d`, `zero = m + 8 d`) and Q4_K (`scale = d * sc`, `zero = 8 d sc - dmin m`,
per 32-value sub-block). It takes float32, float16 and bfloat16 activations, with scales of the same
dtype. For each Q4_0/Q4_1/Q4_K matrix shape of a file (the first tensor of each shape and type) this measures, on
`--rows` random activation rows, the relative error `|y - exact| / |exact|` (per row, the max over rows)
against the float64 product with the exactly dequantized weight, and the time per one-row call
(one thread, CPU time), for:
- `f16-gemv`: the CPU fast path's float16 GEMV over the float16 copy (`kernels/cpu_dense.py`);
- `int4-f32`: the int4 kernel with float32 activations, scales and zeros;
- `int4-bf16`: bfloat16 activations, scales and zeros (the dtype PyTorch vectorises on x86).
Writes `cpu_int4pack.json` and `.md` to `--out`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.cpu_decode import resolve_model
from benchmarks.runinfo import publish, run_info
from kernels.dequant import _f16, _nibbles, _scale_min_k4
from kernels.formats import FORMATS, GGMLType
from kernels.qtensor import QTensor
from reference_worker.gguf import GGUFFile

DEFAULT_MODELS = ("real/SmolLM2-135M-Instruct.Q4_1.gguf", "real/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
GROUP = 32
KINDS = ("f16-gemv", "int4-f32", "int4-bf16")


def codes_scales_zeros(w: QTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """`w` as 4-bit codes `(out, in)` and float32 scale and zero per group of 32 `(out, in / 32)` with
    `W = (q - 8) * scale + zero`; None for other types."""
    b = w.data.view(-1, FORMATS[w.qtype].type_size)
    if w.qtype == GGMLType.Q4_0:
        d = _f16(b[:, :2])
        codes, scale, zero = _nibbles(b[:, 2:]), d, torch.zeros_like(d)
    elif w.qtype == GGMLType.Q4_1:
        d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
        codes, scale, zero = _nibbles(b[:, 4:]), d, m + 8 * d
    elif w.qtype == GGMLType.Q4_K:
        d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
        sc, mn = _scale_min_k4(b[:, 4:16])
        scale = d * sc
        zero = 8 * scale - dmin * mn
        codes = _nibbles(b[:, 16:].reshape(-1, 4, 32)).reshape(-1, 256)
    else:
        return None
    out, width = w.shape
    return codes.reshape(out, width), scale.reshape(out, width // GROUP), zero.reshape(out, width // GROUP)


def _cpu_us(fn, calls: int) -> float:
    for _ in range(max(3, calls // 10)):
        fn()
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls * 1e6


def measure(w: QTensor, rows: int, calls: int, gen: torch.Generator) -> dict[str, Any] | None:
    split = codes_scales_zeros(w)
    if split is None or w.shape[0] % 16:  # the packing takes multiples of 16 output rows
        return None
    codes, scale, zero = split
    packed = torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 2)
    sz = torch.stack([scale.T, zero.T], dim=-1).contiguous()  # (in / 32, out, 2)
    dense32 = w.dequantize()
    dense16 = dense32.to(torch.float16)
    x = torch.randn(rows, w.shape[1], generator=gen)
    exact = x.double() @ dense32.double().T
    runs = {
        "f16-gemv": lambda x: torch.nn.functional.linear(x.to(torch.float16), dense16).float(),
        "int4-f32": lambda x: torch._weight_int4pack_mm_for_cpu(x, packed, GROUP, sz),
        "int4-bf16": lambda x: torch._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), packed, GROUP, sz.to(torch.bfloat16)
        ).float(),
    }
    result: dict[str, Any] = {"tensor": w.name, "type": w.qtype.name, "shape": list(w.shape)}
    for kind, run in runs.items():
        y = torch.cat([run(x[i : i + 1]) for i in range(rows)]).double()
        rel = ((y - exact).norm(dim=1) / exact.norm(dim=1)).max().item()
        result[kind] = {
            "rel_err": float(f"{rel:.3g}"),
            "us_per_call": round(_cpu_us(lambda run=run: run(x[:1]), calls), 1),
        }
    return result


def bench(path: Path, rows: int, calls: int, note) -> list[dict[str, Any]]:
    file = GGUFFile.open(path)
    seen: set[tuple[tuple[int, ...], GGMLType]] = set()
    gen = torch.Generator().manual_seed(0)
    results = []
    for name, info in file.tensors.items():
        if len(info.shape) != 2 or (tuple(info.shape), info.qtype) in seen:
            continue
        w = QTensor.from_bytes(file.tensor_bytes(name), info.qtype, info.shape, name)
        row = measure(w, rows, max(3, calls * 576 * 576 // (w.shape[0] * w.shape[1])), gen)
        if row is not None:
            seen.add((tuple(info.shape), info.qtype))
            note(f"{path.name} {name}: {row}")
            results.append(row)
    return results


def markdown(record: dict[str, Any]) -> str:
    info = record["run"]
    lines = [
        f"# PyTorch's CPU int4 matmul against the float16 GEMV ({info['date']}, commit {info['git_commit']})",
        "",
        f"Command: `{info['command']}`; torch {info['device']['torch']}, one thread, CPU time per one-row call; "
        f"relative error = max over {record['options']['rows']} random rows of |y - exact| / |exact| "
        "(exact: float64 product with the exactly dequantized weight).",
        "",
        "| model | tensor | type | shape | " + " | ".join(f"{k} rel. err | {k} µs" for k in KINDS) + " |",
        "|---|---|---|---|" + "---:|---:|" * len(KINDS),
    ]
    for model, rows in record["results"].items():
        for r in rows:
            cells = " | ".join(f"{r[k]['rel_err']:.1e} | {r[k]['us_per_call']}" for k in KINDS)
            lines.append(
                f"| {model} | {r['tensor']} | {r['type']} | {r['shape'][0]}x{r['shape'][1]} | {cells} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_int4pack", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", help="a GGUF file or a fixture name (default: SmolLM2, Qwen)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--calls", type=int, default=200, help="one-row calls timed for a 576x576 matrix (scaled)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.rows < 1 or args.calls < 1:
        p.error("--rows and --calls must be >= 1")
    paths = []
    for name in args.model or DEFAULT_MODELS:
        path = resolve_model(name)
        if path is None:
            p.error(f"no such model file: {name} (run `python -m fixtures prepare --tiny --real`)")
        paths.append(path)
    torch.set_num_threads(1)

    def note(message: str) -> None:
        print(f"[cpu_int4pack] {message}", file=sys.stderr, flush=True)

    record = {
        "kind": "cpu-int4pack",
        "run": run_info(torch.device("cpu")),
        "options": {"rows": args.rows, "calls": args.calls},
        "results": {path.name: bench(path, args.rows, args.calls, note) for path in paths},
    }
    publish(record, markdown(record), args.out, "cpu_int4pack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
