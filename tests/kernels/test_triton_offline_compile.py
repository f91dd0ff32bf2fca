"""The Triton GEMV, prefill GEMM and RoPE kernels compile for the H200 (sm_90) on a machine without a GPU.

Triton compiles down to a cubin without a device when it is given the target, so a kernel change can be
checked before any GPU time is spent: every format of `kernels/triton_gemv.py` in its seven launch forms
(plain; three segments with expert ids, biases and the split-K reduction; dequantize-only; the decode
step's rms-normed input with the residual sum's scaled copy through the split-K reduction; gate, up and
SiLU from an rms-normed input through the reduction; a bias, the residual and the scaled copy through
the reduction; experts' gate, up, biases and clamped SwiGLU), the early-launched decode kernels' wait before any memory access, the prefill GEMM of every format (dense and grouped
by expert, in its default launch shapes, without register spills), and the
RoPE + KV store (+ attention) kernels in both pairings, full and partial rotary, and the tensor-core Q4_K
GEMV (`kernels.tensor_core_gemv`, Gluon) in its decode forms. Runs wherever
Triton is importable (the GPU machines; on a CPU machine, e.g. `pip install --target /tmp/tt triton==3.6.0`
and `PYTHONPATH=/tmp/tt`); skipped elsewhere. Numbers are checked by the CUDA tests, not here."""

from __future__ import annotations

import importlib.util
import re

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def _gemv_types():
    """Every type the GEMV serves in the file's block order, MXFP4 regrouped as the CUDA model loads its
    experts, Q8_0 and Q6_K regrouped (kernels.qtensor.CODES_THEN_SCALES)."""
    if importlib.util.find_spec("triton") is None:
        return []
    from kernels.formats import GGMLType
    from kernels.qtensor import CODES_THEN_SCALES, GGML
    from kernels.triton_gemv import LAYOUTS

    return [pytest.param(q, GGML, id=q.name) for q in LAYOUTS] + [
        pytest.param(q, CODES_THEN_SCALES, id=f"{q.name}-{CODES_THEN_SCALES}")
        for q in (GGMLType.MXFP4, GGMLType.Q8_0, GGMLType.Q6_K)
    ]


@pytest.mark.parametrize(
    "form",
    [
        "plain",
        "segments-ids-bias-reduce",
        "dequantize",
        "rms-in-scaled-out-reduce",
        "glu-rms-reduce",
        "bias-residual-scaled-reduce",
        "experts-glu-oai-rms-reduce",
        "experts-routed-sum-scaled",
        "experts-routed-sum-scaled-reduce",
    ],
)
@pytest.mark.parametrize(("qtype", "block_order"), _gemv_types())
def test_the_gemv_kernel_compiles_for_sm90(qtype, block_order, form) -> None:
    from kernels.triton_offline import compile_gemv

    compiled = compile_gemv(qtype, form, block_order=block_order)
    assert compiled.asm["cubin"], f"{qtype.name} {block_order} {form}: no cubin"


def _qgemm_formats():
    if importlib.util.find_spec("triton") is None:
        return []
    from kernels.triton_qgemm import FORMAT_NAMES, REGROUPED_FORMATS

    return [*FORMAT_NAMES.values(), *REGROUPED_FORMATS.values()]


@pytest.mark.parametrize("rows", [512, 40], ids=["many-rows", "few-rows"])
@pytest.mark.parametrize("grouped", [False, True], ids=["dense", "experts"])
@pytest.mark.parametrize("fmt", _qgemm_formats())
def test_the_prefill_gemm_compiles_for_sm90_without_spills(fmt, grouped, rows) -> None:
    """Each decoder in the launch shapes `default_config` picks, on the tensor cores (wgmma), with no
    register spilled (a spill would put local-memory traffic inside the walk); a width that ends mid-step
    (`EVEN_K` off) compiles too."""
    from kernels.triton_offline import compile_qgemm, register_use
    from kernels.triton_qgemm import default_config

    config = default_config(rows, grouped=grouped)
    compiled = compile_qgemm(fmt, grouped=grouped, config=config)
    assert "wgmma" in compiled.asm["ptx"], f"{fmt}: not on the tensor cores"
    assert register_use(compiled.asm["ptx"]).spill_bytes == 0, f"{fmt} {config}: spills"
    if fmt not in ("q4_k", "q5_k", "q6_k"):
        assert compile_qgemm(fmt, grouped=grouped, config=config, even_k=False).asm["cubin"]


def test_the_activation_scaling_compiles_for_sm90_with_ieee_division() -> None:
    """The prefill's row scaling divides with `div.rn` (IEEE, as PyTorch's division), not the approximate
    `div.full`: the float16 activations are then PyTorch's bit for bit."""
    from kernels import triton_qgemm
    from kernels.triton_offline import compile_for_sm90

    signature = {"x_ptr": "*fp32", "x16_ptr": "*fp16", "scale_ptr": "*fp32", "K": "i32", "x_stride": "i32"}
    ptx = compile_for_sm90(triton_qgemm._scaled_half_kernel, signature, {"BLOCK": 1024}).asm["ptx"]
    assert "div.rn.f32" in ptx and "div.full" not in ptx and "div.approx" not in ptx


def test_the_loop_cost_finds_the_gemv_loop() -> None:
    """`benchmarks.ptx_cost`'s measure: Q4_0's loop step (16 rows x 8 blocks x 32 weights over 128
    threads: 32 weights a thread) multiplies and adds in float32 at least once per weight, and the body
    found is a loop's (it ends in its backward branch), not the whole kernel."""
    from kernels.formats import GGMLType
    from kernels.triton_gemv import LAYOUTS
    from kernels.triton_offline import compile_gemv, loop_cost, weights_per_thread_step

    layout = LAYOUTS[GGMLType.Q4_0]
    cost = loop_cost(compile_gemv(GGMLType.Q4_0, block_n=16, ub=8).asm["ptx"])
    weights = weights_per_thread_step(layout, 16, 8)
    assert weights == 32 and cost.opcodes.get("fma", 0) >= weights
    assert weights < cost.instructions < 30 * weights and cost.opcodes.get("bra") == 1


