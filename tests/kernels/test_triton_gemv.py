"""The Triton dequant-GEMV fast path against the reference path (CUDA only)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from kernels import backend
from kernels.formats import FORMATS, GGMLType
from kernels.qmatmul import reference_qmatmul
from kernels.qtensor import QTensor

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
]

TYPES = [
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q8_0,
    GGMLType.MXFP4,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
]
K_QUANTS = {GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K}
# (out, in): edge tiles, one block per row, odd block counts, the models' own widths.
SHAPES = [(1, 256), (13, 512), (100, 768), (128, 896), (257, 2816), (896, 4864), (2880, 2880), (3072, 3072)]
REL_TOL = 1e-5  # float32 activations: the reference path's own bound
HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}  # one rounding of the output to 16 bits


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.double().cpu(), expected.double().cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def make_weight(qtype: GGMLType, shape: tuple[int, int], rng, blocks) -> QTensor:
    raw = blocks(qtype, shape[0] * shape[1] // FORMATS[qtype].block_size, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), qtype, shape, f"w.{qtype.name}", "cuda")


def shapes_for(qtype: GGMLType) -> list[tuple[int, int]]:
    return [
        s
        for s in SHAPES
        if s[1] % FORMATS[qtype].block_size == 0 and (qtype not in K_QUANTS or s[1] % 256 == 0)
    ]


CASES = [pytest.param(t, s, id=f"{t.name}-{s[0]}x{s[1]}") for t in TYPES for s in shapes_for(t)]


@pytest.mark.parametrize(("qtype", "shape"), CASES)
def test_gemv_matches_reference(qtype, shape, rng, blocks, record_property) -> None:
    from kernels.triton_gemv import FAST_PATH

    w = make_weight(qtype, shape, rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, shape[1])).astype(np.float32)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, shape[0]).astype(np.float32)).cuda()
    assert FAST_PATH.supports(x, w)
    expected = reference_qmatmul(x, w, bias, torch.float32)
    got = FAST_PATH.qmatmul(x, w, bias, torch.float32)
    err = rel_err(got, expected)
    record_property("max_rel_err_vs_reference", err)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert err < REL_TOL


@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_embedding_rows_by_id_match_reference(qtype, rng, blocks) -> None:
    """`qembedding` on CUDA (the table read as one-row experts, one launch): the reference path's rows bit
    for bit for the exactly decoded formats, within one float32 rounding for the others; any number of
    ids (a prompt's), unchecked ids inside a graph, out-of-range ids refused when checked."""
    from kernels.qmatmul import qembedding
    from kernels.triton_gemv import FAST_PATH
    from tests.kernels.conftest import EXACT_TYPES

    width = 512 if qtype not in K_QUANTS else 768
    w = make_weight(qtype, (300, width), rng, blocks)
    ids = torch.tensor([[5, 0, 299], [5, 17, 128]], device="cuda")
    assert FAST_PATH.supports(ids, w)
    got = qembedding(ids, w, paths=(FAST_PATH,))
    want = w.dequantize(rows=ids.reshape(-1)).reshape(2, 3, width)
    assert got.shape == want.shape and got.dtype == torch.float32
    many = torch.arange(299, -1, -1, device="cuda")
    got_many = qembedding(many, w, checked=False, paths=(FAST_PATH,))
    want_many = w.dequantize(rows=many)
    if qtype in EXACT_TYPES:
        assert torch.equal(got, want) and torch.equal(got_many, want_many)
    else:
        assert rel_err(got, want) < 1e-6 and rel_err(got_many, want_many) < 1e-6
    with pytest.raises(IndexError):
        qembedding(torch.tensor([300], device="cuda"), w, paths=(FAST_PATH,))


@pytest.mark.parametrize("rows", [2, 3, 5, 8])
@pytest.mark.parametrize(
    "qtype", [GGMLType.Q4_K, GGMLType.Q8_0, GGMLType.MXFP4, GGMLType.Q6_K], ids=lambda t: t.name
)
def test_small_batches_match_reference(qtype, rows, rng, blocks) -> None:
    from kernels.triton_gemv import FAST_PATH

    w = make_weight(qtype, (300, 1024), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (rows, 1024)).astype(np.float32)).cuda()
    assert FAST_PATH.supports(x, w)
    got = FAST_PATH.qmatmul(x, w, None, torch.float32)
    assert got.shape == (rows, 300)
    assert rel_err(got, reference_qmatmul(x, w, None, torch.float32)) < REL_TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "qtype", [GGMLType.Q4_0, GGMLType.Q5_K, GGMLType.Q8_0, GGMLType.MXFP4], ids=lambda t: t.name
)
def test_half_activations(qtype, dtype, rng, blocks) -> None:
    from kernels.triton_gemv import FAST_PATH

    w = make_weight(qtype, (512, 2048), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 1, 2048)).astype(np.float32)).cuda().to(dtype)
    got = FAST_PATH.qmatmul(x, w, None, dtype)
    expected = reference_qmatmul(x, w, None, dtype)
    assert got.dtype == dtype and got.shape == (1, 1, 512)
    assert rel_err(got, expected) < HALF_TOL[dtype]


