"""The decode GEMV's (or the prefill GEMM's) inner loop per weight, from its PTX for the H200 (sm_90),
without a GPU.

    python -m benchmarks.ptx_cost [--formats q4_k mxfp4 q6_k_codes_then_scales ...] [--shape 4096x4096] [--block-n 16] [--ub 8]
                                  [--warps 4] [--form plain] [--ahead] [--out FILE.md]
    python -m benchmarks.ptx_cost --kernel prefill-gemm [--formats ...] [--out FILE.md]
    python -m benchmarks.ptx_cost --kernel rope-attention [--out FILE.md]
    python -m benchmarks.ptx_cost --kernel tensor-core-gemv [--per N] [--out FILE.md]

For each format the GEMV kernel (`kernels/triton_gemv.py`, a decode launch of an `--shape` matrix in the
`--form` of `kernels.triton_offline.GEMV_FORMS` (default plain),
4 warps, its integer arguments specialised as a GPU run would) is compiled for sm_90 by Triton
(`kernels.triton_offline`), and its largest loop body, one step along the weight rows, is
counted: PTX instructions per thread, divided by the weights a thread decodes in that step (the tile over
the threads), shared-memory round trips per step (barriers: layout changes), and the commonest opcodes;
and Triton's ptxas (`-v`, sm_90a) reports the registers a thread holds and any spills (more registers,
fewer programs resident per SM: 65,536 registers an SM); Triton's nvdisasm the whole kernel's SASS
instructions and, among them, the conversions that issue on the narrow pipe (I2F, F2I, F2F: 16 a clock an
SM), which PTX's `cvt` count does not tell apart from the fast I2FP / F2FP. A proxy, not a timing: PTX comes before ptxas's
scheduling and register allocation, and a kernel bound by memory does not care. It tells a change that
removes work from one that moves it, and which formats spend the most instructions per weight, before any
GPU time is spent (the MXFP4 expert GEMV, 16 % of the copy bandwidth on the H200, spends 17.5
instructions per weight; `results/2026-12-04-h200-mxfp4-regrouped.md`).

The loop in SASS too (`kernels.triton_offline.sass_loop`): instructions a weight, those on the integer
ALU pipe (16 lanes a clock per SM quarter on sm_90, half the FMA pipe's 32), and the bandwidth at which the
loop would run out of issue slots or ALU cycles if no load were ever waited on (`ISSUE_BOUND`: 132 SMs at
1.98 GHz, the weight's bytes): a GEMV measured well below it is bound by latency (too few bytes in flight),
not by its decode's instructions.

`--kernel rope-attention`: the decode step's RoPE + KV store + attention (`kernels/triton_decode.py`) for the
three models' head layouts, in its default tile and `attention_tile(retiled=True)`'s: one loop step (a
block of cache positions) in SASS, its barriers and shuffles, registers and spills.

`--kernel tensor-core-gemv`: `kernels/tensor_core_gemv.py` in each form of
`kernels.triton_offline.TENSOR_CORE_FORMS` (the decode steps' launches, its own walk lengths or `--per`
units a program): its mmas, the whole kernel's SASS, the SASS a thread issues a unit of its walk and a
code (a unit is a super-block or a 32-code block; a thread holds 128 or 16 codes of it), registers and
spills. The CUDA-core loop's figure to set it against is `loop SASS / weight` above.

`--kernel prefill-gemm`: the same counts for `kernels/triton_qgemm.py` in the launch shapes
`default_config` picks for 512 rows, dense and grouped by expert: the loop decodes a weight tile and feeds
the tensor cores (wgmma) once per `BLOCK_M` rows, so its instructions per weight are paid once per
`BLOCK_M` rows of the prompt.

Needs Triton importable (CPU machines: `pip install --target /tmp/tt triton==3.6.0`, `PYTHONPATH=/tmp/tt`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def cost_rows(
    formats: list[str],
    block_n: int | None,
    ub: int | None,
    shape: tuple[int, int] = (4096, 4096),
    form: str = "plain",
    ahead: bool = False,
    num_warps: int | None = None,
) -> list[dict]:
    """One row per format (a name ending in `REGROUPED_SUFFIX`: the type regrouped as the worker reads
    it, e.g. `REGROUPED_MXFP4`, "q6_k_codes_then_scales"); with `ahead`,
    formats whose loop loads ahead (`triton_gemv.AHEAD_FORMATS`) get a second row in that form."""
    from kernels.formats import GGMLType
    from kernels.qtensor import CODES_THEN_SCALES, GGML
    from kernels.triton_gemv import AHEAD_FORMATS, default_config
    from kernels.triton_offline import (
        compile_gemv,
        kernel_layout,
    )

    rows = []
    for name in formats:
        # "<type>_codes_then_scales": the type regrouped (`REGROUPED_LAYOUTS`: MXFP4, Q8_0, Q6_K)
        regrouped = name.endswith(REGROUPED_SUFFIX)
        order = CODES_THEN_SCALES if regrouped else GGML
        qtype = GGMLType[name.removesuffix(REGROUPED_SUFFIX).upper()]
        layout = kernel_layout(qtype, order)
        # The tile the worker launches for this matrix on an H200 (132 SMs), unless given.
        config = default_config(qtype, shape[0], shape[1], 1, 132, layout=layout)
        bn = block_n or config.block_n
        u = ub or config.units_per_step
        warps = num_warps or config.num_warps
        for loads_ahead in (False, True) if ahead and layout.fmt in AHEAD_FORMATS else (False,):
            compiled = compile_gemv(
                qtype,
                form,
                block_n=bn,
                ub=u,
                shape=shape,
                block_order=order,
                ahead=loads_ahead,
                num_warps=warps,
                # the launch's register cap, for the tile it is set for
                max_registers=dataclasses.replace(config, ahead=loads_ahead).register_cap
                if (bn, u, warps) == (config.block_n, config.units_per_step, config.num_warps)
                else None,
            )
            label = f"{name} ahead" if loads_ahead else name
            rows.append(_gemv_row(compiled, label, layout, bn, u, qtype, warps))
    return rows


def _gemv_row(compiled, label: str, layout, bn: int, u: int, qtype, warps: int) -> dict:
    from kernels.formats import FORMATS
    from kernels.triton_offline import loop_cost, register_use, weights_per_thread_step

    ptx = compiled.asm["ptx"]
    cost, use = loop_cost(ptx), register_use(ptx)
    weights = weights_per_thread_step(layout, bn, u, warps)
    top = ", ".join(f"{op} {n}" for op, n in list(cost.opcodes.items())[:6])
    return dict(
        format=label, tile=f"n{bn}/u{u}/w{warps}", instructions=cost.instructions, weights=weights,
        per_weight=round(cost.instructions / weights, 1), shared_round_trips=cost.shared_round_trips,
        registers=use.registers, spill_bytes=use.spill_bytes, top=top,
        **_sass_columns(compiled.asm["cubin"]),
        **_loop_sass_columns(compiled.asm["cubin"], weights, FORMATS[qtype].type_size / FORMATS[qtype].block_size),
    )  # fmt: skip


REGROUPED_SUFFIX = "_codes_then_scales"  # a --formats name's ending: the type regrouped at load
REGROUPED_MXFP4 = "mxfp4" + REGROUPED_SUFFIX  # MXFP4 as the worker reads expert tensors


# The H200 the bound is for: SMs, boost clock, and per SM quarter a clock: one warp instruction issued,
# 32 FMA-pipe lanes, 16 ALU-pipe lanes.
H200_SMS, H200_CLOCK_HZ, ISSUE_LANES, ALU_LANES = 132, 1.98e9, 32, 16


def issue_bound_gbps(sass_per_weight: float, alu_per_weight: float, bytes_per_weight: float) -> float:
    """GB/s at which a loop of `sass_per_weight` instructions (per thread and weight), `alu_per_weight` of
    them on the ALU pipe, runs out of issue slots or ALU cycles on the H200 (no waiting on loads)."""
    weights_per_clock = min(ISSUE_LANES / sass_per_weight, ALU_LANES / max(alu_per_weight, 1e-9))
    return weights_per_clock * 4 * H200_SMS * H200_CLOCK_HZ * bytes_per_weight / 1e9


def _loop_sass_columns(cubin: bytes, weights: float, bytes_per_weight: float | None) -> dict:
    """The loop's SASS a weight, its ALU-pipe share, and (GEMV) the issue bound it implies."""
    from kernels.triton_offline import pipe_mix, sass_loop

    loop = sass_loop(cubin)
    per_weight = sum(loop.values()) / weights
    alu = pipe_mix(loop)["alu"] / weights
    bound = issue_bound_gbps(per_weight, alu, bytes_per_weight) if bytes_per_weight and per_weight else None
    return dict(
        loop_sass_per_weight=round(per_weight, 2),
        alu_per_weight=round(alu, 2),
        issue_bound_gbps=None if bound is None else round(bound),
    )