def test_ptxas_reports_the_gemv_threads_registers() -> None:
    """`benchmarks.ptx_cost`'s register column: Triton's ptxas on the compiled PTX (sm_90a)."""
    from kernels.formats import GGMLType
    from kernels.triton_offline import compile_gemv, register_use

    use = register_use(compile_gemv(GGMLType.Q4_K, shape=(9216, 3072)).asm["ptx"])
    assert 16 <= use.registers <= 255 and use.spill_bytes == 0


def _compile(fn, signature: dict, constants: dict, **launch):
    from kernels.triton_offline import compile_for_sm90

    return compile_for_sm90(fn, signature, constants, **launch)


@pytest.mark.parametrize("neox", [False, True], ids=["adjacent-pairs", "neox-pairs"])
@pytest.mark.parametrize(("d", "rope_half"), [(64, 32), (96, 16)], ids=["full-rotary", "partial-rotary"])
def test_the_rope_kernels_compile_for_sm90(neox: bool, d: int, rope_half: int) -> None:
    """RoPE + KV store, and RoPE + KV store + attention (with sinks over the whole cache, and without;
    one program per KV head, and the cache positions split among several whose states the last merges)."""
    import triton

    from kernels import triton_decode

    floats = dict.fromkeys(
        ("q_ptr", "k_ptr", "v_ptr", "keys_ptr", "values_ptr", "cos_ptr", "sin_ptr"), "*fp32"
    )
    block_d = triton.next_power_of_2(d)
    store = _compile(
        triton_decode._rope_store_kernel,
        {**floats, "q_out_ptr": "*fp32", "pos_ptr": "*i64", "n_head": "i32", "capacity": "i32"},
        dict(D=d, ROPE_HALF=rope_half, NEOX=neox, BLOCK_D=block_d),
    )
    assert store.asm["cubin"]
    for sinks, split in ((False, False), (True, False), (False, True), (True, True)):
        attention = _compile(
            triton_decode._rope_attention_kernel,
            {
                **floats,
                "sinks_ptr": "*fp32",
                "out_ptr": "*fp32",
                "pos_ptr": "*i64",
                "capacity": "i32",
                "scale": "fp32",
                "window": "i32",
                "chunk": "i32",
                "part_ptr": "*fp32",
                "stat_ptr": "*fp32",
                "count_ptr": "*i32",
            },
            dict(
                GROUP=4, BLOCK_G=4, D=d, BLOCK_D=block_d, BLOCK_S=32, ROPE_HALF=rope_half, NEOX=neox,
                HAS_SINKS=sinks, WHOLE_CACHE=sinks, CAPACITY=128 if sinks else 0, SPLIT=split, HEAD_SPLIT=1,
            ),
        )  # fmt: skip
        assert attention.asm["cubin"]


def test_the_cost_tool_counts_the_prefill_gemms_loop() -> None:
    """`benchmarks.ptx_cost --kernel prefill-gemm`: dense and experts rows per decoder, the loop found
    (more than one instruction a weight: every weight is decoded), no spill; K-quants skipped where the
    width is not whole super-blocks."""
    from benchmarks.ptx_cost import prefill_gemm_rows

    rows = prefill_gemm_rows(["q4_k", "q8_0"], (896, 896))
    assert [r["format"] for r in rows] == ["q8_0 (dense)", "q8_0 (experts)"]
    rows = prefill_gemm_rows(["q4_k"], (3072, 3072))
    assert len(rows) == 2 and all(4 < r["per_weight"] < 60 and r["spill_bytes"] == 0 for r in rows)


@pytest.mark.parametrize(("block_n", "ub", "shape"), [(16, 8, (5120, 2880)), (32, 2, (201088, 2880))])
def test_regrouped_q8_0_reads_its_codes_in_16_byte_loads_with_fewer_instructions(block_n, ub, shape) -> None:
    """Q8_0 CODES_THEN_SCALES (GPT-OSS's q/k/v and output tiles): the codes in 16-byte loads where the
    file's 34-byte blocks take a halfword load each, fewer SASS instructions a step and no more registers,
    no spills."""
    from kernels.formats import GGMLType
    from kernels.qtensor import CODES_THEN_SCALES, GGML
    from kernels.triton_offline import _disassemble, compile_gemv, register_use, sass_loop

    def measured(order):
        compiled = compile_gemv(
            GGMLType.Q8_0, "plain", block_n=block_n, ub=ub, shape=shape, block_order=order
        )
        cubin = compiled.asm["cubin"]
        wide = _disassemble(cubin).count("LDG.E.128")
        return wide, sum(sass_loop(cubin).values()), register_use(compiled.asm["ptx"])

    wide_filed, loop_filed, use_filed = measured(GGML)
    wide, loop, use = measured(CODES_THEN_SCALES)
    assert wide_filed == 0 and wide >= 1, (wide_filed, wide)
    assert loop < loop_filed, (loop, loop_filed)
    assert use.spill_bytes == 0 and use.registers <= use_filed.registers, (use, use_filed)


