"""Which launches `benchmarks.kernels_gemv --sweep-split` times (the timing itself needs a CUDA device)."""

from __future__ import annotations

import pytest


def test_the_split_sweep_moves_only_the_grid() -> None:
    """Phi-3-mini's Q4_K gate/up: the default launch at every split of SWEPT_SPLITS with 16 and 32 rows a
    program, its register cap and loop form kept, the default itself not repeated."""
    pytest.importorskip("triton")
    from benchmarks.kernels_gemv import SHAPES, SWEPT_SPLITS, split_sweep_configs
    from kernels.triton_gemv import LAYOUTS, default_config

    shape = next(s for s in SHAPES if s.model == "phi-3-mini" and s.tensor == "ffn_up (gate+up)")
    default = default_config(shape.qtype, shape.out_features, shape.in_features, 1, 132)
    configs = split_sweep_configs(default, LAYOUTS[shape.qtype], shape.in_features)
    assert default not in configs
    assert {(c.block_n, c.split) for c in configs} == {
        (n, s) for n in (16, 32) for s in SWEPT_SPLITS if s <= 12
    } - {(default.block_n, default.split)}  # 12 super-blocks a row: a split of 16 has empty programs
    assert {(c.max_registers, c.ahead, c.num_warps, c.units_per_step) for c in configs} == {
        (default.max_registers, default.ahead, default.num_warps, default.units_per_step)
    }


def test_the_split_sweep_keeps_the_rows_of_a_block_format() -> None:
    """MXFP4's experts (8 rows a program, 32 blocks a step): only the split moves, up to a step a program."""
    pytest.importorskip("triton")
    from benchmarks.kernels_gemv import SHAPES, split_sweep_configs
    from kernels.triton_gemv import REGROUPED_LAYOUTS, default_config

    shape = next(s for s in SHAPES if s.qtype.name == "MXFP4" and s.regrouped)
    layout = REGROUPED_LAYOUTS[shape.qtype]
    default = default_config(
        shape.qtype, shape.out_features, shape.in_features, shape.selected, 132, layout=layout
    )
    configs = split_sweep_configs(default, layout, shape.in_features)
    assert {c.block_n for c in configs} == {default.block_n}
    # 2,880 inputs: 90 blocks, 32 a step, so 3 steps and splits of at most 3.
    assert sorted(c.split for c in configs) == [s for s in (1, 2, 3) if s != default.split]


def test_the_table_has_a_cell_for_every_column() -> None:
    """`kernels_gemv.md`: the header, its rule and a row with every optional column filled have as many
    cells, the fixed cost beyond streaming among them."""
    pytest.importorskip("triton")
    from benchmarks.kernels_gemv import Result, to_markdown

    row = Result(
        "phi-3-mini", "attn_output", "Q4_K", "3072x3072", 5_308_416, 7.0, 758.6, 25.3, "tensor cores"
    )
    row.beyond_stream_us = 5.23
    row.register_caps, row.walks, row.units_ahead, row.warp_splits = (
        ["r80 6.67 us 796"],
        ["u4 8.35 us 636"],
        ["a2 7.16 us 741"],
        ["w4 5.01 us 1059"],
    )
    meta = {
        "device": "d",
        "torch": "t",
        "triton": "x",
        "date": "now",
        "copy_gb_per_s": 2999.0,
        "peak_gb_per_s": 2999.0,
    }
    table = [line for line in to_markdown([row], meta).splitlines() if line.startswith("|")]
    assert len(table) == 3
    assert len({line.count("|") for line in table}) == 1
    header = [cell.strip() for cell in table[0].split("|")]
    cells = [cell.strip() for cell in table[2].split("|")]
    assert cells[header.index("beyond streaming µs")] == "5.23"
    assert cells[header.index("units ahead (µs, GB/s)")] == "a2 7.16 us 741"
    assert cells[header.index("warp splits (µs, GB/s)")] == "w4 5.01 us 1059"
