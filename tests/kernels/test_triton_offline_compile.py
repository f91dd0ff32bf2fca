"""The Triton GEMV kernel compiles for the H200 (sm_90) on a machine without a GPU.

Triton compiles down to a cubin without a device when it is given the target, so a kernel change can be
checked before any GPU time is spent: every format of `kernels/triton_gemv.py` in its three launch forms
(plain; three segments with expert ids, biases and the split-K reduction; dequantize-only). Runs wherever
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
    from kernels.triton_gemv import LAYOUTS

    return list(LAYOUTS.items())


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("qtype", "layout"), _layouts(), ids=lambda v: getattr(v, "name", None))
def test_the_gemv_kernel_compiles_for_sm90(qtype, layout, form) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

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
    signature.update(dict.fromkeys(constants, "constexpr"))
    source = ASTSource(fn=triton_gemv._qgemv_kernel, signature=signature, constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget(*SM90))
    assert compiled.asm["cubin"], f"{qtype.name} {form}: no cubin"