@pytest.mark.parametrize("shape", [(3072, 8192), (32064, 3072)], ids=str)
def test_regrouped_q6_k_reads_its_codes_in_vectors_with_fewer_registers(shape) -> None:
    """Q6_K CODES_THEN_SCALES (Phi-3's ffn_down and output): a super-block's ql, qh and scales in 16- and
    8-byte loads where the file's 210-byte blocks take 40 halfword loads a step; fewer registers (more
    programs resident on an SM) and fewer SASS instructions a step, no spills."""
    from kernels.formats import GGMLType
    from kernels.qtensor import CODES_THEN_SCALES, GGML
    from kernels.triton_offline import _disassemble, compile_gemv, register_use, sass_loop

    def measured(order):
        compiled = compile_gemv(GGMLType.Q6_K, "plain", block_n=16, ub=1, shape=shape, block_order=order)
        text = _disassemble(compiled.asm["cubin"])
        halfwords = text.count("LDG.E.U16")
        return halfwords, sum(sass_loop(compiled.asm["cubin"]).values()), register_use(compiled.asm["ptx"])

    halfwords_filed, loop_filed, use_filed = measured(GGML)
    halfwords, loop, use = measured(CODES_THEN_SCALES)
    assert halfwords_filed >= 40 and halfwords <= 1, (halfwords_filed, halfwords)  # only d: a halfword
    assert loop < loop_filed, (loop, loop_filed)
    assert use.spill_bytes == 0 and use.registers < use_filed.registers, (use, use_filed)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_k", "mxfp4_codes_then_scales"])
def test_the_prefill_gemms_sass_runs_on_the_tensor_cores_without_narrow_conversions(fmt) -> None:
    """What the GPU issues (Triton's nvdisasm on the cubin): HGMMA (wgmma) for the products, and no
    integer-to-float conversion on the narrow pipe per weight (a signed int8's I2F: Q8_0 reads its codes
    through a float's mantissa instead); at most the few of the prologue and epilogue."""
    from kernels.triton_offline import compile_qgemm, sass_opcodes
    from kernels.triton_qgemm import default_config

    ops = sass_opcodes(
        compile_qgemm(fmt, grouped=False, config=default_config(512, grouped=False)).asm["cubin"]
    )
    assert ops["HGMMA"] > 0 and ops["I2F"] + ops["F2I"] + ops["F2F"] <= 4, dict(ops)


def _decode_kernels_for_dependent_launch(pdl: bool | int) -> dict[str, object]:
    """Every kernel a captured decode step launches early (`kernels.dependent_launch`), compiled as such
    a launch compiles it (`PDL`: False, or the trigger), one representative form each; the GEMV in each
    of its decode forms."""
    from kernels import triton_decode as td
    from kernels.formats import GGMLType
    from kernels.qtensor import CODES_THEN_SCALES
    from kernels.triton_offline import compile_gemv

    f32 = "*fp32"
    floats = dict.fromkeys(("q_ptr", "k_ptr", "v_ptr", "keys_ptr", "values_ptr", "cos_ptr", "sin_ptr"), f32)
    attention = {**floats, "sinks_ptr": f32, "out_ptr": f32, "pos_ptr": "*i64", "capacity": "i32"}
    attention.update(scale="fp32", window="i32")
    split_attention = {**attention, "chunk": "i32", "part_ptr": f32, "stat_ptr": f32, "count_ptr": "*i32"}
    split_constants = dict(
        GROUP=7, BLOCK_G=8, D=64, BLOCK_D=64, BLOCK_S=32, ROPE_HALF=32, NEOX=True, HAS_SINKS=False,
        WHOLE_CACHE=False, CAPACITY=0, SPLIT=True, PDL=pdl, DOT=False, BY_POSITION=False, UNROLLED_SPLITS=0, HEAD_SPLIT=1,
    )  # fmt: skip
    router = dict(
        x_ptr=f32, xw_ptr=f32, w_ptr=f32, b_ptr=f32, logits_ptr=f32, ids_ptr="*i64", weights_ptr=f32
    )
    router |= dict(count_ptr="*i32", n="i32", n_expert="i32", eps="fp32")
    compiled = {
        "rms_norm": _compile(
            td._rms_norm_kernel,
            {"x_ptr": f32, "w_ptr": f32, "y_ptr": f32, "n": "i32", "eps": "fp32"},
            dict(BLOCK=1024, PDL=pdl),
        ),
        "rope_store": _compile(
            td._rope_store_kernel,
            {**floats, "q_out_ptr": f32, "pos_ptr": "*i64", "n_head": "i32", "capacity": "i32"},
            dict(D=64, ROPE_HALF=32, NEOX=True, BLOCK_D=64, PDL=pdl),
        ),
        "decode_attention": _compile(
            td._decode_attention_kernel,
            {k: v for k, v in attention.items() if k not in ("k_ptr", "v_ptr", "cos_ptr", "sin_ptr")},
            dict(
                GROUP=4,
                BLOCK_G=4,
                D=64,
                BLOCK_D=64,
                BLOCK_S=32,
                HAS_SINKS=True,
                WHOLE_CACHE=False,
                CAPACITY=0,
                PDL=pdl,
            ),
        ),  # fmt: skip
        "rope_attention (split)": _compile(td._rope_attention_kernel, split_attention, split_constants),
        "rope_attention (split by position)": _compile(
            td._rope_attention_kernel,
            split_attention,
            {**split_constants, "GROUP": 8, "HAS_SINKS": True, "BY_POSITION": True},  # GPT-OSS's heads
        ),
        "rope_attention (split, merge unrolled)": _compile(
            td._rope_attention_kernel, split_attention, {**split_constants, "UNROLLED_SPLITS": 8}
        ),
        "glu": _compile(
            td._glu_kernel,
            {"gate_ptr": f32, "up_ptr": f32, "y_ptr": f32, "n": "i32", "gate_stride": "i32"}
            | {"up_stride": "i32", "alpha": "fp32", "limit": "fp32"},
            dict(OAI=True, BLOCK=1024, PDL=pdl),
        ),
        "moe_route": _compile(
            td._moe_route_kernel,
            {"logits_ptr": f32, "ids_ptr": "*i64", "weights_ptr": f32, "n_expert": "i32"},
            dict(K=4, BLOCK_E=32, BLOCK_K=4, PDL=pdl),
        ),
        "moe_router": _compile(
            td._moe_router_kernel, router, dict(K=4, BLOCK_E=32, BLOCK_K=4, BLOCK=1024, PDL=pdl)
        ),
        "moe_router (one pass)": _compile(  # `moe_router(one_pass=True)`: GPT-OSS's 2,880 in one step, 8 warps
            td._moe_router_kernel, router, dict(K=4, BLOCK_E=32, BLOCK_K=4, BLOCK=4096, PDL=pdl), num_warps=8
        ),
        # `moe_router(row_early=True)`: its first weights loaded before the wait (WEIGHT_LOADS_FIRST)
        "moe_router (row early)": _compile(
            td._moe_router_kernel,
            router,
            dict(K=4, BLOCK_E=32, BLOCK_K=4, BLOCK=1024, PDL=pdl, ROW_EARLY=True),
        ),
        "moe_router (row early, one pass)": _compile(
            td._moe_router_kernel,
            router,
            dict(K=4, BLOCK_E=32, BLOCK_K=4, BLOCK=4096, PDL=pdl, ROW_EARLY=True),
            num_warps=8,
        ),
        "moe_combine": _compile(
            td._moe_combine_kernel,
            {"x_ptr": f32, "down_ptr": f32, "w_ptr": f32, "y_ptr": f32, "n": "i32"},
            dict(K=4, BLOCK=1024, PDL=pdl),
        ),
    }
    forms = ("plain", "segments-ids-bias-reduce", "rms-in-scaled-out-reduce", "glu-rms-reduce")
    for form in (*forms, "bias-residual-scaled-reduce", "experts-glu-oai-rms-reduce"):
        compiled[f"gemv {form}"] = compile_gemv(GGMLType.Q4_K, form, shape=(3072, 3072), pdl=pdl)
    if pdl:  # (the prefetch without early launch: `test_a_gemv_prefetches_its_weight_lines_...`)
        for lines in (1, 64, 1024):  # weight prefetch: one line, a share of a tile, the most a program asks
            compiled[f"gemv q5_0 prefetching {lines} lines"] = compile_gemv(
                GGMLType.Q5_0, "rms-in-scaled-out-reduce", shape=(896, 896), pdl=pdl, prefetch_lines=lines
            )
        compiled["gemv q5_0 gate/up prefetching 64 lines"] = compile_gemv(
            GGMLType.Q5_0, "glu-rms-reduce", shape=(4864, 896), pdl=pdl, prefetch_lines=64
        )
    compiled["gemv mxfp4 experts"] = compile_gemv(
        GGMLType.MXFP4,
        "segments-ids-bias-reduce",
        shape=(2880, 2880),
        block_order=CODES_THEN_SCALES,
        pdl=pdl,
    )
    return compiled