@pytest.mark.parametrize("split", [1, 2, 3, 7])
def test_split_k_tiles_and_pipelining_agree(split, rng, blocks) -> None:
    from kernels.triton_gemv import GemvConfig, launch

    w = make_weight(GGMLType.Q5_0, (77, 2880), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (2, 2880)).astype(np.float32)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, 77).astype(np.float32)).cuda()
    expected = reference_qmatmul(x, w, bias, torch.float32)
    for block_n, ub, warps, stages in [(16, 4, 4, 1), (32, 2, 4, 3), (64, 8, 8, 2), (8, 32, 4, 1)]:
        got = launch(x, w, bias, 2, config=GemvConfig(block_n, ub, warps, split, stages))
        assert rel_err(got, expected) < REL_TOL, (block_n, ub, warps, split, stages)


@pytest.mark.parametrize(
    ("qtype", "block_n", "ub", "warps"),
    [
        (GGMLType.Q4_K, 32, 1, 4),
        (GGMLType.Q5_K, 32, 1, 4),
        (GGMLType.Q6_K, 16, 1, 4),
        (GGMLType.Q5_0, 16, 8, 4),
        (GGMLType.Q5_0, 8, 32, 4),
        (GGMLType.Q8_0, 16, 8, 8),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
@pytest.mark.parametrize("split", [1, 2, 3])
def test_the_loop_that_loads_ahead_gives_the_plain_loops_bits(
    qtype, block_n, ub, warps, split, rng, blocks
) -> None:
    """`GemvConfig.ahead` and `GemvConfig.with_words` change when a step's words and activations are
    loaded, not what is summed or in which order: the same bits as the plain loop, for the product of two
    rows with a bias (uneven splits, a short last step) and for the dequantizer."""
    from kernels.triton_gemv import GemvConfig, dequantize_into, launch

    w = make_weight(qtype, (77, 2816), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (2, 2816)).astype(np.float32)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, 77).astype(np.float32)).cuda()
    plain = GemvConfig(block_n, ub, warps, split)
    loading = (
        GemvConfig(block_n, ub, warps, split, ahead=True),
        GemvConfig(block_n, ub, warps, split, with_words=True),
    )
    want = launch(x, w, bias, 2, config=plain)
    for config in loading:
        assert torch.equal(launch(x, w, bias, 2, config=config), want), config
    assert rel_err(want, reference_qmatmul(x, w, bias, torch.float32)) < REL_TOL
    tiles = [torch.empty(77, 2816, dtype=torch.float16, device="cuda") for _ in range(3)]
    for tile, config in zip(tiles, (plain, *loading), strict=True):
        dequantize_into(w, tile, config=config)
    assert torch.equal(tiles[0], tiles[1]) and torch.equal(tiles[0], tiles[2])


