"""The Triton kernels compiled for the H200 (sm_90) on a machine without a GPU, and what their code costs.

Triton compiles down to PTX and a cubin without a device when it is given the target. Two users:
`tests/kernels/test_triton_offline_compile.py` (every GEMV format and launch form compiles, and the
prefill GEMM's) and
`benchmarks/ptx_cost.py` (the static cost of a GEMV's inner loop per weight). Needs Triton importable
(the GPU machines; on a CPU machine, e.g. `pip install --target /tmp/tt triton==3.6.0` and
`PYTHONPATH=/tmp/tt`); nothing here runs a kernel.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kernels.qtensor import CODES_THEN_SCALES, GGML, code_bytes

SM90 = ("cuda", 90, 32)
# The GEMV kernel's integer arguments, compiled as plain i32 (no divisibility specialisation).
GEMV_INTS = (
    "n_rows", "n_units", "units_per_split", "row_stride", "x_stride", "x_group", "n_out_rows", "o_stride",
    "seg_w1", "seg_w2", "seg_b1", "seg_b2", "rows1", "rows2", "tile1", "tile2", "y_width",
)  # fmt: skip
# Launch forms of the GEMV kernel: the plain decode product; three segments with expert ids, biases and
# the split-K reduction; the prefill's dequantize-only mode; the decode step's norms inside the GEMV
# (an rms-normed input, and the residual sum with its scaled copy, through the split-K reduction); the
# decode step's gate, up and SiLU in one launch, from an rms-normed input, through the reduction; GPT-OSS's
# output projection: its bias, the residual and the next norm's scaled copy, through the reduction; its
# experts' gate, up, biases and clamped SwiGLU from an rms-normed input, through the reduction.
_PLAIN = dict(
    HAS_BIAS=False,
    HAS_IDS=False,
    SEGMENTS=1,
    REDUCE=0,
    DEQ=False,
    RMS_BLOCK=0,
    RMS_BLOCKS=0,
    SCALED=False,
    GLU=False,
    HAS_RES=False,
    GLU_OAI=False,
    MIX_K=0,
)
GEMV_FORMS = {
    "plain": _PLAIN,
    "segments-ids-bias-reduce": {**_PLAIN, "HAS_BIAS": True, "HAS_IDS": True, "SEGMENTS": 3, "REDUCE": 3},
    "dequantize": {**_PLAIN, "DEQ": True},
    "rms-in-scaled-out-reduce": {
        **_PLAIN,
        "HAS_BIAS": True,
        "REDUCE": 3,
        "RMS_BLOCK": 1024,
        "SCALED": True,
    },
    "glu-rms-reduce": {**_PLAIN, "REDUCE": 3, "RMS_BLOCK": 1024, "GLU": True},
    # The llama-family decode step's launches where a matrix takes no split (Qwen2.5's 896-wide ones):
    # q/k/v with biases from the normed input, the output projection with the residual and the next
    # norm's scaled copy, gate/up/SwiGLU from the normed input; and the down projection split.
    "segments-bias-rms": {**_PLAIN, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024},
    "residual-scaled": {**_PLAIN, "HAS_RES": True, "SCALED": True},
    "glu-rms": {**_PLAIN, "RMS_BLOCK": 1024, "GLU": True},
    "residual-scaled-reduce": {**_PLAIN, "HAS_RES": True, "SCALED": True, "REDUCE": 3},
    "rms": {**_PLAIN, "RMS_BLOCK": 1024},
    "bias-residual-scaled-reduce": {
        **_PLAIN,
        "HAS_BIAS": True,
        "HAS_RES": True,
        "SCALED": True,
        "REDUCE": 3,
    },
    "experts-glu-oai-rms-reduce": {
        **_PLAIN,
        "HAS_BIAS": True,
        "HAS_IDS": True,
        "GLU": True,
        "GLU_OAI": True,
        "REDUCE": 3,
        "RMS_BLOCK": 1024,
    },
    # GPT-OSS's down projection with the routed sum and the next norm's scaled copy in its epilogue
    # (`KernelConfig.fused_combine`), in one launch and through the reduction.
    "experts-routed-sum-scaled": {**_PLAIN, "HAS_BIAS": True, "HAS_IDS": True, "SCALED": True, "MIX_K": 4},
    "experts-routed-sum-scaled-reduce": {
        **_PLAIN,
        "HAS_BIAS": True,
        "HAS_IDS": True,
        "SCALED": True,
        "REDUCE": 3,
        "MIX_K": 4,
    },
}
# Pointer arguments a real launch passes 16-byte aligned (PyTorch's allocations are), which Triton
# specialises on: without saying so, the offline compile would not vectorise what the GPU run does.
GEMV_ALIGNED = ("w_ptr", "x_ptr", "y_ptr", "o_ptr")


def compile_for_sm90(
    fn: Any,
    signature: dict[str, str],
    constants: dict[str, Any],
    aligned: tuple = (),
    *,
    num_warps: int = 4,
    num_stages: int = 3,
    max_registers: int | None = None,
):
    """`fn` compiled for sm_90: `signature` names each runtime argument's type, `constants` the
    constexprs; `aligned` the arguments to compile as divisible by 16 (pointers: 16-byte aligned);
    `num_warps`, `num_stages`, `max_registers` (maxnreg) as a launch passes them (Triton's defaults
    otherwise)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(fn.arg_names)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    signature = {**signature, **dict.fromkeys(constants, "constexpr")}
    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource as ASTSource  # noqa: N814
    source = ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
    return triton.compile(
        source,
        target=GPUTarget(*SM90),
        options={"num_warps": num_warps, "num_stages": num_stages, "maxnreg": max_registers},
    )


def kernel_layout(qtype: Any, block_order: str) -> Any:
    """The GEMV's reading of a `qtype` tensor whose blocks are in `block_order` (kernels.qtensor)."""
    from kernels.triton_gemv import LAYOUTS, REGROUPED_LAYOUTS

    return REGROUPED_LAYOUTS[qtype] if block_order == CODES_THEN_SCALES else LAYOUTS[qtype]


