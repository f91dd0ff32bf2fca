"""The mixture-of-experts GEMV fast path against the reference `qmatmul_experts` (CUDA only)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util

import numpy as np
import pytest
import torch

from kernels import backend
from kernels.formats import FORMATS, GGMLType
from kernels.qtensor import CODES_THEN_SCALES, QTensor

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
]

REL_TOL = 1e-5


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.double().cpu(), expected.double().cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def experts(qtype: GGMLType, shape: tuple[int, int, int], rng, blocks) -> QTensor:
    raw = blocks(qtype, int(np.prod(shape)) // FORMATS[qtype].block_size, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), qtype, shape, f"ffn_exps.{qtype.name}", "cuda")


def reference(x, w, ids, bias, out_dtype=None) -> torch.Tensor:
    return (
        backend.kernel_set(backend.KernelConfig(kernels="reference"), "cuda")
        .qmatmul_experts(x, w, ids, bias)
        .to(out_dtype or x.dtype)
    )


def fast(x, w, ids, bias=None) -> torch.Tensor:
    return backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda").qmatmul_experts(x, w, ids, bias)


def served_by_fast_path(x, w, ids) -> bool:
    from kernels.triton_moe import EXPERTS_FAST_PATH

    kernels = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda")
    return EXPERTS_FAST_PATH in kernels.experts_paths and EXPERTS_FAST_PATH.supports(x, w, ids)


@pytest.mark.parametrize(
    ("qtype", "shape"),
    [
        (GGMLType.MXFP4, (32, 2880, 2880)),  # GPT-OSS-20B down-projection experts
        (GGMLType.MXFP4, (8, 576, 2880)),
        (GGMLType.Q8_0, (6, 100, 512)),
        (GGMLType.Q4_K, (4, 64, 768)),
    ],
    ids=lambda v: v.name if isinstance(v, GGMLType) else "x".join(map(str, v)),
)
def test_decode_routing_matches_reference(qtype, shape, rng, blocks) -> None:
    w = experts(qtype, shape, rng, blocks)
    n_expert, out, k_in = shape
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, k_in)).astype(np.float32)).cuda()
    ids = torch.from_numpy(rng.permutation(n_expert)[:4].reshape(1, 4)).cuda()
    bias = torch.from_numpy(rng.normal(0.0, 0.1, (n_expert, out)).astype(np.float32)).cuda()
    assert served_by_fast_path(x, w, ids)
    got = fast(x, w, ids, bias)
    assert got.shape == (1, 4, out)
    assert rel_err(got, reference(x, w, ids, bias)) < REL_TOL


def test_down_projection_layout_one_row_per_pair(rng, blocks) -> None:
    # GPT-OSS's down projection: every (token, expert) pair has its own activation row, k = 1.
    w = experts(GGMLType.MXFP4, (8, 320, 640), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (6, 640)).astype(np.float32)).cuda()
    ids = torch.tensor([[3], [3], [0], [7], [1], [3]], device="cuda")
    got = fast(x, w, ids, None)
    assert rel_err(got, reference(x, w, ids, None)) < REL_TOL


def test_few_tokens_repeated_experts_and_half_activations(rng, blocks) -> None:
    w = experts(GGMLType.MXFP4, (4, 96, 256), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (3, 256)).astype(np.float32)).cuda()
    ids = torch.tensor([[0, 2], [2, 2], [3, 0]], device="cuda")
    assert rel_err(fast(x, w, ids), reference(x, w, ids, None)) < REL_TOL
    got = fast(x.half(), w, ids)
    assert got.dtype == torch.float16
    assert rel_err(got, reference(x.half(), w, ids, None)) < 2e-3


def test_prefill_keeps_the_grouped_path(rng, blocks) -> None:
    w = experts(GGMLType.MXFP4, (4, 32, 64), rng, blocks)
    x = torch.randn(40, 64, device="cuda")
    ids = torch.zeros(40, 4, dtype=torch.long, device="cuda")
    assert not served_by_fast_path(x, w, ids)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_gate_and_up_in_one_launch_match_reference(with_bias, rng, blocks) -> None:
    # GPT-OSS's gate and up: two expert tensors of one type, the same ids, one launch (column views).
    from kernels.triton_moe import gemvs_experts

    shape = (8, 576, 2880)
    gate, up = experts(GGMLType.MXFP4, shape, rng, blocks), experts(GGMLType.MXFP4, shape, rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 2880)).astype(np.float32)).cuda()
    ids = torch.tensor([[5, 0, 7, 2]], device="cuda")
    biases = tuple(
        torch.from_numpy(rng.normal(0.0, 0.1, (8, 576)).astype(np.float32)).cuda() if with_bias else None
        for _ in range(2)
    )
    assert gemvs_experts(x, (gate, up), ids, biases) is not None  # served here, not per tensor
    kernels = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda")
    got = kernels.qmatmuls_experts(x, (gate, up), ids, biases)
    for y, w, b in zip(got, (gate, up), biases, strict=True):
        assert y.shape == (1, 4, 576)
        assert rel_err(y, reference(x, w, ids, b)) < REL_TOL


def test_gate_and_up_of_different_types_are_not_one_launch(rng, blocks) -> None:
    from kernels.triton_moe import gemvs_experts

    gate = experts(GGMLType.MXFP4, (4, 64, 256), rng, blocks)
    up = experts(GGMLType.Q8_0, (4, 64, 256), rng, blocks)
    x = torch.randn(1, 256, device="cuda")
    ids = torch.tensor([[1, 3]], device="cuda")
    assert gemvs_experts(x, (gate, up), ids, (None, None)) is None
    kernels = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda")
    got = kernels.qmatmuls_experts(x, (gate, up), ids)
    for y, w in zip(got, (gate, up), strict=True):
        assert rel_err(y, reference(x, w, ids, None)) < REL_TOL


def regrouped(w: QTensor) -> QTensor:
    """`triton_gemv.pack` of a copy of `w`: MXFP4 experts CODES_THEN_SCALES, as the CUDA model loads them."""
    from kernels.triton_gemv import pack

    packed = pack(QTensor(w.data.clone(), w.qtype, w.shape, w.name))
    assert packed.layout == CODES_THEN_SCALES
    return packed


@pytest.mark.parametrize(
    "shape",
    [(32, 2880, 2880), (8, 576, 2880), (4, 96, 256)],
    ids=["gpt-oss-20b-experts", "8x576x2880", "4x96x256"],
)
def test_regrouped_mxfp4_experts_give_the_file_orders_products(shape, rng, blocks) -> None:
    # The GEMV reading codes with 16-byte loads and scales apart: the reference's products, on the
    # file's order; decode (one token, 4 experts) and a few tokens with repeated experts.
    w = experts(GGMLType.MXFP4, shape, rng, blocks)
    packed = regrouped(w)
    n_expert, out, k_in = shape
    bias = torch.from_numpy(rng.normal(0.0, 0.1, (n_expert, out)).astype(np.float32)).cuda()
    x = torch.from_numpy(rng.normal(0.0, 1.0, (3, k_in)).astype(np.float32)).cuda()
    for rows, ids in (
        (x[:1], torch.from_numpy(rng.permutation(n_expert)[:4].reshape(1, 4)).cuda()),
        (x, torch.tensor([[0, 2], [2, 2], [3, 0]], device="cuda")),
    ):
        assert served_by_fast_path(rows, packed, ids)
        got = fast(rows, packed, ids, bias)
        assert rel_err(got, reference(rows, w, ids, bias)) < REL_TOL
        assert rel_err(got, fast(rows, w, ids, bias)) < REL_TOL


def test_regrouped_gate_and_up_in_one_launch_and_their_prefill_tiles(rng, blocks) -> None:
    from kernels.triton_gemv import dequantize_into
    from kernels.triton_moe import gemvs_experts

    shape = (8, 576, 2880)
    gate, up = experts(GGMLType.MXFP4, shape, rng, blocks), experts(GGMLType.MXFP4, shape, rng, blocks)
    packed = (regrouped(gate), regrouped(up))
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 2880)).astype(np.float32)).cuda()
    ids = torch.tensor([[5, 0, 7, 2]], device="cuda")
    assert gemvs_experts(x, packed, ids, (None, None)) is not None
    assert gemvs_experts(x, (packed[0], up), ids, (None, None)) is None  # layouts differ: not one launch
    kernels = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda")
    for y, w in zip(kernels.qmatmuls_experts(x, packed, ids), (gate, up), strict=True):
        assert rel_err(y, reference(x, w, ids, None)) < REL_TOL
    # The prefill's decoder (the kernel's DEQ mode): the same half values as from the file's order.
    picked = torch.tensor([6, 1, 6], device="cuda")
    want = torch.empty(3, 576, 2880, dtype=torch.float16, device="cuda")
    got = torch.full_like(want, float("nan"))
    dequantize_into(gate, want, experts=picked)
    dequantize_into(packed[0], got, experts=picked)
    assert torch.equal(got, want)


@pytest.mark.parametrize("layout", ["file order", "regrouped"])
def test_gate_up_and_the_clamped_swiglu_in_one_launch_match_reference(layout, rng, blocks) -> None:
    """GPT-OSS's experts (`qmatmul_experts_glu`): gate, up, their biases and the clamped SwiGLU from one
    launch, against the reference products and `gpt_oss.swiglu`; an `RMSNormed` input normed inside it."""
    from kernels.qmatmul import RMSNormed
    from reference_worker.models.gpt_oss import SWIGLU_ALPHA, SWIGLU_LIMIT, swiglu

    shape = (8, 576, 2880)
    gate, up = experts(GGMLType.MXFP4, shape, rng, blocks), experts(GGMLType.MXFP4, shape, rng, blocks)
    fast_gate, fast_up = (regrouped(gate), regrouped(up)) if layout == "regrouped" else (gate, up)
    biases = (torch.randn(8, 576, device="cuda"), torch.randn(8, 576, device="cuda"))
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 2880)).astype(np.float32)).cuda() * 4.0
    ids = torch.tensor([[5, 0, 7, 2]], device="cuda")
    kernels = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda")
    activation = (SWIGLU_ALPHA, SWIGLU_LIMIT)
    got = kernels.qmatmul_experts_glu(x, fast_gate, fast_up, ids, biases, activation=activation)
    want = swiglu(*(reference(x, w, ids, b) for w, b in zip((gate, up), biases, strict=True)))
    assert got is not None and got.shape == want.shape and rel_err(got, want) < REL_TOL
    rows = torch.randn(1, 2880, device="cuda")
    h = RMSNormed(rows, rows * torch.randn(2880, device="cuda"), 1e-5)
    got = kernels.qmatmul_experts_glu(h, fast_gate, fast_up, ids, biases, activation=activation)
    want = swiglu(*(reference(h.value(), w, ids, b) for w, b in zip((gate, up), biases, strict=True)))
    assert rel_err(got, want) < REL_TOL


def test_the_cuda_model_loads_mxfp4_experts_regrouped_and_the_reference_path_does_not() -> None:
    from tests.worker.llama_helpers import load_model

    fast_model, _, _ = load_model("tiny/gpt-oss-mxfp4_moe.gguf", device="cuda")
    ref_model, _, _ = load_model(
        "tiny/gpt-oss-mxfp4_moe.gguf", device="cuda", kernels=backend.KernelConfig(kernels="reference")
    )
    fast_layouts = {layer.gate_exps.layout for layer in fast_model.layers}
    assert fast_layouts == {CODES_THEN_SCALES}
    assert {layer.gate_exps.layout for layer in ref_model.layers} == {"ggml"}


@pytest.mark.parametrize("split", [None, 3])
@pytest.mark.parametrize("n_tokens", [1, 2])
def test_the_routed_sum_in_the_down_launch_gives_the_combine_kernels_bits(
    split, n_tokens, rng, blocks
) -> None:
    """GPT-OSS's down projection with its routed sum in the epilogue (`qmatmul_experts_routed_sum`,
    `KernelConfig.fused_combine`): the same bits as the same launch's products, then
    `triton_decode.moe_combine` (plain and with the next norm's scaled copy), in the default launch shape
    and split three ways (the last split's program, not a pair's only one, forms the sum); the arrival
    counters left at zero."""
    from kernels import triton_decode, triton_gemv
    from kernels.qmatmul import RMSNormed

    shape = (32, 2880, 2880)
    down = regrouped(experts(GGMLType.MXFP4, shape, rng, blocks))
    bias = torch.randn(32, 2880, device="cuda")
    ids = torch.tensor([[5, 0, 7, 2], [2, 31, 5, 9]][:n_tokens], device="cuda")
    pairs = torch.from_numpy(rng.normal(0.0, 1.0, (n_tokens * 4, 2880)).astype(np.float32)).cuda()
    weights = torch.softmax(torch.randn(n_tokens, 4, device="cuda"), dim=-1)
    residual = torch.randn(n_tokens, 2880, device="cuda")
    norm = (torch.randn(2880, device="cuda"), 1e-5)
    config = None
    if split is not None:
        sm_count = torch.cuda.get_device_properties(0).multi_processor_count
        shaped = triton_gemv.default_config(
            GGMLType.MXFP4, 2880, 2880, n_tokens * 4, sm_count, layout=triton_gemv.layout_of(down)
        )
        config = dataclasses.replace(shaped, split=split)
    launch = functools.partial(
        triton_gemv.launch_segments, pairs, (down,), (bias,), n_tokens * 4, expert_ids=ids.reshape(-1),
        config=config,
    )  # fmt: skip
    products = launch().view(n_tokens, 4, -1)
    want = triton_decode.moe_combine(residual, products, weights, then_norm=norm)
    y, y2 = launch(scaled_by=norm[0], mix=triton_gemv.RoutedSum(weights, residual))
    assert torch.equal(y, want.x) and torch.equal(y2, want.xw)
    kernels = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cuda")
    if split is None:  # the kernel set's entry point, the plain sum and the RMSNormed
        plain = kernels.qmatmul_experts_routed_sum(pairs, down, ids, bias, weights, residual)
        assert plain is not None and torch.equal(plain, want.x)
        normed = kernels.qmatmul_experts_routed_sum(pairs, down, ids, bias, weights, residual, then_norm=norm)
        assert isinstance(normed, RMSNormed) and torch.equal(normed.xw, want.xw) and normed.eps == norm[1]
    assert int(triton_gemv.SplitCounters.get(pairs.device, 1).count_nonzero()) == 0