@pytest.mark.parametrize("shape", [(77, 2816), (5120, 2880), (2880, 4096)], ids=str)
@pytest.mark.parametrize("split", [1, 2, 3])
def test_the_regrouped_q8_0_loop_that_loads_ahead_gives_the_plain_loops_bits(
    shape, split, rng, blocks
) -> None:
    """Regrouped Q8_0 in the 16-row x 8-block tile loads ahead by default (`default_config`): the same bits
    as its plain loop (GPT-OSS's q/k/v and attn_output shapes, and a short last step)."""
    from kernels.triton_gemv import Q8_0_CODES_THEN_SCALES_LAYOUT, GemvConfig, default_config, launch

    filed = make_weight(GGMLType.Q8_0, shape, rng, blocks)
    regrouped = QTensor(filed.data.clone(), filed.qtype, filed.shape, filed.name).codes_then_scales_in_place()
    x = torch.from_numpy(rng.normal(0.0, 1.0, (2, shape[1])).astype(np.float32)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, shape[0]).astype(np.float32)).cuda()
    want = launch(x, regrouped, bias, 2, config=GemvConfig(16, 8, 4, split))
    got = launch(x, regrouped, bias, 2, config=GemvConfig(16, 8, 4, split, ahead=True))
    assert torch.equal(got, want)
    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    assert default_config(GGMLType.Q8_0, *shape, 1, sm_count, layout=Q8_0_CODES_THEN_SCALES_LAYOUT).ahead