def gemv_int_args(
    qtype: Any,
    out_features: int,
    in_features: int,
    ub: int,
    block_order: str = GGML,
    *,
    dequantize: bool = False,
) -> dict[str, int]:
    """The integer arguments a plain one-row decode launch of an `out x in` matrix passes (no split), or
    with `dequantize` the prefill's decode of it into float16 rows (`triton_gemv.dequantize_into`): what
    Triton specialises on at run time (a value divisible by 16 is compiled as such)."""
    from kernels.formats import tensor_nbytes

    layout = kernel_layout(qtype, block_order)
    n_units = in_features // layout.unit
    if block_order == CODES_THEN_SCALES:  # a row's codes only (MXFP4 16 bytes a block, Q8_0 32, Q6_K 208)
        row_words = n_units * code_bytes(qtype) // layout.word
    else:
        row_words = tensor_nbytes(qtype, (in_features,)) // layout.word
    return dict(
        n_rows=out_features, n_units=n_units, units_per_split=-(-n_units // ub) * ub, row_stride=row_words,
        x_stride=0 if dequantize else in_features, x_group=1, n_out_rows=1,
        o_stride=in_features if dequantize else 0, rows1=0, rows2=0, tile1=0, tile2=0, y_width=out_features,
    )  # fmt: skip


def compile_gemv(
    qtype: Any,
    form: str = "plain",
    *,
    block_n: int = 16,
    ub: int | None = None,
    shape: tuple[int, int] | None = None,
    block_order: str = GGML,
    pdl: bool | int = False,
    prefetch_lines: int = 0,
    ahead: bool = False,
    with_words: bool = False,
    num_warps: int = 4,
    max_registers: int | None = None,
):
    """The GEMV kernel (`kernels.triton_gemv._qgemv_kernel`) for one ggml type, block order
    (kernels.qtensor: GGML or CODES_THEN_SCALES) and launch form.
    `shape` (out, in): the integer arguments divisible by 16 for that matrix are compiled as such, as
    the GPU run specialises them; without it every integer is of unknown divisibility. `pdl`: the form a
    programmatic dependent launch compiles (`kernels.dependent_launch`), `prefetch_lines` with it: the L2
    lines of its weight tile a program asks for before it waits. `ahead`: the loop that loads a step's
    words before the previous step is decoded (`triton_gemv.GemvConfig.ahead`); `with_words`: the plain loop
    loading a step's activations with its words (`GemvConfig.with_words`); `num_warps` and
    `max_registers` (`GemvConfig.max_registers`) as the launch shape's."""
    from kernels import triton_gemv

    layout = kernel_layout(qtype, block_order)
    signature = {
        "w_ptr": "*u8",
        "x_ptr": "*fp32",
        "y_ptr": "*fp32",
        "bias_ptr": "*fp32",
        "ids_ptr": "*i64",
        "o_ptr": "*fp16",
        **dict.fromkeys(GEMV_INTS, "i32"),
    }
    constants = dict(
        FMT=layout.fmt,
        WORD=layout.word,
        BLOCK_N=block_n,
        UB=ub if ub is not None else (1 if layout.unit == 256 else 8),
        STAGES=1,
        **GEMV_FORMS[form],
        PDL=pdl,
        PREFETCH_LINES=prefetch_lines,
        LOADS=triton_gemv.loads_constant(ahead, with_words),
    )
    if constants["REDUCE"]:
        signature.update(part_ptr="*fp32", count_ptr="*i32")
    else:
        constants.update(part_ptr=None, count_ptr=None)
    if constants["RMS_BLOCK"]:
        signature.update(rms_ptr="*fp32", eps="fp32")
        if shape is not None:  # the block a launch for this matrix uses, and the reads that cover it
            constants["RMS_BLOCK"] = triton_gemv.rms_block_for(shape[1])
            constants["RMS_BLOCKS"] = -(-shape[1] // constants["RMS_BLOCK"])
    else:
        constants.update(rms_ptr=None, eps=0.0)
    if constants["SCALED"]:
        signature.update(nw_ptr="*fp32", y2_ptr="*fp32")
    else:
        constants.update(nw_ptr=None, y2_ptr=None)
    if constants["HAS_RES"]:
        signature.update(res_ptr="*fp32")
    else:
        constants.update(res_ptr=None)
    if constants["GLU_OAI"]:
        signature.update(glu_alpha="fp32", glu_limit="fp32")
    if constants["MIX_K"]:
        signature.update(mix_ptr="*fp32", mix_res_ptr="*fp32", route_ptr="*fp32", mix_count_ptr="*i32")
    else:
        constants.update(mix_ptr=None, mix_res_ptr=None, route_ptr=None, mix_count_ptr=None)
    aligned = GEMV_ALIGNED
    if shape is not None:
        ints = gemv_int_args(qtype, *shape, constants["UB"], block_order, dequantize=constants["DEQ"])
        aligned += tuple(name for name, value in ints.items() if value and value % 16 == 0)
    return compile_for_sm90(
        triton_gemv._qgemv_kernel,
        signature,
        constants,
        aligned,
        num_warps=num_warps,
        max_registers=max_registers,
    )


# The tensor-core GEMV (`kernels.tensor_core_gemv._tc_gemv_kernel`, Gluon) in the forms the decode steps
# launch it: Phi-3's Q4_K gate/up with SwiGLU from rms-normed rows through the split-K reduction, q/k/v as
# three segments with biases, rms-normed, reduced, launched early with the late trigger, the residual sum
# with its scaled copy launched early with the trigger at the wait, gpt-oss's clamped SwiGLU; Phi-3's
# regrouped Q6_K ones; GPT-OSS's regrouped Q8_0 attention and output (walks of blocks not a power of two)
# and its MXFP4 experts by token-expert pair (gate/up, down), and a 2-D MXFP4 matrix; "...words-early": a
# 2-D matrix's first words asked for before the wait (`GemvConfig.tc_words_early`); "...two-ahead": two
# units' words in flight beside the one multiplied (`GemvConfig.tc_units_ahead`), in Phi-3's Q4_K and Q6_K
# shapes' walks; "warp-split-...": a row tile's units across 4 (or "two": 2) of its warps
# (`GemvConfig.tc_warp_split`), in Phi-3's shapes and GPT-OSS's block formats; "...-tma": Q4_K's int8 walk
# with each program's share asked for by TMA (`GemvConfig.tc_words_by_tma`), "-early" before the wait.
_TC = dict(HAS_BIAS=False, SEGMENTS=1, RMS_BLOCK=0, SCALED=False, GLU=False, GLU_OAI=False, HAS_RES=False, SPLITS=1, RMS_BLOCKS=0, PDL=0, HAS_IDS=0, ZERO_COLUMNS=0, INT8_CODES=0, WORDS_EARLY=0, AHEAD=1, WARP_SPLIT=1)  # fmt: skip
_Q4_K, _Q6_K = dict(FMT="q4_k", UNIT=256), dict(FMT="q6_k_codes_then_scales", UNIT=256)
_Q8_0, _MXFP4 = dict(FMT="q8_0_codes_then_scales", UNIT=32), dict(FMT="mxfp4_codes_then_scales", UNIT=32)
TENSOR_CORE_FORMS = {
    "glu-normed-reduced": {**_TC, **_Q4_K, "PER": 4, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "SPLITS": 3},
    "qkv-early-late-trigger": {**_TC, **_Q4_K, "PER": 2, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "SPLITS": 3, "PDL": 2},
    "residual-scaled-early": {**_TC, **_Q4_K, "PER": 1, "HAS_BIAS": True, "SCALED": True, "HAS_RES": True, "PDL": 1},
    "glu-oai": {**_TC, **_Q4_K, "PER": 2, "RMS_BLOCK": 256, "RMS_BLOCKS": 12, "GLU": True, "GLU_OAI": True},
    "int8-glu-normed-reduced": {**_TC, **_Q4_K, "PER": 4, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "SPLITS": 3, "INT8_CODES": 1},
    "int8-qkv-early-late-trigger": {**_TC, **_Q4_K, "PER": 2, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "SPLITS": 3, "PDL": 2, "INT8_CODES": 1},
    "int8-glu-normed-reduced-tma": {**_TC, **_Q4_K, "PER": 4, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "SPLITS": 3, "INT8_CODES": 1, "WORDS_BY_TMA": 1},
    "int8-residual-scaled-tma-early": {**_TC, **_Q4_K, "PER": 2, "HAS_BIAS": True, "SCALED": True, "HAS_RES": True, "SPLITS": 6, "INT8_CODES": 1, "PDL": 2, "WORDS_BY_TMA": 1},
    "int8-glu-normed-reduced-words-early": {**_TC, **_Q4_K, "PER": 4, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "SPLITS": 3, "INT8_CODES": 1, "PDL": 2, "WORDS_EARLY": 1},
    "qkv-words-early": {**_TC, **_Q4_K, "PER": 2, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "SPLITS": 3, "PDL": 1, "WORDS_EARLY": 1},
    "q6_k-residual-scaled-reduced": {**_TC, **_Q6_K, "PER": 2, "HAS_BIAS": True, "SCALED": True, "SPLITS": 16},
    "q6_k-words-early": {**_TC, **_Q6_K, "PER": 2, "HAS_BIAS": True, "SCALED": True, "SPLITS": 16, "PDL": 1, "WORDS_EARLY": 1},
    "q6_k-segments-normed-early": {**_TC, **_Q6_K, "PER": 1, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "PDL": 2},
    "q6_k-glu": {**_TC, **_Q6_K, "PER": 4, "GLU": True, "SPLITS": 8},
    "q8_0-qkv-early-late-trigger": {**_TC, **_Q8_0, "PER": 10, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "SPLITS": 3, "PDL": 2},
    "q8_0-residual-scaled-reduced": {**_TC, **_Q8_0, "PER": 8, "HAS_BIAS": True, "SCALED": True, "HAS_RES": True, "SPLITS": 3},
    "q8_0-output": {**_TC, **_Q8_0, "PER": 30, "SPLITS": 3},
    "q8_0-glu-oai": {**_TC, **_Q8_0, "PER": 3, "HAS_BIAS": True, "GLU": True, "GLU_OAI": True, "PDL": 1},
    "mxfp4-experts-glu-oai-normed-reduced": {**_TC, **_MXFP4, "PER": 30, "HAS_BIAS": True, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "GLU_OAI": True, "SPLITS": 3, "HAS_IDS": 1},
    "mxfp4-experts-down-reduced-early": {**_TC, **_MXFP4, "PER": 30, "HAS_BIAS": True, "SPLITS": 3, "PDL": 2, "HAS_IDS": 1},
    "mxfp4-matrix": {**_TC, **_MXFP4, "PER": 9, "PDL": 1},
    "int8-glu-normed-reduced-two-ahead": {**_TC, **_Q4_K, "PER": 4, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "SPLITS": 3, "INT8_CODES": 1, "AHEAD": 2},
    "int8-qkv-two-ahead": {**_TC, **_Q4_K, "PER": 4, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "SPLITS": 3, "INT8_CODES": 1, "AHEAD": 2},
    "int8-residual-scaled-two-ahead": {**_TC, **_Q4_K, "PER": 2, "HAS_BIAS": True, "SCALED": True, "HAS_RES": True, "SPLITS": 3, "INT8_CODES": 1, "AHEAD": 2},
    "q6_k-residual-scaled-reduced-two-ahead": {**_TC, **_Q6_K, "PER": 4, "HAS_BIAS": True, "SCALED": True, "SPLITS": 8, "AHEAD": 2},
    "q8_0-output-two-ahead": {**_TC, **_Q8_0, "PER": 30, "SPLITS": 3, "AHEAD": 2},
    "int8-glu-normed-cluster": {**_TC, **_Q4_K, "PER": 4, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "SPLITS": 3, "INT8_CODES": 1, "CLUSTER": 1},
    "int8-residual-scaled-cluster-early": {**_TC, **_Q4_K, "PER": 2, "HAS_BIAS": True, "SCALED": True, "HAS_RES": True, "SPLITS": 6, "INT8_CODES": 1, "PDL": 2, "CLUSTER": 1},
    "q6_k-residual-scaled-cluster": {**_TC, **_Q6_K, "PER": 4, "HAS_BIAS": True, "SCALED": True, "SPLITS": 8, "CLUSTER": 1},
    "q8_0-output-cluster-early": {**_TC, **_Q8_0, "PER": 30, "SPLITS": 3, "PDL": 2, "CLUSTER": 1},
    "mxfp4-experts-glu-oai-normed-cluster": {**_TC, **_MXFP4, "PER": 30, "HAS_BIAS": True, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "GLU_OAI": True, "SPLITS": 3, "HAS_IDS": 1, "CLUSTER": 1},
    "warp-split-glu-normed": {**_TC, **_Q4_K, "PER": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "WARP_SPLIT": 4},
    "warp-split-qkv": {**_TC, **_Q4_K, "PER": 3, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "WARP_SPLIT": 4},
    "warp-split-residual-scaled-reduced": {**_TC, **_Q4_K, "PER": 1, "HAS_BIAS": True, "SCALED": True, "HAS_RES": True, "SPLITS": 3, "WARP_SPLIT": 4},
    "warp-split-q6_k-residual-scaled-reduced": {**_TC, **_Q6_K, "PER": 4, "HAS_BIAS": True, "SCALED": True, "HAS_RES": True, "SPLITS": 8, "WARP_SPLIT": 4},
    "warp-split-two-glu-normed": {**_TC, **_Q4_K, "PER": 6, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "WARP_SPLIT": 2},
    "warp-split-q8_0-qkv": {**_TC, **_Q8_0, "PER": 5, "HAS_BIAS": True, "SEGMENTS": 3, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "SPLITS": 3, "WARP_SPLIT": 2},
    "warp-split-mxfp4-experts-glu-oai": {**_TC, **_MXFP4, "PER": 5, "HAS_BIAS": True, "RMS_BLOCK": 1024, "RMS_BLOCKS": 3, "GLU": True, "GLU_OAI": True, "SPLITS": 3, "HAS_IDS": 1, "WARP_SPLIT": 2},
}  # fmt: skip
# mma.sync instructions (m16n8k16) a unit of each format a matrix: Q4_K 8 sub-blocks of K = 32 and the mins
# (K = 16), Q6_K 16 sub-blocks of K = 16, a Q8_0 or MXFP4 block K = 32.
TENSOR_CORE_MMAS = {"q4_k": 17, "q6_k_codes_then_scales": 16, "q8_0_codes_then_scales": 2, "mxfp4_codes_then_scales": 2}  # fmt: skip
# Q4_K on int8 mma (`INT8_CODES`): a super-block's 8 sub-blocks one m16n8k32 int8 mma each (IMMA), the mins
# one float16 mma (HMMA).
INT8_Q4_K_MMAS = {"IMMA": 8, "HMMA": 1}


def compile_tensor_core_gemv(form: str, per: int | None = None, max_registers: int | None = None):
    """The tensor-core GEMV in `form` (TENSOR_CORE_FORMS), walking `per` units a program if given, under
    ptxas's maxnreg `max_registers` if given (`GemvConfig.tc_max_registers`)."""
    import triton

    from kernels import tensor_core_gemv

    constants = dict(TENSOR_CORE_FORMS[form])
    if per is not None:
        constants["PER"] = per
    constants["PER_POW2"] = triton.next_power_of_2(constants["PER"])  # as `tensor_core_gemv.launch` passes it
    fn = tensor_core_gemv._tc_gemv_kernel
    pointers = {"w_ptr": "*i32", "count_ptr": "*i32", "d_ptr": "*i16", "ids_ptr": "*i64"}
    # The TMA walk's descriptors (`tensor_core_gemv.tma_descriptors`); None where the form has none.
    descs = {}
    for name, width, layout in (
        ("codes_desc", 32, tensor_core_gemv.CODES_SMEM),
        ("heads_desc", 4, tensor_core_gemv.HEADS_SMEM),
        ("codes_up_desc", 32, tensor_core_gemv.CODES_SMEM),
        ("heads_up_desc", 4, tensor_core_gemv.HEADS_SMEM),
    ):
        if constants.get("WORDS_BY_TMA") and (constants.get("GLU") or "_up_" not in name):
            descs[name] = f"tensordesc<i32[1, 64, {width}],{layout!r}>"
        else:
            constants[name] = None
    signature = {
        name: descs.get(name) or pointers.get(name, "*fp32")
        if name.endswith(("_ptr", "_desc"))
        else ("fp32" if name in ("eps", "glu_alpha", "glu_limit") else "i32")
        for name in fn.arg_names
        if not name.isupper() and name not in constants
    }
    return compile_for_sm90(
        fn,
        signature,
        constants,
        ("w_ptr", "d_ptr", "x_ptr", "y_ptr", "part_ptr"),
        max_registers=max_registers,
    )


def tensor_core_walk_sass(cubin: bytes, fmt: str, int8_codes: bool = False) -> float | None:
    """SASS instructions a thread issues a unit of its walk, from the listing: the instructions from the
    first mma to the last over the units between them (the prologue and epilogue apart); None for a walk of
    one unit. `int8_codes`: Q4_K on int8 mma (`INT8_Q4_K_MMAS`)."""
    listing = sass_listing(cubin)
    mmas = [i for i, op in enumerate(listing) if op.startswith(("HMMA", "IMMA"))]
    units = len(mmas) / (sum(INT8_Q4_K_MMAS.values()) if int8_codes else TENSOR_CORE_MMAS[fmt])
    if units < 2:
        return None
    return (mmas[-1] - mmas[0]) / (units - 1)


# The fused decode attention's runtime arguments (`kernels.triton_decode._rope_attention_kernel`).
ROPE_ATTENTION_SIGNATURE = {
    **dict.fromkeys(("q_ptr", "k_ptr", "v_ptr", "keys_ptr", "values_ptr", "cos_ptr", "sin_ptr"), "*fp32"),
    "sinks_ptr": "*fp32", "out_ptr": "*fp32", "pos_ptr": "*i64", "capacity": "i32", "scale": "fp32",
    "window": "i32", "chunk": "i32", "part_ptr": "*fp32", "stat_ptr": "*fp32", "count_ptr": "*i32",
}  # fmt: skip


def compile_rope_attention(
    group: int,
    d: int,
    rope_half: int,
    tile: Any,
    *,
    sinks: bool = False,
    split: bool = True,
    num_stages: int = 3,
    cluster: int = 0,
):
    """The decode step's RoPE + KV store + attention for `group` query heads per KV head of `d` dims
    (neox pairs over `rope_half` of them) in `tile` (`triton_decode.attention_tile`'s), the loop bound read
    from the position as a decode step reads it; `split`: the form whose last program merges the splits;
    `num_stages` as the launch passes it (`rope_attention(dot_stages=...)` for a dot tile); `cluster`: the
    form whose `cluster` splits merge in split 0's shared memory (`rope_attention(clustered=True)`)."""
    import triton

    from kernels import triton_decode

    constants = dict(
        GROUP=group, BLOCK_G=tile.block_g, D=d, BLOCK_D=triton.next_power_of_2(d), BLOCK_S=tile.block_s,
        ROPE_HALF=rope_half, NEOX=True, HAS_SINKS=sinks, WHOLE_CACHE=False, CAPACITY=0, SPLIT=split,
        DOT=tile.dot, BY_POSITION=False, UNROLLED_SPLITS=0, HEAD_SPLIT=tile.head_split, CLUSTER=cluster,
    )  # fmt: skip
    return compile_for_sm90(
        triton_decode._rope_attention_kernel, ROPE_ATTENTION_SIGNATURE, constants, num_stages=num_stages
    )


QGEMM_INTS = (
    "M",
    "N",
    "K",
    "row_bytes",
    "matrix_bytes",
    "scales_at",
    "scale_row_bytes",
    "x_group",
    "n_expert",
)
# What a prefill launch of the GEMM passes 16-byte aligned or divisible by 16 for the models' shapes.
QGEMM_ALIGNED = ("x_ptr", "w_ptr", "y_ptr", "N", "K")


def qgemm_int_args(fmt: str, out_features: int, in_features: int, rows: int, n_expert: int) -> dict[str, int]:
    """The integer arguments a prefill launch of the GEMM passes for an `out x in` matrix (each of
    `n_expert` experts when > 1) and `rows` activation rows (token-expert pairs, 4 per token, grouped):
    what Triton specialises on at run time (a value divisible by 16 is compiled as such)."""
    from kernels.formats import FORMATS, tensor_nbytes
    from kernels.qtensor import SCALES
    from kernels.triton_qgemm import FORMAT_NAMES, REGROUPED_FORMATS

    qtype = next(q for q, name in FORMAT_NAMES.items() if name == fmt.replace("_codes_then_scales", ""))
    matrix_bytes = tensor_nbytes(qtype, (out_features, in_features))
    row_bytes, scales_at, scale_row_bytes = matrix_bytes // out_features, 0, 0
    if fmt in REGROUPED_FORMATS.values():  # a row's codes, every row's scales after the matrix's codes
        blocks = in_features // FORMATS[qtype].block_size
        row_bytes, scale_row_bytes = blocks * code_bytes(qtype), blocks * SCALES[qtype][1]
        scales_at = out_features * row_bytes
    return dict(
        M=rows, N=out_features, K=in_features, row_bytes=row_bytes, matrix_bytes=matrix_bytes,
        scales_at=scales_at, scale_row_bytes=scale_row_bytes, x_group=4 if n_expert > 1 else 1,
        n_expert=n_expert,
    )  # fmt: skip


def compile_qgemm(
    fmt: str,
    *,
    grouped: bool,
    config: Any = None,
    even_k: bool = True,
    shape: tuple[int, int] | None = None,
):
    """The prefill GEMM (`kernels.triton_qgemm._qgemm_kernel`) for one decoder (`triton_qgemm.FORMAT_NAMES`
    or `REGROUPED_FORMATS`), dense or grouped by expert, with a bias, in `config`'s launch shape (default:
    the one `default_config` gives 512 rows). `shape` (out, in): its integer arguments divisible by 16
    compiled as such, as the GPU run specialises them (512 rows; grouped: 32 experts, 4 a token)."""
    from kernels import triton_qgemm

    config = config or triton_qgemm.default_config(512, grouped=grouped)
    signature = {
        "x_ptr": "*fp16",
        "x_scale_ptr": "*fp32",
        "w_ptr": "*u8",
        "b_ptr": "*fp32",
        "y_ptr": "*fp32",
        "pair_ptr": "*i32",
        "block_expert_ptr": "*i32",
        **dict.fromkeys(QGEMM_INTS, "i32"),
    }
    constants = dict(
        FMT=fmt,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        HAS_BIAS=True,
        GROUPED=grouped,
        EVEN_K=even_k,
    )
    aligned = QGEMM_ALIGNED
    if shape is not None:
        ints = qgemm_int_args(fmt, *shape, 512 * 4 if grouped else 512, 32 if grouped else 1)
        aligned = ("x_ptr", "w_ptr", "y_ptr") + tuple(n for n, v in ints.items() if v and v % 16 == 0)
    return compile_for_sm90(
        triton_qgemm._qgemm_kernel,
        signature,
        constants,
        aligned,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


# A PTX instruction that reads or writes memory other than the kernel's parameters (`ld.param`). Not a
# `prefetch.global.L2`: a hint that returns nothing and writes nothing (a GEMV's weight tile, before it
# waits), so whatever it touches, the program's results cannot depend on it.
_MEMORY_ACCESS = re.compile(r"^\s*(?:@!?%p\d+\s+)?(?:ld|st|atom|red|cp\.async|multimem)\.(?!param)")
_GLOBAL_LOAD = re.compile(r"^\s*(?:@!?%p\d+\s+)?ld\.global\.")


def dependent_launch_problem(
    ptx: str, *, signal_required: bool = True, weight_loads_first: bool = False, tma_first: bool = False
) -> str | None:
    """What is wrong with a kernel compiled for programmatic dependent launch (`kernels.dependent_launch`),
    or None: it must execute `griddepcontrol.wait` before any memory access and before any branch (so
    every program waits, whatever path it takes), and signal `griddepcontrol.launch_dependents` only after
    it (without `signal_required`, a kernel that signals at exit, it may not signal at all). Read from the
    PTX in program order: the wait in the entry block dominates everything after it. `weight_loads_first`:
    a kernel that loads weights before it waits (`moe_router(row_early=True)`; no kernel of a step writes
    them): global loads may come first, nothing else that touches memory. `tma_first`: a kernel that asks
    for its weights by TMA before it waits (`tensor_core_gemv._q4_k_int8_tma_walk`): its own mbarrier's
    setup in shared memory, the fence and barriers around it and the bulk tensor copies may come first."""
    lines = [line.split("//")[0] for line in ptx.splitlines()]
    body = next((i for i, line in enumerate(lines) if line.strip() == "{"), None)
    if body is None:
        return "no kernel body in the PTX"
    wait = next((i for i, line in enumerate(lines) if "griddepcontrol.wait" in line), None)
    if wait is None:
        return "no griddepcontrol.wait"
    signal = next((i for i, line in enumerate(lines) if "griddepcontrol.launch_dependents" in line), None)
    if (signal is None and signal_required) or (signal is not None and signal < wait):
        return "griddepcontrol.launch_dependents missing or before the wait"
    for i in range(body, wait):
        if weight_loads_first and _GLOBAL_LOAD.match(lines[i]):
            continue
        if tma_first and _TMA_SETUP.match(lines[i]):
            continue
        if _MEMORY_ACCESS.match(lines[i]):
            return f"memory accessed before the wait: {lines[i].strip()}"
        if re.search(r"\bbra(\.uni)?\b|\bret\b|\bexit\b", lines[i]):
            return f"a branch before the wait: {lines[i].strip()}"
    return None


# What a TMA walk runs before its wait (`dependent_launch_problem(tma_first=True)`): its mbarrier's init and
# expected bytes (its own shared memory), the async proxy's fence, the program's barriers, the copies.
_TMA_SETUP = re.compile(
    r"^\s*(@!?%p\d+\s+)?(mbarrier\.(init|arrive\.expect_tx)\.|fence\.proxy\.async|bar\.sync\b|"
    r"cp\.async\.bulk\.tensor\.)"
)
# SASS of griddepcontrol.wait / .launch_dependents on sm_90, and what must not run before the wait:
# global, shared and constant-bank-free memory instructions, and any change of control flow.
_SASS_WAIT, _SASS_SIGNAL = "ACQBULK", "PREEXIT"
_SASS_BEFORE_WAIT_FORBIDDEN = (
    "LDG", "STG", "LDS", "STS", "LD", "ST", "ATOM", "ATOMG", "ATOMS", "RED", "REDG", "LDGSTS", "UBLKCP",
    "UTMALDG", "BRA", "BRX", "JMP", "EXIT", "RET", "CALL", "BSSY", "WARPSYNC", "BAR",
)  # fmt: skip


def dependent_launch_problem_in_sass(
    cubin: bytes, *, signal_required: bool = True, weight_loads_first: bool = False, tma_first: bool = False
) -> str | None:
    """`dependent_launch_problem` on what the GPU runs: ptxas may schedule instructions across the PTX
    order, so the wait (SASS `ACQBULK`) must also come before every memory access and branch there
    (`weight_loads_first`: but global loads, `LDG`; `tma_first`: but the TMA copies and barriers, `UTMALDG`
    and `BAR`)."""
    listing = sass_listing(cubin)
    if _SASS_WAIT not in listing:
        return f"no {_SASS_WAIT} (griddepcontrol.wait) in the SASS"
    wait = listing.index(_SASS_WAIT)
    early = [
        op
        for op in listing[:wait]
        if op in _SASS_BEFORE_WAIT_FORBIDDEN
        and not (weight_loads_first and op == "LDG")
        and not (tma_first and op in ("UTMALDG", "BAR"))
    ]
    if early:
        return f"before the wait in the SASS: {', '.join(early)}"
    if _SASS_SIGNAL not in listing[wait:] and (signal_required or _SASS_SIGNAL in listing):
        return f"no {_SASS_SIGNAL} (griddepcontrol.launch_dependents) after the wait in the SASS"
    return None


@dataclass(frozen=True)
class RegisterUse:
    """What ptxas allocates a thread of a kernel compiled for sm_90a (`ptxas -v`): registers bound how
    many programs an SM keeps resident (65,536 per SM), and so how many loads are in flight."""

    registers: int
    spill_bytes: int  # spill stores + spill loads


_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def register_use(ptx: str) -> RegisterUse:
    """Runs Triton's own ptxas (the one that made the cubin) with -v on `ptx` for sm_90a."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        source = f"{tmp}/kernel.ptx"
        with open(source, "w") as f:
            f.write(ptx)
        run = subprocess.run(
            [get_ptxas(90).path, "-v", "--gpu-name=sm_90a", source, "-o", f"{tmp}/kernel.cubin"],
            capture_output=True,
            text=True,
            check=True,
        )
    registers = _PTXAS_REGISTERS.search(run.stderr)
    spills = _PTXAS_SPILLS.search(run.stderr)
    if registers is None or spills is None:
        raise ValueError(f"ptxas -v printed no register use: {run.stderr[-400:]}")
    return RegisterUse(int(registers.group(1)), int(spills.group(1)) + int(spills.group(2)))


# SASS conversions between integers and floats: I2F / F2I / F2F issue on a narrow pipe (16 a clock an SM on
# sm_90), I2FP / F2FP (integer to float, float32 pairs to float16x2) on a wider one.
SASS_CONVERSIONS = ("I2F", "F2I", "F2F", "I2FP", "F2FP", "I2I", "I2IP")


def _disassemble(cubin: bytes, *flags: str) -> str:
    """The cubin's SASS text, by Triton's own nvdisasm (`-hex`: each instruction's encoding too)."""
    import subprocess
    import tempfile

    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run(
            [knobs.nvidia.nvdisasm.path, "-c", *flags, f.name], capture_output=True, text=True, check=True
        ).stdout


def sass_listing(cubin: bytes) -> list[str]:
    """The opcodes of a whole kernel's SASS in program order (predicates and modifiers stripped:
    `@P0 LDG.E.U8` is `LDG`), from the cubin by Triton's own nvdisasm."""
    return [
        m.group(1).split(".")[0]
        for line in _disassemble(cubin).splitlines()
        if (m := _SASS_INSTRUCTION.match(line))
    ]


# The sm_90 execution pipe each common SASS opcode issues to (per SM sub-partition a clock: FMA 32 lanes,
# ALU 16: the integer and logic work of a decoder takes two clocks a warp where an FFMA takes one). An
# approximation from NVIDIA's pipe metrics' names (`sm__inst_executed_pipe_alu` / `_fma` / `_lsu`...);
# what the GPU's own counters say is `benchmarks.ncu_gemv`'s.
SASS_PIPES = {
    "alu": {
        "LOP3", "SHF", "IADD3", "ISETP", "SEL", "PRMT", "LEA", "FSEL", "FSETP", "FMNMX", "IMNMX", "IABS",
        "SGXT", "PLOP3", "BMSK", "MOV", "VIADD", "VIADDMNMX", "P2R", "R2P", "LOP", "SHL", "SHR",
    },
    "fma": {"FFMA", "FMUL", "FADD", "IMAD", "HFMA2", "HADD2", "HMUL2", "FSWZADD"},
    "lsu": {"LDG", "STG", "LDS", "STS", "LD", "ST", "SHFL", "ATOMG", "ATOMS", "RED", "REDG", "LDSM", "LDGSTS"},
    "narrow": {"I2F", "F2I", "F2F", "MUFU", "I2FP", "F2FP", "I2I", "I2IP", "FRND", "POPC", "FLO", "BREV"},
}  # fmt: skip
_SASS_ADDRESS = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/")
_SASS_LABEL = re.compile(r"^(\.L_x_\d+):")
_SASS_BRANCH = re.compile(r"\bBRA\b.*`\(?(\.L_x_\d+)\)?")


def sass_loop(cubin: bytes) -> Counter:
    """Opcode counts of the kernel's largest loop body in SASS (a label to a backward branch to it; one
    step of a GEMV's walk): what one step issues, without the prologue and epilogue."""
    lines = _disassemble(cubin).splitlines()
    labels: dict[str, int] = {}
    instructions: list[tuple[int, str]] = []  # (index in `lines`, opcode)
    for i, line in enumerate(lines):
        if m := _SASS_LABEL.match(line.strip()):
            labels[m.group(1)] = i
        elif m := _SASS_INSTRUCTION.match(line):
            instructions.append((i, m.group(1).split(".")[0]))
    body: list[str] = []
    for i, line in enumerate(lines):
        m = _SASS_BRANCH.search(line) if _SASS_ADDRESS.match(line) else None
        if m and labels.get(m.group(1), i) < i:
            inside = [op for j, op in instructions if labels[m.group(1)] < j <= i]
            if len(inside) > len(body):
                body = inside
    return Counter(body)


def pipe_mix(opcodes: Counter) -> dict[str, int]:
    """Instructions per execution pipe (`SASS_PIPES`; "other": uniform datapath, control, NOPs)."""
    mix = {pipe: sum(n for op, n in opcodes.items() if op in ops) for pipe, ops in SASS_PIPES.items()}
    mix["other"] = sum(opcodes.values()) - sum(mix.values())
    return mix


def sass_opcodes(cubin: bytes) -> Counter:
    """Opcode counts of a whole kernel's SASS (`sass_listing`): what the GPU issues, where PTX only says
    what was asked (a PTX `cvt` may become a fast `I2FP`, a byte move, or nothing at all)."""
    return Counter(sass_listing(cubin))


_SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s*(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*(?:\.[\w.]+)?)")


# ---------------------------------------------------------------------------------------------------
# Memory round trips: how many times one warp waits for memory before it can go on, in the order it issues.
# A warp issues in program order, and an instruction that needs a load's result stalls it until the data
# is back (sm_70+ SASS: each variable-latency instruction sets one of six scoreboards, and a consumer's
# control bits name the scoreboards it waits on). A load issued after such a wait starts only when the
# awaited data has arrived: it is one round trip further along the warp's chain. In a kernel whose
# programs are few and short (a 0.5B model's 896-wide GEMVs), that chain, not the bytes, sets the time.

# Opcodes whose result comes back from the memory system (L1, L2 or DRAM); LDS, LDC, S2R, SHFL and the
# other scoreboarded instructions are short and do not count.
GLOBAL_RESULT_OPCODES = ("LDG", "LD", "ATOMG", "ATOM", "LDGSTS")
_SASS_ENCODED = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;?\s*/\* 0x([0-9a-f]{16}) \*/")
_SASS_HIGH_WORD = re.compile(r"^\s*/\* 0x([0-9a-f]{16}) \*/\s*$")
_DEPBAR = re.compile(r"\bSB(\d),\s*0x([0-9a-f]+)")
NO_SCOREBOARD = 7


@dataclass(frozen=True)
class SassInstruction:
    """One instruction of an `nvdisasm -hex` listing with its scheduling control bits (sm_70 and later:
    bits 105-125 of the 128-bit word, the high word's bits 41-61)."""

    address: int
    text: str
    opcode: str  # without predicate and modifiers: `@!P0 LDG.E.U16 R1, ...` is LDG
    sets: int  # the scoreboard its result sets (NO_SCOREBOARD: none)
    waits: int  # mask of the scoreboards it waits on before issuing

    @classmethod
    def decode(cls, address: int, text: str, high: int) -> SassInstruction:
        opcode = re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]
        return cls(address, text, opcode, (high >> 46) & 7, (high >> 52) & 0x3F)


def sass_instructions(listing: str) -> tuple[list[SassInstruction], dict[str, int]]:
    """The instructions of an `nvdisasm -c -hex` listing in address order, and its labels (name: index of
    the instruction that follows)."""
    lines = listing.splitlines()
    instructions: list[SassInstruction] = []
    labels: dict[str, int] = {}
    for i, line in enumerate(lines):
        if m := _SASS_LABEL.match(line.strip()):
            labels[m.group(1)] = len(instructions)
        elif (m := _SASS_ENCODED.match(line)) and i + 1 < len(lines):
            if high := _SASS_HIGH_WORD.match(lines[i + 1]):
                instructions.append(
                    SassInstruction.decode(int(m.group(1), 16), m.group(2), int(high.group(1), 16))
                )
    return instructions, labels


class _Chain:
    """One warp's round trips so far (`level`) and, per scoreboard, the levels of what is outstanding on it
    (a short instruction's entry is `level - 1`: waiting on it adds nothing)."""

    def __init__(self) -> None:
        self.level = 0
        self.pending: dict[int, list[int]] = {b: [] for b in range(6)}

    def issue(self, instruction: SassInstruction) -> None:
        for b in range(6):
            if instruction.waits >> b & 1 and self.pending[b]:
                self.level = max(self.level, max(self.pending[b]) + 1)
                self.pending[b] = []
        if instruction.opcode == "DEPBAR" and (m := _DEPBAR.search(instruction.text)):
            # DEPBAR.LE SBk, n: on until at most n of scoreboard k's (in-order) entries are outstanding.
            board, left = int(m.group(1)), int(m.group(2), 16)
            done = len(self.pending[board]) - left
            if done > 0:
                self.level = max(self.level, max(self.pending[board][:done]) + 1)
                self.pending[board] = self.pending[board][done:]
        if instruction.sets != NO_SCOREBOARD:
            long = instruction.opcode in GLOBAL_RESULT_OPCODES
            self.pending[instruction.sets].append(self.level if long else self.level - 1)

    def run(self, instructions: list[SassInstruction]) -> int:
        for instruction in instructions:
            self.issue(instruction)
        return self.level


@dataclass(frozen=True)
class RoundTrips:
    """A kernel's memory round trips along one warp's path (`memory_round_trips`): before its largest loop,
    per iteration of it in the steady state, and after it."""

    prologue: int
    per_step: int
    epilogue: int

    def total(self, steps: int) -> int:
        return self.prologue + steps * self.per_step + self.epilogue


def round_trips_of_listing(listing: str) -> RoundTrips:
    """`memory_round_trips` of an `nvdisasm -c -hex` listing. The path is the address order: both sides of
    a branch and one pass of any loop but the largest (a GEMV's walk along the row) count, so after the
    loop it is the longest path's (e.g. the last split program's reduction) or more. The loop is run four
    times from the prologue's state; its last iteration's increase is the steady state (a load issued in
    one iteration and awaited in the next, as a loop loading ahead does, counts once)."""
    instructions, labels = sass_instructions(listing)
    loop: tuple[int, int] | None = None
    for j, instruction in enumerate(instructions):
        m = _SASS_BRANCH.search(instruction.text) if instruction.opcode == "BRA" else None
        if m and labels.get(m.group(1), j) < j:
            start = labels[m.group(1)]
            if loop is None or j - start > loop[1] - loop[0]:
                loop = (start, j)
    chain = _Chain()
    if loop is None:
        return RoundTrips(chain.run(instructions), 0, 0)
    start, end = loop
    prologue = chain.run(instructions[:start])
    levels = [prologue]
    for _ in range(4):
        levels.append(chain.run(instructions[start : end + 1]))
    return RoundTrips(prologue, levels[-1] - levels[-2], chain.run(instructions[end + 1 :]) - levels[-1])


def memory_round_trips(cubin: bytes) -> RoundTrips:
    """How many times one warp of the kernel waits for a global load or atomic before it can issue its
    next global access (`round_trips_of_listing`): the dependent trips to memory a program makes in
    sequence, which bound a short kernel's time from below however few bytes it reads. Each trip is an
    L1 hit (tens of cycles), an L2 hit (hundreds) or DRAM (more); the count does not tell them apart."""
    return round_trips_of_listing(_disassemble(cubin, "-hex"))


def split_tail_round_trips(cubin: bytes) -> int:
    """The round trips one warp makes from a split launch's first atomic (the arrival counter's) to its
    exit, along the address order (both sides of each branch): the last program's tail, which every split
    launch waits on. With the split count and the rms row's reads unrolled it asks for the partial sums
    and the rms row in one trip after the atomic's (`tensor_core_gemv`'s SPLITS, 2026-12-07)."""
    instructions, _ = sass_instructions(_disassemble(cubin, "-hex"))
    first = next(i for i, instruction in enumerate(instructions) if instruction.opcode.startswith("ATOM"))
    return _Chain().run(instructions[first:])


@dataclass(frozen=True)
class LoopCost:
    """The PTX of a kernel's largest loop body (one step of a GEMV's walk along the row)."""

    instructions: int  # per thread and step
    shared_round_trips: int  # barriers: layout changes through shared memory
    opcodes: dict[str, int]


def weights_per_thread_step(layout: Any, block_n: int, ub: int, num_warps: int = 4) -> float:
    """Weights one GEMV thread decodes per loop step: the program's tile (block_n rows x ub units of
    `layout.unit` weights) over its threads."""
    return block_n * ub * layout.unit / (num_warps * 32)


_LABEL = re.compile(r"^(\$L__\w+):")
_BACK_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__\w+);")


def loop_cost(ptx: str) -> LoopCost:
    """Counts the instructions between the largest loop's header label and its backward branch. Inline
    assembly blocks count each of their statements."""
    lines = [line.strip() for line in ptx.splitlines()]
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    body: list[str] = []
    for i, line in enumerate(lines):
        m = _BACK_BRANCH.search(line)
        if m and m.group(1) in labels and labels[m.group(1)] < i and i - labels[m.group(1)] > len(body):
            body = lines[labels[m.group(1)] : i + 1]
    statements = []
    for line in body:
        if line.startswith("//") or _LABEL.match(line):
            continue
        for part in line.split(";"):
            part = part.strip().strip("{}").strip()
            if part and not part.startswith(("//", ".")):  # directives (.reg, .loc, ...) are not executed
                statements.append(part)
    opcodes = Counter(s.split()[1] if s.startswith("@") else s.split()[0] for s in statements)
    by_name: Counter[str] = Counter()
    for op, n in opcodes.items():
        by_name[op.split(".")[0]] += n
    return LoopCost(len(statements), by_name["bar"], dict(by_name.most_common()))
