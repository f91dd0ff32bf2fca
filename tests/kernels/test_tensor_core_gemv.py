"""The decode GEMV on the tensor cores (`kernels.tensor_core_gemv`: Q4_K in the file's order, Q6_K, Q8_0
and MXFP4 regrouped, MXFP4 experts by token-expert pair) against the reference path, in
every epilogue `triton_gemv.launch_segments` gives it, every row tile's walk length (PER) and split, and
replayed from a CUDA graph with dependent launch (CUDA only). Where the launch is not served (several
activation rows, expert ids), the CUDA-core loop takes it."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from kernels.formats import GGMLType
from kernels.qmatmul import RMSNormed, reference_qmatmul
from kernels.qtensor import QTensor

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
    pytest.mark.skipif(
        torch.cuda.is_available() and torch.cuda.get_device_capability()[0] < 8, reason="mma.sync needs sm_80"
    ),
]

REL_TOL = 1e-5  # float32 activations: the reference path's own bound, as for the CUDA-core loop
# (out, in): edge tiles (rows not a multiple of 64), one super-block a row, odd super-block counts, the
# models' widths.
SHAPES = [(1, 256), (13, 512), (100, 768), (257, 2816), (640, 3072), (3072, 3072), (96, 8192)]


# `GemvConfig.tc_warp_split`: none, and a row tile's units across 2 or 4 warps (where it divides the row's)
WARP_SPLITS = [1, 2, 4]


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.double().cpu(), expected.double().cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def q4_k(shape: tuple[int, int], rng, blocks, name: str = "w") -> QTensor:
    raw = blocks(GGMLType.Q4_K, shape[0] * shape[1] // 256, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), GGMLType.Q4_K, shape, name, "cuda")


def q6_k_regrouped(shape: tuple[int, int], rng, blocks, name: str = "w") -> QTensor:
    """A Q6_K matrix stored codes, then scales (`triton_gemv.pack`'s layout for the larger ones): rows a
    multiple of 8, so its bytes are a multiple of 16."""
    raw = blocks(GGMLType.Q6_K, shape[0] * shape[1] // 256, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), GGMLType.Q6_K, shape, name, "cuda").codes_then_scales_in_place()


def q8_0_regrouped(shape: tuple[int, int], rng, blocks, name: str = "w") -> QTensor:
    """A Q8_0 matrix stored codes, then scales (`triton_gemv.pack`'s layout for every Q8_0 matrix): rows x
    blocks a multiple of 8, so its bytes are a multiple of 16."""
    raw = blocks(GGMLType.Q8_0, shape[0] * shape[1] // 32, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), GGMLType.Q8_0, shape, name, "cuda").codes_then_scales_in_place()


def mxfp4_regrouped(shape: tuple[int, ...], rng, blocks, name: str = "w") -> QTensor:
    """An MXFP4 matrix, or expert tensor, stored codes, then scales (`triton_gemv.pack`'s layout for MXFP4
    experts): each matrix's rows x blocks a multiple of 16."""
    raw = blocks(GGMLType.MXFP4, int(np.prod(shape)) // 32, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), GGMLType.MXFP4, shape, name, "cuda").codes_then_scales_in_place()


MAKERS = {
    "Q4_K": q4_k,
    "Q6_K-regrouped": q6_k_regrouped,
    "Q8_0-regrouped": q8_0_regrouped,
    "MXFP4-regrouped": mxfp4_regrouped,
}
REGROUPED = ("Q6_K-regrouped", "Q8_0-regrouped", "MXFP4-regrouped")
# Q6_K regrouped: rows a multiple of 8 (whole 16-byte matrices), not of the 64-row tile.
Q6_K_SHAPES = [(8, 256), (16, 512), (104, 768), (264, 2816), (640, 3072), (3072, 3072), (96, 8192)]
# Q8_0 regrouped: one block a row, rows not a multiple of the tile, GPT-OSS's 2,880 (90 blocks: walks of
# 3, 9, 10, 30 blocks, not powers of two) and 4,096 widths.
Q8_0_SHAPES = [(8, 32), (24, 256), (104, 800), (200, 2880), (2880, 2880), (640, 4096)]
Q8_0_PER = [3, 8, 9, 10, 30]
# MXFP4 regrouped: rows x blocks a multiple of 16.
MXFP4_SHAPES = [(16, 32), (48, 256), (104, 640), (200, 2880), (2880, 2880)]


def activations(rng, width: int, rows: int = 1) -> torch.Tensor:
    return torch.from_numpy(rng.normal(0.0, 1.0, (rows, width)).astype(np.float32)).cuda()


@contextlib.contextmanager
def tensor_cores(
    per: int | None = None,
    zero_columns: bool = False,
    int8_codes: bool = False,
    units_ahead: int = 1,
    warp_split: int = 1,
    words_by_tma: bool = False,
    cluster_splits: bool = False,
    blocks_in_one_wave: bool = False,
):
    """Every default GEMV config with `tensor_cores` on; `per`: the units (super-blocks, Q8_0 blocks) a
    program walks (with a warp split: a warp), where it divides the row's (else the launch's own choice);
    `zero_columns`: the prologue stores B's unused columns as zeros (`GemvConfig.tc_zero_columns`);
    `int8_codes`: Q4_K on int8 mma (`GemvConfig.tc_int8_codes`); `units_ahead`: `GemvConfig.tc_units_ahead`;
    `warp_split`: `GemvConfig.tc_warp_split`; `words_by_tma`: `GemvConfig.tc_words_by_tma`; `cluster_splits`:
    `GemvConfig.tc_cluster_splits`; `blocks_in_one_wave`: `GemvConfig.tc_blocks_in_one_wave`."""
    from kernels import tensor_core_gemv, triton_gemv

    chosen, choose_per = triton_gemv.default_config, tensor_core_gemv.units_per_program
    choose_per_warp = tensor_core_gemv.units_per_warp

    def config(*args, **kw):
        return dataclasses.replace(
            chosen(*args, **kw),
            tensor_cores=True,
            tc_zero_columns=zero_columns,
            tc_int8_codes=int8_codes,
            tc_units_ahead=units_ahead,
            tc_warp_split=warp_split,
            tc_words_by_tma=words_by_tma,
            tc_cluster_splits=cluster_splits,
            tc_blocks_in_one_wave=blocks_in_one_wave,
        )

    def fixed(fmt: str, n_units: int, tiles: int, sm_count: int, **rule: bool) -> int:
        if per is not None and n_units % per == 0:
            return per
        return choose_per(fmt, n_units, tiles, sm_count, **rule)

    def fixed_per_warp(n_units: int, tiles: int, sm_count: int, split: int) -> int:
        if per is not None and n_units // split % per == 0:
            return per
        return choose_per_warp(n_units, tiles, sm_count, split)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(triton_gemv, "default_config", config)
        mp.setattr(tensor_core_gemv, "units_per_program", fixed)
        mp.setattr(tensor_core_gemv, "units_per_warp", fixed_per_warp)
        launches = []
        launch = tensor_core_gemv.launch

        def counted(*args, **kw):
            served = launch(*args, **kw)
            launches.append(served is not None)
            return served

        mp.setattr(tensor_core_gemv, "launch", counted)
        yield launches


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
@pytest.mark.parametrize("per", [1, 2, 4])
@pytest.mark.parametrize(
    ("fmt", "shape"),
    [("Q4_K", s) for s in SHAPES]
    + [("Q6_K-regrouped", s) for s in Q6_K_SHAPES]
    + [("Q8_0-regrouped", s) for s in Q8_0_SHAPES]
    + [("MXFP4-regrouped", s) for s in MXFP4_SHAPES],
    ids=lambda v: v if isinstance(v, str) else f"{v[0]}x{v[1]}",
)
def test_products_match_the_reference(fmt, shape, per, warp_split, rng, blocks) -> None:
    from kernels.triton_gemv import FAST_PATH

    w = MAKERS[fmt](shape, rng, blocks)
    x = activations(rng, shape[1])
    bias = torch.from_numpy(rng.normal(0.0, 0.1, shape[0]).astype(np.float32)).cuda()
    with tensor_cores(per, warp_split=warp_split) as launches:
        got = FAST_PATH.qmatmul(x, w, bias, torch.float32)
    assert launches == [True]
    assert rel_err(got, reference_qmatmul(x, w, bias, torch.float32)) < REL_TOL


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
@pytest.mark.parametrize("per", Q8_0_PER)
@pytest.mark.parametrize("shape", [(200, 2880), (144, 4096)], ids=lambda v: f"{v[0]}x{v[1]}")
@pytest.mark.parametrize("fmt", ["Q8_0-regrouped", "MXFP4-regrouped"])
def test_block_walks_of_any_block_count_match_the_reference(fmt, shape, per, warp_split, rng, blocks) -> None:
    """Walks of a number of blocks that is not a power of two (the prologue's blocks past it are zeros)."""
    from kernels.triton_gemv import FAST_PATH

    if shape[1] // 32 % per:
        pytest.skip(f"{per} does not divide {shape[1] // 32} blocks")
    w = MAKERS[fmt](shape, rng, blocks)
    x = activations(rng, shape[1])
    with tensor_cores(per, warp_split=warp_split) as launches:
        got = FAST_PATH.qmatmul(x, w, None, torch.float32)
    assert launches == [True]
    assert rel_err(got, reference_qmatmul(x, w, None, torch.float32)) < REL_TOL


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
def test_activations_of_any_magnitude_and_zero_ranges(warp_split, rng, blocks) -> None:
    """The prologue's power-of-two scale: a range of zeros (its exponent clamped), tiny and huge values."""
    from kernels.triton_gemv import FAST_PATH

    w = q4_k((128, 1024), rng, blocks)
    x = activations(rng, 1024)
    x[:, :256] = 0.0
    x[:, 256:512] *= 1e-20
    x[:, 512:768] *= 1e20
    with tensor_cores(1, warp_split=warp_split) as launches:
        got = FAST_PATH.qmatmul(x, w, None, torch.float32)
    assert launches == [True]
    assert torch.isfinite(got).all()
    assert rel_err(got, reference_qmatmul(x, w, None, torch.float32)) < REL_TOL


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
@pytest.mark.parametrize("per", [1, 2])
@pytest.mark.parametrize("fmt", list(MAKERS))
def test_segments_with_biases_match_one_product_each(fmt, per, warp_split, rng, blocks) -> None:
    # Segment boundaries inside the grid (rows not multiples of the tile), split partials summed in the launch.
    from kernels.triton_gemv import FAST_PATH

    weights = tuple(MAKERS[fmt]((r, 2048), rng, blocks, f"w{i}") for i, r in enumerate((136, 8, 72)))
    biases = tuple(torch.randn(w.shape[0], device="cuda") for w in weights)
    x = activations(rng, 2048)
    with tensor_cores(per, warp_split=warp_split) as launches:
        got = FAST_PATH.qmatmuls(x, weights, biases)
    assert launches == [True]
    for y, w, b in zip(got, weights, biases, strict=True):
        assert rel_err(y, reference_qmatmul(x, w, b, torch.float32)) < REL_TOL, w.name


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
@pytest.mark.parametrize("per", [1, 4])
@pytest.mark.parametrize("fmt", list(MAKERS))
def test_norms_inside_the_launch_match_the_formed_norm(fmt, per, warp_split, rng, blocks) -> None:
    """`RMSNormed` inputs (scaled by 1 / rms after the walk) and the residual sum with its scaled copy,
    with and without a bias (it then rides in as the residual)."""
    from kernels.triton_gemv import gemv_add_normed, gemvs_normed

    width = 3072
    w = MAKERS[fmt]((640, width), rng, blocks)
    x = activations(rng, width)
    residual = torch.randn(1, 640, device="cuda")
    bias = torch.randn(640, device="cuda") * 0.1
    norm_weight = torch.randn(640, device="cuda")
    rows = torch.randn(1, width, device="cuda") * 3.0
    h = RMSNormed(rows, rows * torch.randn(width, device="cuda"), 1e-5)
    with tensor_cores(per, warp_split=warp_split) as launches:
        added = [gemv_add_normed(x, w, residual, norm_weight, 1e-5, b) for b in (None, bias)]
        (normed,) = gemvs_normed(h, (w,), (bias,))
    assert launches == [True] * 3
    for got, b in zip(added, (None, bias), strict=True):
        want = residual + reference_qmatmul(x, w, b, torch.float32)
        assert rel_err(got.x, want) < REL_TOL and rel_err(got.xw, want * norm_weight) < REL_TOL
    assert rel_err(normed, reference_qmatmul(h.value(), w, bias, torch.float32)) < REL_TOL


@pytest.mark.parametrize("per", [1, 2, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda v: f"{v[0]}x{v[1]}")
def test_q4_k_on_int8_codes_matches_the_reference(shape, per, rng, blocks) -> None:
    """`GemvConfig.tc_int8_codes`: Q4_K's codes as int8 mma operands, the activations as four 8-bit limbs
    (`_q4_k_int8_walk`): one product with a bias, and the activations' extremes (a range of zeros, tiny and
    huge values, as `test_activations_of_any_magnitude_and_zero_ranges`)."""
    from kernels.triton_gemv import FAST_PATH

    w = q4_k(shape, rng, blocks)
    x = activations(rng, shape[1])
    bias = torch.from_numpy(rng.normal(0.0, 0.1, shape[0]).astype(np.float32)).cuda()
    extreme = x.clone()
    extreme[:, : shape[1] // 2] = 0.0
    extreme[:, -1] = 3e4
    extreme[:, -2] = 1e-20
    with tensor_cores(per, int8_codes=True) as launches:
        got = FAST_PATH.qmatmul(x, w, bias, torch.float32)
        got_extreme = FAST_PATH.qmatmul(extreme, w, None, torch.float32)
    assert launches == [True, True]
    assert rel_err(got, reference_qmatmul(x, w, bias, torch.float32)) < REL_TOL
    assert rel_err(got_extreme, reference_qmatmul(extreme, w, None, torch.float32)) < REL_TOL


@pytest.mark.parametrize("per", [1, 2, 4])
@pytest.mark.parametrize("normed", [False, True], ids=["plain", "normed"])
def test_q4_k_on_int8_codes_in_every_epilogue(per, normed, rng, blocks) -> None:
    """The int8 walk through GLU (Phi-3's fused gate/up, rms-normed or not), three segments with biases
    (q/k/v) and the residual sum with its scaled copy, against the reference."""
    from kernels.triton_gemv import FAST_PATH, gemv_add_normed, gemv_glu

    width = 3072
    fused = q4_k((2 * 320, width), rng, blocks)
    x = activations(rng, width)
    h = RMSNormed(x, x * torch.randn(width, device="cuda"), 1e-5) if normed else x
    value = h.value() if normed else x
    weights = tuple(q4_k((r, width), rng, blocks, n) for r, n in ((256, "q"), (64, "k"), (64, "v")))
    biases = tuple(torch.randn(w.shape[0], device="cuda") * 0.1 for w in weights)
    w = q4_k((640, width), rng, blocks)
    residual, norm_weight = torch.randn(1, 640, device="cuda"), torch.randn(640, device="cuda")
    with tensor_cores(per, int8_codes=True) as launches:
        glu = gemv_glu(h, fused, None)
        qkv = FAST_PATH.qmatmuls(x, weights, biases)
        added = gemv_add_normed(x, w, residual, norm_weight, 1e-5, None)
    assert all(launches) and len(launches) == 3
    products = reference_qmatmul(value, fused, None, torch.float32)
    assert rel_err(glu, torch.nn.functional.silu(products[:, :320]) * products[:, 320:]) < REL_TOL
    for y, wq, b in zip(qkv, weights, biases, strict=True):
        assert rel_err(y, reference_qmatmul(x, wq, b, torch.float32)) < REL_TOL, wq.name
    want = residual + reference_qmatmul(x, w, None, torch.float32)
    assert rel_err(added.x, want) < REL_TOL and rel_err(added.xw, want * norm_weight) < REL_TOL


# A shape of each format that every walk length of the tests below divides.
UNWRITTEN_SHAPES = {"Q4_K": (640, 3072), "Q6_K-regrouped": (640, 3072), "Q8_0-regrouped": (640, 4096)}


@pytest.mark.parametrize("per", [1, 4])
@pytest.mark.parametrize(
    ("fmt", "glu"),
    [(fmt, False) for fmt in UNWRITTEN_SHAPES] + [("Q4_K", True)],  # `gemv_glu` serves the file's Q4_K
    ids=lambda v: v if isinstance(v, str) else ("glu" if v else "one"),
)
def test_b_s_unused_columns_left_unwritten_give_the_zero_columns_bits(fmt, glu, per, rng, blocks) -> None:
    """The prologue leaves B's six unused columns unwritten (the default: whatever shared memory holds
    there reaches only the result columns the epilogue drops) or stores them as zeros
    (`GemvConfig.tc_zero_columns`, the form before): the same bits, one product and gate/up with GLU."""
    from kernels.triton_gemv import FAST_PATH, gemv_glu

    w = MAKERS[fmt](UNWRITTEN_SHAPES[fmt], rng, blocks)
    x = activations(rng, w.shape[1])
    # NaN left in shared memory where this launch's unused columns lie: a launch of the other row width
    # (Q6_K's B rows are 128 halves, the others' 256) on NaN activations writes NaN into the first quarter
    # of each of its rows, which are columns 2-4 of the other's rows.
    primer = MAKERS["Q4_K" if fmt == "Q6_K-regrouped" else "Q6_K-regrouped"]((640, 3072), rng, blocks)
    nan = torch.full((1, 3072), float("nan"), device="cuda")
    results = []
    for zero_columns in (True, False):
        with tensor_cores(4) as launches:
            FAST_PATH.qmatmul(nan, primer, None, torch.float32)
        with tensor_cores(per, zero_columns) as more:
            results.append(gemv_glu(x, w, None) if glu else FAST_PATH.qmatmul(x, w, None, torch.float32))
        assert all(launches + more)
    assert torch.equal(results[0], results[1])
    assert not results[1].isnan().any()


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
@pytest.mark.parametrize("per", [1, 2, 4])
@pytest.mark.parametrize("normed", [False, True], ids=["plain", "normed"])
def test_gate_and_up_in_one_launch_match_the_swiglu_of_the_products(
    per, normed, warp_split, rng, blocks
) -> None:
    """A fused [gate; up] matrix (Phi-3's ffn_up) and gpt-oss's clamped SwiGLU on separate gate and up."""
    from kernels.triton_gemv import gemv_glu, launch_segments

    width = 1024
    fused = q4_k((2 * 200, width), rng, blocks)
    x = activations(rng, width)
    h = RMSNormed(x, x * torch.randn(width, device="cuda"), 1e-5) if normed else x
    value = h.value() if normed else x
    with tensor_cores(per, warp_split=warp_split) as launches:
        got = gemv_glu(h, fused, None)
        gate, up = q4_k((200, width), rng, blocks, "gate"), q4_k((200, width), rng, blocks, "up")
        bg, bu = torch.randn(200, device="cuda"), torch.randn(200, device="cuda")
        oai = launch_segments(x, (gate, up), (bg, bu), 1, glu=True, glu_oai=(1.702, 7.0))
    assert launches == [True, True]
    products = reference_qmatmul(value, fused, None, torch.float32)
    g, u = products[:, :200], products[:, 200:]
    assert rel_err(got, torch.nn.functional.silu(g) * u) < REL_TOL
    g = reference_qmatmul(x, gate, bg, torch.float32).clamp(max=7.0)
    u = reference_qmatmul(x, up, bu, torch.float32).clamp(-7.0, 7.0)
    assert rel_err(oai, g * torch.sigmoid(1.702 * g) * (u + 1.0)) < REL_TOL


def test_mxfp4_of_every_scale_exponent_matches_the_reference(rng, blocks) -> None:
    """E8M0 bytes 0 and 1 (subnormal scales), 200 (2^72) and the usual ones: the scale is applied after the
    mma, its power of two made exactly as the CUDA-core loop's."""
    from kernels.triton_gemv import FAST_PATH

    shape = (64, 512)
    raw = blocks(GGMLType.MXFP4, shape[0] * shape[1] // 32, rng, realistic=True)
    for e, rows in ((0, slice(0, 16)), (1, slice(16, 32)), (200, slice(32, 48))):
        raw.reshape(shape[0], -1, 17)[rows, :, 0] = e
    w = QTensor.from_bytes(raw.tobytes(), GGMLType.MXFP4, shape, "w", "cuda").codes_then_scales_in_place()
    x = activations(rng, shape[1])
    with tensor_cores(2) as launches:
        got = FAST_PATH.qmatmul(x, w, None, torch.float32)
    assert launches == [True]
    # in float64 on the CPU: subnormal weights' products stay exact whatever a GEMM library flushes
    want = x.double().cpu() @ w.dequantize().double().cpu().T
    for rows in (slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 64)):
        assert rel_err(got[:, rows], want[:, rows]) < REL_TOL, rows


EXPERTS_FFN, EXPERTS_WIDTH = 224, 2880  # GPT-OSS's width; ffn: down's input, whole blocks


def mxfp4_experts(rng, blocks, n_expert: int = 8) -> tuple:
    """Regrouped MXFP4 gate, up and down expert tensors of `n_expert` experts, (gate's, up's) biases and
    down's."""
    ffn, width = EXPERTS_FFN, EXPERTS_WIDTH
    gate = mxfp4_regrouped((n_expert, ffn, width), rng, blocks, "gate")
    up = mxfp4_regrouped((n_expert, ffn, width), rng, blocks, "up")
    down = mxfp4_regrouped((n_expert, width, ffn), rng, blocks, "down")
    bg, bu = torch.randn(n_expert, ffn, device="cuda") * 0.1, torch.randn(n_expert, ffn, device="cuda") * 0.1
    return gate, up, down, (bg, bu), torch.randn(n_expert, width, device="cuda") * 0.1


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
@pytest.mark.parametrize("per", [1, 9, 30])
@pytest.mark.parametrize("normed", [False, True], ids=["plain", "normed"])
def test_mxfp4_experts_gate_up_and_down_match_the_reference(per, normed, warp_split, rng, blocks) -> None:
    """GPT-OSS's expert GEMVs by token-expert pair: gate and up of k = 4 experts from one token's row (rms-
    normed inside the launch or not) with their biases and the clamped SwiGLU, then down with one row a
    pair; pairs that repeat an expert, experts out of order."""
    from kernels.qmatmul import qmatmul_experts
    from kernels.triton_moe import gemv_experts, gemv_experts_glu

    ffn, width, k = EXPERTS_FFN, EXPERTS_WIDTH, 4
    gate, up, down, (bg, bu), bd = mxfp4_experts(rng, blocks)
    x = activations(rng, width)
    h = RMSNormed(x, x * torch.randn(width, device="cuda"), 1e-5) if normed else x
    value = h.value() if normed else x
    ids = torch.tensor([[5, 0, 5, 3]], device="cuda")
    with tensor_cores(per, warp_split=warp_split) as launches:
        act = gemv_experts_glu(h, gate, up, ids, (bg, bu), (1.702, 7.0))
        rows = torch.randn(k, ffn, device="cuda")
        got_down = gemv_experts(rows, down, ids.reshape(-1, 1), bd, torch.float32)
    assert launches == [True, True]
    g = qmatmul_experts(value, gate, ids, bg)[0].clamp(max=7.0)
    u = qmatmul_experts(value, up, ids, bu)[0].clamp(-7.0, 7.0)
    assert rel_err(act.reshape(k, ffn), g * torch.sigmoid(1.702 * g) * (u + 1.0)) < REL_TOL
    want_down = qmatmul_experts(rows, down, ids.reshape(-1, 1), bd).reshape(k, width)
    assert rel_err(got_down.reshape(k, width), want_down) < REL_TOL


def test_several_rows_and_expert_ids_go_to_the_cuda_core_loop(rng, blocks) -> None:
    from kernels.qmatmul import qmatmul_experts
    from kernels.triton_gemv import FAST_PATH, launch_segments

    w = q4_k((96, 512), rng, blocks)
    x = activations(rng, 512, rows=3)
    experts = QTensor(q4_k((4 * 32, 512), rng, blocks).data, GGMLType.Q4_K, (4, 32, 512), "experts")
    ids = torch.tensor([3, 0], device="cuda")
    with tensor_cores() as launches:
        got = FAST_PATH.qmatmul(x, w, None, torch.float32)
        by_expert = launch_segments(x[:1], (experts,), (None,), 2, expert_ids=ids, x_group=2)
    assert launches == []
    assert rel_err(got, reference_qmatmul(x, w, None, torch.float32)) < REL_TOL
    assert rel_err(by_expert, qmatmul_experts(x[:1], experts, ids.reshape(1, -1), None)[0]) < REL_TOL


def test_graph_replay_with_dependent_launch_equals_eager(rng, blocks) -> None:
    """A chain of launches captured with programmatic dependent launch (each waits for the previous grid
    before touching memory) replays the eager launches' values bit for bit, run after run."""
    from kernels import dependent_launch

    if not dependent_launch.supported(torch.device("cuda")):
        pytest.skip("programmatic dependent launch needs sm_90")
    ws = [q4_k((3072, 3072), rng, blocks, f"w{i}") for i in range(3)]
    eager, replays, launches = _chain_replayed_early(ws, activations(rng, 3072))
    assert all(launches) and len(launches) == 6
    assert all(torch.equal(r, eager) for r in replays)


def _chained(ws: list, x: torch.Tensor) -> torch.Tensor:
    """Each matrix of `ws` against the previous product (scaled down), from `x`."""
    from kernels.triton_gemv import FAST_PATH

    for w in ws:
        x = FAST_PATH.qmatmul(x, w, None, torch.float32) * 0.01
    return x


def _chain_replayed_early(ws: list, x: torch.Tensor, **forms) -> tuple:
    """(eager, three replays, the launches) of `_chained(ws, x)` with every launch early and the late
    trigger (`kernels.dependent_launch`), eagerly and captured as a CUDA graph, under `tensor_cores(**forms)`."""
    from kernels import dependent_launch
    from kernels.triton_gemv import SplitCounters

    SplitCounters.get(x.device, 1)  # allocated before the capture
    mode = dependent_launch.DependentLaunch(True, late_trigger=True)
    with tensor_cores(**forms) as launches, dependent_launch.programmatic(mode):
        eager = _chained(ws, x)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = _chained(ws, x)
        replays = []
        for _ in range(3):
            graph.replay()
            replays.append(out.clone())
    return eager, replays, launches


@pytest.mark.parametrize("warp_split", WARP_SPLITS, ids=lambda v: f"ws{v}")
@pytest.mark.parametrize("per", [1, 2])
@pytest.mark.parametrize("fmt", REGROUPED)
def test_regrouped_gate_and_up_match_the_swiglu_of_the_products(fmt, per, warp_split, rng, blocks) -> None:
    """Separate regrouped gate and up matrices in one GLU launch: each walks its own codes and its own d
    halfwords (after its own codes)."""
    from kernels.triton_gemv import launch_segments

    width = 1024
    gate, up = MAKERS[fmt]((200, width), rng, blocks, "gate"), MAKERS[fmt]((200, width), rng, blocks, "up")
    x = activations(rng, width)
    with tensor_cores(per, warp_split=warp_split) as launches:
        got = launch_segments(x, (gate, up), (None, None), 1, glu=True)
    assert launches == [True]
    g, u = reference_qmatmul(x, gate, None, torch.float32), reference_qmatmul(x, up, None, torch.float32)
    assert rel_err(got, torch.nn.functional.silu(g) * u) < REL_TOL


def glu_launch_grids(x: torch.Tensor, fused: QTensor, **config: object) -> tuple[torch.Tensor, list]:
    """`gemv_glu` of `x` with [gate; up] `fused` on the tensor cores with the `GemvConfig` fields `config`:
    its output, and the grid of each tensor-core launch it made (splits by counters unless `config` asks for
    clusters: the grid then holds the split as its axis 1)."""
    config = {"tc_cluster_splits": False, **config}
    from kernels import tensor_core_gemv, triton_gemv

    grids = []
    kernel = tensor_core_gemv._tc_gemv_kernel

    class Spy:
        def __getitem__(self, grid):
            grids.append(grid)
            return kernel[grid]

    chosen = triton_gemv.default_config
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tensor_core_gemv, "_tc_gemv_kernel", Spy())
        mp.setattr(
            triton_gemv,
            "default_config",
            lambda *a, **kw: dataclasses.replace(chosen(*a, **kw), tensor_cores=True, **config),
        )
        return triton_gemv.gemv_glu(x, fused, None), grids


@pytest.mark.parametrize("units", [1, 2, 4, 3])
def test_a_config_s_walk_length_reaches_the_launch(units, rng, blocks) -> None:
    """`GemvConfig.tc_units_per_program` (`step_ab`'s "tensor-core walks by the rule before"): a GLU launch of
    Phi-3's width walks that many super-blocks a program (the grid's split is the row's 12 over it) and
    gives the rule's products to rounding; a walk the kernel has no form of (3) leaves the rule's choice."""
    from kernels import tensor_core_gemv

    fused = q4_k((2 * 200, 3072), rng, blocks)
    x = activations(rng, 3072)
    got, grids = glu_launch_grids(x, fused, tc_units_per_program=units)
    rule = tensor_core_gemv.units_per_program(
        "q4_k", 12, 4, torch.cuda.get_device_properties(0).multi_processor_count
    )
    assert grids == [(4, 12 // (units if units != 3 else rule))]
    products = reference_qmatmul(x, fused, None, torch.float32)
    assert rel_err(got, torch.nn.functional.silu(products[:, :200]) * products[:, 200:]) < REL_TOL


@pytest.mark.parametrize("glu", [False, True])
@pytest.mark.parametrize("per", [1, 2, 4])
@pytest.mark.parametrize(
    ("fmt", "int8_codes"), [("Q4_K", True), ("Q4_K", False), *((f, False) for f in REGROUPED)]
)
def test_two_units_ahead_give_the_same_bits(fmt, int8_codes, per, glu, rng, blocks) -> None:
    """`GemvConfig.tc_units_ahead` 2 (`step_ab`'s "tensor-core walks two units ahead") only asks for the words
    sooner: every walk of every format, with and without GLU, gives the one-ahead walk's bits (Phi-3's
    width: 12 super-blocks, 96 blocks; split 12 / per, so the split epilogue runs too)."""
    from kernels.triton_gemv import launch_segments

    width = 3072
    x = activations(rng, width)
    if glu:
        gate, up = (
            MAKERS[fmt]((200, width), rng, blocks, "gate"),
            MAKERS[fmt]((200, width), rng, blocks, "up"),
        )
    else:
        w = MAKERS[fmt]((200, width), rng, blocks)
    got = {}
    for ahead in (1, 2):
        with tensor_cores(per, int8_codes=int8_codes, units_ahead=ahead) as launches:
            if glu:
                got[ahead] = launch_segments(x, (gate, up), (None, None), 1, glu=True)
            else:
                got[ahead] = launch_segments(x, (w,), (None,), 1)
        assert launches == [True]
    assert torch.equal(got[1], got[2])
    reference = reference_qmatmul(x, w, None, torch.float32) if not glu else None
    if reference is not None:
        assert rel_err(got[2], reference) < REL_TOL


def _needs_sm90(what: str) -> None:
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip(f"{what} needs sm_90")


@contextlib.contextmanager
def _calls_of(module, name: str, recorded):
    """`module.name` while the block runs, each call's `recorded(*args)` appended to the list it yields."""
    seen = []
    original = getattr(module, name)

    def counted(*args, **kw):
        seen.append(recorded(*args))
        return original(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, name, counted)
        yield seen


def _tma_walks():
    """The launches that built TMA descriptors (`tensor_core_gemv.tma_descriptors`: a matrix each)."""
    from kernels import tensor_core_gemv

    return _calls_of(tensor_core_gemv, "tma_descriptors", lambda *args: args[1:])


@pytest.mark.parametrize("glu", [False, True])
@pytest.mark.parametrize("per", [1, 2, 4])
def test_words_by_tma_give_the_register_walk_s_bits(per, glu, rng, blocks) -> None:
    """`GemvConfig.tc_words_by_tma` (Q4_K on int8 mma): each program's share of the matrix asked for by TMA
    and read from shared memory gives the register walk's bits, with and without GLU, at Phi-3's width
    (12 super-blocks: split 12 / per, so the split epilogue runs too) and 200 rows (the last tile's rows past
    the matrix land as TMA's zeros, and are not stored)."""
    from kernels.triton_gemv import launch_segments

    _needs_sm90("TMA")
    width = 3072
    x = activations(rng, width)
    gate, up = q4_k((200, width), rng, blocks, "gate"), q4_k((200, width), rng, blocks, "up")
    got = {}
    for by_tma in (False, True):
        with tensor_cores(per, int8_codes=True, words_by_tma=by_tma) as launches, _tma_walks() as built:
            if glu:
                got[by_tma] = launch_segments(x, (gate, up), (None, None), 1, glu=True)
            else:
                got[by_tma] = launch_segments(x, (gate,), (None,), 1)
        assert launches == [True]
        assert len(built) == (2 if by_tma and glu else 1 if by_tma else 0)
    assert torch.equal(got[False], got[True])
    if not glu:
        assert rel_err(got[True], reference_qmatmul(x, gate, None, torch.float32)) < REL_TOL


def test_words_by_tma_serve_only_one_q4_k_int8_matrix(rng, blocks) -> None:
    """Q/K/V as three segments and the float16 walk keep the register walk (no descriptors), and still give
    the reference's products."""
    from kernels.triton_gemv import launch_segments

    _needs_sm90("TMA")
    width = 1024
    q, k = q4_k((128, width), rng, blocks, "q"), q4_k((64, width), rng, blocks, "k")
    x = activations(rng, width)
    for int8_codes in (True, False):
        with tensor_cores(int8_codes=int8_codes, words_by_tma=True) as launches, _tma_walks() as built:
            got = launch_segments(x, (q, k), (None, None), 1)
        assert launches == [True] and built == []
        want = torch.cat([reference_qmatmul(x, w, None, torch.float32) for w in (q, k)], dim=1)
        assert rel_err(got, want) < REL_TOL


@pytest.mark.parametrize(
    ("form", "needs", "recorded"),
    [
        ("words_by_tma", "TMA", "_tma_walks"),
        ("cluster_splits", "thread-block clusters", "_clustered_launches"),
    ],
)
def test_sm90_forms_replay_with_dependent_launch_as_eager(form, needs, recorded, rng, blocks) -> None:
    """Launched early, the TMA walk asks for its share before it waits for the previous grid (weights are
    never written during a step), and clustered splits sum in split 0's shared memory: a chain captured
    with dependent launch replays the eager values bit for bit, and those of the register walk with the
    counters' reduction; every launch took the form (6: three eager, three captured)."""
    _needs_sm90(needs)
    ws = [q4_k((3072, 3072), rng, blocks, f"w{i}") for i in range(3)]
    x = activations(rng, 3072)
    with tensor_cores(int8_codes=True):
        plain = _chained(ws, x)
    with globals()[recorded]() as taken:
        eager, replays, launches = _chain_replayed_early(ws, x, int8_codes=True, **{form: True})
    assert all(launches) and len(launches) == 6 and len(taken) == 6
    assert torch.equal(eager, plain)
    assert all(torch.equal(r, eager) for r in replays)


@pytest.mark.parametrize(("warp_split", "rows_per_tile"), [(2, 32), (4, 16)])
def test_a_warp_split_s_tiles_walk_the_whole_row_without_a_split(
    warp_split, rows_per_tile, rng, blocks
) -> None:
    """`GemvConfig.tc_warp_split` (asked with the default int8 codes: Q4_K's walk is then the float16 one): a
    GLU launch of Phi-3's width with enough row tiles for two programs an SM takes 64 / warp_split rows a
    program and no split of K across programs (`units_per_warp`), and gives the reference's products."""

    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    ffn = 2 * sm_count * rows_per_tile  # the gate's rows: two programs an SM
    fused = q4_k((2 * ffn, 3072), rng, blocks)
    x = activations(rng, 3072)
    got, grids = glu_launch_grids(x, fused, tc_int8_codes=True, tc_warp_split=warp_split)
    assert grids == [(ffn // rows_per_tile, 1)]
    products = reference_qmatmul(x, fused, None, torch.float32)
    assert rel_err(got, torch.nn.functional.silu(products[:, :ffn]) * products[:, ffn:]) < REL_TOL


def _clustered_launches():
    """The cluster sizes of the launches made as clusters (`kernels.cluster_launch.launch`)."""
    from kernels import cluster_launch

    return _calls_of(cluster_launch, "launch", lambda kernel, grid, size, *args: size)


# (format, int8 codes, units a program walks) at Phi-3's width, 3,072: 12 super-blocks or 96 blocks, so
# splits of 3, 6 and 8 (clusters), and 12 (more than a cluster holds: the counters' reduction).
CLUSTER_WALKS = [
    ("Q4_K", True, 4),
    ("Q4_K", True, 2),
    ("Q4_K", True, 1),
    ("Q4_K", False, 4),
    ("Q6_K-regrouped", False, 2),
    ("Q8_0-regrouped", False, 12),
    ("Q8_0-regrouped", False, 32),
    ("MXFP4-regrouped", False, 12),
]


@pytest.mark.parametrize("glu", [False, True])
@pytest.mark.parametrize(("fmt", "int8_codes", "per"), CLUSTER_WALKS, ids=lambda v: str(v))
def test_clustered_splits_give_the_counters_bits(fmt, int8_codes, per, glu, rng, blocks) -> None:
    """`GemvConfig.tc_cluster_splits`: a tile's 2-8 splits as one cluster, summed in rank 0's shared memory,
    give the arrival counters' bits (the same sums in the same order), in every format, with and without
    GLU, over 200 rows (the last tile's rows past the matrix); 12 splits keep the counters."""
    from kernels.triton_gemv import launch_segments

    _needs_sm90("thread-block clusters")
    width = 3072
    x = activations(rng, width)
    ws = [MAKERS[fmt]((200, width), rng, blocks, n) for n in (("gate", "up") if glu else ("w",))]
    got = {}
    for clustered in (False, True):
        with (
            tensor_cores(per, int8_codes=int8_codes, cluster_splits=clustered) as launches,
            _clustered_launches() as sizes,
        ):
            got[clustered] = launch_segments(x, tuple(ws), (None,) * len(ws), 1, glu=glu)
        assert launches == [True]
        splits = width // (256 if fmt in ("Q4_K", "Q6_K-regrouped") else 32) // per
        assert sizes == ([splits] if clustered and splits <= 8 else [])
    assert torch.equal(got[False], got[True])
    if not glu:
        assert rel_err(got[True], reference_qmatmul(x, ws[0], None, torch.float32)) < REL_TOL


@pytest.mark.parametrize("fmt", ["Q8_0-regrouped", "MXFP4-regrouped"])
def test_blocks_in_one_wave_reach_the_launch_as_clusters(fmt, rng, blocks) -> None:
    """`GemvConfig.tc_blocks_in_one_wave` at GPT-OSS's width (2,880: 90 blocks) over 200 rows (4 tiles): each
    program walks 15 blocks, 6 splits as one cluster (the rule before: 1 block, 90 splits by counters), and
    the launch gives the reference's products to rounding."""
    from kernels.triton_gemv import launch_segments

    _needs_sm90("thread-block clusters")
    width = 2880
    x = activations(rng, width)
    w = MAKERS[fmt]((200, width), rng, blocks, "w")
    with (
        tensor_cores(cluster_splits=True, blocks_in_one_wave=True) as launches,
        _clustered_launches() as sizes,
    ):
        got = launch_segments(x, (w,), (None,), 1)
    assert launches == [True] and sizes == [6]
    assert rel_err(got, reference_qmatmul(x, w, None, torch.float32)) < REL_TOL


def test_a_warp_split_keeps_the_counters(rng, blocks) -> None:
    """Clusters asked for with a warp split (`GemvConfig.tc_warp_split` 2: its sums are a tile of 32 rows):
    the launch sums its splits by counters, and gives the reference's products."""
    from kernels.triton_gemv import launch_segments

    _needs_sm90("thread-block clusters")
    width = 3072
    x = activations(rng, width)
    w = q4_k((200, width), rng, blocks)
    with tensor_cores(1, warp_split=2, cluster_splits=True) as launches, _clustered_launches() as sizes:
        got = launch_segments(x, (w,), (None,), 1)
    assert launches == [True] and sizes == []
    assert rel_err(got, reference_qmatmul(x, w, None, torch.float32)) < REL_TOL


@pytest.mark.parametrize("normed", [False, True], ids=["plain", "normed"])
def test_clustered_splits_in_every_epilogue(normed, rng, blocks) -> None:
    """Clustered splits through GLU (rms-normed or not), three segments with biases (q/k/v) and the
    residual sum with its scaled copy: the counters' bits."""
    from kernels.triton_gemv import FAST_PATH, gemv_add_normed, gemv_glu

    _needs_sm90("thread-block clusters")
    width = 3072
    fused = q4_k((2 * 320, width), rng, blocks)
    x = activations(rng, width)
    h = RMSNormed(x, x * torch.randn(width, device="cuda"), 1e-5) if normed else x
    weights = tuple(q4_k((r, width), rng, blocks, n) for r, n in ((256, "q"), (64, "k"), (64, "v")))
    biases = tuple(torch.randn(w.shape[0], device="cuda") * 0.1 for w in weights)
    w = q4_k((640, width), rng, blocks)
    residual, norm_weight = torch.randn(1, 640, device="cuda"), torch.randn(640, device="cuda")
    got = {}
    for clustered in (False, True):
        with (
            tensor_cores(2, int8_codes=True, cluster_splits=clustered) as launches,
            _clustered_launches() as sizes,
        ):
            glu = gemv_glu(h, fused, None)
            qkv = FAST_PATH.qmatmuls(x, weights, biases)
            added = gemv_add_normed(x, w, residual, norm_weight, 1e-5, None)
        assert all(launches) and len(launches) == 3
        assert sizes == ([6, 6, 6] if clustered else [])
        got[clustered] = (glu, *qkv, added.x, added.xw)
    assert all(torch.equal(a, b) for a, b in zip(got[False], got[True], strict=True))


def test_clustered_splits_of_mxfp4_experts(rng, blocks) -> None:
    """GPT-OSS's expert GEMVs by token-expert pair (the grid's third axis) as clusters: gate and up with
    the clamped SwiGLU from an rms-normed row, then down: the counters' bits."""
    from kernels.triton_moe import gemv_experts, gemv_experts_glu

    _needs_sm90("thread-block clusters")
    ffn, width = EXPERTS_FFN, EXPERTS_WIDTH
    gate, up, down, (bg, bu), bd = mxfp4_experts(rng, blocks)
    x = activations(rng, width)
    h = RMSNormed(x, x * torch.randn(width, device="cuda"), 1e-5)
    ids = torch.tensor([[5, 0, 5, 3]], device="cuda")
    rows = torch.randn(4, ffn, device="cuda")
    got = {}
    for clustered in (False, True):
        with tensor_cores(30, cluster_splits=clustered) as launches, _clustered_launches() as sizes:
            act = gemv_experts_glu(h, gate, up, ids, (bg, bu), (1.702, 7.0))
            got_down = gemv_experts(rows, down, ids.reshape(-1, 1), bd, torch.float32)
        assert launches == [True, True]
        # gate/up: 90 blocks / 30, three splits; down's 7 blocks split as the grid asks
        assert (sizes[:1] == [3] and all(2 <= n <= 8 for n in sizes)) if clustered else sizes == []
        got[clustered] = (act, got_down)
    assert torch.equal(got[False][0], got[True][0]) and torch.equal(got[False][1], got[True][1])