def _sass_columns(cubin: bytes) -> dict:
    """The kernel's SASS instructions, those of its conversions that issue on the narrow pipe, and its
    memory round trips (`triton_offline.memory_round_trips`: before the loop + per step + after it)."""
    from kernels.triton_offline import memory_round_trips, sass_opcodes

    ops = sass_opcodes(cubin)
    trips = memory_round_trips(cubin)
    return dict(
        sass=sum(ops.values()),
        narrow_conversions=ops["I2F"] + ops["F2I"] + ops["F2F"],
        round_trips=f"{trips.prologue} + {trips.per_step}/step + {trips.epilogue}",
    )


def prefill_gemm_rows(formats: list[str], shape: tuple[int, int] = (4096, 4096)) -> list[dict]:
    """The prefill GEMM's loop per weight for each decoder, dense and grouped, in its default launch
    shapes, for an `shape` matrix (its integer arguments specialised as a GPU run would)."""
    from kernels.triton_offline import compile_qgemm, loop_cost, register_use
    from kernels.triton_qgemm import REGROUPED_MXFP4, default_config

    rows = []
    for name in [*formats, *([REGROUPED_MXFP4] if "mxfp4" in formats else [])]:
        if name in ("q4_k", "q5_k", "q6_k") and shape[1] % 256:
            continue  # a K-quant row is whole 256-value super-blocks
        for grouped in (False, True):
            config = default_config(512, grouped=grouped)
            compiled = compile_qgemm(name, grouped=grouped, config=config, shape=shape)
            ptx = compiled.asm["ptx"]
            cost, use = loop_cost(ptx), register_use(ptx)
            weights = config.block_n * config.block_k / (config.num_warps * 32)
            top = ", ".join(f"{op} {n}" for op, n in list(cost.opcodes.items())[:6])
            tile = f"m{config.block_m}/n{config.block_n}/k{config.block_k}/w{config.num_warps}"
            rows.append(
                dict(
                    format=f"{name} ({'experts' if grouped else 'dense'})", tile=tile,
                    instructions=cost.instructions, weights=weights,
                    per_weight=round(cost.instructions / weights, 1), shared_round_trips=cost.shared_round_trips,
                    registers=use.registers, spill_bytes=use.spill_bytes, top=top,
                    **_sass_columns(compiled.asm["cubin"]),
                    **_loop_sass_columns(compiled.asm["cubin"], weights, None),
                )
            )  # fmt: skip
    return rows