# Kernels that load weights before they wait (no kernel of a step writes weights): loads may come first.
WEIGHT_LOADS_FIRST = ("moe_router (row early)", "moe_router (row early, one pass)")


def test_every_early_launched_decode_kernel_waits_for_the_previous_grid_before_touching_memory() -> None:
    """Programmatic dependent launch (`kernels.dependent_launch`) is only safe if a kernel launched early
    waits (`griddepcontrol.wait`) before its first load, store or atomic and before any branch, in the
    PTX and in the SASS ptxas scheduled from it (`ACQBULK`), and lets the next kernel launch only after
    (`griddepcontrol.launch_dependents`, `PREEXIT`). Without `PDL` the same kernels have neither."""
    from kernels.triton_offline import dependent_launch_problem, dependent_launch_problem_in_sass

    problems = {}
    for name, kernel in _decode_kernels_for_dependent_launch(True).items():
        loads_first = name in WEIGHT_LOADS_FIRST
        problem = dependent_launch_problem(
            kernel.asm["ptx"], weight_loads_first=loads_first
        ) or dependent_launch_problem_in_sass(kernel.asm["cubin"], weight_loads_first=loads_first)
        if problem:
            problems[name] = problem
        if loads_first:  # it does load before the wait, and nothing else: a store there is still caught
            assert dependent_launch_problem(kernel.asm["ptx"]) is not None, name
    assert not problems
    for name, kernel in _decode_kernels_for_dependent_launch(False).items():
        assert "griddepcontrol" not in kernel.asm["ptx"] and "prefetch" not in kernel.asm["ptx"], name


def _first_back_edge(ptx: str) -> int | None:
    """The offset of the PTX's first branch to an earlier label (a loop's back edge), or None."""
    labels = {m.group(1): m.start() for m in re.finditer(r"^(\$L__\w+):", ptx, re.M)}
    edges = [
        m.start()
        for m in re.finditer(r"\bbra(?:\.uni)?\s+(\$L__\w+);", ptx)
        if labels.get(m.group(1), m.start()) < m.start()
    ]
    return min(edges, default=None)


