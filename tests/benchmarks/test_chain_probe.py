"""`benchmarks.chain_probe`'s kernels compiled for sm_90 without a GPU (Triton only): the grid barrier
really waits, and the form that asks for the next matrix's bytes first does so before it arrives."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("triton")

SIGNATURE = {
    **{f"m{i}": "*i32" for i in range(4)},
    **{f"w{i}": "i32" for i in range(4)},
    "sink_ptr": "*i32",
    "count_ptr": "*i32",
}


def _chain_ptx(next_first: bool, n: int = 2) -> str:
    from benchmarks import chain_probe
    from kernels.triton_offline import compile_for_sm90

    kernel = compile_for_sm90(
        chain_probe._chain_kernel, SIGNATURE, dict(N=n, BLOCK=1024, NEXT_FIRST=next_first)
    )
    return kernel.asm["ptx"]


def _spin_loops(ptx: str) -> list[str]:
    """The bodies of the PTX's self loops (a label, then a branch back to it)."""
    return [m.group(2) for m in re.finditer(r"^(\$L__BB\d+_\d+):(.*?)bra\s+\1;", ptx, re.M | re.S)]


def test_the_barrier_spins_on_an_acquiring_load_of_the_counter() -> None:
    """Each barrier is an arrival (one acq_rel atomic add) and a loop that reads the counter again: a loop
    whose read was folded away (Triton drops an atomic add of 0) would never end, and this finds it."""
    ptx = _chain_ptx(False, n=3)
    spins = [body for body in _spin_loops(ptx) if "ld.acquire.gpu" in body]
    assert len(spins) == 2  # one a barrier: three matrices, two barriers
    assert all("ld.global" not in body.replace("ld.acquire.gpu.global", "") for body in spins)
    assert ptx.count("atom.global.gpu.acq_rel.add") == 3  # two arrivals, one exit count
    assert not [body for body in _spin_loops(ptx) if "ld." not in body and "atom" not in body]


def test_next_bytes_first_loads_the_next_matrix_before_arriving() -> None:
    """NEXT_FIRST: the next matrix's first block is asked for between the previous matrix's loop and the
    barrier's arrival; without it nothing is loaded there."""
    for next_first, loads in ((True, True), (False, False)):
        ptx = _chain_ptx(next_first)
        arrival = ptx.index("atom.global.gpu.acq_rel.add")
        last_loop_end = max(m.end() for m in re.finditer(r"bra\s+\$L__BB\d+_\d+;", ptx[:arrival]))
        between = ptx[last_loop_end:arrival]
        assert ("ld.global" in between) == loads, next_first
