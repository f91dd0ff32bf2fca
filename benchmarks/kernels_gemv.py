"""Decode GEMV bandwidth of the Triton fast paths on the three M0 models' real weight shapes.

    python -m benchmarks.kernels_gemv [--out DIR] [--sweep [--compact] | --sweep-split] [--ahead] [--round-trip-free]
                                      [--cuda-cores] [--tensor-cores] [--float16-codes] [--only NAME_SUBSTRING]

For each (model, tensor, ggml type, out x in) it times `y = x @ dequant(W).T` for one activation row:
the launches are captured in a CUDA graph (so host launch cost is not counted: the device time of the
kernel is), replayed after a warm-up and timed with CUDA events; the result is the median over replays
divided by the launches per replay. The weight is read from a set of copies larger than the L2 cache
in rotation, so every launch streams it from HBM. It prints the
achieved bandwidth (weight bytes / time) and its share of `--peak` (by default the device-to-device copy
bandwidth measured in the same run), and the microseconds a launch takes beyond streaming its bytes at
that copy bandwidth: its fixed cost (start, prologue, the split epilogue), which a one-wave GEMV of a few
MB pays in full. For MoE experts, the bytes are those of the selected experts only.
`--sweep` also times a grid of launch configurations per shape and reports the best next to the
default (the five best in `top`); `--sweep-split` instead times only the default launch's split and
rows a program (`split_sweep_configs`: the grid's size, nothing else). `--ahead` times the default
launch shape once more with its loop loading each step's words before the previous step is decoded (`GemvConfig.ahead`, formats of `triton_gemv.AHEAD_FORMATS`), the
same tile and split, so the two columns differ only in that; `--round-trip-free` times the Q5_0 / Q8_0
shapes once more in the tile `benchmarks.step_ab`'s variant of that name launches (a loop without
shared-memory round trips), so a shape's GEMV and the step variant are judged on the same tile. The default
launch is the worker's: the larger Q4_K and regrouped Q6_K matrices on the tensor cores
(`triton_gemv.TENSOR_CORE_MIN_BYTES`);
`--cuda-cores` times those once more on the CUDA-core loop (the sweeps and `--ahead` vary that loop), and
`--float16-codes` the default's Q4_K tensor-core launches once more on float16 mma (`GemvConfig.tc_int8_codes`
off, the form before 2026-12-06), `--tc-register-caps 96 80` those once more with each register cap
(`GemvConfig.tc_max_registers`: more programs resident an SM against spills),
`--tensor-cores` the other launches whose layout the tensor-core kernel reads (`tensor_core_gemv.FORMATS`;
expert tensors: `EXPERT_FORMATS`, GPT-OSS's MXFP4) once more on it. Writes `kernels_gemv.json` and
`kernels_gemv.md` to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.runinfo import copy_bandwidth
from kernels.formats import GGMLType, tensor_nbytes
from kernels.qtensor import QTensor

L2_FLUSH_BYTES = 256 << 20  # rotate over at least this many weight bytes (H100 L2: 50 MiB)


@dataclass(frozen=True)
class Shape:
    model: str
    tensor: str
    qtype: GGMLType
    out_features: int
    in_features: int
    n_expert: int = 0  # > 0: a 3-D expert tensor, `selected` experts per token
    selected: int = 0
    # CODES_THEN_SCALES (kernels.qtensor): MXFP4 experts as the CUDA model loads them (`triton_gemv.pack`),
    # Q8_0 and Q6_K as candidate layouts (their codes in 16-byte loads instead of the file's halfwords).
    regrouped: bool = False


Q = GGMLType
SHAPES = [
    # Qwen2.5-0.5B Q4_K_M (896-wide rows are not a multiple of 256: llama.cpp falls back to Q5_0/Q8_0).
    Shape("qwen2.5-0.5b", "attn_q / attn_output", Q.Q5_0, 896, 896),
    Shape("qwen2.5-0.5b", "attn_k / attn_v", Q.Q5_0, 128, 896),
    Shape("qwen2.5-0.5b", "ffn_gate / ffn_up", Q.Q5_0, 4864, 896),
    Shape("qwen2.5-0.5b", "ffn_down", Q.Q4_K, 896, 4864),
    Shape("qwen2.5-0.5b", "ffn_down (Q6_K layers)", Q.Q6_K, 896, 4864),
    Shape("qwen2.5-0.5b", "ffn_down (Q6_K layers), regrouped", Q.Q6_K, 896, 4864, regrouped=True),
    Shape("qwen2.5-0.5b", "output (tied token_embd)", Q.Q8_0, 151936, 896),
    Shape("qwen2.5-0.5b", "output (tied token_embd), regrouped", Q.Q8_0, 151936, 896, regrouped=True),
    # Phi-3-mini-4k Q4_K_M.
    Shape("phi-3-mini", "attn_qkv", Q.Q5_K, 9216, 3072),
    Shape("phi-3-mini", "attn_qkv (Q4_K layers)", Q.Q4_K, 9216, 3072),
    Shape("phi-3-mini", "attn_output", Q.Q4_K, 3072, 3072),
    Shape("phi-3-mini", "ffn_up (gate+up)", Q.Q4_K, 16384, 3072),
    Shape("phi-3-mini", "ffn_down", Q.Q6_K, 3072, 8192),
    Shape("phi-3-mini", "ffn_down, regrouped", Q.Q6_K, 3072, 8192, regrouped=True),
    Shape("phi-3-mini", "ffn_down (Q4_K layers)", Q.Q4_K, 3072, 8192),
    Shape("phi-3-mini", "output", Q.Q6_K, 32064, 3072),
    Shape("phi-3-mini", "output, regrouped", Q.Q6_K, 32064, 3072, regrouped=True),
    # GPT-OSS-20B MXFP4 MoE: experts MXFP4, everything else Q8_0.
    Shape("gpt-oss-20b", "attn_qkv (q+k+v)", Q.Q8_0, 5120, 2880),
    Shape("gpt-oss-20b", "attn_qkv (q+k+v), regrouped", Q.Q8_0, 5120, 2880, regrouped=True),
    Shape("gpt-oss-20b", "attn_output", Q.Q8_0, 2880, 4096),
    Shape("gpt-oss-20b", "attn_output, regrouped", Q.Q8_0, 2880, 4096, regrouped=True),
    Shape("gpt-oss-20b", "ffn_gate_exps / ffn_up_exps", Q.MXFP4, 2880, 2880, 32, 4),
    Shape("gpt-oss-20b", "ffn_down_exps", Q.MXFP4, 2880, 2880, 32, 4),
    Shape("gpt-oss-20b", "ffn_gate_exps / ffn_up_exps, regrouped", Q.MXFP4, 2880, 2880, 32, 4, True),
    Shape("gpt-oss-20b", "output", Q.Q8_0, 201088, 2880),
    Shape("gpt-oss-20b", "output, regrouped", Q.Q8_0, 201088, 2880, regrouped=True),
    # The brief's large single matrices, one per headline type.
    Shape("reference", "large Q4_K", Q.Q4_K, 4096, 3072),
    Shape("reference", "large MXFP4", Q.MXFP4, 2880, 2880),
    Shape("reference", "large Q8_0", Q.Q8_0, 151936, 896),
    # Every other supported type on one mid-size matrix.
    Shape("types", "Q4_0", Q.Q4_0, 4096, 4096),
    Shape("types", "Q4_1", Q.Q4_1, 4096, 4096),
    Shape("types", "Q5_1", Q.Q5_1, 4096, 4096),
    Shape("types", "Q5_K", Q.Q5_K, 4096, 4096),
    Shape("types", "Q6_K", Q.Q6_K, 4096, 4096),
    Shape("types", "F16", Q.F16, 4096, 4096),
    Shape("types", "BF16", Q.BF16, 4096, 4096),
]


@dataclass
class Result:
    model: str
    tensor: str
    qtype: str
    shape: str
    weight_bytes: int
    median_us: float
    gb_per_s: float
    pct_of_peak: float
    config: str
    # the µs beyond streaming weight_bytes at the copy bandwidth measured in the run: the launch's fixed cost
    beyond_stream_us: float | None = None
    best_config: str = ""
    best_gb_per_s: float = 0.0
    top: list = None  # the best few swept configurations, "config GB/s"
    ahead_us: float | None = None  # --ahead: the default shape loading ahead
    ahead_gb_per_s: float | None = None
    round_trip_free: str = ""  # --round-trip-free: the tile, and its time
    round_trip_free_us: float | None = None
    round_trip_free_gb_per_s: float | None = None
    # --cuda-cores: a default launch on the tensor cores, timed on the CUDA-core loop
    cuda_cores_us: float | None = None
    cuda_cores_gb_per_s: float | None = None
    # --tensor-cores: a default launch on the CUDA cores whose layout the tensor-core kernel reads, on it
    tensor_cores_us: float | None = None
    tensor_cores_gb_per_s: float | None = None
    # --float16-codes: a default Q4_K launch on the tensor cores, timed on float16 mma (`tc_int8_codes` off)
    float16_codes_us: float | None = None
    float16_codes_gb_per_s: float | None = None
    # --tc-register-caps: a default launch on the tensor cores timed at each cap, "r<cap> <µs> us <GB/s>"
    register_caps: list = None
    walks: list = None  # --tc-units: "uN us GB/s" for each walk length timed
    units_ahead: list = None  # --tc-ahead: "aN us GB/s" for each look-ahead timed
    warp_splits: list = None  # --tc-warp-split: "wN us GB/s" for each warp split timed


def random_weight(shape: Shape, device: torch.device) -> QTensor:
    """Random packed bytes with small finite f16 scales (timing does not depend on the values)."""
    dims = (
        (shape.n_expert, shape.out_features, shape.in_features)
        if shape.n_expert
        else (
            shape.out_features,
            shape.in_features,
        )
    )
    nbytes = tensor_nbytes(shape.qtype, dims)
    data = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    if shape.qtype in (GGMLType.F16, GGMLType.BF16):
        dtype = torch.float16 if shape.qtype == GGMLType.F16 else torch.bfloat16
        data = (torch.randn(nbytes // 2, device=device) * 0.05).to(dtype).view(torch.uint8)
    elif shape.qtype not in (GGMLType.MXFP4,):
        # Clear the top exponent bit of every byte: f16 fields then stay finite (|v| < 2).
        data &= 0xBF
    w = QTensor(data, shape.qtype, dims, f"{shape.model}.{shape.tensor}")
    if shape.regrouped:  # as `triton_gemv.pack` regroups MXFP4 experts, for any type that has the layout
        w = w.codes_then_scales_in_place()
    return w


def time_launches(fn, n_inputs: int, replays: int) -> float:
    """Device microseconds per `fn(i)`: a CUDA graph of max(n_inputs, 20) launches (i rotating over the
    inputs) is replayed `replays` times after a warm-up; median replay time / launches."""
    for i in range(min(n_inputs, 3)):
        fn(i)  # compiles, allocates
    torch.cuda.synchronize()
    per_graph = max(n_inputs, 20)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for j in range(per_graph):
            fn(j % n_inputs)
    for _ in range(2):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / per_graph)
    del graph
    return statistics.median(times)


def sweep_configs(shape: Shape, n_out_rows: int, sm_count: int, compact: bool = False) -> list:
    """The launch configurations `--sweep` times. `compact`: no software pipelining (depth 1, which won
    on every K-quant and MXFP4 shape of the full sweep), 8 warps beside 4, and the splits in between
    the powers of two: fewer compiled variants, so a sweep fits a short device call."""
    from kernels.triton_gemv import LAYOUTS, REGROUPED_LAYOUTS, SUPERBLOCK_FORMATS, GemvConfig

    layout = REGROUPED_LAYOUTS[shape.qtype] if shape.regrouped else LAYOUTS[shape.qtype]
    n_units = shape.in_features // layout.unit
    # With the tiles whose loop keeps every operand in one layout (no shared-memory round trip inside
    # the loop, `benchmarks.ptx_cost`'s round-trips column): Q8_0 and Q5_0 at n16/u4 with 4 warps or
    # n16/u8 with 8, Q6_K at n8 (and since its halfword scales, n16).
    if layout.fmt in SUPERBLOCK_FORMATS:
        tiles = [(8, 1, 4), (16, 1, 4), (32, 1, 4), (64, 1, 4), (32, 1, 8), (64, 1, 8)]
        if compact:
            tiles = [(8, 1, 4), (16, 1, 4), (32, 1, 4), (32, 1, 8), (64, 1, 8)]
    else:
        tiles = [(16, 8, 4), (16, 4, 4), (16, 8, 8), (32, 4, 4), (64, 2, 4), (16, 16, 4), (8, 32, 4)]
        if compact:
            tiles = [(8, 32, 4), (16, 4, 4), (16, 8, 4), (16, 8, 8), (16, 16, 4), (16, 16, 8), (32, 4, 4)]
    configs = []
    for block_n, ub, warps in tiles:
        if ub > 1 and ub > 2 * n_units:
            continue
        steps = -(-n_units // ub)
        for stages in (1,) if compact else (1, 2, 3):
            for split in (1, 2, 3, 4, 6, 8) if compact else (1, 2, 4, 8, 16):
                if split > 1 and steps // split < 2:
                    break
                configs.append(GemvConfig(block_n, ub, warps, split, stages))
    return configs


# `--sweep-split`'s splits: a program's share of a row from the whole row down to one step.
SWEPT_SPLITS = (1, 2, 3, 4, 6, 8, 12, 16)


def split_sweep_configs(default, layout, in_features: int) -> list:
    """The launch configurations `--sweep-split` times for a matrix of `in_features` inputs read in `layout`
    (`triton_gemv.layout_of`): the default launch (`default`) with every split of
    `SWEPT_SPLITS` that leaves each program at least one step, and for the super-block formats also with
    16 or 32 rows a program. Everything else stays the default's (loop form, register cap, warps), so the
    grid's size is the one thing that moves: Nsight Compute finds the K-quant GEMVs waiting on their loads
    with 16-43 % of an SM's warp slots filled (`benchmarks.ncu_gemv`, 2026-12-06), a grid of ~4 programs
    an SM where 8 fit."""
    from kernels.triton_gemv import SUPERBLOCK_FORMATS

    steps = -(-(in_features // layout.unit) // default.units_per_step)
    rows = (16, 32) if layout.fmt in SUPERBLOCK_FORMATS else (default.block_n,)
    configs = []
    for block_n in sorted({default.block_n, *rows}):
        for split in SWEPT_SPLITS:
            if split > steps:
                break
            config = dataclasses.replace(default, block_n=block_n, split=split)
            if config != default:
                configs.append(config)
    return configs


def bench_shape(shape: Shape, args, device: torch.device, sm_count: int) -> Result:
    from kernels.triton_gemv import default_config, launch, layout_of

    w0 = random_weight(shape, device)
    copies = [w0] + [
        QTensor(w0.data.clone(), w0.qtype, w0.shape, w0.name, w0.layout)
        for _ in range(max(0, min(1024, -(-L2_FLUSH_BYTES // w0.nbytes)) - 1))
    ]
    x = torch.randn(1, shape.in_features, device=device)
    if shape.n_expert:
        n_out_rows = shape.selected
        ids = torch.randperm(shape.n_expert, device=device)[: shape.selected].contiguous()
        weight_bytes = w0.row_bytes * shape.selected

        def run(i, config=None):
            return launch(x, copies[i], None, n_out_rows, expert_ids=ids, x_group=n_out_rows, config=config)

    else:
        n_out_rows = 1
        weight_bytes = w0.nbytes

        def run(i, config=None):
            return launch(x, copies[i], None, 1, config=config)

    # The worker's default launch (its kernel set asks for the tensor cores: `triton_gemv.FAST_PATH`).
    config = default_config(
        shape.qtype,
        shape.out_features,
        shape.in_features,
        n_out_rows,
        sm_count,
        layout=layout_of(w0),
        tensor_cores=True,
    )
    us = time_launches(lambda i: run(i, config), len(copies), args.replays)
    gbs = weight_bytes / (us * 1e-6) / 1e9
    result = Result(
        shape.model,
        shape.tensor,
        shape.qtype.name,
        f"{shape.n_expert}x{shape.out_features}x{shape.in_features} (k={shape.selected})"
        if shape.n_expert
        else f"{shape.out_features}x{shape.in_features}",
        weight_bytes,
        round(us, 2),
        round(gbs, 1),
        round(100 * gbs / args.peak, 1),
        _fmt_config(config),
        round(us - weight_bytes / (args.copy_gb_per_s * 1e3), 2),
    )
    if args.ahead and _loads_ahead(w0):
        ahead = dataclasses.replace(config, ahead=True, tensor_cores=False)
        result.ahead_us = round(time_launches(lambda i: run(i, ahead), len(copies), args.replays), 2)
        result.ahead_gb_per_s = round(weight_bytes / (result.ahead_us * 1e-6) / 1e9, 1)
    if args.round_trip_free:
        from benchmarks.step_ab import GEMV_SHAPE_RULES

        shape_args = (shape.out_features, shape.in_features, n_out_rows, sm_count)
        tile = GEMV_SHAPE_RULES["round-trip-free"](config, layout_of(w0), shape_args)
        if tile != config:
            result.round_trip_free = _fmt_config(tile)
            result.round_trip_free_us = round(
                time_launches(lambda i: run(i, tile), len(copies), args.replays), 2
            )
            result.round_trip_free_gb_per_s = round(
                weight_bytes / (result.round_trip_free_us * 1e-6) / 1e9, 1
            )
    if args.cuda_cores and config.tensor_cores:
        cuda_cores = dataclasses.replace(config, tensor_cores=False)
        result.cuda_cores_us = round(
            time_launches(lambda i: run(i, cuda_cores), len(copies), args.replays), 2
        )
        result.cuda_cores_gb_per_s = round(weight_bytes / (result.cuda_cores_us * 1e-6) / 1e9, 1)
    if args.float16_codes and config.tensor_cores and layout_of(w0).fmt == "q4_k":
        float16 = dataclasses.replace(config, tc_int8_codes=False)
        result.float16_codes_us = round(
            time_launches(lambda i: run(i, float16), len(copies), args.replays), 2
        )
        result.float16_codes_gb_per_s = round(weight_bytes / (result.float16_codes_us * 1e-6) / 1e9, 1)

    def timed_each(field: str, label: str, values: list[int], base: Any = None) -> list[str]:
        """The launch (`base`, else the default's) with `GemvConfig.<field>` at each of `values`:
        "<label><value> µs GB/s" each."""
        timed = []
        for value in values:
            form = dataclasses.replace(base or config, **{field: value})
            us = time_launches(lambda i, c=form: run(i, c), len(copies), args.replays)
            timed.append(f"{label}{value} {us:.2f} us {weight_bytes / (us * 1e-6) / 1e9:.0f}")
        return timed

    if args.tc_register_caps and config.tensor_cores:
        result.register_caps = timed_each("tc_max_registers", "r", args.tc_register_caps)
    if args.tc_units and config.tensor_cores:
        result.walks = timed_each("tc_units_per_program", "u", args.tc_units)
    if args.tc_ahead and config.tensor_cores:
        result.units_ahead = timed_each("tc_units_ahead", "a", args.tc_ahead)
    if args.tc_warp_split and config.tensor_cores:
        result.warp_splits = timed_each("tc_warp_split", "w", args.tc_warp_split)
    if args.tensor_cores and not config.tensor_cores and _tensor_core_layout(w0):
        on_tc = dataclasses.replace(config, tensor_cores=True)
        result.tensor_cores_us = round(time_launches(lambda i: run(i, on_tc), len(copies), args.replays), 2)
        result.tensor_cores_gb_per_s = round(weight_bytes / (result.tensor_cores_us * 1e-6) / 1e9, 1)
        # --tc-units and --tc-ahead time the launch's tensor-core form too (the block formats' walks)
        if args.tc_units:
            result.walks = timed_each("tc_units_per_program", "u", args.tc_units, on_tc)
        if args.tc_ahead:
            result.units_ahead = timed_each("tc_units_ahead", "a", args.tc_ahead, on_tc)
    if args.sweep or args.sweep_split:
        # The sweeps vary the CUDA-core loop's launch (the tensor-core kernel picks its own tiles).
        config = dataclasses.replace(config, tensor_cores=False)
        scored = [(gbs, config)]
        candidates = (
            split_sweep_configs(config, layout_of(w0), shape.in_features)
            if args.sweep_split
            else sweep_configs(shape, n_out_rows, sm_count, args.compact)
        )
        for cand in candidates:
            cand_us = time_launches(lambda i, c=cand: run(i, c), len(copies), max(3, args.replays // 3))
            scored.append((weight_bytes / (cand_us * 1e-6) / 1e9, cand))
        scored.sort(key=lambda item: -item[0])
        result.best_config, result.best_gb_per_s = _fmt_config(scored[0][1]), round(scored[0][0], 1)
        result.top = [f"{_fmt_config(c)} {g:.0f}" for g, c in scored[:5]]
    return result


def _tensor_core_layout(w: QTensor) -> bool:
    from kernels import tensor_core_gemv
    from kernels.triton_gemv import layout_of

    # a 2-D matrix of a layout it reads, or an expert tensor of one it reads by token-expert pair
    return layout_of(w).fmt in (
        tensor_core_gemv.FORMATS if len(w.shape) == 2 else tensor_core_gemv.EXPERT_FORMATS
    )


def _loads_ahead(w: QTensor) -> bool:
    from kernels.triton_gemv import AHEAD_FORMATS, layout_of

    return layout_of(w).fmt in AHEAD_FORMATS


def _fmt_config(config) -> str:
    shape = f"n{config.block_n}/u{config.units_per_step}/w{config.num_warps}/s{config.split}/p{config.stages}"
    regs = f"/r{config.register_cap}" if config.register_cap else ""
    if config.tensor_cores:  # its own 64-row tiles and split (`tensor_core_gemv.launch`)
        return "tensor cores"
    return shape + ("/ahead" if config.ahead else "") + regs


def to_markdown(results: list[Result], meta: dict) -> str:
    lines = [
        f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}; {meta['date']}.",
        f"Copy bandwidth (read + write) measured in the same run: {meta['copy_gb_per_s']:.0f} GB/s. "
        f"% is of {meta['peak_gb_per_s']:.0f} GB/s.",
        "",
        "| model | tensor | type | shape | MiB read | µs | GB/s | % | beyond streaming µs | config | loading ahead µs | GB/s "
        "| round-trip-free tile | µs | GB/s | CUDA-core loop µs | GB/s | tensor cores µs | GB/s | float16 codes µs | GB/s "
        "| register caps (µs, GB/s) | walks (µs, GB/s) | units ahead (µs, GB/s) | warp splits (µs, GB/s) "
        "| best swept | best GB/s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.tensor} | {r.qtype} | {r.shape} | {r.weight_bytes / 2**20:.2f} | {r.median_us} "
            f"| {r.gb_per_s} | {r.pct_of_peak} | {r.beyond_stream_us} | {r.config} | {r.ahead_us or ''} | {r.ahead_gb_per_s or ''} "
            f"| {r.round_trip_free} | {r.round_trip_free_us or ''} | {r.round_trip_free_gb_per_s or ''} "
            f"| {r.cuda_cores_us or ''} | {r.cuda_cores_gb_per_s or ''} "
            f"| {r.tensor_cores_us or ''} | {r.tensor_cores_gb_per_s or ''} "
            f"| {r.float16_codes_us or ''} | {r.float16_codes_gb_per_s or ''} "
            f"| {'; '.join(r.register_caps or [])} "
            f"| {'; '.join(r.walks or [])} "
            f"| {'; '.join(r.units_ahead or [])} "
            f"| {'; '.join(r.warp_splits or [])} "
            f"| {r.best_config} | {r.best_gb_per_s or ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument(
        "--peak",
        type=float,
        default=None,
        help="GB/s taken as 100 %% (default: the copy bandwidth measured in the same run)",
    )
    parser.add_argument("--replays", type=int, default=15, help="timed graph replays per shape")
    sweeps = parser.add_mutually_exclusive_group()
    sweeps.add_argument("--sweep", action="store_true")
    sweeps.add_argument(
        "--sweep-split",
        action="store_true",
        help="sweep the default launch's split and rows a program only (see split_sweep_configs)",
    )
    parser.add_argument(
        "--compact", action="store_true", help="with --sweep: the short grid (see sweep_configs)"
    )
    parser.add_argument(
        "--ahead", action="store_true", help="also the default launch shape loading ahead (GemvConfig.ahead)"
    )
    parser.add_argument(
        "--round-trip-free",
        action="store_true",
        help="also Q5_0/Q8_0 shapes in the tile without shared-memory round trips (step_ab's variant)",
    )
    parser.add_argument(
        "--tensor-cores",
        action="store_true",
        help="also the launches the default runs on the CUDA cores whose layout the tensor-core kernel reads "
        "(the smaller Q4_K and Q6_K ones, regrouped Q8_0, MXFP4 and MXFP4 experts), on the tensor cores",
    )
    parser.add_argument(
        "--cuda-cores",
        action="store_true",
        help="also the launches the default runs on the tensor cores, on the CUDA-core loop",
    )
    parser.add_argument(
        "--float16-codes",
        action="store_true",
        help="also the Q4_K launches the default runs on the tensor cores, on float16 mma (tc_int8_codes off)",
    )
    parser.add_argument(
        "--tc-register-caps",
        type=int,
        nargs="+",
        metavar="N",
        help="also the launches the default runs on the tensor cores, at each of these register caps (maxnreg)",
    )
    parser.add_argument(
        "--tc-units",
        type=int,
        nargs="+",
        metavar="N",
        help="also the launches the default runs on the tensor cores, each program walking N units (super-"
        "blocks or blocks; `GemvConfig.tc_units_per_program`, where N divides the row's); with "
        "--tensor-cores, also the tensor-core forms of the others",
    )
    parser.add_argument(
        "--tc-ahead",
        type=int,
        nargs="+",
        metavar="N",
        help="also the launches the default runs on the tensor cores with N units' words in flight beside the "
        "one multiplied (1 or 2; `GemvConfig.tc_units_ahead`)",
    )
    parser.add_argument(
        "--tc-warp-split",
        type=int,
        nargs="+",
        metavar="N",
        help="also the launches the default runs on the tensor cores with each row tile's units across N of "
        "its warps (1, 2 or 4; `GemvConfig.tc_warp_split`, where N divides the row's units)",
    )
    parser.add_argument("--only", default="", help="run only shapes whose model/tensor/type contains this")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernels_gemv: no CUDA device", file=sys.stderr)
        return 2
    import triton

    device = torch.device("cuda")
    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    meta = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "copy_gb_per_s": copy_bandwidth(device)["gbps"],
    }
    args.copy_gb_per_s = meta["copy_gb_per_s"]
    if args.peak is None:
        args.peak = args.copy_gb_per_s
    meta["peak_gb_per_s"] = args.peak
    print(json.dumps(meta), flush=True)
    results = []
    for shape in SHAPES:
        if args.only and args.only.lower() not in f"{shape.model} {shape.tensor} {shape.qtype.name}".lower():
            continue
        r = bench_shape(shape, args, device, sm_count)
        results.append(r)
        best = f"  top: {', '.join(r.top)}" if r.top else ""
        if r.round_trip_free_us is not None:
            best = (
                f"  {r.round_trip_free}: {r.round_trip_free_us:.2f} us {r.round_trip_free_gb_per_s:.1f} GB/s"
                + best
            )
        if r.register_caps:
            best = f"  capped: {', '.join(r.register_caps)}" + best
        if r.walks:
            best = f"  walks: {', '.join(r.walks)}" + best
        if r.units_ahead:
            best = f"  ahead: {', '.join(r.units_ahead)}" + best
        if r.warp_splits:
            best = f"  warp splits: {', '.join(r.warp_splits)}" + best
        if r.float16_codes_us is not None:
            best = f"  float16 codes: {r.float16_codes_us:.2f} us {r.float16_codes_gb_per_s:.1f} GB/s" + best
        if r.tensor_cores_us is not None:
            best = f"  tensor cores: {r.tensor_cores_us:.2f} us {r.tensor_cores_gb_per_s:.1f} GB/s" + best
        if r.cuda_cores_us is not None:
            best = f"  CUDA cores: {r.cuda_cores_us:.2f} us {r.cuda_cores_gb_per_s:.1f} GB/s" + best
        if r.ahead_us is not None:
            best = f"  ahead: {r.ahead_us:.2f} us {r.ahead_gb_per_s:.1f} GB/s" + best
        print(
            f"{r.model:13s} {r.tensor:30s} {r.qtype:6s} {r.shape:26s} {r.median_us:9.2f} us "
            f"{r.gb_per_s:8.1f} GB/s {r.pct_of_peak:5.1f} % {r.beyond_stream_us:6.2f} us beyond  {r.config}{best}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": [asdict(r) for r in results]}
    (args.out / "kernels_gemv.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "kernels_gemv.md").write_text(to_markdown(results, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
