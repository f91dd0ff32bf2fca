"""The tensor-core GEMV's launch rules (`kernels.tensor_core_gemv`), which need Triton to import but no GPU:
the warp split a launch takes and the units each warp then walks."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SMS = 132  # an H100's or H200's streaming multiprocessors


def test_a_warp_split_is_taken_only_where_it_divides_the_row_s_units() -> None:
    from kernels.tensor_core_gemv import rows_per_tile, warp_split_for

    assert [warp_split_for(12, ws) for ws in (1, 2, 4)] == [1, 2, 4]  # Phi-3's 3,072: 12 super-blocks
    assert [warp_split_for(90, ws) for ws in (1, 2, 4)] == [1, 2, 1]  # GPT-OSS's 2,880: 90 blocks
    assert [rows_per_tile(ws) for ws in (1, 2, 4)] == [64, 32, 16]
    with pytest.raises(ValueError, match="warp split"):
        warp_split_for(12, 3)


def test_a_launch_s_row_tiles_follow_the_warp_split_it_takes() -> None:
    """The counters' count (`triton_gemv.launch_segments`) and the grid (`launch`) from one rule."""
    from kernels.tensor_core_gemv import row_tiles

    assert row_tiles("q4_k", [9216], 3072, 1) == [144]
    assert row_tiles("q4_k", [256, 64, 64], 3072, 4) == [16, 4, 4]
    assert row_tiles("q8_0_codes_then_scales", [200], 2880, 4) == [4]  # 90 blocks: no split of 4


@pytest.mark.parametrize(
    ("name", "n_units", "rows", "per", "split"),
    [
        ("q/k/v", 12, 9216, 3, 1),  # 576 tiles of 16 rows: no split of K across programs
        ("gate/up", 12, 8192, 3, 1),  # 512 tiles
        ("output", 12, 3072, 1, 3),  # 192 tiles: split 3 for two programs an SM
        ("down", 32, 3072, 4, 2),  # 8 super-blocks a warp would leave 192 programs
    ],
)
def test_units_a_warp_walks_in_phi_3_s_shapes(name, n_units, rows, per, split) -> None:
    """With a warp split of 4 (16-row tiles): the most units a warp walks (up to 8, dividing its run of the
    row) that still leave two programs an SM."""
    from kernels.tensor_core_gemv import units_per_warp

    tiles = rows // 16
    got = units_per_warp(n_units, tiles, SMS, 4)
    assert (got, n_units // (4 * got)) == (per, split), name
    assert tiles * split >= 2 * SMS


@pytest.mark.parametrize(
    ("name", "fmt", "n_units", "tiles", "before", "in_one_wave"),
    [
        ("GPT-OSS q/k/v", "q8_0_codes_then_scales", 90, 80, 10, 15),  # 9 splits -> 6, 480 programs
        ("GPT-OSS output projection", "q8_0_codes_then_scales", 128, 45, 8, 16),  # 16 splits -> 8
        ("GPT-OSS experts, 4 pairs", "mxfp4_codes_then_scales", 90, 4 * 45, 30, 30),  # none in one wave
        ("GPT-OSS output", "q8_0_codes_then_scales", 90, 3142, 30, 30),  # the tiles fill the SMs alone
        ("Phi-3 q/k/v", "q4_k", 12, 144, 4, 4),  # super-blocks keep their rule
    ],
)
def test_blocks_in_one_wave_walk_the_fewest_blocks_a_cluster_holds(
    name, fmt, n_units, tiles, before, in_one_wave
) -> None:
    """`GemvConfig.tc_blocks_in_one_wave`: a block format's program walks the fewest blocks whose splits (2-8)
    a thread-block cluster holds with the grid in one wave of four programs an SM; where none does, the rule
    before (the most that leave about four programs an SM)."""
    from kernels.cluster_launch import MAX_PORTABLE_SIZE
    from kernels.tensor_core_gemv import units_per_program

    assert units_per_program(fmt, n_units, tiles, SMS) == before, name
    got = units_per_program(fmt, n_units, tiles, SMS, blocks_in_one_wave=True)
    assert got == in_one_wave, name
    if got != before:
        assert 1 < n_units // got <= MAX_PORTABLE_SIZE and tiles * (n_units // got) <= 4 * SMS