# (model, query heads per KV head, head dim, rotary half): the M0 models' attention layouts.
ATTENTION_LAYOUTS = [("qwen2.5-0.5b", 7, 64, 32), ("phi-3-mini", 1, 96, 48), ("gpt-oss-20b", 8, 64, 32)]


def attention_rows() -> list[dict]:
    """`--kernel rope-attention`: each layout's loop step, default and re-tiled (split form, as a decode
    step with a 256-position cache launches it)."""
    import triton

    from kernels import triton_decode
    from kernels.triton_offline import (
        compile_rope_attention,
        memory_round_trips,
        pipe_mix,
        register_use,
        sass_loop,
    )

    rows = []
    for model, group, d, rope_half in ATTENTION_LAYOUTS:
        for retiled in (False, True):
            tile = triton_decode.attention_tile(group, triton.next_power_of_2(d), retiled=retiled)
            kernel = compile_rope_attention(group, d, rope_half, tile, sinks=model.startswith("gpt-oss"))
            loop, use = sass_loop(kernel.asm["cubin"]), register_use(kernel.asm["ptx"])
            trips = memory_round_trips(kernel.asm["cubin"])
            rows.append(
                dict(
                    model=model, tile=f"g{tile.block_g}/s{tile.block_s}{'/dot' if tile.dot else ''}",
                    retiled=retiled, loop_sass=sum(loop.values()), per_position=round(sum(loop.values()) / tile.block_s, 1),
                    barriers=loop["BAR"], shuffles=loop["SHFL"], ffma=loop["FFMA"], alu=pipe_mix(loop)["alu"],
                    registers=use.registers, spill_bytes=use.spill_bytes,
                    round_trips=f"{trips.prologue} + {trips.per_step}/step + {trips.epilogue}",
                )
            )  # fmt: skip
    return rows


def tensor_core_rows(per: int | None = None, forms: tuple[str, ...] | None = None) -> list[dict]:
    """`--kernel tensor-core-gemv`: each form of `triton_offline.TENSOR_CORE_FORMS` (or of `forms`)."""
    from kernels import tensor_core_gemv
    from kernels.triton_offline import (
        TENSOR_CORE_FORMS,
        compile_tensor_core_gemv,
        register_use,
        sass_opcodes,
        tensor_core_walk_sass,
    )

    rows = []
    for form in forms or tuple(TENSOR_CORE_FORMS):
        constants = TENSOR_CORE_FORMS[form]
        kernel = compile_tensor_core_gemv(form, per)
        fmt = constants["FMT"]
        per_unit = tensor_core_walk_sass(kernel.asm["cubin"], fmt, bool(constants["INT8_CODES"]))
        # codes a thread multiplies a unit: the unit's codes x 64 rows over 128 threads
        codes = (
            tensor_core_gemv.UNITS[fmt]
            * tensor_core_gemv.ROWS_PER_PROGRAM
            // (32 * tensor_core_gemv.NUM_WARPS)
        )
        use, ops = register_use(kernel.asm["ptx"]), sass_opcodes(kernel.asm["cubin"])
        rows.append(
            dict(
                form=form, fmt=fmt, per=per or constants["PER"], mmas=ops["HMMA"] + ops["IMMA"],
                sass=sum(ops.values()),
                walk_per_unit=None if per_unit is None else round(per_unit, 1),
                walk_per_code=None if per_unit is None else round(per_unit / codes, 2),
                registers=use.registers, spill_bytes=use.spill_bytes,
            )
        )  # fmt: skip
    return rows