def test_with_a_late_trigger_a_gemv_lets_the_next_kernel_launch_after_its_weight_walk() -> None:
    """`DependentLaunch.late_trigger` (`PDL` = TRIGGER_LATE): every kernel still waits first; a GEMV
    signals `launch_dependents` only after its weight loop (past the loop's back edge), the other kernels
    not at all (at exit)."""
    from kernels.dependent_launch import TRIGGER_LATE
    from kernels.triton_offline import dependent_launch_problem, dependent_launch_problem_in_sass

    problems = {}
    for name, kernel in _decode_kernels_for_dependent_launch(TRIGGER_LATE).items():
        ptx, gemv, loads_first = kernel.asm["ptx"], name.startswith("gemv"), name in WEIGHT_LOADS_FIRST
        problem = dependent_launch_problem(
            ptx, signal_required=gemv, weight_loads_first=loads_first
        ) or dependent_launch_problem_in_sass(
            kernel.asm["cubin"], signal_required=gemv, weight_loads_first=loads_first
        )
        if gemv and not problem:
            signal, loop = ptx.index("griddepcontrol.launch_dependents"), _first_back_edge(ptx)
            if loop is None or signal < loop:
                problem = "launch_dependents before the weight loop ends"
        if not gemv and "griddepcontrol.launch_dependents" in ptx:
            problem = "signals before exit"
        if problem:
            problems[name] = problem
    assert not problems


def test_a_gemv_prefetches_its_weight_lines_before_it_waits() -> None:
    """Weight prefetch: a program of 128 threads asking for 1,024 lines issues 8 prefetches a thread, all
    before the wait; a gate/up launch asks for the up rows' lines too (twice as many); launched as usual,
    the same prefetches come before its first load."""
    from kernels.formats import GGMLType
    from kernels.triton_offline import compile_gemv

    def prefetches(form: str, shape: tuple[int, int], lines: int) -> int:
        ptx = compile_gemv(GGMLType.Q5_0, form, shape=shape, pdl=True, prefetch_lines=lines).asm["ptx"]
        before_wait = ptx[: ptx.index("griddepcontrol.wait")]
        assert ptx.count("prefetch.global.L2") == before_wait.count("prefetch.global.L2")
        return before_wait.count("prefetch.global.L2")

    one = prefetches("rms-in-scaled-out-reduce", (896, 896), 1024)
    assert one == 1024 // 128  # each of the 128 threads asks for 8 of the 1,024 lines
    assert prefetches("glu-rms-reduce", (4864, 896), 1024) == 2 * one
    # Launched as usual (no PDL): the same prefetches, first, before any load, and no wait at all.
    ptx = compile_gemv(GGMLType.Q5_0, "glu-rms-reduce", shape=(4864, 896), prefetch_lines=1024).asm["ptx"]
    assert "griddepcontrol" not in ptx and ptx.count("prefetch.global.L2") == 2 * one
    assert ptx.index("prefetch.global.L2") < ptx.index("ld.global")
    # Experts: which expert a program reads is known only after the wait (the router wrote it), so its
    # share of that expert's tile is asked for then, gate and up codes alike.
    from kernels.qtensor import CODES_THEN_SCALES

    for pdl in (True, False):
        experts = compile_gemv(
            GGMLType.MXFP4,
            "experts-glu-oai-rms-reduce",
            shape=(2880, 2880),
            block_order=CODES_THEN_SCALES,
            pdl=pdl,
            prefetch_lines=64,
        ).asm["ptx"]
        after = experts.index("griddepcontrol.wait") if pdl else experts.index("ld.global")
        assert "prefetch.global.L2" not in experts[:after], pdl
        assert experts.count("prefetch.global.L2") >= 2, pdl  # gate and up


def test_the_dependent_launch_check_fails_a_kernel_that_reads_before_waiting() -> None:
    """The check above can fail: a kernel that loads its input, then waits, is caught in the PTX and in
    the SASS; one that never waits is caught too."""
    import triton
    import triton.language as tl

    from kernels.triton_offline import dependent_launch_problem, dependent_launch_problem_in_sass

    @triton.jit
    def read_then_wait(x_ptr, y_ptr, WAIT: tl.constexpr):
        x = tl.load(x_ptr + tl.arange(0, 128))
        if WAIT:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        tl.store(y_ptr + tl.arange(0, 128), x + 1.0)

    for wait in (True, False):
        kernel = _compile(read_then_wait, {"x_ptr": "*fp32", "y_ptr": "*fp32"}, dict(WAIT=wait))
        assert dependent_launch_problem(kernel.asm["ptx"]) is not None
        assert dependent_launch_problem_in_sass(kernel.asm["cubin"]) is not None


def test_the_cost_tool_reads_the_gemv_loop_in_sass_and_its_issue_bound() -> None:
    """`benchmarks.ptx_cost`'s SASS columns: the loop found in the cubin (a label to its backward branch),
    its instructions a weight, the ALU pipe's share, and the bandwidth they would allow without waiting
    on loads (on the H200 the Phi-3 GEMVs measured ~40-50 % of it: latency, not instructions, bounds them)."""
    from benchmarks.ptx_cost import cost_rows, issue_bound_gbps

    (row,) = cost_rows(["q4_k"], None, None, (3072, 3072))
    assert 4 < row["loop_sass_per_weight"] < 12 and 1 < row["alu_per_weight"] < row["loop_sass_per_weight"]
    assert 1000 < row["issue_bound_gbps"] < 6000
    # Issue-limited at 8 instructions a weight; ALU-limited when more than half of them are integer work.
    assert issue_bound_gbps(8, 4, 1.0) == issue_bound_gbps(8, 3, 1.0) > issue_bound_gbps(8, 5, 1.0)


