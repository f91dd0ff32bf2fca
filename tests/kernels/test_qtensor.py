"""QTensor: construction, row selection, expert views, devices."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from kernels.dequant import dequantize
from kernels.formats import GGMLType, QuantFormatError
from kernels.qtensor import CODES_THEN_SCALES, QTensor


@pytest.fixture
def q4k_matrix(rng, blocks, device) -> QTensor:
    raw = blocks(GGMLType.Q4_K, 6 * 2, rng)  # 6 rows of 512
    return QTensor.from_bytes(raw.tobytes(), GGMLType.Q4_K, (6, 512), "blk.0.ffn_down.weight", device)


def test_from_bytes(q4k_matrix, device) -> None:
    assert q4k_matrix.nbytes == 6 * 2 * 144
    assert q4k_matrix.device.type == device.type
    assert q4k_matrix.data.dtype == torch.uint8 and q4k_matrix.data.dim() == 1
    assert q4k_matrix.dequantize().shape == (6, 512)
    assert "Q4_K" in repr(q4k_matrix) and "blk.0.ffn_down.weight" in repr(q4k_matrix)


def test_from_bytes_takes_a_memoryview_of_a_larger_buffer(rng, blocks) -> None:
    raw = blocks(GGMLType.Q8_0, 4, rng).tobytes()
    mapped = memoryview(b"\x00" * 7 + raw + b"\x00" * 5)[7 : 7 + len(raw)]
    w = QTensor.from_bytes(mapped, GGMLType.Q8_0, (4, 32), "w")
    assert torch.equal(
        w.dequantize(), dequantize(torch.frombuffer(bytearray(raw), dtype=torch.uint8), 8, (4, 32))
    )


@pytest.mark.parametrize(
    "rows",
    [slice(None), slice(2, 5), slice(4, 100), slice(5, 2), slice(0, 6, 2), [5, 0, 0, 3], []],
    ids=["all", "2:5", "4:100", "empty-slice", "step-2", "gather", "empty-gather"],
)
def test_rows_match_full_dequantization(q4k_matrix, rows) -> None:
    full = q4k_matrix.dequantize()
    index = torch.tensor(rows, dtype=torch.long) if isinstance(rows, list) else rows
    got = q4k_matrix.dequantize(rows=index)
    assert torch.equal(got, full[index.to(full.device) if isinstance(index, torch.Tensor) else index])


def test_slice_rows_read_only_their_bytes(q4k_matrix) -> None:
    # Corrupting the other rows' bytes must not change the selected rows.
    expected = q4k_matrix.dequantize(rows=slice(1, 3))
    data = q4k_matrix.data.clone()
    data[: q4k_matrix.row_bytes] = 0xFF
    data[3 * q4k_matrix.row_bytes :] = 0xFF
    other = QTensor(data, q4k_matrix.qtype, q4k_matrix.shape, "w")
    assert torch.equal(other.dequantize(rows=slice(1, 3)), expected)


def test_row_index_out_of_range(q4k_matrix) -> None:
    with pytest.raises(IndexError, match=r"'blk\.0\.ffn_down\.weight'.*out of range \[0, 6\)"):
        q4k_matrix.dequantize(rows=torch.tensor([6]))


def test_expert_view(rng, blocks, device) -> None:
    raw = blocks(GGMLType.MXFP4, 3 * 4 * 2, rng)  # 3 experts of (4, 64)
    w = QTensor.from_bytes(raw.tobytes(), GGMLType.MXFP4, (3, 4, 64), "blk.0.ffn_up_exps.weight", device)
    full = w.dequantize()
    for i in range(3):
        e = w.expert(i)
        assert e.shape == (4, 64) and e.name == f"blk.0.ffn_up_exps.weight[{i}]"
        assert e.data.untyped_storage().data_ptr() == w.data.untyped_storage().data_ptr()  # a view
        assert torch.equal(e.dequantize(), full[i])
    assert torch.equal(w.dequantize(rows=torch.tensor([2, 0])), full[[2, 0]])
    with pytest.raises(IndexError, match="expert 3 out of range"):
        w.expert(3)


def test_expert_needs_3d(q4k_matrix) -> None:
    with pytest.raises(ValueError, match="3-D"):
        q4k_matrix.expert(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["F32", "F16", "BF16"])
def test_float_weights_are_qtensors(dtype, device) -> None:
    values = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)).to(dtype).to(device)
    w = QTensor.from_float(values, "output_norm.weight")
    assert (
        w.qtype
        == {torch.float32: GGMLType.F32, torch.float16: GGMLType.F16, torch.bfloat16: GGMLType.BF16}[dtype]
    )
    assert w.nbytes == values.numel() * values.element_size()
    assert torch.equal(w.dequantize(), values.float())
    assert torch.equal(w.dequantize(rows=torch.tensor([4, 1])), values.float()[[4, 1]])


def test_from_float_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError, match="float64 is not a ggml float type"):
        QTensor.from_float(torch.zeros(2, dtype=torch.float64), "w")


def test_to_device(q4k_matrix) -> None:
    moved = q4k_matrix.to("cpu")
    assert moved.device.type == "cpu" and moved.shape == q4k_matrix.shape and moved.name == q4k_matrix.name
    assert torch.equal(moved.dequantize(), q4k_matrix.dequantize().cpu())


def test_bad_layout_is_refused_at_construction() -> None:
    with pytest.raises(QuantFormatError, match=r"'w'.*truncated"):
        QTensor(torch.zeros(10, dtype=torch.uint8), GGMLType.Q4_0, (1, 32), "w")
    with pytest.raises(QuantFormatError, match=r"'w'.*unknown ggml type id 77"):
        QTensor.from_bytes(np.zeros(18, dtype=np.uint8), 77, (32,), "w")


@pytest.mark.parametrize(
    ("qtype", "at", "scale", "size"),
    [(GGMLType.MXFP4, 0, 1, 17), (GGMLType.Q8_0, 0, 2, 34), (GGMLType.Q6_K, 208, 2, 210)],
    ids=["mxfp4", "q8_0", "q6_k"],
)
@pytest.mark.parametrize("shape", [(3, 8, 512), (16, 768)], ids=["experts", "matrix"])
def test_codes_then_scales_keeps_the_bytes_and_the_values(
    qtype, at, scale, size, shape, rng, blocks, device
) -> None:
    """The regrouping a GEMV reads with 16-byte loads: same storage, same byte count, every
    dequantization (whole, row slices, gathered experts, one expert) equal to the file order's."""
    block_size = 256 if qtype == GGMLType.Q6_K else 32
    raw = blocks(qtype, int(np.prod(shape)) // block_size, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), qtype, shape, "ffn_up_exps.weight", device)
    want = w.dequantize()
    file_bytes = w.data.clone()
    ptr = w.data.data_ptr()
    s = w.codes_then_scales_in_place()
    assert s.layout == CODES_THEN_SCALES and s.data.data_ptr() == ptr and s.nbytes == file_bytes.numel()
    assert not torch.equal(s.data, file_bytes)  # regrouped in place
    per_matrix = s.data.view(s.n_matrices, -1)
    n_blocks, codes = per_matrix.shape[1] // size, size - scale
    # Each matrix: its blocks' codes (every byte but the scale's, in order), then their scales.
    file_blocks = file_bytes.view(s.n_matrices, n_blocks, size)
    want_codes = torch.cat([file_blocks[:, :, :at], file_blocks[:, :, at + scale :]], dim=2)
    want_codes = want_codes.reshape(s.n_matrices, -1)
    assert torch.equal(per_matrix[:, : codes * n_blocks], want_codes)
    want_scales = file_blocks[:, :, at : at + scale].reshape(s.n_matrices, -1)
    assert torch.equal(per_matrix[:, codes * n_blocks :], want_scales)
    assert torch.equal(s.in_file_order().data, file_bytes)
    assert torch.equal(s.dequantize(), want)
    assert torch.equal(s.dequantize(rows=slice(1, 3)), want[1:3])
    index = torch.tensor([2, 0, 2], device=device)
    assert torch.equal(s.dequantize(rows=index), want[index])
    # A row read of the regrouped matrix gathers that row's codes and scales, not the whole tensor (an
    # embedding lookup per decode step); the whole-tensor copy is only for a whole dequantization.
    with mock.patch.object(QTensor, "in_file_order", side_effect=AssertionError("whole-tensor copy")):
        assert torch.equal(s.dequantize(rows=slice(1, 3)), want[1:3])
        assert s.dequantize(rows=slice(5, 5)).shape == (0, *shape[1:])
        assert torch.equal(s.dequantize(rows=index, checked=False), want[index])
    if len(shape) == 3:
        assert s.expert(1).layout == CODES_THEN_SCALES
        assert torch.equal(s.expert(1).dequantize(), want[1])
    assert "codes-then-scales" in repr(s)


def test_codes_then_scales_is_for_mxfp4_q8_0_q6_k_in_file_order_only(rng, blocks) -> None:
    q4 = QTensor.from_bytes(blocks(GGMLType.Q4_0, 4, rng).tobytes(), GGMLType.Q4_0, (4, 32), "w")
    with pytest.raises(ValueError, match="only a MXFP4, Q8_0, Q6_K tensor in file order"):
        q4.codes_then_scales_in_place()
    with pytest.raises(ValueError, match="layout 'codes-then-scales' is not one for Q4_0"):
        QTensor(q4.data, q4.qtype, q4.shape, "w", CODES_THEN_SCALES)
    q8 = QTensor.from_bytes(blocks(GGMLType.Q8_0, 4, rng).tobytes(), GGMLType.Q8_0, (4, 32), "w")
    with pytest.raises(ValueError, match="in file order can be regrouped"):
        q8.codes_then_scales_in_place().codes_then_scales_in_place()