@pytest.mark.parametrize(
    ("qtype", "shape"),
    [
        (GGMLType.Q8_0, (77, 2816)),
        (GGMLType.Q8_0, (5120, 2880)),  # GPT-OSS's q/k/v
        (GGMLType.Q8_0, (2880, 4096)),  # its attn_output
        (GGMLType.Q6_K, (77, 2816)),
        (GGMLType.Q6_K, (3072, 8192)),  # Phi-3's ffn_down
        (GGMLType.Q6_K, (896, 4864)),  # Qwen2.5's
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
@pytest.mark.parametrize("split", [1, 2, 3])
def test_regrouped_layouts_give_the_file_orders_products(qtype, shape, split, rng, blocks) -> None:
    """Q8_0 and Q6_K CODES_THEN_SCALES (codes in 16-byte loads, scales apart): the product of two rows with
    a bias in each tile and loop form, and q/k/v in one launch, the file order's within float32 rounding
    (the same halfwords, summed in another order: the compiled kernel reduces the 16-byte vectors in
    another tree; the interpreter, tests/kernels/interpreted_gemv, gives the same bits); the dequantizer
    the file order's bits."""
    from kernels.triton_gemv import GemvConfig, default_config, dequantize_into, launch, launch_segments

    filed = make_weight(qtype, shape, rng, blocks)
    regrouped = QTensor(filed.data.clone(), filed.qtype, filed.shape, filed.name).codes_then_scales_in_place()
    x = torch.from_numpy(rng.normal(0.0, 1.0, (2, shape[1])).astype(np.float32)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, shape[0]).astype(np.float32)).cuda()
    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    ub = 8 if qtype == GGMLType.Q8_0 else 1
    configs = [
        None,
        GemvConfig(32, 2 if qtype == GGMLType.Q8_0 else 1, 4, split),
        GemvConfig(16, ub, 4, split),
        GemvConfig(16, ub, 4, split, ahead=True),
        GemvConfig(16, ub, 4, split, with_words=True),
        default_config(qtype, shape[0], shape[1], 2, sm_count),
    ]
    for config in configs:
        got, want = launch(x, regrouped, bias, 2, config=config), launch(x, filed, bias, 2, config=config)
        assert rel_err(got, want) < REL_TOL, config
    # q/k/v in one launch: k and v the first rows of the matrix, regrouped as matrices of their own.
    k_rows = shape[0] // 2
    k = QTensor(filed.data[: k_rows * filed.row_bytes].clone(), filed.qtype, (k_rows, shape[1]), "k")
    k_regrouped = QTensor(k.data.clone(), k.qtype, k.shape, "k").codes_then_scales_in_place()
    want = launch_segments(x, (filed, k, k), (None, None, None), 2)
    assert (
        rel_err(launch_segments(x, (regrouped, k_regrouped, k_regrouped), (None, None, None), 2), want)
        < REL_TOL
    )
    tiles = [torch.empty(*shape, dtype=torch.float16, device="cuda") for _ in range(2)]
    dequantize_into(filed, tiles[0])
    dequantize_into(regrouped, tiles[1])
    assert torch.equal(tiles[0], tiles[1])


def test_a_format_without_the_loop_that_loads_ahead_is_refused(rng, blocks) -> None:
    from kernels.triton_gemv import GemvConfig, launch

    w = make_weight(GGMLType.Q4_1, (32, 256), rng, blocks)
    x = torch.zeros(1, 256, device="cuda")
    with pytest.raises(ValueError, match="does not load ahead"):
        launch(x, w, None, 1, config=GemvConfig(16, 8, 4, 1, ahead=True))


@pytest.mark.parametrize("split", [2, 3, 7])
def test_split_k_sums_in_the_kernel_equal_the_sum_after_it(split, rng, blocks, monkeypatch) -> None:
    # The last program of a tile sums the partials in the launch; without counters (SIZE 0) PyTorch
    # sums them after it. Same partials, both sums in split order: equal results, and every counter
    # is back at zero for the next launch (else the next launch's tiles would never complete).
    from kernels.triton_gemv import GemvConfig, SplitCounters, launch

    w = make_weight(GGMLType.Q4_K, (300, 2816), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (3, 2816)).astype(np.float32)).cuda()
    config = GemvConfig(16, 1, 4, split)
    in_kernel = [launch(x, w, None, 3, config=config) for _ in range(3)]
    counters = SplitCounters.get(x.device, 1)
    assert counters is not None and int(counters.abs().sum()) == 0
    monkeypatch.setattr(SplitCounters, "SIZE", 0)
    after = launch(x, w, None, 3, config=config)
    assert all(torch.equal(got, in_kernel[0]) for got in in_kernel)  # the same order every launch
    assert all(rel_err(got, after) < 1e-6 for got in in_kernel)  # PyTorch may group its sum otherwise
    assert rel_err(in_kernel[0], reference_qmatmul(x, w, None, torch.float32)) < REL_TOL


def test_gemv_is_deterministic(rng, blocks) -> None:
    from kernels.triton_gemv import FAST_PATH

    w = make_weight(GGMLType.Q4_K, (4096, 3072), rng, blocks)
    x = torch.randn(1, 3072, device="cuda")
    first = FAST_PATH.qmatmul(x, w, None, torch.float32)
    assert all(torch.equal(first, FAST_PATH.qmatmul(x, w, None, torch.float32)) for _ in range(3))


def test_qmatmul_selects_the_fast_path_for_decode_only(rng, blocks, monkeypatch) -> None:
    from kernels import triton_gemv

    w = make_weight(GGMLType.MXFP4, (64, 128), rng, blocks)
    fast = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda")
    assert fast.paths[0] == triton_gemv.FAST_PATH  # before the prefill path, which takes more rows
    assert backend.kernel_set(backend.KernelConfig(kernels="reference"), "cuda").paths == ()
    supports = triton_gemv.FAST_PATH.supports
    decode, prefill = torch.randn(1, 128, device="cuda"), torch.randn(9, 128, device="cuda")
    assert supports(decode, w) and supports(decode.expand(8, 128), w) and not supports(prefill, w)
    got = fast.qmatmul(decode.half(), w)
    assert rel_err(got, reference_qmatmul(decode.half(), w, None, torch.float32)) < 1e-3
    f32 = QTensor.from_float(torch.randn(64, 128, device="cuda"))
    # A float32 weight (GPT-OSS's router): one GEMV launch with its bias, not cuBLAS's two and an add;
    # its prefill stays on cuBLAS with the weight in place (no float16 rounding of it).
    assert supports(decode, f32) and not triton_gemv.FAST_PATH.supports(prefill, f32)
    from kernels import triton_prefill

    assert not triton_prefill.FAST_PATH.supports(prefill, f32)