@pytest.mark.parametrize(
    ("qtype", "block_n", "shape"),
    [
        ("Q4_K", 32, (9216, 3072)),
        ("Q5_K", 32, (9216, 3072)),
        ("Q5_K", 16, (3072, 3072)),
        ("Q6_K", 16, (3072, 8192)),
    ],
    ids=["Q4_K-n32", "Q5_K-n32", "Q5_K-n16", "Q6_K-n16"],
)
def test_the_k_quant_loops_keep_every_operand_in_one_layout(qtype, block_n, shape) -> None:
    """No shared-memory round trip (a layout conversion, with its barriers) inside the loop of the K-quant
    GEMVs in the worker's launch shapes: a barrier per conversion would hold all of a program's warps at
    each step. Q6_K had eight, from its scales read as [rows, 4, 2] bytes (as many elements as the program
    has threads, so converted instead of recomputed); it reads them as halfwords. Q5_K had two, from its
    fifth bits read as a [rows, 1, 8] tile; it reads them as a [rows, 32] tile like its codes."""
    from kernels.formats import GGMLType
    from kernels.triton_offline import compile_gemv, loop_cost, sass_loop

    compiled = compile_gemv(GGMLType[qtype], block_n=block_n, ub=1, shape=shape)
    assert loop_cost(compiled.asm["ptx"]).shared_round_trips == 0
    assert sass_loop(compiled.asm["cubin"])["BAR"] == 0


def _ahead_cases():
    if importlib.util.find_spec("triton") is None:
        return []
    from kernels.formats import GGMLType
    from kernels.qtensor import CODES_THEN_SCALES, GGML
    from kernels.triton_gemv import AHEAD_FORMATS, LAYOUTS

    cases = [(q, GGML) for q, layout in LAYOUTS.items() if layout.fmt in AHEAD_FORMATS]
    return [
        pytest.param(q, order, id=f"{q.name}-{order}")
        for q, order in [
            *cases,
            *((q, CODES_THEN_SCALES) for q in (GGMLType.MXFP4, GGMLType.Q8_0, GGMLType.Q6_K)),
        ]
    ]


@pytest.mark.parametrize("form", ["plain", "glu-rms-reduce", "dequantize", "experts-glu-oai-rms-reduce"])
@pytest.mark.parametrize(("qtype", "block_order"), _ahead_cases())
def test_every_loop_that_loads_ahead_compiles_for_sm90_without_spills(qtype, block_order, form) -> None:
    """`GemvConfig.ahead` holds two steps' words and activations in registers: every format that has the
    form compiles in the launch forms of the decode step without spilling them to local memory, and a
    warp of its walk waits on memory once a step (`memory_round_trips`: the next step's weights and
    activations asked for together, before this step is decoded)."""
    from kernels.triton_gemv import default_config
    from kernels.triton_offline import compile_gemv, kernel_layout, memory_round_trips, register_use

    if form.startswith("experts") and qtype.name == "Q5_K":
        # 32 rows of gate and up, two steps of each, spill 16 bytes; no M0 file holds Q5_K experts.
        pytest.skip("Q5_K experts' gate/up loading ahead spills 16 bytes (no M0 file has Q5_K experts)")
    layout = kernel_layout(qtype, block_order)
    config = default_config(qtype, 2880, 2816 if layout.unit == 256 else 2880, 1, 132, layout=layout)
    compiled = compile_gemv(
        qtype, form, block_n=config.block_n, ub=config.units_per_step, block_order=block_order, ahead=True
    )
    use = register_use(compiled.asm["ptx"])
    assert use.spill_bytes == 0 and use.registers <= 255, (use.registers, use.spill_bytes)
    assert memory_round_trips(compiled.asm["cubin"]).per_step == 1


@pytest.mark.parametrize(
    ("qtype_name", "form", "block_n", "ub", "shape"),
    [
        ("Q5_0", "segments-bias-rms", 8, 32, (1152, 896)),  # Qwen2.5's q/k/v
        ("Q5_0", "glu-rms", 16, 8, (4864, 896)),  # its gate/up
        ("Q8_0", "plain", 16, 8, (5120, 2880)),  # GPT-OSS's q/k/v
    ],
)
def test_the_block_loops_taking_activations_with_the_words_wait_once_a_step(
    qtype_name, form, block_n, ub, shape
) -> None:
    """`GemvConfig.with_words`: the Q5_0 / Q8_0 loops ask for a step's activations with its words, so a
    warp waits on memory once a step, where the default waits again for each group of activations after
    the words are decoded; no register spills, and no more registers than loading ahead takes."""
    from kernels.formats import GGMLType
    from kernels.triton_offline import compile_gemv, memory_round_trips, register_use

    def trips_and_use(**loads):
        compiled = compile_gemv(GGMLType[qtype_name], form, block_n=block_n, ub=ub, shape=shape, **loads)
        return memory_round_trips(compiled.asm["cubin"]), register_use(compiled.asm["ptx"])

    (default, _), (with_words, use), (_, ahead_use) = (
        trips_and_use(),
        trips_and_use(with_words=True),
        trips_and_use(ahead=True),
    )
    assert default.per_step > 1 and with_words.per_step == 1, (default, with_words)
    assert use.spill_bytes == 0 and use.registers <= ahead_use.registers, (use, ahead_use)


