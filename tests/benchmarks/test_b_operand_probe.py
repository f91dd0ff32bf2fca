"""`benchmarks.b_operand_probe`'s kernel compiled for sm_90 without a GPU (Triton only): the two forms
differ in the prologue alone. `B formed` meets its warps at barriers before the first mma (the product's
prologue); `B loaded` reaches its first mma with no barrier and no shared memory, and both run the same
number of int8 mmas and the same split-K tail, which the form without one lacks. The TMA form asks for its
whole share of the matrix before its first mma."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

SIGNATURE = {
    "w_ptr": "*i32",
    "x_ptr": "*fp32",
    "b_ptr": "*i32",
    "m_ptr": "*fp16",
    "s_ptr": "*fp32",
    "y_ptr": "*fp32",
    "part_ptr": "*fp32",
    "count_ptr": "*i32",
    "n_rows": "i32",
    "n_sb": "i32",
    "seg_w1": "i32",
    "y_width": "i32",
}


def _signature(glu: bool) -> dict[str, str]:
    """The probe's arguments, with the TMA descriptors (a super-block's copies; GLU: the up ones too)."""
    from kernels.tensor_core_gemv import CODES_SMEM, HEADS_SMEM

    codes = f"tensordesc<i32[1, 64, 32],{CODES_SMEM!r}>"
    heads = f"tensordesc<i32[1, 64, 4],{HEADS_SMEM!r}>"
    descs = {"codes_desc": codes, "heads_desc": heads}
    if glu:
        descs.update(codes_up_desc=codes, heads_up_desc=heads)
    return {**SIGNATURE, **descs}


def _listing(loaded: int, glu: bool, counted: int = 1) -> list[str]:
    from benchmarks import b_operand_probe
    from kernels.triton_offline import compile_for_sm90, sass_listing

    kernel = compile_for_sm90(
        b_operand_probe._probe_kernel,
        _signature(glu),
        dict(PER=4, SPLITS=3, GLU=glu, LOADED=loaded, COUNTED=counted)
        | ({} if glu else dict(codes_up_desc=None, heads_up_desc=None)),
        ("w_ptr", "x_ptr", "b_ptr", "m_ptr", "s_ptr", "y_ptr", "part_ptr"),
    )
    return sass_listing(kernel.asm["cubin"])


def _before_first_mma(listing: list[str], opcode: str) -> int:
    first = listing.index("IMMA")
    return listing[:first].count(opcode)


@pytest.mark.parametrize("glu", [False, True])
def test_only_the_formed_prologue_meets_at_barriers_before_the_first_mma(glu: bool) -> None:
    formed, loaded = _listing(0, glu), _listing(1, glu)
    assert _before_first_mma(formed, "BAR") >= 2 and _before_first_mma(formed, "STS") > 0
    assert _before_first_mma(loaded, "BAR") == 0 and _before_first_mma(loaded, "STS") == 0
    assert formed.count("IMMA") == loaded.count("IMMA") == (64 if glu else 32)
    assert formed.count("ATOMG") == loaded.count("ATOMG") == 2  # the same split-K tail: arrival, reset


def test_the_form_without_a_split_tail_has_no_arrival_counter() -> None:
    """COUNTED 0: each split stores its partial sums and ends; the walk is the loaded one's."""
    listing, counted = _listing(1, False, counted=0), _listing(1, False)
    assert listing.count("ATOMG") == 0 and listing.count("BAR") == 0
    assert listing.count("IMMA") == counted.count("IMMA") == 32


@pytest.mark.parametrize("glu", [False, True])
def test_the_tma_form_asks_for_its_whole_share_before_the_first_mma(glu: bool) -> None:
    """LOADED 2: two TMA copies a super-block and matrix (code words, head words), all of the walk's 4
    before the first mma, and every unit's words then read from shared memory, each once its own copies'
    barrier has completed; the same mmas as the other forms."""
    listing = _listing(2, glu)
    assert _before_first_mma(listing, "UTMALDG") == listing.count("UTMALDG") == 4 * 2 * (2 if glu else 1)
    assert listing.count("SYNCS") >= 4 + 4  # each barrier's setup, and a wait on each
    assert listing.count("LDS") >= 4 * (2 if glu else 1) * 5  # a unit: 4 chunks and its head, at least
    assert listing.count("IMMA") == (64 if glu else 32)