def test_unaligned_views_fall_back_to_the_reference_path(rng, blocks) -> None:
    from kernels.triton_gemv import FAST_PATH

    raw = blocks(GGMLType.Q4_K, 8, rng, realistic=True).tobytes()
    base = torch.frombuffer(bytearray(b"\0" + raw), dtype=torch.uint8).cuda()
    w = QTensor(base[1:], GGMLType.Q4_K, (8, 256), "w")  # data starts one byte past an alignment
    assert not FAST_PATH.supports(torch.randn(1, 256, device="cuda"), w)


# q/k/v and gate/up of the models: one type per launch, the rows of 1-3 weights side by side.
GROUPS = [
    pytest.param((GGMLType.Q5_0,) * 3, (896, 128, 128), 896, True, id="qwen-qkv-Q5_0"),
    pytest.param((GGMLType.Q5_0, GGMLType.Q5_0, GGMLType.Q8_0), (896, 128, 128), 896, True, id="qkv-mixed"),
    pytest.param((GGMLType.Q5_0,) * 2, (4864, 4864), 896, False, id="qwen-gate-up"),
    pytest.param((GGMLType.Q8_0,) * 3, (4096, 512, 512), 2880, True, id="gpt-oss-qkv-Q8_0"),
    pytest.param((GGMLType.Q4_K,) * 2, (300, 77), 2816, False, id="Q4_K-edge-tiles-split"),
    pytest.param((GGMLType.MXFP4,) * 4, (64, 64, 64, 64), 256, True, id="four-weights"),
]


@pytest.mark.parametrize(("qtypes", "rows", "width", "with_bias"), GROUPS)
@pytest.mark.parametrize("n_rows", [1, 3])
def test_one_launch_for_several_weights_matches_reference(
    qtypes, rows, width, with_bias, n_rows, rng, blocks
):
    from kernels.triton_gemv import FAST_PATH

    weights = tuple(make_weight(t, (r, width), rng, blocks) for t, r in zip(qtypes, rows, strict=True))
    biases = tuple(
        torch.from_numpy(rng.normal(0.0, 0.1, r).astype(np.float32)).cuda() if with_bias else None
        for r in rows
    )
    x = torch.from_numpy(rng.normal(0.0, 1.0, (n_rows, width)).astype(np.float32)).cuda()
    got = FAST_PATH.qmatmuls(x, weights, biases)
    assert got is not None and len(got) == len(weights)
    for y, w, b in zip(got, weights, biases, strict=True):
        assert y.shape == (n_rows, w.shape[0]) and y.dtype == torch.float32
        assert rel_err(y, reference_qmatmul(x, w, b, torch.float32)) < REL_TOL, w.name


@pytest.mark.parametrize("split", [1, 3])
def test_segments_tiles_and_splits_match_one_launch_each(split, rng, blocks) -> None:
    # Segment boundaries inside the grid (rows not multiples of the tile), split-K partials and
    # in-kernel sums over the concatenated rows: the same values as one launch per weight.
    from kernels.triton_gemv import GemvConfig, launch, launch_segments

    weights = tuple(make_weight(GGMLType.Q6_K, (r, 2048), rng, blocks) for r in (40, 9, 23))
    biases = tuple(torch.randn(w.shape[0], device="cuda") for w in weights)
    x = torch.randn(2, 2048, device="cuda")
    config = GemvConfig(16, 1, 4, split)
    y = launch_segments(x, weights, biases, 2, config=config)
    assert y.shape == (2, 72)
    singles = torch.cat([launch(x, w, b, 2, config=config) for w, b in zip(weights, biases, strict=True)], 1)
    assert rel_err(y, singles) < 1e-6