def test_the_retiled_attention_loop_is_lighter_and_spills_nothing() -> None:
    """`attention_tile(retiled=True)` for the three models' head layouts, compiled for sm_90: grouped heads
    (Qwen2.5: 7 per KV head) on dot products run a loop step of less than half the broadcast loop's
    instructions without its shuffles; one head per KV head (Phi-3, 96 dims padded to 128) at 32
    positions spills no register, where the default 64 does."""
    from kernels import triton_decode
    from kernels.triton_offline import compile_rope_attention, register_use, sass_loop

    def compiled(group: int, d: int, block_d: int, retiled: bool):
        tile = triton_decode.attention_tile(group, block_d, retiled=retiled)
        kernel = compile_rope_attention(group, d, d // 2, tile)
        return sass_loop(kernel.asm["cubin"]), register_use(kernel.asm["ptx"])

    (plain, _), (dot, dot_use) = compiled(7, 64, 64, False), compiled(7, 64, 64, True)
    assert sum(dot.values()) < sum(plain.values()) / 2 and dot["SHFL"] < plain["SHFL"] / 10
    assert dot_use.spill_bytes == 0
    (_, wide), (_, narrow) = compiled(1, 96, 128, False), compiled(1, 96, 128, True)
    assert wide.spill_bytes > 0 and narrow.spill_bytes == 0


def test_the_retiled_attention_unpipelined_keeps_no_cp_async_buffers() -> None:
    """Grouped heads on dot products: Triton's default pipelining (num_stages 3) keeps the loop's K and V
    tiles in 39 KB of cp.async buffers a program on sm_90, where the broadcast loop keeps 4 KB;
    `rope_attention(dot_stages=1)` keeps no cp.async and under half of that shared memory."""
    from kernels import triton_decode
    from kernels.triton_offline import compile_rope_attention

    tile = triton_decode.attention_tile(8, 64, retiled=True)
    pipelined = compile_rope_attention(8, 64, 32, tile, sinks=True)
    plain = compile_rope_attention(8, 64, 32, tile, sinks=True, num_stages=1)
    assert "cp.async" in pipelined.asm["ptx"] and "cp.async" not in plain.asm["ptx"]
    assert plain.metadata.shared < pipelined.metadata.shared / 2


@pytest.mark.parametrize(
    ("model", "group", "d", "splits"), [("Phi-3", 1, 96, 4), ("Qwen2.5", 7, 64, 8), ("GPT-OSS", 8, 64, 8)]
)
def test_clustered_attention_merges_without_atomics_or_l2_states(model, group, d, splits) -> None:
    """`rope_attention(clustered=True)` in each model's default tile (`triton_decode.chosen_tile`) at tg128's
    splits, compiled for sm_90: splits 1.. store their states into split 0's shared memory (remote stores,
    SASS `ST` through the cluster window, no `st.async`) between the cluster barrier's arrivals and waits
    (the start, the handover: ptxas copies them into both sides of the split-0 branch), and split 0 merges
    them from there: no atomic, and the handover's release is the only fence (`MEMBAR`, on each side); the
    only global stores are the KV slot's (K and V) and the output. The counters' form of the same tile has
    its atomics and stores the states too."""
    from kernels import triton_decode
    from kernels.triton_offline import compile_rope_attention, sass_opcodes

    block_d = 1 << (d - 1).bit_length()
    tile = triton_decode.chosen_tile(group, block_d)
    clustered = compile_rope_attention(group, d, d // 2, tile, sinks=model == "GPT-OSS", cluster=splits)
    ptx, ops = clustered.asm["ptx"], sass_opcodes(clustered.asm["cubin"])
    assert "st.shared::cluster" in ptx and "mapa.shared::cluster" in ptx and "st.async" not in ptx, model
    assert not [op for op in ops if op.startswith(("ATOM", "RED"))] and ops["MEMBAR"] <= 2, model
    assert 2 <= ops["UCGABAR_ARV"] == ops["UCGABAR_WAIT"] <= 3 and ops["ST"] >= 3, model
    assert ops["STG"] == 3, model  # the key, the value, the output
    counted = sass_opcodes(
        compile_rope_attention(group, d, d // 2, tile, sinks=model == "GPT-OSS").asm["cubin"]
    )
    assert counted["ATOMG"] >= 1 and counted["STG"] > ops["STG"], model


def _tensor_core_forms() -> list[str]:
    if importlib.util.find_spec("triton") is None:
        return []
    from kernels.triton_offline import TENSOR_CORE_FORMS

    return list(TENSOR_CORE_FORMS)


@pytest.mark.parametrize("form", _tensor_core_forms())
def test_the_tensor_core_gemv_compiles_with_one_mma_per_sub_block(form) -> None:
    """A Q4_K super-block is 8 sub-block mmas (K = 32: two m16n8k16 each) and one for the mins, a Q6_K one
    16 (K = 16), a Q8_0 or MXFP4 block one (K = 32), per matrix walked (`triton_offline.TENSOR_CORE_FORMS`);
    launched early, the wait comes before any memory access (PTX and SASS)."""
    from kernels.triton_offline import (
        INT8_Q4_K_MMAS,
        TENSOR_CORE_FORMS,
        TENSOR_CORE_MMAS,
        compile_tensor_core_gemv,
        dependent_launch_problem,
        dependent_launch_problem_in_sass,
        sass_listing,
        sass_opcodes,
    )

    constants = TENSOR_CORE_FORMS[form]
    kernel = compile_tensor_core_gemv(form)
    matrices = 2 if constants["GLU"] else 1
    ops = sass_opcodes(kernel.asm["cubin"])
    if constants["INT8_CODES"]:  # Q4_K on int8 mma: 8 int8 mmas a super-block, the mins one float16
        assert ops["IMMA"] == INT8_Q4_K_MMAS["IMMA"] * constants["PER"] * matrices
        assert ops["HMMA"] == INT8_Q4_K_MMAS["HMMA"] * constants["PER"] * matrices
    else:
        assert ops["HMMA"] == TENSOR_CORE_MMAS[constants["FMT"]] * constants["PER"] * matrices
    if constants["PDL"]:
        # WORDS_EARLY: the first unit's weight words are asked for before the wait, and nothing else;
        # WORDS_BY_TMA: the program's whole share by TMA copies (and their mbarrier's setup), nothing else
        early = bool(constants["WORDS_EARLY"])
        tma = bool(constants.get("WORDS_BY_TMA"))
        assert dependent_launch_problem(kernel.asm["ptx"], weight_loads_first=early, tma_first=tma) is None
        assert (
            dependent_launch_problem_in_sass(kernel.asm["cubin"], weight_loads_first=early, tma_first=tma)
            is None
        )
        if early or tma:
            assert dependent_launch_problem(kernel.asm["ptx"]) is not None
        if tma:  # the copies really come before the wait
            assert (
                "UTMALDG"
                in sass_listing(kernel.asm["cubin"])[: sass_listing(kernel.asm["cubin"]).index("ACQBULK")]
            )


def test_q4_k_gate_up_on_int8_mma_fits_80_registers_spilling_almost_nothing() -> None:
    """Q4_K's gate/up walk on int8 mma holds 86 registers a thread on sm_90 (five programs resident an SM;
    103 while the split's sums were read in a runtime loop); capped at 80 (`GemvConfig.tc_max_registers`,
    six programs) it spills at most 16 bytes, so the cap trades occupancy for next to no local memory
    (timed by `kernels_gemv --tc-register-caps`)."""
    from kernels.triton_offline import compile_tensor_core_gemv, register_use

    free = register_use(compile_tensor_core_gemv("int8-glu-normed-reduced").asm["ptx"])
    capped = register_use(compile_tensor_core_gemv("int8-glu-normed-reduced", max_registers=80).asm["ptx"])
    assert free.registers > 80 and free.spill_bytes == 0
    assert capped.registers <= 80 and capped.spill_bytes <= 16


@pytest.mark.parametrize(
    ("form", "most"),
    [
        ("int8-glu-normed-reduced", 2),
        ("int8-qkv-early-late-trigger", 2),
        ("q6_k-residual-scaled-reduced", 3),
        ("q8_0-residual-scaled-reduced", 2),
        ("mxfp4-experts-glu-oai-normed-reduced", 2),
    ],
)
def test_a_split_launch_s_tail_asks_for_its_sums_and_rms_row_at_once(form: str, most: int) -> None:
    """From the arrival counter's atomic to the exit, a warp of a split tensor-core launch waits on memory
    at most twice (the atomic, then every split's partial sums and the rms row together; Q6_K's residual
    form three times): the split count and the rms row's reads are launch constants, so their loops
    unroll. With runtime loops the tails made 6-7 trips (Phi-3's step 4.3 % slower on an H100)."""
    from kernels.triton_offline import compile_tensor_core_gemv, split_tail_round_trips

    assert split_tail_round_trips(compile_tensor_core_gemv(form).asm["cubin"]) <= most


def test_a_sass_listing_keeps_the_instructions_past_64_kib() -> None:
    """nvdisasm writes an instruction's address in 4 hex digits below 0x10000 and in more above it: a
    listing that read only 4 dropped every instruction of a large kernel past its first 64 KiB (the
    tensor-core GEMV's Q6_K GLU form at four super-blocks a program counted 124 of its 128 mmas)."""
    from kernels.triton_offline import _SASS_INSTRUCTION

    assert _SASS_INSTRUCTION.match(
        "        /*fff0*/                   HMMA.16816.F32 R4, R8, R12, R4 ;"
    ).group(1)
    assert _SASS_INSTRUCTION.match(
        "        /*10000*/                  HMMA.16816.F32 R4, R8, R12, R4 ;"
    ).group(1)


@pytest.mark.parametrize(
    ("form", "layout"),
    [
        ("q8_0-output", "q8_0_codes_then_scales"),
        ("mxfp4-experts-down-reduced-early", "mxfp4_codes_then_scales"),
    ],
)
def test_the_tensor_core_walk_issues_fewer_instructions_a_code_than_the_cuda_core_loop(form, layout) -> None:
    """What the block formats go to the tensor cores for, read as `benchmarks.ptx_cost --kernel
    tensor-core-gemv` reads it: the walk's SASS a code against the CUDA-core loop's a weight (GPT-OSS's
    2,880-wide shapes; 2.3 against 7.5 for Q8_0, 3.3 against 5.8 for MXFP4 when written)."""
    from benchmarks.ptx_cost import cost_rows, tensor_core_rows

    (row,) = [r for r in tensor_core_rows(forms=(form,))]
    (cuda_core,) = cost_rows([layout], None, None, (2880, 2880))
    assert row["walk_per_code"] < 0.7 * cuda_core["loop_sass_per_weight"]


@pytest.mark.parametrize("form", [f for f in _tensor_core_forms() if "cluster" in f])
def test_clustered_splits_sum_without_atomics_or_fences(form: str) -> None:
    """A split launch as clusters (`GemvConfig.tc_cluster_splits`): splits 1.. send their sums to rank 0 by
    `st.async` (SASS `STAS`, two rows a thread, GLU's up sums too) counted on rank 0's mbarrier, after the
    one wait at the cluster barrier; no atomic, no memory fence (a cluster-scope release is `MEMBAR.ALL.GPU`
    on sm_90) and no global partial sums. The counters' form of the same launch has its atomic."""
    from kernels.triton_offline import TENSOR_CORE_FORMS, compile_tensor_core_gemv, sass_opcodes

    ops = sass_opcodes(compile_tensor_core_gemv(form).asm["cubin"])
    assert not [op for op in ops if op.startswith(("ATOM", "RED", "MEMBAR"))]
    assert ops["UCGABAR_ARV"] == 1 and ops["UCGABAR_WAIT"] == 1
    assert ops["STAS"] == 2 * (2 if TENSOR_CORE_FORMS[form]["GLU"] else 1)
    assert ops["STG"] <= 4  # the tail's stores: y and the scaled copy, two rows a thread
    counted = {**TENSOR_CORE_FORMS[form], "CLUSTER": 0}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(TENSOR_CORE_FORMS, "counted", counted)
        assert sass_opcodes(compile_tensor_core_gemv("counted").asm["cubin"])["ATOMG"] >= 1
