"""The Triton GEMV and RoPE kernels compile for the H200 (sm_90) on a machine without a GPU.

Triton compiles down to a cubin without a device when it is given the target, so a kernel change can be
checked before any GPU time is spent: every format of `kernels/triton_gemv.py` in its three launch forms
(plain; three segments with expert ids, biases and the split-K reduction; dequantize-only), and the
RoPE + KV store (+ attention) kernels in both pairings, full and partial rotary. Runs wherever
Triton is importable (the GPU machines; on a CPU machine, e.g. `pip install --target /tmp/tt triton==3.6.0`
and `PYTHONPATH=/tmp/tt`); skipped elsewhere. Numbers are checked by the CUDA tests, not here."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SM90 = ("cuda", 90, 32)
INTS = (
    "n_rows", "n_units", "units_per_split", "row_stride", "x_stride", "x_group", "n_out_rows", "o_stride",
    "seg_w1", "seg_w2", "seg_b1", "seg_b2", "rows1", "rows2", "tile1", "tile2", "y_width",
)  # fmt: skip
FORMS = {
    "plain": dict(HAS_BIAS=False, HAS_IDS=False, SEGMENTS=1, REDUCE=False, DEQ=False),
    "segments-ids-bias-reduce": dict(HAS_BIAS=True, HAS_IDS=True, SEGMENTS=3, REDUCE=True, DEQ=False),
    "dequantize": dict(HAS_BIAS=False, HAS_IDS=False, SEGMENTS=1, REDUCE=False, DEQ=True),
}


def _layouts():
    if importlib.util.find_spec("triton") is None:
        return []
    from kernels.formats import GGMLType
    from kernels.triton_gemv import CODES_THEN_SCALES_LAYOUT, LAYOUTS

    return [pytest.param(q, lay, id=lay.fmt) for q, lay in LAYOUTS.items()] + [
        pytest.param(GGMLType.MXFP4, CODES_THEN_SCALES_LAYOUT, id=CODES_THEN_SCALES_LAYOUT.fmt)
    ]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("qtype", "layout"), _layouts())
def test_the_gemv_kernel_compiles_for_sm90(qtype, layout, form) -> None:
    from kernels import triton_gemv

    signature = {
        "w_ptr": "*u8",
        "x_ptr": "*fp32",
        "y_ptr": "*fp32",
        "bias_ptr": "*fp32",
        "ids_ptr": "*i64",
        "o_ptr": "*fp16",
        **dict.fromkeys(INTS, "i32"),
    }
    constants = dict(
        FMT=layout.fmt,
        WORD=layout.word,
        BLOCK_N=16,
        UB=1 if layout.unit == 256 else 8,
        STAGES=1,
        **FORMS[form],
    )
    if constants["REDUCE"]:
        signature.update(part_ptr="*fp32", count_ptr="*i32")
    else:
        constants.update(part_ptr=None, count_ptr=None)
    compiled = _compile(triton_gemv._qgemv_kernel, signature, constants)
    assert compiled.asm["cubin"], f"{qtype.name} {form}: no cubin"


def _compile(fn, signature: dict, constants: dict):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {**signature, **dict.fromkeys(constants, "constexpr")}
    return triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=constants), target=GPUTarget(*SM90)
    )


@pytest.mark.parametrize("neox", [False, True], ids=["adjacent-pairs", "neox-pairs"])
@pytest.mark.parametrize(("d", "rope_half"), [(64, 32), (96, 16)], ids=["full-rotary", "partial-rotary"])
def test_the_rope_kernels_compile_for_sm90(neox: bool, d: int, rope_half: int) -> None:
    """RoPE + KV store, and RoPE + KV store + attention (with sinks over the whole cache, and without)."""
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
    for sinks in (False, True):
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
            },
            dict(
                GROUP=4, BLOCK_G=4, D=d, BLOCK_D=block_d, BLOCK_S=32, ROPE_HALF=rope_half, NEOX=neox,
                HAS_SINKS=sinks, WHOLE_CACHE=sinks, CAPACITY=128 if sinks else 0,
            ),
        )  # fmt: skip
        assert attention.asm["cubin"]