def tensor_core_markdown(rows: list[dict]) -> str:
    lines = [
        "| form | layout | units a program | mmas | kernel SASS | walk SASS / unit | walk SASS / code | registers | spill bytes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['form']} | {r['fmt']} | {r['per']} | {r['mmas']} | {r['sass']} | {r['walk_per_unit'] or '-'} | "
            f"**{r['walk_per_code'] or '-'}** | {r['registers']} | {r['spill_bytes']} |"
        )
    return "\n".join(lines) + "\n"


def attention_markdown(rows: list[dict]) -> str:
    lines = [
        "| model | tile | re-tiled | loop SASS / step | per position | barriers | shuffles | FFMA | ALU | registers | spill bytes | memory round trips |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['tile']} | {r['retiled']} | {r['loop_sass']} | {r['per_position']} | "
            f"{r['barriers']} | {r['shuffles']} | {r['ffma']} | {r['alu']} | {r['registers']} | {r['spill_bytes']} | "
            f"{r['round_trips']} |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "| format | tile | loop PTX instructions / thread | weights / thread | per weight | shared round trips / step | registers / thread | spill bytes | kernel SASS | I2F/F2I/F2F in it | loop SASS / weight | ALU-pipe / weight | issue bound GB/s | memory round trips | commonest PTX |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        bound = "-" if r.get("issue_bound_gbps") is None else f"{r['issue_bound_gbps']:,}"
        lines.append(
            f"| {r['format']} | {r['tile']} | {r['instructions']} | {r['weights']:g} | **{r['per_weight']}** | "
            f"{r['shared_round_trips']} | {r['registers']} | {r['spill_bytes']} | {r['sass']} | "
            f"{r['narrow_conversions']} | {r.get('loop_sass_per_weight', '-')} | {r.get('alu_per_weight', '-')} | "
            f"{bound} | {r['round_trips']} | {r['top']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ptx_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["q4_0", "q4_1", "q5_0", "q8_0", "mxfp4", "q4_k", "q5_k", "q6_k", "f16"],
    )
    parser.add_argument("--block-n", type=int, help="rows per program (default: the worker's tile)")
    parser.add_argument("--ub", type=int, help="blocks per step (default: the worker's tile)")
    parser.add_argument("--warps", type=int, help="warps per program (default: the worker's)")
    parser.add_argument("--shape", default="4096x4096", help="the matrix, OUTxIN (default 4096x4096)")
    parser.add_argument("--form", default="plain", help="launch form (kernels.triton_offline.GEMV_FORMS)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument(
        "--ahead",
        action="store_true",
        help="also each format's loop that loads a step's words before the previous step is decoded",
    )
    parser.add_argument(
        "--kernel",
        choices=["gemv", "prefill-gemm", "rope-attention", "tensor-core-gemv"],
        default="gemv",
        help="the decode GEMV (default), the prefill GEMM (kernels/triton_qgemm.py), the decode attention, "
        "or the tensor-core decode GEMV (kernels/tensor_core_gemv.py)",
    )
    parser.add_argument(
        "--per", type=int, help="tensor-core-gemv: units a program walks (default: each form's)"
    )
    args = parser.parse_args(argv)
    try:
        import triton  # noqa: F401
    except ImportError:
        print("error: Triton is not importable here (see the module's docstring)", file=sys.stderr)
        return 1
    out_features, in_features = (int(v) for v in args.shape.lower().split("x"))
    if args.kernel == "rope-attention":
        table = attention_markdown(attention_rows())
        print(table, end="")
        if args.out:
            args.out.write_text(table)
        return 0
    if args.kernel == "tensor-core-gemv":
        table = tensor_core_markdown(tensor_core_rows(args.per))
        print(table, end="")
        if args.out:
            args.out.write_text(table)
        return 0
    if args.kernel == "prefill-gemm":
        rows = prefill_gemm_rows(args.formats, (out_features, in_features))
    else:
        rows = cost_rows(
            args.formats,
            args.block_n,
            args.ub,
            (out_features, in_features),
            args.form,
            args.ahead,
            args.warps,
        )
    table = to_markdown(rows)
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