def test_segments_of_expert_tensors_match_reference(rng, blocks) -> None:
    # gpt-oss's gate and up experts in one launch: each (token, expert) pair reads its expert of each.
    from kernels.qmatmul import qmatmul_experts
    from kernels.triton_gemv import launch_segments

    shape = (8, 64, 512)
    raw = [blocks(GGMLType.MXFP4, 8 * 64 * 512 // 32, rng, realistic=True).tobytes() for _ in range(2)]
    gate, up = (
        QTensor.from_bytes(r, GGMLType.MXFP4, shape, n, "cuda") for r, n in zip(raw, ("g", "u"), strict=True)
    )
    gb, ub = torch.randn(8, 64, device="cuda"), torch.randn(8, 64, device="cuda")
    x = torch.randn(1, 512, device="cuda")
    ids = torch.tensor([[5, 0, 7, 2]], device="cuda")
    y = launch_segments(x, (gate, up), (gb, ub), 4, expert_ids=ids.reshape(-1), x_group=4)
    assert rel_err(y[:, :64], qmatmul_experts(x, gate, ids, gb)[0]) < REL_TOL
    assert rel_err(y[:, 64:], qmatmul_experts(x, up, ids, ub)[0]) < REL_TOL


@pytest.mark.parametrize(
    "qtype", [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.MXFP4, GGMLType.F32], ids=lambda t: t.name
)
def test_norms_inside_the_gemv_match_the_formed_norm(qtype, rng, blocks) -> None:
    """The decode step's norms without a norm kernel (`kernels.qmatmul.RMSNormed`): the residual sum (with
    and without a bias: GPT-OSS's output projection has one) and its scaled copy from one launch; products
    of an `RMSNormed` input, dense and by expert (GPT-OSS's router and gate/up), against the norm formed
    first and the reference path."""
    from kernels import triton_moe
    from kernels.qmatmul import RMSNormed, qmatmul_experts
    from kernels.triton_gemv import gemv_add_normed, gemvs_normed

    width = 768
    w = make_weight(qtype, (640, width), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, width)).astype(np.float32)).cuda()
    residual = torch.randn(1, 640, device="cuda")
    bias = torch.randn(640, device="cuda") * 0.1
    norm_weight = torch.randn(640, device="cuda")
    for b in (None, bias):
        got = gemv_add_normed(x, w, residual, norm_weight, 1e-5, b)
        want = residual + reference_qmatmul(x, w, b, torch.float32)
        assert rel_err(got.x, want) < REL_TOL and rel_err(got.xw, want * norm_weight) < REL_TOL
    rows = torch.randn(1, width, device="cuda") * 3.0
    h = RMSNormed(rows, rows * torch.randn(width, device="cuda"), 1e-5)
    (y,) = gemvs_normed(h, (w,), (bias,))
    assert rel_err(y, reference_qmatmul(h.value(), w, bias, torch.float32)) < REL_TOL
    experts = make_weight(qtype, (4 * 64, width), rng, blocks)
    experts = QTensor(experts.data, qtype, (4, 64, width), "experts")
    ids = torch.tensor([[3, 0, 2]], device="cuda")
    expert_bias = torch.randn(4, 64, device="cuda")
    gate, up = triton_moe.gemvs_experts_normed(h, (experts, experts), ids, (expert_bias, expert_bias))
    want = qmatmul_experts(h.value(), experts, ids, expert_bias)
    assert rel_err(gate, want) < REL_TOL and rel_err(up, want) < REL_TOL
