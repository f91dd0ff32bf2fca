"""`benchmarks.kernels_prefill` on a machine without a GPU: its table and its refusal to time nothing."""

from __future__ import annotations

import pytest
import torch

from benchmarks import kernels_prefill


def test_the_table_puts_both_paths_and_their_ratio_side_by_side() -> None:
    result = kernels_prefill.Result(
        "phi-3-mini", "ffn_down", "Q6_K", "3072x8192", 512, 2.0, 0.5, "m128/n128/k64/w8/p3", 51.5,
        best_ms=0.4, best_config="m64/n128/k64/w8/p3",
    )  # fmt: skip
    meta = {"device": "H200", "torch": "2.11", "triton": "3.6.0", "date": "2026-12-04", "rows": 512}
    table = kernels_prefill.to_markdown([result], meta)
    assert "512 rows a call" in table
    row = table.strip().splitlines()[-1]
    assert row.startswith("| phi-3-mini | ffn_down | Q6_K | 3072x8192 | 2.0 | 0.5 | 0.25 | 51.5 ")
    assert row.endswith("| m64/n128/k64/w8/p3 | 0.4 |")


def test_every_swept_launch_shape_steps_through_whole_blocks() -> None:
    """block_k a multiple of 32 dividing 256 (the GEMM's decoders step over 32-element sub-blocks inside
    a K-quant super-block)."""
    assert all(k % 32 == 0 and 256 % k == 0 for _, _, k, _, _ in kernels_prefill.SWEEP)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_without_a_gpu_it_says_so_and_exits_2(capsys) -> None:
    assert kernels_prefill.main(["--out", "unused"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
